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
//   carrying the server's `code` and `message` as the server words them (a request made
//   while disconnected fails at once with `unavailable`: nothing is sent later behind
//   your back);
// - logging in with `auth` on every connection (an expired token is reported, not retried);
// - subscriptions that survive reconnects: each channel's position (`epoch:seq`) is kept and
//   sent as `since`, so the server replays what was missed;
// - gap and epoch detection: a `seq` jump (except on the conflatable `ticker:` channels)
//   re-subscribes from the last position; a new `epoch` (the server carries subscriptions
//   into it) is followed, except a book's, which starts afresh from a new snapshot. When a channel starts afresh the handler first
//   gets `{reset: true}` so it can drop what it built (a book, a tape); an answer at a
//   position the channel already passed in the same epoch is no fresh start;
// - a subscribe refused for a moment (a publisher moving, the connection's request rate)
//   is asked again, when every other channel waiting is, each in a request of its own, by
//   one timer that backs off (a wait of 0.25-0.5 s at first, doubling per failed answer to
//   4-8 s); a channel being re-subscribed after a gap or a book's new epoch shows nothing
//   until it is answered;
// - reconnects with exponential backoff and full jitter, moving through the gateways it
//   knows (`urls`); an application-level `ping` every 15 s finds a dead connection.
// Set `globalThis.BOURSE_DEBUG = true` to log every stream event to the console.

/** An error answer of the server: `code` as in docs/PROTOCOL.md "REST". */
export class BourseError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

const PING_EVERY_MS = 15_000;
const SUBSCRIBE_RETRY_MS = 500;
const SUBSCRIBE_RETRY_CAP_MS = 8_000;
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
   * @param {string} [opts.token] a login token: each connection logs in with `auth` first.
   * @param {(state: string) => void} [opts.onState] told `connecting`, `open`, `closed`.
   * @param {(e: BourseError) => void} [opts.onUnauthorized] the token was refused (expired).
   */
  constructor({ urls, token, onState, onUnauthorized } = {}) {
    if (!urls || urls.length === 0) throw new Error("Bourse needs at least one gateway URL");
    this.urls = urls;
    this.token = token;
    this.onState = onState || (() => {});
    this.onUnauthorized = onUnauthorized || (() => {});
    this.next = 1;
    this.pending = new Map(); // id -> {resolve, reject}
    this.channels = new Map(); // channel -> {handlers:Set, pos:{epoch,seq}|null, fresh:boolean}
    this.attempt = 0;
    this.urlIndex = 0;
    this.closed = false;
    this.ws = null;
    this.pingTimer = null;
    this.retryTimer = null;
    // Channels whose subscribe failed, asked again (each alone) when one timer that backs
    // off while the answers keep failing fires (a retry per failure would multiply, and a
    // connection over its request rate would stay there).
    this.retrying = new Set();
    this.subscribeRetry = null;
    this.subscribeFailures = 0;
    this.connect();
  }

  /** The socket's state: `connecting`, `open` or `closed`. */
  get state() {
    if (this.closed) return "closed";
    return this.open() ? "open" : "connecting";
  }

  open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  connect() {
    if (this.closed) return;
    const url = this.urls[this.urlIndex % this.urls.length];
    this.onState("connecting");
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      this.onState("open");
      if (this.token) {
        // First, so every request after it is the user's (answers come in order).
        this.request("auth", { token: this.token }).catch((e) => {
          if (e.code === "unauthorized") this.onUnauthorized(e);
        });
      }
      this.resubscribeAll();
      this.startPing();
    };
    ws.onmessage = (m) => {
      this.attempt = 0; // the gateway answers: back off from scratch next time
      this.receive(m.data);
    };
    ws.onclose = () => this.lost(ws);
    ws.onerror = () => {}; // onclose follows and reconnects
  }

  /**
   * Sends a request; resolves with its `result`, rejects with a `BourseError` (code
   * `unavailable` when not connected or when the connection drops before the answer: the
   * request may or may not have been carried out, so retry orders with their
   * `client_order_id`).
   */
  request(op, fields = {}) {
    if (!this.open()) {
      return Promise.reject(new BourseError("unavailable", "not connected to bourse; retry"));
    }
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ id, op, ...fields }));
    });
  }

  /**
   * Calls `handler(event)` for every event of `channel` (`{ch, epoch, seq, ts, data}`), and
   * `handler({reset: true})` when the channel starts afresh (what was missed cannot be
   * replayed: drop what was built from it and take the snapshot that follows). Returns a
   * function that stops it.
   */
  subscribe(channel, handler) {
    let entry = this.channels.get(channel);
    if (!entry) {
      entry = { handlers: new Set(), pos: null, fresh: false, resync: false };
      this.channels.set(channel, entry);
      // Not connected: the next connection subscribes everything held.
      if (this.open()) this.sendSubscribe([channel]);
    }
    entry.handlers.add(handler);
    return () => {
      entry.handlers.delete(handler);
      if (entry.handlers.size === 0 && this.channels.get(channel) === entry) {
        this.channels.delete(channel);
        if (this.open()) this.request("unsubscribe", { channels: [channel] }).catch(() => {});
      }
    };
  }

  /** Closes for good. */
  close() {
    this.closed = true;
    clearInterval(this.pingTimer);
    clearTimeout(this.retryTimer);
    this.stopRetrying();
    if (this.ws) {
      this.ws.onclose = null;
      this.ws.close(1000);
    }
    this.onState("closed");
  }

  /** Subscribes `channels`, each from its last position when it has one. */
  sendSubscribe(channels) {
    const since = {};
    for (const ch of channels) {
      const pos = this.channels.get(ch)?.pos;
      if (pos) since[ch] = position(pos);
    }
    const fields = Object.keys(since).length ? { channels, since } : { channels };
    const settle = () => {
      for (const ch of channels) {
        const entry = this.channels.get(ch);
        if (entry) entry.resync = false;
      }
    };
    this.request("subscribe", fields)
      .then((result) => {
        settle();
        this.subscribeFailures = 0;
        for (const [ch, at] of Object.entries(result.channels || {})) {
          const entry = this.channels.get(ch);
          if (!entry || at.resumed) continue;
          // Already at or past the answered position of this epoch (the server carried
          // the channel into it while this request was on its way): nothing was missed,
          // and what comes up to the position held is dropped as seen.
          if (entry.pos && entry.pos.epoch === at.epoch && entry.pos.seq >= at.seq) continue;
          if (entry.pos) this.dispatch(entry, { reset: true });
          // The snapshot that follows carries exactly this seq.
          entry.pos = { epoch: at.epoch, seq: at.seq };
          entry.fresh = true;
        }
      })
      .catch((e) => {
        console.warn(`bourse: subscribing ${channels.join(", ")}: ${e.message}`);
        // A bad name or a refused user never succeeds: asked alone, the channel goes on
        // as it is. The server refuses a whole request at its first failing channel, so
        // channels refused together are asked again each alone.
        const never = e.code === "bad_request" || e.code === "unauthorized";
        if (never && channels.length === 1) return settle();
        // A lost connection subscribes everything anew itself. A publisher restarting or
        // moving refuses for a moment, a burst of requests meets the connection's rate:
        // try again. Meanwhile a channel being re-subscribed (a gap, a book's new epoch)
        // still hides what comes: a book would otherwise fold deltas with no snapshot,
        // and each gap would send a subscribe of its own.
        if (this.open()) this.retryLater(channels);
      });
  }

  /**
   * Asks `channels` again later, when every other channel waiting is asked, each in a
   * request of its own (one channel refused for good must not hold the others back):
   * after `SUBSCRIBE_RETRY_MS` doubling per failed answer up to `SUBSCRIBE_RETRY_CAP_MS`
   * (jittered in its upper half), from scratch once a subscribe succeeds.
   */
  retryLater(channels) {
    for (const ch of channels) this.retrying.add(ch);
    if (this.subscribeRetry !== null) return;
    const ceiling = Math.min(SUBSCRIBE_RETRY_CAP_MS, SUBSCRIBE_RETRY_MS * 2 ** this.subscribeFailures);
    this.subscribeFailures += 1;
    this.subscribeRetry = setTimeout(() => {
      this.subscribeRetry = null;
      const still = [...this.retrying].filter((ch) => this.channels.has(ch));
      this.retrying.clear();
      if (!this.open()) return;
      for (const ch of still) this.sendSubscribe([ch]);
    }, ceiling / 2 + (Math.random() * ceiling) / 2);
  }

  /** Drops the pending retry (a new connection subscribes everything anew). */
  stopRetrying() {
    clearTimeout(this.subscribeRetry);
    this.subscribeRetry = null;
    this.retrying.clear();
    this.subscribeFailures = 0;
  }

  resubscribeAll() {
    this.stopRetrying();
    const channels = [...this.channels.keys()];
    // The server takes at most 200 channels per connection; send them in slices.
    for (let i = 0; i < channels.length; i += 50) this.sendSubscribe(channels.slice(i, i + 50));
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
    if (globalThis.BOURSE_DEBUG) console.debug(`bourse: ${msg.ch} ${msg.epoch}:${msg.seq}`);
    const entry = this.channels.get(msg.ch);
    // Being re-subscribed: what comes now is replayed after the answer.
    if (!entry || entry.resync) return;
    const pos = entry.pos;
    if (pos && msg.epoch !== pos.epoch) {
      // The publisher restarted and the server carried the subscription into its new
      // epoch itself (re-subscribing here would race it). A book needs a fresh snapshot
      // of the new activation; other channels go on from this event.
      if (!msg.ch.startsWith("book:")) {
        entry.pos = { epoch: msg.epoch, seq: msg.seq };
        entry.fresh = false;
        this.dispatch(entry, msg);
      } else {
        entry.pos = null;
        entry.resync = true;
        this.dispatch(entry, { reset: true });
        this.sendSubscribe([msg.ch]);
      }
      return;
    }
    if (pos) {
      const snapshot = entry.fresh && msg.seq === pos.seq;
      entry.fresh = false;
      if (msg.seq <= pos.seq && !snapshot) return; // already seen
      const conflatable = msg.ch.startsWith("ticker:");
      if (msg.seq > pos.seq + 1 && !conflatable) {
        // A gap: the server replays from our position when it still holds it.
        entry.resync = true;
        this.sendSubscribe([msg.ch]);
        return;
      }
    }
    entry.pos = { epoch: msg.epoch, seq: msg.seq };
    this.dispatch(entry, msg);
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
      const timeout = setTimeout(() => {
        // A dead link: do not wait for a closing handshake that will not come.
        ws.onclose = null;
        ws.close(4000, "ping timeout");
        this.lost(ws);
      }, PING_TIMEOUT_MS);
      this.request("ping").then(
        () => clearTimeout(timeout),
        () => clearTimeout(timeout),
      );
    }, PING_EVERY_MS);
  }

  lost(ws) {
    if (ws !== this.ws) return;
    this.ws = null;
    clearInterval(this.pingTimer);
    for (const { reject } of this.pending.values()) {
      reject(new BourseError("unavailable", "the connection was lost; retry"));
    }
    this.pending.clear();
    if (this.closed) return;
    this.onState("connecting");
    this.urlIndex += 1;
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
    this.attempt += 1;
    this.retryTimer = setTimeout(() => this.connect(), Math.random() * ceiling);
  }
}

/** The WebSocket URL of the gateway that served this page. */
export function pageGateway(location = window.location) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}
