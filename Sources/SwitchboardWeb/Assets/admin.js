// The admin page: the cluster's nodes, rooms, rates and errors, refreshed every two seconds.
// The node list comes from this node's /api/nodes; the figures from each node's
// /api/admin/stats. The API key, when the cluster has one, is typed in and kept in this tab's
// sessionStorage; it travels in the Authorization header only. All rendering sets text.
import { httpBase } from "/switchboard.js";

const $ = (id) => document.getElementById(id);
const period = 2000;
const samples = 60; // points kept per node for the chart: two minutes
const errorCounters = ["bad_frames", "rate_limited", "commands_failed", "backplane_events_refused", "bad_http_requests"];
const refusalCounters = ["handshakes_refused", "room_limit_refusals", "messages_too_large", "slow_consumers_closed"];
const history = new Map(); // node id -> { previous stats, connections: [] }
let key = sessionStorage.getItem("switchboard-admin-key");

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  key = $("key").value;
  $("key").value = "";
  sessionStorage.setItem("switchboard-admin-key", key);
  refresh();
});

class Refused extends Error {}

async function getJSON(url) {
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  const response = await fetch(url, { headers, signal: AbortSignal.timeout(1500) });
  if (response.status === 401) throw new Refused("the API key was refused");
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response.json();
}

let timer = null;
async function refresh() {
  clearTimeout(timer);
  try {
    const { nodes } = await getJSON("/api/nodes");
    const stats = await Promise.all(
      nodes.map((node) => {
        const base = httpBase(node.url);
        if (!node.alive || !base) return Promise.resolve(null);
        const url = base === location.origin ? "/api/admin/stats" : `${base}/api/admin/stats`;
        return getJSON(url).catch(() => null);
      }),
    );
    $("key-card").hidden = true;
    $("dashboard").hidden = false;
    render(nodes, stats);
    setStatus("open", `live · ${new Date().toLocaleTimeString()}`);
  } catch (error) {
    if (error instanceof Refused) {
      $("dashboard").hidden = true;
      $("key-card").hidden = false;
      $("key-error").textContent = key ? "That key was refused." : "";
      $("key-error").hidden = !key;
      setStatus("closed", "API key needed");
      if (key) sessionStorage.removeItem("switchboard-admin-key");
      key = null;
      return; // waits for a key
    }
    setStatus("waiting", `this node does not answer (${error.message}); retrying`);
  }
  timer = setTimeout(refresh, period);
}

function render(nodes, stats) {
  const rows = nodes
    .map((node, index) => ({ node, stats: stats[index] }))
    .sort((a, b) => a.node.id.localeCompare(b.node.id));
  let connections = 0;
  let users = 0;
  const body = rows.map(({ node, stats }) => {
    const entry = history.get(node.id) ?? { previous: null, connections: [] };
    history.set(node.id, entry);
    const rates = rate(entry.previous, stats);
    if (stats) entry.previous = stats;
    entry.connections.push(node.alive ? node.connections : 0);
    if (entry.connections.length > samples) entry.connections.shift();
    if (node.alive) {
      connections += node.connections;
      users += node.users;
    }
    const state = !node.alive ? "down" : stats ? stats.phase : "unreachable";
    const row = document.createElement("tr");
    row.dataset.node = node.id;
    row.dataset.state = state;
    row.append(
      cell(node.id),
      cell(node.url, "mono"),
      badge(state),
      cell(node.connections, "num"),
      cell(node.users, "num"),
      cell(rates ? rates.messages.toFixed(1) : "–", "num"),
      cell(rates ? rates.deliveries.toFixed(1) : "–", "num"),
      cell(stats ? sum(stats, errorCounters) : "–", "num"),
      cell(stats ? sum(stats, refusalCounters) : "–", "num"),
      chart(entry.connections),
    );
    return row;
  });
  $("nodes").tBodies[0].replaceChildren(...body);
  const alive = rows.filter((row) => row.node.alive).length;
  $("totals").textContent = `${alive} of ${rows.length} nodes alive · ${connections} connections · ${users} users`;
  renderRooms(stats.filter(Boolean));
  renderProblems(stats.filter(Boolean));
}

function rate(previous, current) {
  if (!previous || !current || current.now <= previous.now || current.started !== previous.started) return null;
  const seconds = (current.now - previous.now) / 1000;
  return {
    messages: (current.counters.messages_published - previous.counters.messages_published) / seconds,
    deliveries: (current.counters.deliveries - previous.counters.deliveries) / seconds,
  };
}

function sum(stats, names) {
  return names.reduce((total, name) => total + (stats.counters[name] ?? 0), 0);
}

function renderRooms(all) {
  const rooms = new Map();
  for (const stats of all) {
    for (const room of stats.top_rooms) {
      const entry = rooms.get(room.room) ?? { users: 0, connections: 0, nodes: 0 };
      entry.users += room.users;
      entry.connections += room.connections;
      entry.nodes += 1;
      rooms.set(room.room, entry);
    }
  }
  const sorted = [...rooms.entries()].sort((a, b) => b[1].users - a[1].users || a[0].localeCompare(b[0])).slice(0, 50);
  const rows = sorted.map(([name, entry]) => {
    const row = document.createElement("tr");
    row.dataset.room = name;
    row.append(cell(name), cell(entry.users, "num"), cell(entry.connections, "num"), cell(entry.nodes, "num"));
    return row;
  });
  if (rows.length === 0) rows.push(emptyRow(4, "No rooms yet."));
  $("rooms").tBodies[0].replaceChildren(...rows);
}

function renderProblems(all) {
  const rows = [...errorCounters, ...refusalCounters].map((name) => {
    const row = document.createElement("tr");
    row.append(cell(name.replaceAll("_", " ")), cell(all.reduce((total, stats) => total + (stats.counters[name] ?? 0), 0), "num"));
    return row;
  });
  $("problems").tBodies[0].replaceChildren(...rows);
}

function cell(value, className) {
  const td = document.createElement("td");
  td.textContent = String(value);
  if (className) td.className = className;
  return td;
}

function badge(state) {
  const td = document.createElement("td");
  const span = document.createElement("span");
  span.className = "badge";
  span.dataset.state = state;
  span.textContent = state;
  td.append(span);
  return td;
}

function emptyRow(columns, text) {
  const row = document.createElement("tr");
  const td = cell(text, "hint");
  td.colSpan = columns;
  row.append(td);
  return row;
}

/** A small line chart of the last samples (SVG built as elements: no markup strings). */
function chart(values) {
  const td = document.createElement("td");
  const width = 120;
  const height = 28;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(height));
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.classList.add("spark");
  const max = Math.max(1, ...values);
  const step = width / Math.max(1, samples - 1);
  const offset = (samples - values.length) * step;
  const points = values.map((value, index) => `${(offset + index * step).toFixed(1)},${(height - 2 - (value / max) * (height - 4)).toFixed(1)}`);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points.join(" "));
  svg.append(line);
  td.append(svg);
  return td;
}

function setStatus(state, text) {
  $("status").dataset.state = state;
  $("status").textContent = text;
}

refresh();
