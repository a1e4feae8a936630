// bourse.js: a small client for bourse's WebSocket protocol (docs/PROTOCOL.md), an ES module
// with no dependencies and no build step. The browser UI uses it; so can anyone:
//
//   import { Bourse } from "/ui/bourse.js";
//   const b = new Bourse({ urls: ["ws://localhost:8080/ws"], token });
//   b.subscribe("trades:KRW-BTC", (event) => console.log(event.data));
//   const order = await b.request("order.place", { symbol: "KRW-BTC", side: "buy", ... });
//
// What it does for you:
// - requests and responses matched by `id`; a failed request rejects with a `BourseError`
//   carrying the server's `code` and `message` as the server words them;
// - subscriptions that survive reconnects: each channel's position (`epoch:seq`) is kept and
//   sent as `since`, so the server replays what was missed;
// - gap and epoch detection: a `seq` jump (except on the conflatable `ticker:` channels) or a
//   new `epoch` makes it re-subscribe the channel afresh, and the handler first gets
//   `{reset: true}` so it can drop what it built (a book, a tape);
// - reconnects with exponential backoff and full jitter, moving through the gateways it
//   knows (`urls`); an application-level `ping` every 15 s finds a dead connection.

/** An error answer of the server: `code` as in docs/PROTOCOL.md "REST". */
export class BourseError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

const PING_EVERY_MS = 15_000;
const PING_TIMEOUT_MS = 10_000;
const BACKOFF_BASE_MS = 250;
const BACKOFF_CAP_MS = 10_000;

/** The position of a channel after `event`, as `since` takes it. */
function position(p) {
  return `${p.epoch}:${p.seq}`;
}

export class Bourse {
  /**
   * @param {object} opts
   * @param {string[]} opts.urls WebSocket URLs of the gateways (`ws://host:port/ws`).
   * @param {string} [opts.token] a login token: the connection is the user's.
   * @param {(state: string) => void} [opts.onState] told `connecting`, `open`, `closed`.
   */
  constructor({ urls, token, onState } = {}) {
    if (!urls || urls.length === 0) throw new Error("Bourse needs at least one gateway URL");
    this.urls = urls;
    this.token = token;
    this.onState = onState || (() => {});
    this.next = 1;
    this.pending = new Map(); // id -> {resolve, reject}
    this.queue = []; // frames waiting for the socket
    this.channels = new Map(); // channel -> {handlers:Set, pos:{epoch,seq}|null}
    this.attempt = 0;
    this.urlIndex = 0;
    this.closed = false;
    this.ws = null;
    this.pingTimer = null;
    this.connect();
  }

  /** The socket's state: `connecting`, `open` or `closed`. */
  get state() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) return "open";
    return this.closed ? "closed" : "connecting";
  }

  connect() {
    const base = this.urls[this.urlIndex % this.urls.length];
    const url = this.token ? `${base}${base.includes("?") ? "&" : "?"}token=${encodeURIComponent(this.token)}` : base;
    this.onState("connecting");
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.onState("open");
      this.resubscribeAll();
      for (const frame of this.queue.splice(0)) ws.send(frame);
      this.startPing();
    };
    ws.onmessage = (m) => this.receive(m.data);
    ws.onclose = () => this.lost();
    ws.onerror = () => {}; // onclose follows and reconnects
  }

  /** Sends a request; resolves with its `result`, rejects with a `BourseError`. */
  request(op, fields = {}) {
    const id = this.next++;
    const frame = JSON.stringify({ id, op, ...fields });
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(frame);
      else this.queue.push(frame);
    });
  }

  /**
   * Calls `handler(event)` for every event of `channel` (`{ch, epoch, seq, ts, data}`), and
   * `handler({reset: true})` before the channel starts afresh. Returns a function that
   * stops it.
   */
  subscribe(channel, handler) {
    let entry = this.channels.get(channel);
    if (!entry) {
      entry = { handlers: new Set(), pos: null };
      this.channels.set(channel, entry);
      this.sendSubscribe([channel], false);
    }
    entry.handlers.add(handler);
    return () => {
      entry.handlers.delete(handler);
      if (entry.handlers.size === 0 && this.channels.get(channel) === entry) {
        this.channels.delete(channel);
        this.request("unsubscribe", { channels: [channel] }).catch(() => {});
      }
    };
  }

  /** Closes for good. */
  close() {
    this.closed = true;
    clearInterval(this.pingTimer);
    if (this.ws) this.ws.close(1000);
    this.onState("closed");
  }

  sendSubscribe(channels, resume) {
    const since = {};
    if (resume) {
      for (const ch of channels) {
        const pos = this.channels.get(ch)?.pos;
        if (pos) since[ch] = position(pos);
      }
    }
    const fields = Object.keys(since).length ? { channels, since } : { channels };
    this.request("subscribe", fields)
      .then((result) => {
        for (const [ch, at] of Object.entries(result.channels || {})) {
          const entry = this.channels.get(ch);
          if (!entry) continue;
          if (!at.resumed) {
            if (entry.pos) this.dispatch(entry, { reset: true });
            entry.pos = { epoch: at.epoch, seq: at.seq };
          }
        }
      })
      .catch((e) => console.warn(`bourse: subscribing ${channels.join(", ")}: ${e.message}`));
  }

  resubscribeAll() {
    const channels = [...this.channels.keys()];
    // The server takes at most 200 channels per connection; send them in slices.
    for (let i = 0; i < channels.length; i += 50) this.sendSubscribe(channels.slice(i, i + 50), true);
  }

  receive(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    if ("id" in msg && msg.id !== null && this.pending.has(msg.id)) {
      const { resolve, reject } = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      if (msg.ok) resolve(msg.result);
      else reject(new BourseError(msg.error?.code || "internal", msg.error?.message || "failed"));
      return;
    }
    if (typeof msg.ch !== "string") return;
    const entry = this.channels.get(msg.ch);
    if (!entry) return;
    const pos = entry.pos;
    if (pos && msg.epoch !== pos.epoch) {
      // A new epoch the server did not carry us into: start the channel afresh.
      this.restart(msg.ch, entry);
      return;
    }
    if (pos && msg.seq <= pos.seq && msg.data?.type !== "snapshot") return; // already seen
    const conflatable = msg.ch.startsWith("ticker:");
    if (pos && !conflatable && msg.seq > pos.seq + 1 && msg.data?.type !== "snapshot") {
      this.restart(msg.ch, entry);
      return;
    }
    entry.pos = { epoch: msg.epoch, seq: msg.seq };
    this.dispatch(entry, msg);
  }

  restart(channel, entry) {
    entry.pos = null;
    this.dispatch(entry, { reset: true });
    this.request("unsubscribe", { channels: [channel] })
      .catch(() => {})
      .then(() => {
        if (this.channels.get(channel) === entry) this.sendSubscribe([channel], false);
      });
  }

  dispatch(entry, event) {
    for (const h of [...entry.handlers]) {
      try {
        h(event);
      } catch (e) {
        console.error("bourse: a channel handler failed", e);
      }
    }
  }

  startPing() {
    clearInterval(this.pingTimer);
    const ws = this.ws;
    this.pingTimer = setInterval(() => {
      if (ws !== this.ws || ws.readyState !== WebSocket.OPEN) return;
      const timeout = setTimeout(() => ws.close(4000, "ping timeout"), PING_TIMEOUT_MS);
      this.request("ping").then(
        () => clearTimeout(timeout),
        () => clearTimeout(timeout),
      );
    }, PING_EVERY_MS);
  }

  lost() {
    clearInterval(this.pingTimer);
    for (const { reject } of this.pending.values()) {
      reject(new BourseError("unavailable", "the connection was lost; retry"));
    }
    this.pending.clear();
    // Queued subscribe frames are rebuilt from `channels` on the next open.
    this.queue = this.queue.filter((f) => !f.includes('"op":"subscribe"'));
    if (this.closed) return;
    this.onState("connecting");
    this.urlIndex += 1;
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
    this.attempt += 1;
    setTimeout(() => this.connect(), Math.random() * ceiling);
  }
}

/** The WebSocket URL of the gateway that served this page. */
export function pageGateway(location = window.location) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}
