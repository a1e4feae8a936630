// The cluster view for operators (`#/cluster`, the admin token): members with their status
// and ring share, the entities on each node, and chaos buttons (kill an entity, kill a
// fraction of a kind) beside a live stream whose epoch visibly changes and continues.

const KINDS = ["symbol", "book", "account", "room", "session", "alert", "rankings"];
const TOKEN_KEY = "bourse.adminToken";

/** `ctx`: `{el, client, rest, teardown}`. */
export function clusterPage(ctx, main) {
  const { el } = ctx;
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return askToken(ctx, main);
  /** An admin request with the token; a refused token is forgotten. */
  const admin = async (path, body) => {
    const init = { headers: { authorization: `Bearer ${token}` } };
    if (body !== undefined) {
      init.method = "POST";
      init.body = JSON.stringify(body);
      init.headers["content-type"] = "application/json";
    }
    try {
      return await ctx.rest(path, init);
    } catch (e) {
      if (e.status === 403) sessionStorage.removeItem(TOKEN_KEY);
      throw e;
    }
  };

  const members = el("tbody");
  const entities = el("tbody");
  const error = el("p", { class: "error", role: "alert" });
  const notice = el("p", { class: "muted", role: "status" });
  const live = streamPanel(ctx);

  const killKind = el("select", { name: "kind", "aria-label": "entity kind" }, ...KINDS.map((k) => el("option", { value: k }, k)));
  const killKey = el("input", { name: "key", value: "KRW-BTC", "aria-label": "entity key", autocomplete: "off" });
  const fraction = el("input", { name: "fraction", value: "0.5", inputmode: "decimal", "aria-label": "fraction to kill", size: "4" });
  const node = el("select", { name: "node", "aria-label": "node" });
  const chaos = async (body) => {
    error.textContent = "";
    try {
      const r = await admin("/admin/chaos/kill", body);
      notice.textContent = r.killed && !Array.isArray(r.killed) ? `killed ${r.killed.kind}/${r.killed.key}` : `killed ${r.killed.length} ${r.kind} on ${r.node}: ${r.killed.join(", ") || "none"}`;
      refresh();
    } catch (e) {
      error.textContent = e.message;
    }
  };
  const killOne = el("form", { class: "chaos", "aria-label": "kill an entity" }, killKind, killKey, el("button", { type: "submit", name: "kill" }, "Kill entity"));
  killOne.addEventListener("submit", (e) => {
    e.preventDefault();
    chaos({ kind: killKind.value, key: killKey.value.trim() });
  });
  const fractionKind = el("select", { name: "fraction-kind", "aria-label": "kind to kill a fraction of" }, ...KINDS.map((k) => el("option", { value: k }, k)));
  const killSome = el("form", { class: "chaos", "aria-label": "kill a fraction" }, fractionKind, fraction, node, el("button", { type: "submit", name: "kill-fraction" }, "Kill fraction"));
  killSome.addEventListener("submit", (e) => {
    e.preventDefault();
    chaos({ kind: fractionKind.value, fraction: Number(fraction.value), node: node.value });
  });

  async function refresh() {
    try {
      const c = await admin("/admin/cluster");
      members.replaceChildren(
        ...c.members.map((m) =>
          el(
            "tr",
            { "data-node": m.node, "data-status": m.status },
            el("td", {}, m.node),
            el("td", {}, m.status),
            el("td", {}, m.serving ? "serving" : "standing down"),
            el("td", { class: "num" }, `${c.ring.owners[m.node] ?? 0}`),
            el("td", { class: "num" }, String(m.entities ?? "")),
            el("td", {}, m.gateway || ""),
          ),
        ),
      );
      if (!node.options.length) node.replaceChildren(...c.members.map((m) => el("option", { value: m.node }, m.node)));
      const list = await admin("/admin/entities?limit=1000");
      const counts = new Map();
      for (const e of list) {
        const k = `${e.node}\u0000${e.kind}`;
        counts.set(k, (counts.get(k) || 0) + 1);
      }
      entities.replaceChildren(
        ...[...counts.entries()].sort().map(([k, n]) => {
          const [nodeName, kind] = k.split("\u0000");
          return el("tr", {}, el("td", {}, nodeName), el("td", {}, kind), el("td", { class: "num" }, String(n)));
        }),
      );
    } catch (e) {
      error.textContent = e.message;
    }
  }
  refresh();
  const timer = setInterval(refresh, 3000);
  ctx.teardown.push(() => clearInterval(timer));

  const head = (...names) => el("thead", {}, el("tr", {}, ...names.map((n) => el("th", {}, n))));
  main.replaceChildren(
    el("h1", {}, "Cluster"),
    error,
    el("section", { class: "panel" }, el("h2", {}, "Members"), el("table", { class: "members", "aria-label": "members" }, head("Node", "Status", "", "Ring share", "Entities", "Gateway"), members)),
    el("section", { class: "panel" }, el("h2", {}, "Chaos"), killOne, killSome, notice, live),
    el("section", { class: "panel" }, el("h2", {}, "Entities per node"), el("table", { class: "entities", "aria-label": "entities per node" }, head("Node", "Kind", "Active"), entities)),
  );
}

/** A live `trades:` stream showing its epoch and seq, so a kill's effect shows. */
function streamPanel(ctx) {
  const { el, client } = ctx;
  const symbol = el("input", { name: "stream-symbol", value: "KRW-BTC", "aria-label": "symbol to watch", size: "10" });
  const epoch = el("code", { class: "epoch" }, "–");
  const seq = el("code", { class: "seq" }, "–");
  const epochs = el("span", { class: "epochs" }, "0");
  let stop = null;
  let changes = 0;
  let last = null;
  let watching = null;
  const watch = () => {
    const wanted = symbol.value.trim();
    if (wanted === watching) return;
    watching = wanted;
    if (stop) stop();
    changes = 0;
    last = null;
    epochs.textContent = "0";
    stop = client.subscribe(`trades:${wanted}`, (e) => {
      if (e.reset || !e.epoch) return;
      if (last !== null && e.epoch !== last) epochs.textContent = String(++changes);
      last = e.epoch;
      epoch.textContent = e.epoch;
      seq.textContent = String(e.seq);
    });
  };
  symbol.addEventListener("change", watch);
  watch();
  ctx.teardown.push(() => stop && stop());
  return el("p", { class: "stream", "aria-label": "live stream" }, "Watching trades of ", symbol, ": epoch ", epoch, ", seq ", seq, ", epoch changes ", epochs);
}

function askToken(ctx, main) {
  const { el } = ctx;
  const input = el("input", { type: "password", name: "admin-token", autocomplete: "off", "aria-label": "admin token" });
  const form = el("form", { class: "login panel", "aria-label": "admin token" }, el("label", {}, "Admin token ", input), el("button", { type: "submit" }, "Open the cluster view"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    clusterPage(ctx, main);
  });
  main.replaceChildren(el("h1", {}, "Cluster"), el("p", { class: "muted" }, "The operator's view needs the admin token (the node prints it in demo mode; `admin.token`)."), form);
}
