// The demo page: one room, its presence, and messages from people on any node. Everything
// shown is set as text (never as HTML), so a message cannot inject markup.
import { Switchboard, pageNodeURL } from "/switchboard.js";

const $ = (id) => document.getElementById(id);
let client = null;
let room = null;
const present = new Set();

$("join-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("start-error").hidden = true;
  $("join").disabled = true;
  try {
    await start($("name").value.trim(), $("room").value.trim());
  } catch (error) {
    $("start-error").textContent = `Could not join: ${error.message}`;
    $("start-error").hidden = false;
    if (client) client.close();
    client = null;
  } finally {
    $("join").disabled = false;
  }
});

async function start(name, roomName) {
  room = roomName;
  // This node first, then the others the cluster knows, for reconnecting elsewhere.
  client = new Switchboard({ user: name, url: [pageNodeURL(), ...(await otherNodes())] });
  window.demo = { client }; // for the browser tests and the curious
  client.addEventListener("state", (event) => showState(event.detail.state));
  client.addEventListener("message", (event) => addMessage(event.detail));
  client.addEventListener("joined", (event) => updatePresence(event.detail.room, event.detail.user, true));
  client.addEventListener("left", (event) => updatePresence(event.detail.room, event.detail.user, false));
  client.addEventListener("notrecovered", (event) => {
    if (event.detail.room === room) note("Some messages could not be recovered (the history no longer has them).");
  });
  client.addEventListener("open", async (event) => {
    $("node").textContent = event.detail.node;
    if (event.detail.resumed) {
      $("recovery").textContent = `Reconnected to node ${event.detail.node}.`;
      await refreshPresence();
    }
  });
  const welcome = await client.connect();
  await client.join(room);
  $("me").textContent = welcome.user;
  $("node").textContent = welcome.node;
  $("room-name").textContent = room;
  $("start").hidden = true;
  $("chat").hidden = false;
  await refreshPresence();
  $("text").focus();
}

async function otherNodes() {
  try {
    const response = await fetch("/api/nodes", { signal: AbortSignal.timeout(2000) });
    if (!response.ok) return []; // an API key is set: this node alone, plus /api/assign
    const { nodes } = await response.json();
    return nodes.filter((node) => node.alive && node.url !== pageNodeURL()).map((node) => node.url);
  } catch {
    return [];
  }
}

$("send-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("text").value;
  if (!text || !client) return;
  $("text").value = "";
  $("send-error").hidden = true;
  try {
    await client.publish(room, { text, node: client.welcome?.node ?? "" });
  } catch (error) {
    $("send-error").textContent = `Not sent (${error.code}): ${error.message}`;
    $("send-error").hidden = false;
  }
});

$("kill").addEventListener("click", () => {
  $("recovery").textContent = "Connection killed; reconnecting in 2 s…";
  client?.dropConnection(2000);
});

function addMessage(message) {
  if (message.room !== room) return;
  const data = message.data ?? {};
  const text = typeof data === "object" && typeof data.text === "string" ? data.text : JSON.stringify(data);
  const item = document.createElement("li");
  item.className = message.from === client.welcome?.user ? "msg mine" : "msg";
  item.dataset.kind = "message";
  item.dataset.from = message.from;
  item.dataset.text = text;
  if (message.offset !== undefined) item.dataset.offset = String(message.offset);
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = typeof data.node === "string" && data.node ? `${message.from} (${data.node})` : message.from;
  const body = document.createElement("span");
  body.className = "body";
  body.textContent = text;
  item.append(who, body);
  append(item);
}

function note(text) {
  const item = document.createElement("li");
  item.className = "note";
  item.dataset.kind = "note";
  item.textContent = text;
  append(item);
}

function append(item) {
  const list = $("messages");
  const atBottom = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
  list.append(item);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

async function refreshPresence() {
  try {
    const users = await client.presence(room);
    present.clear();
    for (const user of users) present.add(user);
    renderPresence();
  } catch {
    // shown again at the next change or reconnect
  }
}

function updatePresence(eventRoom, user, joined) {
  if (eventRoom !== room) return;
  if (joined) present.add(user);
  else present.delete(user);
  renderPresence();
}

function renderPresence() {
  const list = $("presence");
  list.replaceChildren(
    ...[...present].sort().map((user) => {
      const item = document.createElement("li");
      item.textContent = user;
      item.dataset.user = user;
      return item;
    }),
  );
}

function showState(state) {
  const labels = { connecting: "connecting…", open: "connected", waiting: "reconnecting…", closed: "closed" };
  $("status").textContent = labels[state] ?? state;
  $("status").dataset.state = state;
}
