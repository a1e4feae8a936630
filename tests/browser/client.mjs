// bourse.js outside the browser, as a third party uses it: Node.js (with its WebSocket) against
// a two-node cluster.
//
//   node --experimental-websocket client.mjs <ws url A> <ws url B> <pid of A> <channel on A> <channel on B>
//
// The client knows both gateways and connects to A first. It subscribes to a trades channel
// whose symbol A owns and one whose symbol B owns, then SIGKILLs A. It must reconnect to B
// on its own and go on: B's channel resumed by `since` in the same epoch with no gap and no
// repeat, A's channel in the new epoch of the symbol's new owner; requests work again. Prints
// what it saw and exits 0 only if all of that held.

import { Bourse } from "../../web/bourse.js";
import { until } from "./until.mjs";

const [urlA, urlB, pidA, onA, onB] = process.argv.slice(2);
if (!onB) {
  console.error("usage: node --experimental-websocket client.mjs <urlA> <urlB> <pidA> <channel on A> <channel on B>");
  process.exit(2);
}

const states = [];
const client = new Bourse({ urls: [urlA, urlB], onState: (s) => states.push(s) });
/** What each channel's handler was given, in order. */
const seen = { [onA]: [], [onB]: [] };
for (const ch of [onA, onB]) client.subscribe(ch, (e) => seen[ch].push(e));
const events = (ch) => seen[ch].filter((e) => e.data);

/** Fails unless, within each epoch, the handler got every seq once and in order. */
function checkContinuity(ch) {
  let prev = null;
  for (const e of seen[ch]) {
    if (e.reset) {
      prev = null;
      continue;
    }
    if (prev && e.epoch === prev.epoch && e.seq !== prev.seq + 1) {
      throw new Error(`${ch}: seq ${prev.seq} then ${e.seq} in epoch ${e.epoch}`);
    }
    prev = e;
  }
  const ids = events(ch).map((e) => e.data.trade_id);
  if (new Set(ids).size !== ids.length) throw new Error(`${ch}: a trade was delivered twice`);
}

let failed = false;
try {
  await until("events on both channels from A", 20, async () => events(onA).length >= 3 && events(onB).length >= 3);
  if (!client.ws.url.startsWith(urlA)) throw new Error(`connected to ${client.ws.url}, not A`);
  const beforeA = events(onA).length;
  const beforeB = events(onB).length;
  const epochB = events(onB).at(-1).epoch;
  const epochA = events(onA).at(-1).epoch;
  console.log(`- before: ${beforeA} events on ${onA}, ${beforeB} on ${onB}; killing A (pid ${pidA})`);
  const killedAt = Date.now();
  process.kill(Number(pidA), "SIGKILL");
  await until("the client to reconnect to B", 30, async () => client.state === "open" && client.ws.url.startsWith(urlB));
  console.log(`- reconnected to B in ${Date.now() - killedAt} ms (states: ${states.join(" → ")})`);
  await until(`${onB} to go on`, 20, async () => events(onB).length >= beforeB + 3);
  await until(`${onA} to go on from its new owner`, 30, async () => events(onA).slice(beforeA).filter((e) => e.epoch !== epochA).length >= 3);
  console.log(`- after: ${events(onA).length} events on ${onA}, ${events(onB).length} on ${onB}`);
  const afterB = events(onB).slice(beforeB);
  if (afterB.some((e) => e.epoch !== epochB)) throw new Error(`${onB} changed epoch though its owner lived`);
  // A's channel may still bring the tail of the old activation (what A sent before it
  // died), then the new owner's epoch, once: never back, never a third.
  const after = events(onA).slice(beforeA).map((e) => e.epoch);
  const firstNew = after.findIndex((ep) => ep !== epochA);
  if (firstNew < 0) throw new Error(`${onA} stayed in its epoch though its owner died`);
  const newEpochs = new Set(after.slice(firstNew));
  if (newEpochs.has(epochA)) throw new Error(`${onA} went back to its old epoch`);
  if (newEpochs.size !== 1) throw new Error(`${onA} moved through ${newEpochs.size} new epochs, not one`);
  // After the epochs: a repeat across an epoch change says less than the epochs do.
  for (const ch of [onA, onB]) checkContinuity(ch);
  const pong = await client.request("ping");
  console.log(`- a request after the failover answered: ${JSON.stringify(pong)}`);
} catch (e) {
  failed = true;
  console.error(`FAILED: ${e.message} (states: ${states.join(" → ")})`);
  for (const ch of [onA, onB]) console.error(`${ch}: ${seen[ch].map((e) => (e.reset ? "reset" : `${e.epoch}:${e.seq}`)).join(" ")}`);
} finally {
  client.close();
}
console.log(failed ? "client test failed" : "client test passed");
process.exit(failed ? 1 : 0);
