// The sandbox page: renders each user's chat from /api/state and sends their actions.
"use strict";

const panes = new Map();   // user id -> {root, replyTo, lastRender}
let commands = [];

async function api(path, body) {
  const response = await fetch(path, body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  });
  return response.json();
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function describe(message) {
  if (message.text !== undefined) return message.text;
  if (message.photo) return "🖼 Photo" + (message.caption ? "\n" + message.caption : "");
  if (message.sticker) return message.sticker.emoji || "Sticker";
  if (message.voice) return `🎤 Voice message (${message.voice.duration} s)`;
  if (message.venue) return `📍 ${message.venue.title}`;
  if (message.location) return `📍 ${message.location.latitude}, ${message.location.longitude}`;
  if (message.document) return `📄 ${message.document.file_name || "File"}` +
    (message.caption ? "\n" + message.caption : "");
  if (message.contact) return `👤 ${message.contact.first_name} ${message.contact.phone_number}`;
  for (const kind of ["video", "animation", "audio", "video_note", "dice", "poll"]) {
    if (message[kind]) return `[${kind}]` + (message.caption ? "\n" + message.caption : "");
  }
  return "[message]";
}

function renderMessage(user, message) {
  const mine = message.from && message.from.id === user.id;
  const body = el("div", {class: message.sticker ? "sticker" : "body"}, describe(message));
  const node = el("div", {class: "message" + (mine ? " mine" : ""),
                          "data-message-id": message.message_id,
                          "data-from": mine ? "me" : "bot"});
  if (message.reply_to_message) {
    node.append(el("div", {class: "quote"}, describe(message.reply_to_message).slice(0, 80)));
  }
  node.append(body);
  if (message.document && message.document.url) {
    node.append(el("a", {class: "file-link", href: message.document.url, target: "_blank",
                         rel: "noopener"}, "⬇ Open the file"));
  }
  const keyboard = message.reply_markup && message.reply_markup.inline_keyboard;
  if (keyboard && keyboard.length) {
    const grid = el("div", {class: "keyboard"});
    for (const row of keyboard) {
      grid.append(el("div", {class: "row"}, ...row.map((button) => el("button", {
        type: "button", "data-callback": button.callback_data,
        onclick: () => act(user.id, {kind: "press", message_id: message.message_id,
                                     data: button.callback_data}),
      }, button.text))));
    }
    node.append(grid);
  }
  const meta = el("div", {class: "meta"});
  if (message.edit_date) meta.append(el("span", {class: "edited"}, "edited"));
  meta.append(el("button", {type: "button", class: "reply-action", title: "Reply",
                            onclick: () => setReply(user.id, message)}, "↩ Reply"));
  meta.append(el("button", {type: "button", class: "react-action", title: "React",
                            onclick: () => toggleReactions(node)}, "☺ React"));
  if (mine && message.text !== undefined) {
    meta.append(el("button", {type: "button", class: "edit-action", title: "Edit",
                              onclick: () => editMessage(user.id, message)}, "✎ Edit"));
  }
  node.append(meta);
  node.append(reactionPicker(user, message));
  const shown = reactionsOf(message);
  if (shown.length) node.append(el("div", {class: "reactions"}, ...shown));
  return node;
}

// Reactions: the user's own (set from the page) and the one the bot mirrored from the
// partner ("bot_reaction" in the fake's model), under the message as Telegram shows them.
const REACTIONS = ["👍", "❤", "🔥", "😢"];

function reactionsOf(message) {
  const chips = [];
  for (const emoji of message.user_reaction || []) {
    chips.push(el("span", {class: "reaction mine", "data-reaction": emoji}, emoji));
  }
  for (const emoji of message.bot_reaction || []) {
    chips.push(el("span", {class: "reaction partner", "data-reaction": emoji,
                           title: "Your partner's reaction"}, emoji));
  }
  return chips;
}

function reactionPicker(user, message) {
  const current = (message.user_reaction || [])[0] || null;
  return el("div", {class: "reaction-picker", hidden: ""}, ...REACTIONS.map((emoji) =>
    el("button", {type: "button", "data-emoji": emoji, onclick: () => act(user.id, {
      kind: "react", message_id: message.message_id,
      emoji: emoji === current ? null : emoji, before: current})}, emoji)));
}

function toggleReactions(node) {
  const picker = node.querySelector(".reaction-picker");
  picker.hidden = !picker.hidden;
}

// Consecutive messages of one media group are shown together, as one album.
function renderMessages(user, messages) {
  const nodes = [];
  let album = null;
  for (const message of messages) {
    const node = renderMessage(user, message);
    const group = message.media_group_id;
    if (group && album && album.dataset.group === group) {
      album.append(node);
    } else if (group) {
      album = el("div", {class: "album", "data-group": group}, node);
      nodes.push(album);
    } else {
      album = null;
      nodes.push(node);
    }
  }
  return nodes;
}

function setReply(userId, message) {
  const pane = panes.get(userId);
  pane.replyTo = message.message_id;
  const banner = pane.root.querySelector(".reply-banner");
  banner.hidden = false;
  banner.querySelector(".reply-text").textContent = "Replying to: " +
    describe(message).slice(0, 60);
  pane.root.querySelector(".text").focus();
}

function clearReply(userId) {
  const pane = panes.get(userId);
  pane.replyTo = null;
  pane.root.querySelector(".reply-banner").hidden = true;
}

function editMessage(userId, message) {
  const text = window.prompt("Edit your message", message.text);
  if (text !== null && text.trim()) {
    act(userId, {kind: "edit", message_id: message.message_id, text});
  }
}

async function act(userId, action) {
  const pane = panes.get(userId);
  if (pane.replyTo && ["text", "photo", "sticker", "voice", "location", "contact"].includes(action.kind)) {
    action.reply_to = pane.replyTo;
    clearReply(userId);
  }
  await api("/api/act", {user: userId, ...action});
  await refresh();
}

function createPane(user) {
  const root = document.getElementById("pane-template").content.firstElementChild
    .cloneNode(true);
  root.dataset.userId = user.id;
  root.querySelector(".pane-title").textContent = user.name;
  const input = root.querySelector(".text");
  root.querySelector(".composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value;
    input.value = "";
    if (text.trim()) act(user.id, {kind: "text", text});
  });
  for (const button of root.querySelectorAll("[data-sample]")) {
    button.addEventListener("click", () => act(user.id, {kind: button.dataset.sample}));
  }
  root.querySelector(".cancel-reply").addEventListener("click", () => clearReply(user.id));
  const menu = root.querySelector(".command-menu");
  root.querySelector(".menu-button").addEventListener("click", () => {
    menu.hidden = !menu.hidden;
    if (!menu.hidden) menu.querySelector("button")?.focus();
  });
  for (const command of commands) {
    menu.append(el("li", {}, el("button", {type: "button", "data-command": command.command,
      onclick: () => { menu.hidden = true; act(user.id, {kind: "text", text: "/" + command.command}); },
    }, `/${command.command} — ${command.description}`)));
  }
  menu.addEventListener("keydown", (event) => {
    if (event.key === "Escape") { menu.hidden = true; input.focus(); }
  });
  document.getElementById("panes").append(root);
  panes.set(user.id, {root, replyTo: null, lastRender: ""});
}

function renderDebug(state) {
  const calls = document.getElementById("calls");
  calls.replaceChildren(...state.calls.slice(-60).reverse().map((call) => el("li", {
    class: call.status === 200 ? "" : "failed"},
  `${call.method} → ${call.chat_id ?? "-"} (${call.status})`)));
  const log = document.getElementById("log");
  log.replaceChildren(...state.log.slice(-60).reverse().map((line) => el("li", {}, line)));
}

async function refresh() {
  const state = await api("/api/state");
  for (const user of state.users) {
    if (!panes.has(user.id)) createPane(user);
    const pane = panes.get(user.id);
    const rendered = JSON.stringify(user.messages);
    if (rendered !== pane.lastRender) {
      pane.lastRender = rendered;
      const list = pane.root.querySelector(".messages");
      list.replaceChildren(...renderMessages(user, user.messages));
      list.scrollTop = list.scrollHeight;
    }
  }
  renderDebug(state);
}

async function start() {
  commands = (await api("/api/commands")).commands;
  document.getElementById("add-user").addEventListener("click", async () => {
    await api("/api/users", {});
    await refresh();
  });
  await refresh();
  setInterval(refresh, 700);
}

start();
