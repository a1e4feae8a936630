// The user's portfolio (positions with average cost and profit and loss, cash, the total,
// live from the `portfolio` channel) with its value history as a chart, and the traders'
// rankings by return over a day, a week and all time.

import * as dec from "./decimal.js";

const pnlClass = (v) => (dec.isNegative(v) ? "num down" : dec.isZero(v) ? "num" : "num up");

/** `#/portfolio`. `ctx`: `{el, client, authed, charts, teardown}`. */
export function portfolioPage(ctx, main) {
  const { el, client, authed, charts } = ctx;
  const totals = el("p", { class: "totals", "aria-label": "total value" });
  const body = el("tbody");
  const chartBox = el("div", { class: "chart value-chart", id: "value-chart", "aria-label": "portfolio value" });
  const headers = ["Market", "Qty", "Avg cost", "Last", "Value", "Unrealised", "Realised"];
  main.replaceChildren(
    el("h1", {}, "Portfolio"),
    totals,
    el("section", { class: "panel" }, el("table", { class: "positions", "aria-label": "positions" }, el("thead", {}, el("tr", {}, ...headers.map((h, i) => el("th", { class: i ? "num" : "" }, h)))), body)),
    el("section", { class: "panel" }, el("h2", {}, "Value, last 24 hours"), chartBox),
  );
  const show = (p) => {
    const money = (o) => Object.entries(o || {}).map(([asset, v]) => `${v} ${asset}`).join(" · ");
    totals.replaceChildren(el("span", {}, "Total "), el("strong", { "data-total": JSON.stringify(p.total) }, money(p.total)), el("span", { class: "muted" }, ` (cash ${money(p.cash)})`));
    body.replaceChildren(
      ...p.positions.map((pos) =>
        el(
          "tr",
          { "data-symbol": pos.symbol },
          el("td", {}, el("a", { href: `#/market/${pos.symbol}` }, pos.symbol)),
          el("td", { class: "num" }, pos.qty),
          el("td", { class: "num" }, pos.avg_cost),
          el("td", { class: "num" }, pos.last),
          el("td", { class: "num" }, pos.value),
          el("td", { class: pnlClass(pos.unrealised_pnl) }, pos.unrealised_pnl),
          el("td", { class: pnlClass(pos.realised_pnl) }, pos.realised_pnl),
        ),
      ),
    );
  };
  authed("/api/v1/portfolio").then(show, (e) => totals.replaceChildren(el("span", { class: "error" }, e.message)));
  ctx.teardown.push(client.subscribe("portfolio", (e) => e.data && show(e.data)));

  if (charts.missing || !charts.createChart) {
    chartBox.replaceChildren(el("p", { class: "error" }, charts.missing || "The chart library is missing."));
    return;
  }
  const chart = charts.createChart(chartBox, { autoSize: true, timeScale: { timeVisible: true } });
  const line = chart.addSeries(charts.LineSeries, { color: "#1d5fd1", lineWidth: 2 });
  let disposed = false;
  ctx.teardown.push(() => {
    disposed = true;
    chart.remove();
  });
  authed("/api/v1/portfolio/history").then(
    (h) => {
      if (disposed) return;
      const points = h.points
        .map((p) => ({ time: Math.floor(p.ts / 1000), value: Number(Object.values(p.total)[0] ?? 0) }))
        .filter((p, i, all) => i === 0 || p.time > all[i - 1].time);
      line.setData(points);
      chartBox.dataset.points = String(points.length);
      chart.timeScale().fitContent();
    },
    (e) => chartBox.replaceChildren(el("p", { class: "error" }, e.message)),
  );
}

/** `#/rankings`. `ctx`: `{el, rest, authed, session}`. */
export function rankingsPage(ctx, main, period = "day") {
  const { el, rest, authed, session } = ctx;
  const periods = [["day", "Today"], ["week", "This week"], ["all", "All time"]];
  const body = el("tbody");
  const you = el("p", { class: "you" });
  const tabs = el(
    "nav",
    { class: "intervals", "aria-label": "ranking period" },
    ...periods.map(([p, t]) => el("a", { href: `#/rankings/${p}`, "aria-current": p === period ? "page" : null, class: p === period ? "current" : "" }, t)),
  );
  main.replaceChildren(el("h1", {}, "Rankings"), tabs, you, el("section", { class: "panel" }, el("table", { class: "rankings", "aria-label": "rankings" }, el("thead", {}, el("tr", {}, el("th", { class: "num" }, "Rank"), el("th", {}, "Trader"), el("th", { class: "num" }, "Return"))), body)));
  const get = session ? authed : rest;
  get(`/api/v1/rankings?period=${period}&limit=100`).then(
    (r) => {
      body.replaceChildren(
        ...r.traders.map((t) =>
          el("tr", { class: session && t.user_id === session.user_id ? "me" : "" }, el("td", { class: "num" }, String(t.rank)), el("td", {}, `trader ${t.user_id}`), el("td", { class: pnlClass(t.return_pct) }, `${t.return_pct}%`)),
        ),
      );
      you.textContent = r.you ? `You: #${r.you.rank} of ${r.ranked}, ${r.you.return_pct}% (${r.currency})` : `${r.ranked} traders ranked (${r.currency})`;
    },
    (e) => you.replaceChildren(el("span", { class: "error" }, e.message)),
  );
}
