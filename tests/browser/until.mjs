// What the browser tests wait with: `probe` (async or not) is asked every `everyMs` until it
// returns something truthy, which `until` returns; after `seconds` it throws, naming `what`.
export async function until(what, seconds, probe, everyMs = 200) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const got = await probe();
    if (got) return got;
    if (Date.now() > deadline) throw new Error(`timed out after ${seconds} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
