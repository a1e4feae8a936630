// Price alerts on a market's page (create above / below / change %, list, delete), and the
// notifications inbox: fired alerts and fills, including what arrived while the user was
// away. Fired alerts also pop up live wherever the user is (app.js listens on `alerts`).

const CONDITIONS = [
  ["above", "Price at or above"],
  ["below", "Price at or below"],
  ["change_pct", "24h change % (signed)"],
];

/** What an `alerts` event or inbox entry says, in a line. */
export function describeAlert(a) {
  const what = a.condition === "change_pct" ? `changed ${a.value}% from ${a.price}` : `${a.condition} ${a.price}`;
  return `${a.symbol} ${what}: traded at ${a.fired_price}`;
}

/**
 * @param {object} ctx `{el, client, authed, teardown}` from app.js
 * @param {object} market the market as `GET /api/v1/symbols` lists it
 */
export function alertsPanel(ctx, market) {
  const { el, client, authed } = ctx;
  const symbol = market.symbol;
  const condition = el("select", { name: "condition", "aria-label": "alert condition" }, ...CONDITIONS.map(([v, t]) => el("option", { value: v }, t)));
  const value = el("input", { name: "value", inputmode: "decimal", autocomplete: "off", "aria-label": "alert value", placeholder: `price (${market.quote}) or %` });
  const repeat = el("input", { type: "checkbox", name: "repeat" });
  const error = el("p", { class: "error form-error", role: "alert" });
  const form = el("form", { class: "alert-form", "aria-label": "create an alert" }, condition, value, el("label", { class: "check" }, repeat, " repeat"), el("button", { type: "submit" }, "Create alert"), error);
  const body = el("tbody");

  const row = (a) =>
    el(
      "tr",
      { "data-alert": a.alert_id, "data-status": a.status },
      el("td", {}, CONDITIONS.find(([v]) => v === a.condition)?.[1] || a.condition),
      el("td", { class: "num" }, a.value),
      el("td", {}, a.repeat ? "repeat" : "once"),
      el("td", {}, a.status),
      el("td", {}, el("button", { type: "button", class: "cancel", "aria-label": `delete alert ${a.alert_id}`, onclick: () => remove(a.alert_id) }, "Delete")),
    );
  async function refresh() {
    try {
      const rules = await authed("/api/v1/alerts");
      body.replaceChildren(...rules.filter((a) => a.symbol === symbol).reverse().map(row));
    } catch (e) {
      error.textContent = e.message;
    }
  }
  async function remove(id) {
    error.textContent = "";
    try {
      await client.request("alert.delete", { alert_id: id });
    } catch (e) {
      error.textContent = e.message;
    }
    refresh();
  }
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.textContent = "";
    try {
      await client.request("alert.create", { symbol, condition: condition.value, value: value.value.trim(), repeat: repeat.checked });
      value.value = "";
      refresh();
    } catch (err) {
      error.textContent = err.message;
    }
  });
  refresh();
  // A firing changes a rule's status.
  ctx.teardown.push(client.subscribe("alerts", (e) => e.data?.symbol === symbol && refresh()));
  return el(
    "section",
    { class: "panel alerts" },
    el("h2", {}, "Alerts"),
    form,
    el(
      "table",
      { class: "alert-rules", "aria-label": "alerts" },
      el("thead", {}, el("tr", {}, ...["Condition", "Value", "", "Status", ""].map((h) => el("th", {}, h)))),
      body,
    ),
  );
}

/** `#/notifications`: the inbox, newest first. */
export async function notificationsPage(ctx, main) {
  const { el, authed } = ctx;
  const list = el("ol", { class: "inbox", "aria-label": "notifications" });
  main.replaceChildren(el("h1", {}, "Notifications"), list);
  try {
    // Oldest first from the server, a page at a time; the newest 500 are plenty here.
    let since = 0;
    const all = [];
    for (let i = 0; i < 5; i++) {
      const page = await authed(`/api/v1/notifications?since=${since}&limit=100`);
      all.push(...page);
      if (page.length < 100) break;
      since = page[page.length - 1].ts;
    }
    const entries = all.slice(-500).reverse();
    list.replaceChildren(
      ...entries.map((n) => {
        const text = n.kind === "alert" ? describeAlert(n.data) : `${n.data.side === "buy" ? "Bought" : "Sold"} ${n.data.filled_qty} of ${n.data.qty} ${n.data.symbol} at ${n.data.avg_price} (${n.data.status.replace("_", " ")})`;
        return el("li", { "data-kind": n.kind }, el("time", { class: "muted", datetime: new Date(n.ts).toISOString() }, new Date(n.ts).toISOString().replace("T", " ").slice(0, 19)), " ", el("strong", {}, n.kind), " ", text);
      }),
    );
    if (!entries.length) list.replaceChildren(el("li", { class: "muted" }, "Nothing yet: fills and fired alerts arrive here, also while you are away."));
    return entries.length ? entries[0].ts : null;
  } catch (e) {
    list.replaceChildren(el("li", { class: "error" }, e.message));
    return null;
  }
}
