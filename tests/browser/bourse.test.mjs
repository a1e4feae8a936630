// Unit tests of web/bourse.js's stream bookkeeping against a scripted WebSocket (no server):
// what it sends and what its handlers get when the server skips a seq, repeats one, moves to
// a new epoch, conflates a ticker, refuses a subscribe, or stops answering pings; and its
// backoffs. The whole client against real nodes is tests/browser/ui.mjs and client.mjs.
//
//   node --test tests/browser/bourse.test.mjs

import { test } from "node:test";
import assert from "node:assert/strict";
import { until } from "./until.mjs";

/** A WebSocket the test drives: it records what the client sends and answers by hand. */
class FakeSocket {
  static OPEN = 1;
  static made = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    FakeSocket.made.push(this);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close() {
    this.readyState = 3;
  }
  /** The server side: opens the socket. */
  accept() {
    this.readyState = FakeSocket.OPEN;
    this.onopen();
  }
  /** The server side: a frame to the client. */
  push(msg) {
    this.onmessage({ data: JSON.stringify(msg) });
  }
  /** The server side: answers the last request of `op` with `result`. */
  answer(op, result) {
    const req = this.sent.findLast((m) => m.op === op);
    assert.ok(req, `no ${op} was sent`);
    this.push({ id: req.id, ok: true, result });
    return req;
  }
  drop() {
    this.readyState = 3;
    this.onclose();
  }
}
globalThis.WebSocket = FakeSocket;
const { Bourse } = await import("../../web/bourse.js");

const tick = () => new Promise((r) => setImmediate(r));
const ev = (ch, epoch, seq, data = { n: seq }) => ({ ch, epoch, seq, ts: 0, data });

/** A client on a fresh fake socket, subscribed to `ch` at `epoch:seq` (snapshot given). */
async function subscribed(ch, epoch, seq) {
  FakeSocket.made = [];
  const client = new Bourse({ urls: ["ws://a/ws", "ws://b/ws"] });
  const ws = FakeSocket.made[0];
  ws.accept();
  const got = [];
  client.subscribe(ch, (e) => got.push(e.reset ? "reset" : `${e.epoch}:${e.seq}`));
  ws.answer("subscribe", { channels: { [ch]: { epoch, seq } } });
  await tick();
  ws.push(ev(ch, epoch, seq)); // the snapshot carries the granted seq
  return { client, ws, got };
}

/** Runs `body` with setTimeout captured into the list it is given (and warnings muted). */
async function withTimers(body) {
  const timeouts = [];
  const [realTimeout, realWarn] = [globalThis.setTimeout, console.warn];
  console.warn = () => {};
  globalThis.setTimeout = (f, ms) => timeouts.push({ f, ms });
  try {
    await body(timeouts);
  } finally {
    globalThis.setTimeout = realTimeout;
    console.warn = realWarn;
  }
}

/** The server side: refuses request `req` with `code`. */
const refuse = (ws, req, code) =>
  ws.push({ id: req.id, ok: false, error: { code, message: "refused" } });

test("a seq gap re-subscribes from the last position and hides what follows until answered", async () => {
  const { client, ws, got } = await subscribed("trades:X-Y", "e1", 5);
  ws.push(ev("trades:X-Y", "e1", 6));
  ws.push(ev("trades:X-Y", "e1", 8)); // 7 is missing
  const again = ws.sent.at(-1);
  assert.equal(again.op, "subscribe");
  assert.deepEqual(again.since, { "trades:X-Y": "e1:6" });
  ws.push(ev("trades:X-Y", "e1", 9)); // before the answer: dropped, it comes again
  ws.answer("subscribe", { channels: { "trades:X-Y": { epoch: "e1", seq: 6, resumed: true } } });
  await tick();
  for (const s of [7, 8, 9]) ws.push(ev("trades:X-Y", "e1", s));
  assert.deepEqual(got, ["e1:5", "e1:6", "e1:7", "e1:8", "e1:9"]);
  client.close();
});

test("a repeated seq is dropped; a ticker may skip seqs", async () => {
  const { client, ws, got } = await subscribed("ticker:X-Y", "e1", 1);
  ws.push(ev("ticker:X-Y", "e1", 1));
  ws.push(ev("ticker:X-Y", "e1", 4));
  assert.deepEqual(got, ["e1:1", "e1:4"]);
  assert.equal(ws.sent.filter((m) => m.op === "subscribe").length, 1);
  client.close();
});

test("a new epoch is followed on a stream, but a book starts afresh from a snapshot", async () => {
  const trades = await subscribed("trades:X-Y", "e1", 3);
  trades.ws.push(ev("trades:X-Y", "e2", 1));
  trades.ws.push(ev("trades:X-Y", "e2", 2));
  assert.deepEqual(trades.got, ["e1:3", "e2:1", "e2:2"]);
  trades.client.close();

  const book = await subscribed("book:X-Y", "e1", 3);
  book.ws.push(ev("book:X-Y", "e2", 7));
  assert.deepEqual(book.got, ["e1:3", "reset"]);
  const again = book.ws.sent.at(-1);
  assert.equal(again.op, "subscribe");
  assert.equal(again.since, undefined, "a book is not resumed across epochs");
  book.ws.answer("subscribe", { channels: { "book:X-Y": { epoch: "e2", seq: 9 } } });
  await tick();
  book.ws.push(ev("book:X-Y", "e2", 9)); // the new snapshot
  book.ws.push(ev("book:X-Y", "e2", 10));
  assert.deepEqual(book.got, ["e1:3", "reset", "e2:9", "e2:10"]);
  book.client.close();
});

test("a reconnect goes to the next gateway and resumes every channel by since", async () => {
  const { client, ws, got } = await subscribed("trades:X-Y", "e1", 5);
  ws.drop();
  assert.equal(client.state, "connecting");
  await until("a second socket", 2, () => FakeSocket.made.length === 2, 10);
  const next = FakeSocket.made[1];
  assert.equal(next.url, "ws://b/ws");
  next.accept();
  const sub = next.sent.find((m) => m.op === "subscribe");
  assert.deepEqual(sub.since, { "trades:X-Y": "e1:5" });
  // The server no longer holds e1:5: the handler hears reset, then the new snapshot.
  next.answer("subscribe", { channels: { "trades:X-Y": { epoch: "e1", seq: 40 } } });
  await tick();
  next.push(ev("trades:X-Y", "e1", 40));
  assert.deepEqual(got, ["e1:5", "reset", "e1:40"]);
  client.close();
});

test("a request while disconnected fails at once with unavailable; a lost one too", async () => {
  const { client, ws } = await subscribed("trades:X-Y", "e1", 1);
  const pending = client.request("order.place", { symbol: "X-Y" });
  ws.drop();
  await assert.rejects(pending, (e) => e.code === "unavailable");
  await assert.rejects(client.request("ping"), (e) => e.code === "unavailable");
  client.close();
});

test("the backoff's ceiling doubles per failed attempt up to its cap, and resets on an answer", () => {
  FakeSocket.made = [];
  const waits = [];
  const realTimeout = globalThis.setTimeout;
  const realRandom = Math.random;
  Math.random = () => 0.999999; // the top of each full-jitter range: the ceiling
  globalThis.setTimeout = (f, ms) => {
    waits.push(Math.round(ms));
    return 0;
  };
  try {
    const client = new Bourse({ urls: ["ws://a/ws"] });
    for (let i = 0; i < 8; i += 1) {
      client.ws.drop();
      client.connect();
    }
    assert.deepEqual(waits, [250, 500, 1000, 2000, 4000, 8000, 10000, 10000]);
    client.ws.accept();
    client.ws.push({ id: null, ok: true, result: {} });
    client.ws.drop();
    assert.equal(waits.at(-1), 250);
    client.close();
  } finally {
    globalThis.setTimeout = realTimeout;
    Math.random = realRandom;
  }
});

test("a ping left unanswered for 10 s drops the connection and moves to the next gateway", () => {
  FakeSocket.made = [];
  const intervals = [];
  const timeouts = [];
  const [realInterval, realTimeout] = [globalThis.setInterval, globalThis.setTimeout];
  globalThis.setInterval = (f, ms) => intervals.push({ f, ms });
  globalThis.setTimeout = (f, ms) => timeouts.push({ f, ms });
  try {
    const client = new Bourse({ urls: ["ws://a/ws", "ws://b/ws"] });
    const ws = FakeSocket.made[0];
    ws.accept();
    const every = intervals.at(-1);
    assert.equal(every.ms, 15000);
    every.f();
    assert.equal(ws.sent.at(-1).op, "ping");
    const deadline = timeouts.at(-1);
    assert.equal(deadline.ms, 10000);
    deadline.f();
    assert.equal(ws.readyState, 3, "the dead socket is closed");
    assert.equal(client.state, "connecting");
    timeouts.at(-1).f(); // the backoff's wait is over
    assert.equal(FakeSocket.made.at(-1).url, "ws://b/ws");
    client.close();
  } finally {
    globalThis.setInterval = realInterval;
    globalThis.setTimeout = realTimeout;
  }
});

test("an answer behind the position the server already carried a channel to is no reset", async () => {
  const { client, ws, got } = await subscribed("trades:X-Y", "e1", 5);
  ws.drop();
  await until("a second socket", 2, () => FakeSocket.made.length === 2, 10);
  const next = FakeSocket.made[1];
  next.accept();
  // The publisher moved: the gateway carries the channel into the new epoch while the
  // client's subscribe (since e1:5) is on its way, and answers it at that epoch's seq 6.
  next.push(ev("trades:X-Y", "e2", 6));
  next.answer("subscribe", { channels: { "trades:X-Y": { epoch: "e2", seq: 6 } } });
  await tick();
  next.push(ev("trades:X-Y", "e2", 6)); // what follows the answer, already seen
  next.push(ev("trades:X-Y", "e2", 7));
  assert.deepEqual(got, ["e1:5", "e2:6", "e2:7"]);
  client.close();
});

test("failed subscribes wait for one timer that backs off, and a success resets it", async () => {
  FakeSocket.made = [];
  const timeouts = [];
  const [realTimeout, realRandom, realWarn] = [globalThis.setTimeout, Math.random, console.warn];
  Math.random = () => 0.999999; // the top of each jitter range: the ceiling
  console.warn = () => {};
  globalThis.setTimeout = (f, ms) => timeouts.push({ f, ms: Math.round(ms) });
  try {
    const client = new Bourse({ urls: ["ws://a/ws"] });
    const ws = FakeSocket.made[0];
    ws.accept();
    client.subscribe("trades:A-B", () => {});
    client.subscribe("trades:C-D", () => {});
    const [first, second] = ws.sent.filter((m) => m.op === "subscribe");
    refuse(ws, first, "unavailable");
    refuse(ws, second, "unavailable");
    await tick();
    assert.deepEqual(
      timeouts.map((t) => t.ms),
      [500],
      "two failures, one timer",
    );
    const waits = [];
    for (let i = 0; i < 6; i += 1) {
      const retry = timeouts.shift();
      waits.push(retry.ms);
      const before = ws.sent.length;
      retry.f();
      const asked = ws.sent.slice(before);
      assert.deepEqual(
        asked.map((r) => r.channels),
        [["trades:A-B"], ["trades:C-D"]],
        "both at once, each alone",
      );
      for (const req of asked) refuse(ws, req, "rate_limited");
      await tick();
      assert.equal(timeouts.length, 1, "one timer");
    }
    assert.deepEqual(waits, [500, 1000, 2000, 4000, 8000, 8000]);
    const before = ws.sent.length;
    timeouts.shift().f();
    for (const req of ws.sent.slice(before)) {
      ws.push({ id: req.id, ok: true, result: { channels: { [req.channels[0]]: { epoch: "e1", seq: 1 } } } });
    }
    await tick();
    client.subscribe("trades:E-F", () => {});
    refuse(ws, ws.sent.at(-1), "unavailable");
    await tick();
    assert.equal(timeouts.at(-1).ms, 500, "from scratch after a success");
    client.close();
  } finally {
    globalThis.setTimeout = realTimeout;
    Math.random = realRandom;
    console.warn = realWarn;
  }
});

test("a book whose new-epoch subscribe is refused folds no delta until its snapshot", async () => {
  const { client, ws, got } = await subscribed("book:X-Y", "e1", 5);
  await withTimers(async (timeouts) => {
    ws.push(ev("book:X-Y", "e2", 2)); // a new epoch: reset, and a subscribe for a snapshot
    refuse(ws, ws.sent.at(-1), "unavailable");
    await tick();
    ws.push(ev("book:X-Y", "e2", 3)); // the gateway carried the channel on: a delta
    timeouts.shift().f();
    const again = ws.sent.at(-1);
    assert.equal(again.op, "subscribe");
    assert.equal(again.since, undefined, "still no position in the new epoch");
    ws.answer("subscribe", { channels: { "book:X-Y": { epoch: "e2", seq: 4 } } });
    await tick();
    ws.push(ev("book:X-Y", "e2", 4)); // the snapshot
    ws.push(ev("book:X-Y", "e2", 5));
  });
  assert.deepEqual(got, ["e1:5", "reset", "e2:4", "e2:5"]);
  client.close();
});

test("a gap whose re-subscribe is refused waits for the retry, not a subscribe per event", async () => {
  const { client, ws, got } = await subscribed("trades:X-Y", "e1", 5);
  await withTimers(async (timeouts) => {
    ws.push(ev("trades:X-Y", "e1", 7)); // 6 is missing
    refuse(ws, ws.sent.at(-1), "rate_limited");
    await tick();
    const sent = ws.sent.length;
    for (const s of [8, 9, 10]) ws.push(ev("trades:X-Y", "e1", s));
    assert.equal(ws.sent.length, sent, "no subscribe of their own");
    assert.equal(timeouts.length, 1);
    timeouts.shift().f();
    assert.deepEqual(ws.sent.at(-1).since, { "trades:X-Y": "e1:5" });
    ws.answer("subscribe", { channels: { "trades:X-Y": { epoch: "e1", seq: 5, resumed: true } } });
    await tick();
    for (const s of [6, 7, 8, 9, 10]) ws.push(ev("trades:X-Y", "e1", s)); // the replay
  });
  assert.deepEqual(got, ["e1:5", "e1:6", "e1:7", "e1:8", "e1:9", "e1:10"]);
  client.close();
});

test("a channel refused for good holds back no channel asked with it", async () => {
  const { client, ws, got } = await subscribed("trades:A-B", "e1", 5);
  await withTimers(async (timeouts) => {
    client.subscribe("book:C-D", () => {});
    refuse(ws, ws.sent.at(-1), "internal"); // its publisher never answers
    await tick();
    ws.push(ev("trades:A-B", "e1", 7)); // 6 is missing: A is re-subscribed, and refused once
    refuse(ws, ws.sent.at(-1), "rate_limited");
    await tick();
    const before = ws.sent.length;
    timeouts.shift().f();
    const [book, trades] = ws.sent.slice(before);
    assert.deepEqual([book.channels, trades.channels], [["book:C-D"], ["trades:A-B"]]);
    refuse(ws, book, "internal");
    ws.push({ id: trades.id, ok: true, result: { channels: { "trades:A-B": { epoch: "e1", seq: 5, resumed: true } } } });
    await tick();
    for (const s of [6, 7, 8]) ws.push(ev("trades:A-B", "e1", s));
    assert.deepEqual(got, ["e1:5", "e1:6", "e1:7", "e1:8"]);
    timeouts.shift().f();
    assert.deepEqual(ws.sent.at(-1).channels, ["book:C-D"], "only the refused one is asked again");
  });
  client.close();
});

test("a request refused for one bad channel is asked again channel by channel", async () => {
  const { client, ws } = await subscribed("trades:A-B", "e1", 5);
  await withTimers(async (timeouts) => {
    client.subscribe("book:C-D", () => {});
    client.subscribe("trades:E-F", () => {});
    client.resubscribeAll(); // all three in one request, refused for one bad name
    const all = ws.sent.at(-1);
    assert.equal(all.channels.length, 3);
    refuse(ws, all, "bad_request");
    await tick();
    const before = ws.sent.length;
    timeouts.shift().f();
    const alone = ws.sent.slice(before);
    assert.deepEqual(
      alone.map((r) => r.channels),
      all.channels.map((c) => [c]),
    );
    refuse(ws, alone[1], "bad_request"); // the bad one, alone: given up
    await tick();
    assert.equal(timeouts.length, 0, "a channel refused by name alone is not asked again");
  });
  client.close();
});
