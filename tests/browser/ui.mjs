// The browser UI in a real browser: Debian's chromium, driven by playwright-core, against a
// running node. `node tests/browser/ui.mjs http://127.0.0.1:PORT` (tests/browser.rs runs it,
// on a node whose KRW-ETH follows the simulator and whose KRW-BTC only its users trade).
// Fails on any console error or page error (network errors only while the node restarts:
// the test asks tests/browser.rs to restart it by creating the file BOURSE_RESTART_FILE
// names). With BOURSE_SCREENSHOTS=<dir>, saves a
// screenshot of each page there (docs/ui-*.png are made this way); with DEBUG_UI=1 the
// pages log every stream event, and a failure prints the pages' last console lines.

import { chromium } from "playwright-core";
import { until } from "./until.mjs";
import { existsSync, readFileSync, writeFileSync } from "node:fs";

const base = process.argv[2];
if (!base) {
  console.error("usage: node ui.mjs <base url>");
  process.exit(2);
}
const shots = process.env.BOURSE_SCREENSHOTS;
const errors = [];
const step = (what) => console.log(`- ${what}`);

async function rest(path) {
  const r = await fetch(base + path);
  if (!r.ok) throw new Error(`${path}: ${r.status}`);
  return r.json();
}

const logged = [];
// While the node restarts, the pages' failed connections are expected.
let outage = false;
const networkError = /ERR_CONNECTION_REFUSED|ERR_CONNECTION_RESET|ERR_EMPTY_RESPONSE|WebSocket connection to .* failed|status of 50[23]/;
function watch(page, name) {
  if (process.env.DEBUG_UI) page.addInitScript(() => (globalThis.BOURSE_DEBUG = true));
  page.on("console", (m) => {
    logged.push(`${name} ${m.type()}: ${m.text()}`);
    if (m.type() === "error" && !(outage && networkError.test(m.text()))) errors.push(`${name} console: ${m.text()}`);
  });
  page.on("pageerror", (e) => errors.push(`${name} page error: ${e.message}`));
}

/** Registers `name` through the page's login form; the page then shows KRW-BTC. */
async function user(page, name) {
  await page.goto(`${base}/#/login?then=${encodeURIComponent("#/market/KRW-BTC")}`);
  await page.locator('input[name="username"]').fill(name);
  await page.locator('input[name="password"]').fill("password123");
  await page.locator('button[name="register"]').click();
  await until(`${name}'s trading panel`, 15, async () => (await page.locator("form.order-form").count()) === 1);
  await until(`${name}'s balances`, 15, async () => (await page.locator('dd[data-asset="KRW"]').count()) === 1);
  return page;
}

/** Fills the order form and submits it. */
async function place(page, { side, price, qty }) {
  await page.locator(`.order-form button[data-side="${side}"]`).click();
  await page.locator('.order-form input[name="price"]').fill(price);
  await page.locator('.order-form input[name="qty"]').fill(qty);
  await page.locator(".order-form button.submit").click();
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
  const lastCell = page.locator('tr[data-symbol="KRW-ETH"] td.last');
  const first = await until("KRW-ETH's last price", 15, async () => {
    const t = (await lastCell.textContent()).trim();
    return t !== "–" && t;
  });
  await until("KRW-ETH's last price to change", 30, async () => (await lastCell.textContent()).trim() !== first);
  await until("the connection to show open", 10, async () => (await page.locator("#conn").textContent()) === "open");
  if (shots) await page.screenshot({ path: `${shots}/ui-markets.png` });

  step("a market's page: the chart's last candle is REST's, the tape fills");
  await page.locator('tr[data-symbol="KRW-ETH"] a').click();
  await until("the chart's canvas", 15, async () => (await page.locator("#chart canvas").count()) > 0);
  await until("the chart's last close to equal REST's", 30, async () => {
    const [before] = await rest("/api/v1/candles/KRW-ETH?interval=1m&limit=1");
    const shown = await page.locator("#chart").getAttribute("data-last-close");
    const shownAt = await page.locator("#chart").getAttribute("data-last-open-time");
    const [after] = await rest("/api/v1/candles/KRW-ETH?interval=1m&limit=1");
    return before && after && before.close === after.close && before.open_time === after.open_time && shown === after.close && shownAt === String(after.open_time);
  });
  await until("trades on the tape", 15, async () => (await page.locator("table.tape tbody tr").count()) > 0);
  step("the interval switcher loads 1s candles");
  await page.locator('button[data-interval="1s"]').click();
  await until("1s candles", 15, async () => (await page.locator("#chart").getAttribute("data-interval")) === "1s" && (await page.locator("#chart").getAttribute("data-last-close")) !== null);
  step("keyboard: the interval buttons are reachable and work with Enter");
  await page.locator('button[data-interval="5m"]').focus();
  await page.keyboard.press("Enter");
  await until("5m pressed", 10, async () => (await page.locator('button[data-interval="5m"]').getAttribute("aria-pressed")) === "true");

  step("two users register in their own browsers and trade KRW-BTC with each other");
  // (and the order form is reachable with the keyboard alone: Tab visits each control)
  const suffix = Date.now().toString(36);
  const seller = await user(page, `seller_${suffix}`);
  const buyerPage = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  watch(buyerPage, "buyer");
  const buyer = await user(buyerPage, `buyer_${suffix}`);
  await seller.locator('.order-form button[data-side="buy"]').focus();
  const visited = [];
  for (let i = 0; i < 12; i += 1) {
    visited.push(await seller.evaluate(() => {
      const a = document.activeElement;
      return a.closest("form.order-form") ? a.getAttribute("name") || a.dataset.side || a.className : null;
    }));
    await seller.keyboard.press("Tab");
  }
  for (const control of ["buy", "sell", "type", "price", "qty", "tif", "post_only", "submit buy"]) {
    if (!visited.includes(control)) throw new Error(`Tab never reaches the order form's ${control}: ${visited.join(", ")}`);
  }
  await place(seller, { side: "sell", price: "100000000", qty: "0.01" });
  await until("the seller's open order", 15, async () => (await seller.locator('table.open-orders tr[data-status="new"]').count()) === 1);
  await until("the ask in both books", 15, async () => {
    for (const p of [seller, buyer]) {
      const asks = await p.locator("table.book tr.ask").allTextContents();
      if (!asks.some((t) => t.includes("100000000") && t.includes("0.01"))) return false;
    }
    return true;
  });
  // A refusal shows the server's own words.
  await place(buyer, { side: "buy", price: "100000000", qty: "5000" });
  await until("the buyer's insufficient funds message", 15, async () => (await buyer.locator(".order-form .form-error").textContent()).includes("needs"));
  await place(buyer, { side: "buy", price: "100000000", qty: "0.01" });
  await until("the fill in both users' histories", 15, async () => {
    const a = await seller.locator('table.order-history tr[data-status="filled"]').count();
    const b = await buyer.locator('table.order-history tr[data-status="filled"]').count();
    return a === 1 && b === 1;
  });
  await until("the seller's fill notice", 15, async () => (await seller.locator(".toast").allTextContents()).some((t) => t.startsWith("Sold 0.01 KRW-BTC")));
  await until("both balances changed", 15, async () => {
    const krw = await seller.locator('dd[data-asset="KRW"]').getAttribute("data-available");
    const btc = await buyer.locator('dd[data-asset="BTC"]').getAttribute("data-available");
    return krw === "101000000" && btc === "1.01";
  });
  await until("the ask gone from the book", 15, async () => (await buyer.locator("table.book tr.ask").count()) === 0);

  step("a closed market: the order is reserved, shown as such, and can be cancelled");
  await seller.goto(`${base}/#/market/KRW-XRP`);
  await until("the closed session shown", 15, async () => (await seller.locator('p.session[data-open="false"]').count()) === 1);
  await until("the XRP order form", 15, async () => (await seller.locator("form.order-form").count()) === 1);
  await place(seller, { side: "buy", price: "1000", qty: "2" });
  const reserved = seller.locator('table.open-orders tr[data-status="reserved"]');
  await until("the reserved order", 15, async () => (await reserved.count()) === 1);
  await until("its hold", 15, async () => (await seller.locator('dd[data-asset="KRW"]').getAttribute("data-held")) === "2000");
  if ((await reserved.locator("td.status").textContent()) !== "reserved") throw new Error("the reserved order is not shown as reserved");
  await reserved.locator("button.cancel").click();
  await until("the cancelled reserved order in the history", 15, async () => (await seller.locator('table.order-history tr[data-status="cancelled"]').count()) === 1);
  await until("its hold released", 15, async () => (await seller.locator('dd[data-asset="KRW"]').getAttribute("data-held")) === "0");
  await seller.goto(`${base}/#/market/KRW-BTC`);
  await until("the seller's KRW-BTC page", 15, async () => (await seller.locator("form.order-form").count()) === 1);

  step("chat: a message from one user reaches the other, and markup stays text");
  const hostile = "<script>window.__owned = 1</script><b>bold?</b>";
  // The seller's room is live once its presence snapshot (with the buyer in it) arrived.
  await until("the buyer in the seller's presence list", 15, async () => (await seller.locator(".chat .presence li").allTextContents()).some((u) => u.startsWith("buyer_")));
  await seller.locator('.chat-form input[name="text"]').fill(hostile);
  await seller.locator(".chat-form button").click();
  // What each side shows, for a failure's message: a refused send shows its error.
  const chatState = async () => {
    const error = await seller.locator(".chat-form .form-error").textContent();
    const input = await seller.locator('.chat-form input[name="text"]').inputValue();
    const mine = await seller.locator(".chat .messages .text").allTextContents();
    const theirs = await buyer.locator(".chat .messages .text").allTextContents();
    return JSON.stringify({ error, input, seller_sees: mine.slice(-3), buyer_sees: theirs.slice(-3) });
  };
  const arrives = (where, p) =>
    until(`the message in the ${where} room`, 15, async () => (await p.locator(".chat .messages .text").allTextContents()).includes(hostile)).catch(async (e) => {
      throw new Error(`${e.message}: ${await chatState()}`);
    });
  await arrives("seller's own", seller);
  await arrives("buyer's", buyer);
  await until("the seller in the buyer's presence list", 15, async () => (await buyer.locator(".chat .presence li").allTextContents()).some((u) => u.startsWith("seller_")));
  for (const p of [seller, buyer]) {
    const owned = await p.evaluate(() => window.__owned === 1 || document.querySelector(".chat .messages script, .chat .messages b") !== null);
    if (owned) throw new Error("chat text was rendered as HTML");
  }
  if (shots) await seller.screenshot({ path: `${shots}/ui-market.png` });

  step("alerts: a rule fires, pops up, and lands in the inbox with the fill");
  await buyer.goto(`${base}/#/market/KRW-ETH`);
  await until("the alert form", 15, async () => (await buyer.locator("form.alert-form").count()) === 1);
  await buyer.locator('.alert-form select[name="condition"]').selectOption("above");
  await buyer.locator('.alert-form input[name="value"]').fill("1000");
  await buyer.locator(".alert-form button").click();
  await until("the alert to pop up", 30, async () => (await buyer.locator(".toast").allTextContents()).some((t) => t.startsWith("Alert: KRW-ETH above 1000")));
  await until("the rule shown as fired", 15, async () => (await buyer.locator('table.alert-rules tr[data-status="fired"]').count()) === 1);
  await until("an unread count", 10, async () => Number((await buyer.locator(".badge").textContent()) || 0) >= 1);
  await buyer.locator("a.inbox-link").click();
  await until("the inbox's alert and fill", 15, async () => (await buyer.locator('.inbox li[data-kind="alert"]').count()) >= 1 && (await buyer.locator('.inbox li[data-kind="fill"]').count()) >= 1);
  await until("the unread count cleared", 10, async () => ((await buyer.locator(".badge").textContent()) || "") === "");
  if (shots) await buyer.screenshot({ path: `${shots}/ui-inbox.png` });

  step("the portfolio shows the bought BTC, its total and a value chart");
  await buyer.locator('a[href="#/portfolio"]').click();
  await until("the BTC position", 15, async () => ((await buyer.locator('table.positions tr[data-symbol="KRW-BTC"] td').allTextContents())[1] || "") === "1.01");
  await until("the value chart", 15, async () => Number((await buyer.locator("#value-chart").getAttribute("data-points")) || 0) >= 1);
  if (shots) await buyer.screenshot({ path: `${shots}/ui-portfolio.png` });

  step("the rankings list both traders and the caller's place");
  await buyer.goto(`${base}/#/rankings/all`);
  await until("two ranked traders and the buyer's place", 20, async () => (await buyer.locator("table.rankings tbody tr").count()) >= 2 && (await buyer.locator(".you").textContent()).startsWith("You: #"));

  step("search and the watchlist: a starred market comes first, after a reload too");
  await buyer.goto(`${base}/#/`);
  await until("the markets", 15, async () => (await buyer.locator("table.markets tbody tr").count()) === symbols.length);
  await buyer.locator('input[name="q"]').fill("eth");
  await until("only KRW-ETH", 10, async () => {
    const visible = await buyer.locator("table.markets tbody tr:not([hidden])").evaluateAll((rows) => rows.map((r) => r.dataset.symbol));
    return visible.length === 1 && visible[0] === "KRW-ETH";
  });
  await buyer.locator('button[aria-label="watch KRW-ETH"]').click();
  await until("the star on", 10, async () => (await buyer.locator('button[aria-label="watch KRW-ETH"]').getAttribute("aria-pressed")) === "true");
  await buyer.reload();
  await until("KRW-ETH first", 15, async () => (await buyer.locator("table.markets tbody tr").first().getAttribute("data-symbol")) === "KRW-ETH");

  step("the cluster view: kill a symbol, and its stream goes on in a new epoch");
  await seller.goto(`${base}/#/cluster`);
  await seller.locator('input[name="admin-token"]').fill(process.env.BOURSE_ADMIN_TOKEN || "");
  await seller.locator('form[aria-label="admin token"] button').click();
  await until("the members", 15, async () => (await seller.locator('table.members tr[data-status="up"]').count()) === 1);
  await until("entities per node", 15, async () => (await seller.locator("table.entities tbody tr").count()) > 0);
  await seller.locator('input[name="stream-symbol"]').fill("KRW-ETH");
  await seller.locator('input[name="stream-symbol"]').dispatchEvent("change");
  await until("the stream's first event", 15, async () => (await seller.locator(".stream .seq").textContent()) !== "–");
  await seller.locator('form[aria-label="kill an entity"] select[name="kind"]').selectOption("symbol");
  await seller.locator('form[aria-label="kill an entity"] input[name="key"]').fill("KRW-ETH");
  await seller.locator('form[aria-label="kill an entity"] button').click();
  await until("the kill reported", 10, async () => (await seller.locator(".panel p.muted[role=status]").textContent()).includes("killed symbol/KRW-ETH"));
  await until("a new epoch on the stream", 30, async () => (await seller.locator(".stream .epochs").textContent()) === "1");
  const seqAfter = await seller.locator(".stream .seq").textContent();
  await until("the stream to go on", 15, async () => (await seller.locator(".stream .seq").textContent()) !== seqAfter);
  if (shots) await seller.screenshot({ path: `${shots}/ui-cluster.png` });

  step("the node is killed and restarts: the page reconnects, resumes its streams and trades again");
  const restartFile = process.env.BOURSE_RESTART_FILE;
  if (!restartFile) throw new Error("BOURSE_RESTART_FILE is not set");
  await buyer.goto(`${base}/#/market/KRW-ETH`);
  await until("the buyer's tape", 15, async () => (await buyer.locator("table.tape tbody tr").count()) > 0);
  await buyer.evaluate(() => {
    const conn = document.getElementById("conn");
    window.__states = [];
    new MutationObserver(() => window.__states.push(conn.textContent)).observe(conn, { childList: true, characterData: true, subtree: true });
  });
  outage = true;
  writeFileSync(restartFile, "restart");
  await until("the restart to be done", 60, async () => !existsSync(restartFile));
  await until("the page to reconnect", 30, async () => {
    const states = await buyer.evaluate(() => window.__states);
    return states.includes("connecting") && states.at(-1) === "open";
  });
  const restartedAt = Date.now();
  await until("a trade after the restart on the tape", 30, async () => {
    const times = await buyer.locator("table.tape tbody tr").evaluateAll((rows) => rows.map((r) => r.dataset.trade));
    const [latest] = await rest("/api/v1/trades/KRW-ETH?limit=1");
    return latest && latest.ts > restartedAt && times.includes(String(latest.trade_id));
  });
  await until("the chart's last close to equal REST's again", 30, async () => {
    const interval = await buyer.locator("#chart").getAttribute("data-interval");
    const [before] = await rest(`/api/v1/candles/KRW-ETH?interval=${interval}&limit=1`);
    const shown = await buyer.locator("#chart").getAttribute("data-last-close");
    const [after] = await rest(`/api/v1/candles/KRW-ETH?interval=${interval}&limit=1`);
    return before && after && before.close === after.close && before.open_time === after.open_time && shown === after.close;
  });
  outage = false;
  await buyer.goto(`${base}/#/market/KRW-BTC`);
  await until("the buyer's order form", 15, async () => (await buyer.locator("form.order-form").count()) === 1);
  await place(buyer, { side: "buy", price: "50000000", qty: "0.01" });
  await until("the buyer's order placed after the restart", 15, async () => {
    const said = await buyer.locator(".order-form .form-error").textContent();
    if (said) throw new Error(`the order after the restart was refused: ${said}`);
    return (await buyer.locator('table.open-orders tr[data-status="new"]').count()) === 1;
  });

  step("a 390-pixel phone: no page is wider than the screen");
  const phone = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  watch(phone, "phone");
  await user(phone, `phone_${suffix}`);
  const pages = {
    "/#/": "table.markets tbody tr",
    "/#/market/KRW-ETH": "form.order-form",
    "/#/portfolio": "table.positions tbody tr",
    "/#/rankings/all": "table.rankings tbody tr",
    "/#/notifications": "ol.inbox",
    "/#/cluster": 'form[aria-label="admin token"]',
    "/#/login": 'input[name="username"]',
  };
  for (const [path, shown] of Object.entries(pages)) {
    await phone.goto(base + path);
    await until(`${path} to render`, 15, async () => (await phone.locator(shown).count()) > 0);
    const wide = await phone.evaluate(() => document.documentElement.scrollWidth);
    if (wide > 390) throw new Error(`${path} is ${wide} px wide on a 390 px screen`);
    if (path === "/#/market/KRW-ETH") {
      await until("the phone's chart", 15, async () => (await phone.locator("#chart canvas").count()) > 0);
      if (shots) await phone.screenshot({ path: `${shots}/ui-market-phone.png` });
    }
  }

  step("built without npm: the page says how to get the chart, and the rest works");
  const bare = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  watch(bare, "no-chart");
  const standIn = readFileSync(new URL("../../web/chart-missing.mjs", import.meta.url), "utf8");
  await bare.route("**/ui/chart.mjs", (r) => r.fulfill({ status: 200, contentType: "text/javascript; charset=utf-8", body: standIn }));
  await bare.goto(`${base}/#/market/KRW-ETH`);
  await until("the missing chart's message", 15, async () => ((await bare.locator("#chart p.error").textContent().catch(() => "")) || "").includes("npm"));
  await until("the tape without the chart", 15, async () => (await bare.locator("table.tape tbody tr").count()) > 0);
} catch (e) {
  failed = true;
  console.error(`FAILED: ${e.message}`);
  if (logged.length) console.error(`the pages' console:\n${logged.filter((l) => l.includes("KRW-ETH") || !l.includes("bourse: ")).slice(-40).join("\n")}`);
} finally {
  await browser.close();
}
if (errors.length) {
  failed = true;
  console.error(`console errors:\n${errors.join("\n")}`);
}
console.log(failed ? "browser test failed" : "browser test passed");
process.exit(failed ? 1 : 0);
