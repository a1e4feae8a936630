// The trading panel of a market page: order entry, balances, open orders with cancel, the
// order history, and fills arriving live on the user's `orders` channel. Orders go through
// the WebSocket (`order.place`, `order.cancel`); a refusal shows the server's own words.
// Each order carries a `client_order_id`, kept while a retry of the same order may follow
// an `unavailable` answer, so a retry never places a second order.

import * as dec from "./decimal.js";

const HISTORY = 20;

/** A fresh `client_order_id`: 32 random hex digits (works outside secure contexts too). */
function newClientId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

function isOpen(o) {
  return o.status === "new" || o.status === "partially_filled" || o.status === "reserved";
}

/** Whether `a` is a later state of an order than `b` (states only move forward). */
function later(a, b) {
  if (a.updated_at !== b.updated_at) return a.updated_at > b.updated_at;
  const filled = dec.compare(a.filled_qty, b.filled_qty);
  if (filled !== 0) return filled > 0;
  return !isOpen(a) && isOpen(b);
}

/**
 * @param {object} ctx `{el, client, authed, toast, teardown}` from app.js
 * @param {object} market the market as `GET /api/v1/symbols` lists it
 */
export function tradingPanel(ctx, market) {
  const { el, client, authed, toast } = ctx;
  const symbol = market.symbol;
  let side = "buy";

  const sideButtons = ["buy", "sell"].map((s) =>
    el("button", { type: "button", class: `side ${s}`, "data-side": s, "aria-pressed": String(s === side) }, s === "buy" ? "Buy" : "Sell"),
  );
  const type = el("select", { name: "type", "aria-label": "order type" }, el("option", { value: "limit" }, "Limit"), el("option", { value: "market" }, "Market"));
  const price = el("input", { name: "price", inputmode: "decimal", autocomplete: "off", "aria-label": `price (${market.quote})`, placeholder: `price (${market.quote})` });
  const qty = el("input", { name: "qty", inputmode: "decimal", autocomplete: "off", "aria-label": `quantity (${market.base})`, placeholder: `qty (${market.base})` });
  const tif = el(
    "select",
    { name: "tif", "aria-label": "time in force" },
    ...[["gtc", "GTC", "good till cancelled"], ["day", "Day", "until the market's close"], ["ioc", "IOC", "immediate or cancel"], ["fok", "FOK", "fill or kill"]].map(([v, t, title]) => el("option", { value: v, title }, t)),
  );
  const postOnly = el("input", { type: "checkbox", name: "post_only", id: "post-only" });
  const submit = el("button", { type: "submit", class: "submit buy" }, `Buy ${market.base}`);
  const error = el("p", { class: "error form-error", role: "alert" });
  const form = el(
    "form",
    { class: "order-form", "aria-label": "place an order" },
    el("div", { class: "sides", role: "group", "aria-label": "side" }, ...sideButtons),
    type,
    price,
    qty,
    tif,
    el("label", { class: "check" }, postOnly, " post only"),
    submit,
    error,
  );
  const balances = el("dl", { class: "balances", "aria-label": "balances" });
  const openBody = el("tbody");
  const doneBody = el("tbody");

  const setSide = (s) => {
    side = s;
    for (const b of sideButtons) b.setAttribute("aria-pressed", String(b.dataset.side === s));
    submit.textContent = `${s === "buy" ? "Buy" : "Sell"} ${market.base}`;
    submit.className = `submit ${s}`;
  };
  for (const b of sideButtons) b.addEventListener("click", () => setSide(b.dataset.side));
  type.addEventListener("change", () => {
    price.disabled = type.value === "market";
    if (price.disabled) price.value = "";
  });

  // The id of an order whose outcome is unknown (`unavailable`), for the same order's retry.
  let retry = null;
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.textContent = "";
    const order = { symbol, side, type: type.value, qty: qty.value.trim(), tif: tif.value, post_only: postOnly.checked };
    if (type.value === "limit") order.price = price.value.trim();
    const key = JSON.stringify(order);
    if (!retry || retry.key !== key) retry = { key, id: newClientId() };
    order.client_order_id = retry.id;
    submit.disabled = true;
    try {
      const placed = await client.request("order.place", order);
      retry = null;
      upsert(placed);
      toast(`${placed.side} ${placed.qty} ${symbol}: ${placed.status}`);
      refreshBalances();
    } catch (err) {
      if (err.code !== "unavailable") retry = null;
      error.textContent = err.message;
    } finally {
      submit.disabled = false;
    }
  });

  // Orders by id, newest first in each table.
  const orders = new Map();
  const cancelling = new Set();
  const row = (o) => {
    const cancel = isOpen(o)
      ? el("button", { type: "button", class: "cancel", disabled: cancelling.has(o.order_id), "aria-label": `cancel order ${o.order_id}`, onclick: () => cancelOrder(o.order_id) }, "Cancel")
      : "";
    return el(
      "tr",
      { "data-order": o.order_id, "data-status": o.status },
      el("td", { class: o.side === "buy" ? "up" : "down" }, o.side),
      el("td", { class: "num" }, o.price ?? "market"),
      el("td", { class: "num" }, o.qty),
      el("td", { class: "num" }, o.filled_qty),
      el("td", { class: "num" }, o.avg_price),
      el("td", { class: "status", title: o.status === "reserved" ? "the market is closed: this order meets the book at its next open" : null }, o.status.replace("_", " ")),
      el("td", {}, cancel),
    );
  };
  const render = () => {
    const mine = [...orders.values()].filter((o) => o.symbol === symbol).sort((a, b) => b.created_at - a.created_at || (b.order_id > a.order_id ? 1 : -1));
    openBody.replaceChildren(...mine.filter(isOpen).map(row));
    doneBody.replaceChildren(...mine.filter((o) => !isOpen(o)).slice(0, HISTORY).map(row));
  };
  const upsert = (o) => {
    const had = orders.get(o.order_id);
    if (had && !later(o, had)) return;
    orders.set(o.order_id, o);
    render();
  };
  async function cancelOrder(id) {
    error.textContent = "";
    cancelling.add(id);
    render();
    try {
      upsert(await client.request("order.cancel", { order_id: id }));
      refreshBalances();
    } catch (err) {
      error.textContent = err.message;
    } finally {
      cancelling.delete(id);
      render();
    }
  }

  let balanceTimer = null;
  let balanceAsk = 0;
  async function refreshBalances() {
    clearTimeout(balanceTimer);
    balanceTimer = setTimeout(async () => {
      const mine = ++balanceAsk;
      try {
        const account = await authed("/api/v1/account");
        if (mine !== balanceAsk) return; // a newer answer is on its way
        balances.replaceChildren(
          ...[market.quote, market.base].flatMap((asset) => {
            const b = account.balances[asset] || { available: "0", held: "0" };
            return [el("dt", {}, asset), el("dd", { "data-asset": asset, "data-available": b.available, "data-held": b.held }, `${b.available} available · ${b.held} held`)];
          }),
        );
      } catch (err) {
        balances.replaceChildren(el("dd", { class: "error" }, err.message));
      }
    }, 150);
  }

  // The orders from REST: at the start, and when the orders channel starts afresh (what
  // was missed cannot be replayed).
  const loadOrders = () => {
    refreshBalances();
    Promise.all([
      authed(`/api/v1/orders?symbol=${symbol}&status=open&limit=100`),
      authed(`/api/v1/orders?symbol=${symbol}&status=done&limit=${HISTORY}`),
    ]).then(
      ([open, done]) => [...open, ...done].forEach(upsert),
      (err) => (error.textContent = err.message),
    );
  };
  loadOrders();
  ctx.teardown.push(
    client.subscribe("orders", (e) => {
      if (e.reset) return loadOrders();
      if (!e.data) return;
      const o = e.data;
      const before = orders.get(o.order_id);
      upsert(o);
      // Any market's fill can move this one's quote or base balance.
      refreshBalances();
      if ((o.status === "filled" || o.status === "partially_filled") && before?.filled_qty !== o.filled_qty) {
        toast(`${o.side === "buy" ? "Bought" : "Sold"} ${o.filled_qty} ${o.symbol} at ${o.avg_price} (${o.status.replace("_", " ")})`);
      }
    }),
  );
  ctx.teardown.push(() => clearTimeout(balanceTimer));

  const head = (...names) => el("thead", {}, el("tr", {}, ...names.map((n) => el("th", {}, n))));
  const cols = ["Side", "Price", "Qty", "Filled", "Avg", "Status", ""];
  return el(
    "section",
    { class: "panel trade" },
    el("h2", {}, "Trade"),
    form,
    balances,
    el("h3", {}, "Open orders"),
    el("table", { class: "orders open-orders", "aria-label": "open orders" }, head(...cols), openBody),
    el("h3", {}, "Order history"),
    el("table", { class: "orders order-history", "aria-label": "order history" }, head(...cols), doneBody),
  );
}
