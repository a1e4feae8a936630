// The browser UI in a real browser: Debian's chromium, driven by playwright-core, against a
// running node. `node tests/browser/ui.mjs http://127.0.0.1:PORT` (tests/browser.rs runs it).
// Fails on any console error or page error. With BOURSE_SCREENSHOTS=<dir>, saves a
// screenshot of each page there (docs/ui-*.png are made this way).

import { chromium } from "playwright-core";

const base = process.argv[2];
if (!base) {
  console.error("usage: node ui.mjs <base url>");
  process.exit(2);
}
const shots = process.env.BOURSE_SCREENSHOTS;
const errors = [];
const step = (what) => console.log(`- ${what}`);

async function until(what, seconds, probe) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    const got = await probe();
    if (got) return got;
    if (Date.now() > deadline) throw new Error(`timed out after ${seconds} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function rest(path) {
  const r = await fetch(base + path);
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

function watch(page, name) {
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`${name} console: ${m.text()}`);
  });
  page.on("pageerror", (e) => errors.push(`${name} page error: ${e.message}`));
}

const browser = await chromium.launch({
  executablePath: process.env.BOURSE_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  watch(page, "desktop");

  step("the markets list shows every market and updates live");
  await page.goto(base + "/");
  const symbols = await rest("/api/v1/symbols");
  await until("every market's row", 15, async () => (await page.locator("table.markets tbody tr").count()) === symbols.length);
  const lastCell = page.locator('tr[data-symbol="KRW-BTC"] td.last');
  const first = await until("KRW-BTC's last price", 15, async () => {
    const t = (await lastCell.textContent()).trim();
    return t !== "–" && t;
  });
  await until("KRW-BTC's last price to change", 30, async () => (await lastCell.textContent()).trim() !== first);
  await until("the connection to show open", 10, async () => (await page.locator("#conn").textContent()) === "open");
  if (shots) await page.screenshot({ path: `${shots}/ui-markets.png` });

  step("a market's page: the chart's last candle is REST's, the book and the tape fill");
  await page.locator('tr[data-symbol="KRW-BTC"] a').click();
  await until("the chart's canvas", 15, async () => (await page.locator("#chart canvas").count()) > 0);
  await until("the chart's last close to equal REST's", 30, async () => {
    const [before] = await rest("/api/v1/candles/KRW-BTC?interval=1m&limit=1");
    const shown = await page.locator("#chart").getAttribute("data-last-close");
    const shownAt = await page.locator("#chart").getAttribute("data-last-open-time");
    const [after] = await rest("/api/v1/candles/KRW-BTC?interval=1m&limit=1");
    return before && after && before.close === after.close && before.open_time === after.open_time && shown === after.close && shownAt === String(after.open_time);
  });
  await until("bids and asks in the book", 15, async () => (await page.locator("table.book tr.bid").count()) > 0 && (await page.locator("table.book tr.ask").count()) > 0);
  await until("trades on the tape", 15, async () => (await page.locator("table.tape tbody tr").count()) > 0);
  step("the interval switcher loads 1s candles");
  await page.locator('button[data-interval="1s"]').click();
  await until("1s candles", 15, async () => (await page.locator("#chart").getAttribute("data-interval")) === "1s" && (await page.locator("#chart").getAttribute("data-last-close")) !== null);
  if (shots) await page.screenshot({ path: `${shots}/ui-market.png` });

  step("keyboard: the interval buttons are reachable and work with Enter");
  await page.locator('button[data-interval="5m"]').focus();
  await page.keyboard.press("Enter");
  await until("5m pressed", 10, async () => (await page.locator('button[data-interval="5m"]').getAttribute("aria-pressed")) === "true");

  step("a 390-pixel phone: nothing wider than the screen");
  const phone = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  watch(phone, "phone");
  for (const path of ["/", "/#/market/KRW-BTC"]) {
    await phone.goto(base + path);
    await until(`${path} to render`, 15, async () => (await phone.locator("table").count()) > 0);
    const wide = await phone.evaluate(() => document.documentElement.scrollWidth);
    if (wide > 390) throw new Error(`${path} is ${wide} px wide on a 390 px screen`);
  }
  await until("the phone's chart", 15, async () => (await phone.locator("#chart canvas").count()) > 0);
  if (shots) await phone.screenshot({ path: `${shots}/ui-market-phone.png` });
} catch (e) {
  failed = true;
  console.error(`FAILED: ${e.message}`);
} finally {
  await browser.close();
}
if (errors.length) {
  failed = true;
  console.error(`console errors:\n${errors.join("\n")}`);
}
console.log(failed ? "browser test failed" : "browser test passed");
process.exit(failed ? 1 : 0);
