// The bourse browser UI: a markets list and a page per market (chart, order book, trades,
// 24h ticker), everything from the public protocol (REST for history, WebSocket streams
// through bourse.js for the live part). Text from the server is always set as text.

import { Bourse, pageGateway } from "./bourse.js";
import * as dec from "./decimal.js";
import * as charts from "./chart.mjs";
import { tradingPanel } from "./trading.js";
import { chatPanel } from "./chat.js";
import { alertsPanel, describeAlert, notificationsPage } from "./alerts.js";
import { portfolioPage, rankingsPage } from "./portfolio.js";
import { clusterPage } from "./cluster.js";

const INTERVALS = ["1s", "1m", "3m", "5m", "15m", "30m", "1h", "4h", "1d", "1w"];
const BOOK_LEVELS = 15;
const TAPE_LENGTH = 40;

const main = document.getElementById("main");
const connState = document.getElementById("conn");
const who = document.getElementById("who");
const toasts = document.getElementById("toasts");

/** The logged-in user (`{username, user_id, token}`), kept across reloads. */
let session = readSession();
let client = connect();

function readSession() {
  try {
    return JSON.parse(localStorage.getItem("bourse.session")) || null;
  } catch {
    return null;
  }
}

/** A connection as the current user (or anonymous). */
function connect() {
  return new Bourse({
    urls: [pageGateway()],
    token: session?.token,
    onUnauthorized: () => {
      setSession(null);
      route();
    },
    onState: (s) => {
      connState.textContent = s;
      connState.dataset.state = s;
    },
  });
}

function setSession(next) {
  session = next;
  if (next) localStorage.setItem("bourse.session", JSON.stringify(next));
  else localStorage.removeItem("bourse.session");
  leavePage();
  client.close();
  client = connect();
  renderWho();
  watchInbox();
}

// ---- The user's inbox: fired alerts pop up anywhere; a count of what is unread ----------

const inboxCount = el("span", { class: "badge", "aria-label": "unread notifications" }, "");
let unread = 0;
const seenKey = () => `bourse.inboxSeen.${session?.user_id}`;

function setUnread(n) {
  unread = n;
  inboxCount.textContent = n ? String(n) : "";
}

/** Counts what arrived since the inbox was last opened, and listens for more. */
function watchInbox() {
  setUnread(0);
  if (!session) return;
  const since = Number(localStorage.getItem(seenKey()) || 0);
  authed(`/api/v1/notifications?since=${since}&limit=500`).then((n) => setUnread(unread + n.length), () => {});
  client.subscribe("alerts", (e) => {
    if (!e.data) return;
    toast(`Alert: ${describeAlert(e.data)}`);
    setUnread(unread + 1);
  });
  client.subscribe("orders", (e) => {
    if (e.data && (e.data.status === "filled" || e.data.status === "partially_filled")) setUnread(unread + 1);
  });
}

function renderWho() {
  if (session) {
    who.replaceChildren(
      el("a", { href: "#/portfolio" }, "Portfolio"),
      el("a", { href: "#/notifications", class: "inbox-link" }, "Inbox ", inboxCount),
      el("span", { class: "user" }, session.username),
      el("button", { type: "button", class: "link", onclick: () => { setSession(null); route(); } }, "Log out"),
    );
  } else {
    who.replaceChildren(el("a", { href: "#/login" }, "Log in"));
  }
}

/** A short notice that goes away by itself (fills, placed orders). */
function toast(text) {
  const t = el("div", { class: "toast" }, text);
  toasts.append(t);
  setTimeout(() => t.remove(), 6000);
}

/** Elements: `el("td", {class: "x"}, "text", child)`; strings become text nodes. */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

async function rest(path, init = {}) {
  const headers = { accept: "application/json", ...(init.headers || {}) };
  const r = await fetch(path, { ...init, headers });
  const body = await r.json().catch(() => null);
  if (!r.ok) {
    const e = new Error(body?.error?.message || `${r.status} ${r.statusText}`);
    e.status = r.status;
    throw e;
  }
  return body;
}

/** REST as the logged-in user; an expired login logs out. */
async function authed(path, init = {}) {
  try {
    return await rest(path, { ...init, headers: { authorization: `Bearer ${session?.token}` } });
  } catch (e) {
    if (e.status === 401 && session) {
      setSession(null);
      route();
    }
    throw e;
  }
}

function showError(where, e) {
  where.replaceChildren(el("p", { class: "error", role: "alert" }, e.message || String(e)));
}

/** What the current page holds open: stream subscriptions, a chart. */
let teardown = [];
/** Bumped by every route: a page that awaited something checks it is still the one shown. */
let pageId = 0;
function leavePage() {
  for (const f of teardown.splice(0)) {
    try {
      f();
    } catch (e) {
      console.warn("leaving a page", e);
    }
  }
}

/**
 * Calls `show(ticker)` with the symbol's ticker now (REST) and at each change (`ticker:S`)
 * while the page lasts, never with one older than it showed (a REST answer may be cached
 * up to a second).
 */
function watchTicker(symbol, show) {
  let newest = 0;
  const take = (t) => {
    if (t.ts < newest) return;
    newest = t.ts;
    show(t);
  };
  rest(`/api/v1/ticker/${symbol}`).then(take, () => {});
  teardown.push(client.subscribe(`ticker:${symbol}`, (e) => e.data && take(e.data)));
}

function changeCell(td, ticker) {
  const pct = dec.percent(ticker.change_24h, ticker.open_24h);
  td.textContent = pct === null ? "–" : `${dec.isNegative(ticker.change_24h) ? "" : "+"}${pct}%`;
  td.className = `num ${dec.isNegative(ticker.change_24h) ? "down" : dec.isZero(ticker.change_24h) ? "" : "up"}`;
}

// ---- Markets list -------------------------------------------------------------------

async function marketsPage() {
  const id = pageId;
  main.replaceChildren(el("h1", {}, "Markets"), el("p", { class: "muted" }, "Loading…"));
  let symbols;
  try {
    symbols = await rest("/api/v1/symbols");
  } catch (e) {
    return id === pageId && showError(main, e);
  }
  if (id !== pageId) return;
  let watched = [];
  if (session) {
    try {
      watched = (await authed("/api/v1/watchlist")).symbols;
    } catch {
      watched = [];
    }
    if (id !== pageId) return;
  }
  // The watchlist first, in its order, then every other market.
  const rank = (s) => (watched.includes(s) ? watched.indexOf(s) : watched.length);
  symbols.sort((a, b) => rank(a.symbol) - rank(b.symbol));
  const search = el("input", { type: "search", name: "q", placeholder: "Search markets", "aria-label": "search markets", autocomplete: "off" });
  let searching = 0;
  search.addEventListener("input", () => {
    const mine = ++searching;
    setTimeout(async () => {
      if (mine !== searching) return;
      const q = search.value.trim();
      let found = null;
      try {
        found = q ? new Set((await rest(`/api/v1/symbols?q=${encodeURIComponent(q)}`)).map((m) => m.symbol)) : null;
      } catch {
        return;
      }
      if (mine !== searching) return;
      for (const row of tbody.children) row.hidden = found !== null && !found.has(row.dataset.symbol);
    }, 150);
  });
  const star = (symbol) => {
    const on = watched.includes(symbol);
    const b = el("button", { type: "button", class: "star", "aria-pressed": String(on), "aria-label": `watch ${symbol}` }, on ? "★" : "☆");
    b.addEventListener("click", async () => {
      const next = watched.includes(symbol) ? watched.filter((s) => s !== symbol) : [...watched, symbol];
      try {
        watched = (await client.request("watchlist.set", { symbols: next })).symbols;
        const now = watched.includes(symbol);
        b.textContent = now ? "★" : "☆";
        b.setAttribute("aria-pressed", String(now));
      } catch (e) {
        toast(e.message);
      }
    });
    return b;
  };
  const tbody = el("tbody");
  const table = el(
    "table",
    { class: "markets", "aria-label": "markets" },
    el("thead", {}, el("tr", {}, el("th", {}, "Market"), el("th", { class: "num" }, "Last"), el("th", { class: "num" }, "24h"), el("th", { class: "num" }, "Volume 24h"), el("th", {}, "Session"))),
    tbody,
  );
  main.replaceChildren(el("div", { class: "title-row" }, el("h1", {}, "Markets"), search), table);
  for (const m of symbols) {
    const last = el("td", { class: "num last" }, "–");
    const change = el("td", { class: "num" }, "–");
    const volume = el("td", { class: "num" }, "–");
    const session = m.session.hours === null ? "24/7" : m.session.open ? "open" : "closed";
    const row = el(
      "tr",
      { "data-symbol": m.symbol },
      el("td", {}, session ? star(m.symbol) : "", " ", el("a", { href: `#/market/${m.symbol}` }, m.symbol)),
      last,
      change,
      volume,
      el("td", {}, session),
    );
    tbody.append(row);
    watchTicker(m.symbol, (t) => {
      last.textContent = t.last;
      changeCell(change, t);
      volume.textContent = t.volume_24h;
    });
  }
}

// ---- One market ------------------------------------------------------------------------

/** The chart's price format for a market whose prices step by `tick` (a decimal string). */
function priceFormat(tick) {
  const places = tick.includes(".") ? tick.split(".")[1].length : 0;
  return { type: "price", precision: places, minMove: Number(tick) };
}

function chartPanel(symbol, tick) {
  const box = el("div", { class: "chart", id: "chart", "aria-label": `${symbol} chart` });
  const buttons = INTERVALS.map((i) => el("button", { type: "button", "data-interval": i, "aria-pressed": "false" }, i));
  const bar = el("div", { class: "intervals", role: "group", "aria-label": "interval" }, ...buttons);
  const panel = el("section", { class: "panel chart-panel" }, bar, box);
  if (charts.missing || !charts.createChart) {
    box.replaceChildren(el("p", { class: "error" }, charts.missing || "The chart library is missing."));
    return { panel, start() {} };
  }
  const chart = charts.createChart(box, {
    autoSize: true,
    layout: { background: { color: "#ffffff" }, textColor: "#1f2933" },
    timeScale: { timeVisible: true, secondsVisible: true },
    rightPriceScale: { scaleMargins: { top: 0.05, bottom: 0.25 } },
  });
  const candles = chart.addSeries(charts.CandlestickSeries, {
    priceFormat: priceFormat(tick),
    upColor: "#0a8f5a", downColor: "#d6363f", borderVisible: false, wickUpColor: "#0a8f5a", wickDownColor: "#d6363f",
  });
  const volume = chart.addSeries(charts.HistogramSeries, { priceFormat: { type: "volume" }, priceScaleId: "volume" });
  chart.priceScale("volume").applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
  let stop = null;
  let loading = 0;
  let disposed = false;
  teardown.push(() => {
    disposed = true;
    if (stop) stop();
    chart.remove();
  });
  const toBar = (c) => ({ time: Math.floor(c.open_time / 1000), open: Number(c.open), high: Number(c.high), low: Number(c.low), close: Number(c.close) });
  const toVolume = (c) => ({ time: Math.floor(c.open_time / 1000), value: Number(c.volume), color: dec.compare(c.close, c.open) < 0 ? "#f3b5b9" : "#a7dcc4" });
  const mark = (c) => {
    box.dataset.lastClose = c.close;
    box.dataset.lastOpenTime = String(c.open_time);
  };
  async function start(interval) {
    const mine = ++loading;
    if (stop) stop();
    stop = null;
    for (const b of buttons) b.setAttribute("aria-pressed", String(b.dataset.interval === interval));
    box.dataset.interval = interval;
    delete box.dataset.lastClose;
    let history;
    try {
      history = await rest(`/api/v1/candles/${symbol}?interval=${interval}&limit=500`);
    } catch (e) {
      return console.warn(`candles of ${symbol}: ${e.message}`);
    }
    if (disposed || mine !== loading) return;
    candles.setData(history.map(toBar));
    volume.setData(history.map(toVolume));
    if (history.length) mark(history[history.length - 1]);
    let newest = history.length ? history[history.length - 1].open_time : 0;
    stop = client.subscribe(`candles:${symbol}:${interval}`, (e) => {
      if (disposed) return;
      // Missed updates cannot be replayed: load the history again.
      if (e.reset) return start(interval);
      if (!e.data || e.data.open_time < newest) return;
      newest = e.data.open_time;
      candles.update(toBar(e.data));
      volume.update(toVolume(e.data));
      mark(e.data);
    });
  }
  bar.addEventListener("click", (e) => {
    const i = e.target?.dataset?.interval;
    if (i) start(i);
  });
  return { panel, start };
}

function bookPanel(symbol) {
  const bids = new Map();
  const asks = new Map();
  const asksBody = el("tbody");
  const bidsBody = el("tbody");
  const spread = el("td", { colspan: "2", class: "spread" }, "");
  const table = el(
    "table",
    { class: "book", "aria-label": "order book" },
    el("thead", {}, el("tr", {}, el("th", { class: "num" }, "Price"), el("th", { class: "num" }, "Qty"))),
    asksBody,
    el("tbody", {}, el("tr", {}, spread)),
    bidsBody,
  );
  const render = () => {
    const sorted = (m, dir) => [...m.entries()].sort((a, b) => dir * dec.compare(a[0], b[0])).slice(0, BOOK_LEVELS);
    const topAsks = sorted(asks, 1);
    const topBids = sorted(bids, -1);
    const widest = [...topAsks, ...topBids].reduce((w, [, q]) => (dec.compare(q, w) > 0 ? q : w), "0");
    const row = (side, [price, qty]) => {
      const pct = dec.isZero(widest) ? "0" : dec.percent(qty, widest);
      const bar = el("div", { class: `depth ${side}` });
      bar.style.width = `${Math.min(100, Math.max(0, Number(pct)))}%`;
      return el("tr", { class: side }, el("td", { class: "num price" }, bar, price), el("td", { class: "num" }, qty));
    };
    asksBody.replaceChildren(...topAsks.reverse().map((l) => row("ask", l)));
    bidsBody.replaceChildren(...topBids.map((l) => row("bid", l)));
    spread.textContent = topAsks.length && topBids.length ? `spread ${dec.sum([topAsks[topAsks.length - 1][0], `-${topBids[0][0]}`])}` : "";
  };
  const apply = (levels, side) => {
    for (const [price, qty] of levels) {
      if (dec.isZero(qty)) side.delete(price);
      else side.set(price, qty);
    }
  };
  teardown.push(
    client.subscribe(`book:${symbol}`, (e) => {
      if (e.reset) {
        bids.clear();
        asks.clear();
        return render();
      }
      if (e.data.type === "snapshot") {
        bids.clear();
        asks.clear();
      }
      apply(e.data.bids || [], bids);
      apply(e.data.asks || [], asks);
      render();
    }),
  );
  return el("section", { class: "panel" }, el("h2", {}, "Order book"), table);
}

function tapePanel(symbol) {
  const body = el("tbody");
  const shown = new Set();
  const add = (t, atEnd) => {
    if (shown.has(t.trade_id)) return;
    shown.add(t.trade_id);
    const time = new Date(t.ts).toISOString().slice(11, 19);
    const row = el("tr", { class: t.side === "buy" ? "up" : "down", "data-trade": t.trade_id }, el("td", { class: "num" }, t.price), el("td", { class: "num" }, t.qty), el("td", { class: "num muted" }, time));
    if (atEnd) body.append(row);
    else body.prepend(row);
    while (body.children.length > TAPE_LENGTH) {
      shown.delete(body.lastChild.dataset.trade);
      body.lastChild.remove();
    }
  };
  // Each load's number: an answer that arrives after a newer reset is dropped.
  let loads = 0;
  const load = () => {
    const mine = ++loads;
    rest(`/api/v1/trades/${symbol}?limit=${TAPE_LENGTH}`).then((ts) => mine === loads && ts.forEach((t) => add(t, true)), () => {});
  };
  load();
  teardown.push(
    client.subscribe(`trades:${symbol}`, (e) => {
      if (e.reset) {
        // What was missed cannot be replayed: start the tape again from REST.
        body.replaceChildren();
        shown.clear();
        return load();
      }
      if (e.data) add(e.data, false);
    }),
  );
  return el(
    "section",
    { class: "panel" },
    el("h2", {}, "Trades"),
    el("table", { class: "tape", "aria-label": "trades" }, el("thead", {}, el("tr", {}, el("th", { class: "num" }, "Price"), el("th", { class: "num" }, "Qty"), el("th", { class: "num" }, "Time"))), body),
  );
}

function tickerBar(symbol) {
  const last = el("strong", { class: "last" }, "–");
  const change = el("span", { class: "num" }, "–");
  const high = el("span", {}, "–");
  const low = el("span", {}, "–");
  const volume = el("span", {}, "–");
  watchTicker(symbol, (t) => {
    last.textContent = t.last;
    changeCell(change, t);
    high.textContent = t.high_24h;
    low.textContent = t.low_24h;
    volume.textContent = t.volume_24h;
  });
  const item = (label, value) => el("span", { class: "stat" }, el("span", { class: "muted" }, label), " ", value);
  return el("div", { class: "ticker", "aria-label": "24h ticker" }, el("h1", {}, symbol), last, change, item("24h high", high), item("24h low", low), item("24h volume", volume));
}

async function marketPage(symbol) {
  const id = pageId;
  let market;
  try {
    const found = await rest(`/api/v1/symbols?q=${encodeURIComponent(symbol)}`);
    market = found.find((m) => m.symbol === symbol);
    if (!market) throw new Error(`no market ${symbol}`);
  } catch (e) {
    return id === pageId && showError(main, e);
  }
  if (id !== pageId) return;
  const chart = chartPanel(symbol, market.tick_size);
  const ctx = { el, client, rest, authed, toast, teardown, session };
  const trade = session
    ? el("div", { class: "stack" }, tradingPanel(ctx, market), alertsPanel(ctx, market))
    : el("section", { class: "panel trade" }, el("h2", {}, "Trade"), el("p", {}, el("a", { href: `#/login?then=${encodeURIComponent(location.hash)}` }, "Log in"), " to trade."));
  const hours = market.session.hours === null ? null : market.session.open ? "open" : "closed: orders are reserved for the next open";
  main.replaceChildren(
    tickerBar(symbol),
    hours ? el("p", { class: "session", "data-open": String(market.session.open) }, `Market hours ${market.session.hours}: ${hours}`) : "",
    el("div", { class: "market" }, el("div", { class: "left" }, chart.panel, trade), el("div", { class: "side" }, bookPanel(symbol), tapePanel(symbol), chatPanel(ctx, symbol))),
  );
  chart.start("1m");
}

// ---- Logging in -------------------------------------------------------------------------

function loginPage(then) {
  const username = el("input", { name: "username", autocomplete: "username", required: true, "aria-label": "username" });
  const password = el("input", { name: "password", type: "password", autocomplete: "current-password", required: true, "aria-label": "password" });
  const error = el("p", { class: "error form-error", role: "alert" });
  const go = async (kind) => {
    error.textContent = "";
    try {
      const body = JSON.stringify({ username: username.value.trim(), password: password.value });
      const r = await rest(`/api/v1/auth/${kind}`, { method: "POST", body, headers: { "content-type": "application/json" } });
      setSession({ username: username.value.trim(), user_id: r.user_id, token: r.token });
      const target = then || "#/";
      if (location.hash === target) route();
      else location.hash = target;
    } catch (e) {
      error.textContent = e.message;
    }
  };
  const form = el(
    "form",
    { class: "login panel", "aria-label": "log in or register" },
    el("label", {}, "Username ", username),
    el("label", {}, "Password ", password),
    el("div", { class: "buttons" }, el("button", { type: "submit", name: "login" }, "Log in"), el("button", { type: "button", name: "register", onclick: () => go("register") }, "Register")),
    error,
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    go("login");
  });
  main.replaceChildren(el("h1", {}, "Log in or register"), el("p", { class: "muted" }, "A new user gets demo balances to trade with."), form);
  username.focus();
}

async function inboxPage() {
  const id = pageId;
  const newest = await notificationsPage({ el, authed }, main);
  if (id !== pageId) return;
  if (newest !== null) localStorage.setItem(seenKey(), String(newest));
  setUnread(0);
}

// ---- Routing -------------------------------------------------------------------------

function safeDecode(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return null;
  }
}

function route() {
  leavePage();
  pageId += 1;
  const hash = location.hash || "#/";
  const market = hash.match(/^#\/market\/([A-Z0-9]{1,12}-[A-Z0-9]{1,12})$/);
  const login = hash.match(/^#\/login(?:\?then=(.*))?$/);
  const ranking = hash.match(/^#\/rankings(?:\/(day|week|all))?$/);
  if (hash === "#/notifications" && session) inboxPage();
  else if (hash === "#/cluster") clusterPage({ el, client, rest, teardown }, main);
  else if (hash === "#/portfolio" && session) portfolioPage({ el, client, authed, charts, teardown }, main);
  else if (ranking) rankingsPage({ el, rest, authed, session }, main, ranking[1] || "day");
  else if (market) marketPage(market[1]);
  else if (login) loginPage(login[1] ? safeDecode(login[1]) : null);
  else marketsPage();
  main.focus({ preventScroll: true });
}

window.addEventListener("hashchange", route);
renderWho();
watchInbox();
route();
