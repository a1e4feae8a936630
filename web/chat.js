// A market's chat room beside its chart: the history from REST (paging upward), live
// messages and presence from `chat:R`, and posting through `chat.send`. Every message is set
// as text, never as HTML.

const PAGE = 50;

/**
 * @param {object} ctx `{el, client, rest, teardown, session}` from app.js
 * @param {string} room the market's symbol (its room has the same name)
 */
export function chatPanel(ctx, room) {
  const { el, client, rest, session } = ctx;
  const list = el("ol", { class: "messages", "aria-label": `${room} chat messages`, "aria-live": "polite" });
  const seen = new Set();
  const here = new Set(session ? [session.username] : []);
  const presence = el("ul", { class: "presence", "aria-label": "in the room" });
  const earlier = el("button", { type: "button", class: "link earlier" }, "Load earlier messages");
  let oldest = null;

  const item = (m) =>
    el(
      "li",
      { "data-message": m.message_id },
      el("span", { class: "who" }, m.user),
      el("time", { datetime: new Date(m.ts).toISOString(), class: "muted" }, new Date(m.ts).toISOString().slice(11, 16)),
      el("span", { class: "text" }, m.text),
    );
  const showPresence = () => presence.replaceChildren(...[...here].sort().map((u) => el("li", {}, u)));
  const atBottom = () => list.scrollHeight - list.scrollTop - list.clientHeight < 40;

  async function loadEarlier() {
    earlier.disabled = true;
    try {
      const before = oldest ? `&before=${oldest}` : "";
      const page = await rest(`/api/v1/chat/${room}/messages?limit=${PAGE}${before}`);
      const fresh = page.filter((m) => !seen.has(m.message_id));
      for (const m of fresh) seen.add(m.message_id);
      if (page.length) oldest = page[page.length - 1].message_id;
      const height = list.scrollHeight;
      list.prepend(...fresh.reverse().map(item));
      // Keep what the reader was looking at in place (or start at the newest).
      list.scrollTop = oldest && before ? list.scrollHeight - height : list.scrollHeight;
      earlier.hidden = page.length < PAGE;
    } catch (e) {
      list.prepend(el("li", { class: "error" }, e.message));
    } finally {
      earlier.disabled = false;
    }
  }
  earlier.addEventListener("click", loadEarlier);

  ctx.teardown.push(
    client.subscribe(`chat:${room}`, (e) => {
      const d = e.data;
      if (!d) return;
      if (d.type === "message" && !seen.has(d.message_id)) {
        seen.add(d.message_id);
        const stick = atBottom();
        list.append(item(d));
        if (stick) list.scrollTop = list.scrollHeight;
      } else if (d.type === "presence") {
        if (d.presence === "here") {
          here.clear();
          for (const u of d.users) here.add(u);
          if (session) here.add(session.username);
        } else if (d.presence === "join") here.add(d.user);
        else here.delete(d.user);
        showPresence();
      }
    }),
  );
  loadEarlier();
  showPresence();

  let form = el("p", { class: "muted" }, "Log in to post.");
  if (session) {
    const text = el("input", { name: "text", autocomplete: "off", maxlength: "2000", "aria-label": "message" });
    const error = el("p", { class: "error form-error", role: "alert" });
    form = el("form", { class: "chat-form", "aria-label": "post a message" }, text, el("button", { type: "submit" }, "Send"), error);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      error.textContent = "";
      try {
        const m = await client.request("chat.send", { room, text: text.value });
        text.value = "";
        if (!seen.has(m.message_id)) {
          seen.add(m.message_id);
          list.append(item(m));
          list.scrollTop = list.scrollHeight;
        }
      } catch (err) {
        error.textContent = err.message;
      }
    });
  }
  return el(
    "section",
    { class: "panel chat" },
    el("h2", {}, `Chat ${room}`),
    earlier,
    list,
    form,
    el("h3", {}, "Here now"),
    presence,
  );
}
