// switchboard.js: the browser client of a Switchboard cluster. One ES module, no dependencies,
// no build step; every node serves it at /switchboard.js. Guide: docs/BROWSER.md.
//
//   import { Switchboard } from "/switchboard.js";
//   const sb = new Switchboard({ user: "alice" });
//   sb.addEventListener("message", (event) => console.log(event.detail));
//   await sb.connect();
//   await sb.join("lobby");
//   await sb.publish("lobby", { text: "hi" });
//
// The client reconnects by itself (backoff with jitter, to this node or another one) and resumes
// every room it joined and its inbox from the last message it saw (`since`). When the cluster
// cannot give back what was missed it says so with a "notrecovered" event: an app never sees a
// gap it is not told about.

/** A refusal from the server (`code` is the protocol's error code) or from the client itself:
 *  `disconnected` (the connection dropped before the reply; the command may or may not have
 *  taken effect), `timeout`, `closed` (after close()). */
export class SwitchboardError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "SwitchboardError";
    this.code = code;
  }
}

const defaults = {
  url: null, // a WebSocket URL or a list of them; default: the node that served this page
  user: null, // ?user= (clusters without tokens)
  token: null, // ?token= (a JWT; browsers cannot set headers on a WebSocket)
  batch: true, // ?batch=1: several frames in one WebSocket message
  reconnect: true,
  assign: true, // ask a node's /api/assign for the least loaded node before reconnecting
  minDelay: 250, // ms, first reconnect delay; doubles up to maxDelay, with full jitter
  maxDelay: 8000,
  timeout: 10000, // ms a command waits for a connection and then for its reply
};

export class Switchboard extends EventTarget {
  constructor(options = {}) {
    super();
    this.options = { ...defaults, ...options };
    const given = this.options.url ?? pageNodeURL();
    this.urls = Array.isArray(given) ? [...given] : [given];
    /** "idle", "connecting", "open", "waiting" (to reconnect) or "closed". */
    this.state = "idle";
    /** The last welcome: session, user, node, heartbeat. */
    this.welcome = null;
    this.socket = null;
    this.nextId = 1;
    this.pending = new Map(); // command id -> { resolve, reject, timer }
    this.openWaiters = new Set();
    // Rooms this client wants, with the last position seen: { epoch, offset } or null.
    this.rooms = new Map();
    this.inbox = null; // the inbox's last position
    this.attempt = 0;
    this.urlIndex = 0;
    this.lastFrameAt = 0;
    this.watchdog = null;
    this.retryTimer = null;
    // A page left for another stays alive in the back/forward cache, socket and all: close it,
    // so presence sees the user go, and come back (resuming) if the page is shown again.
    this.suspended = false;
    if (typeof window !== "undefined") {
      window.addEventListener("pagehide", () => {
        if (!this.socket || this.state === "closed") return;
        this.suspended = true;
        this.socket.close(1000, "page hidden");
      });
      window.addEventListener("pageshow", (event) => {
        if (!event.persisted || !this.suspended) return;
        this.suspended = false;
        this.reconnect();
      });
    }
  }

  // MARK: Life

  /** Opens the connection; resolves with the welcome once every wanted room is resumed. */
  connect() {
    if (this.state === "closed") return Promise.reject(new SwitchboardError("closed", "the client is closed"));
    if (this.state === "idle") this.open(this.urls[0]);
    return this.whenOpen();
  }

  /** Closes for good: no reconnect; pending commands fail with `closed`. */
  close() {
    this.setState("closed");
    clearTimeout(this.retryTimer);
    this.stopWatchdog();
    if (this.socket) this.socket.close(1000, "client closed");
    this.socket = null;
    this.failPending(new SwitchboardError("closed", "the client is closed"));
    for (const waiter of this.openWaiters) waiter.reject(new SwitchboardError("closed", "the client is closed"));
    this.openWaiters.clear();
  }

  /** Drops the connection as a network failure would; the client reconnects and resumes,
   *  after `pause` ms if given (to show what recovery does), else after the usual backoff. */
  dropConnection(pause) {
    if (!this.socket) return;
    this.nextPause = pause;
    this.socket.close(4000, "dropped by the client");
  }

  // MARK: Commands (each resolves with the server's reply, or rejects with a SwitchboardError)

  /** Joins `room`; it stays joined across reconnects until `leave`. */
  async join(room) {
    if (!this.rooms.has(room)) this.rooms.set(room, null);
    try {
      const ok = await this.request({ type: "join", room });
      this.rooms.set(room, ok.epoch === undefined ? null : { epoch: ok.epoch, offset: ok.offset });
      return ok;
    } catch (error) {
      // Cut by a disconnect, the room stays wanted: the reconnect joins it.
      if (error.code !== "disconnected") this.rooms.delete(room);
      throw error;
    }
  }

  async leave(room) {
    this.rooms.delete(room);
    return this.request({ type: "leave", room });
  }

  publish(room, data) {
    return this.request({ type: "publish", room, data });
  }

  send(to, data) {
    return this.request({ type: "send", to, data });
  }

  broadcast(data) {
    return this.request({ type: "broadcast", data });
  }

  /** The users in `room`, cluster-wide. */
  async presence(room) {
    return (await this.request({ type: "presence", room })).users;
  }

  /** The room's last messages (at most `limit`) with its epoch and offset. */
  async history(room, limit) {
    const command = { type: "history", room };
    if (limit !== undefined) command.limit = limit;
    const ok = await this.request(command);
    return { epoch: ok.epoch, offset: ok.offset, messages: ok.messages ?? [] };
  }

  async ping() {
    return this.request({ type: "ping" });
  }

  // MARK: The connection

  open(url) {
    this.setState("connecting");
    const query = new URLSearchParams();
    if (this.options.user) query.set("user", this.options.user);
    if (this.options.token) query.set("token", this.options.token);
    if (this.options.batch) query.set("batch", "1");
    if (this.inbox) query.set("since", `${this.inbox.epoch}:${this.inbox.offset}`);
    const socket = new WebSocket(`${url}${url.includes("?") ? "&" : "?"}${query}`);
    this.socket = socket;
    this.currentURL = url;
    socket.onmessage = (event) => {
      if (socket !== this.socket) return;
      this.lastFrameAt = Date.now();
      const text = typeof event.data === "string" ? event.data : "";
      for (const line of text.split("\n")) {
        if (line.length === 0) continue;
        let frame;
        try {
          frame = JSON.parse(line);
        } catch {
          continue; // the server writes JSON only; nothing to do with anything else
        }
        this.handle(frame);
      }
    };
    socket.onclose = (event) => {
      if (socket !== this.socket) return;
      this.socket = null;
      this.lost(event.code, event.reason);
    };
  }

  handle(frame) {
    switch (frame.type) {
      case "welcome":
        this.welcomed(frame);
        return;
      case "message":
        if (this.isDuplicate(frame)) return;
        this.emit("message", frame);
        return;
      case "joined":
      case "left":
        this.emit(frame.type, frame);
        return;
      case "ok":
      case "pong":
      case "error": {
        const waiter = frame.id === undefined ? undefined : this.pending.get(frame.id);
        if (!waiter) {
          if (frame.type === "error") this.emit("servererror", frame);
          return;
        }
        this.pending.delete(frame.id);
        clearTimeout(waiter.timer);
        if (frame.type === "error") waiter.reject(new SwitchboardError(frame.code, frame.message));
        else waiter.resolve(frame);
        return;
      }
      default:
        this.emit("frame", frame); // added to the protocol later: passed on as is
    }
  }

  /** A message already seen (same stream, offset not past the last one) is dropped. */
  isDuplicate(message) {
    if (message.offset === undefined) return false;
    if (message.room !== undefined) {
      const position = this.rooms.get(message.room);
      if (!position) return false;
      if (message.offset <= position.offset) return true;
      position.offset = message.offset;
      return false;
    }
    if (message.to !== undefined && this.inbox) {
      if (message.offset <= this.inbox.offset) return true;
      this.inbox.offset = message.offset;
    }
    return false;
  }

  async welcomed(welcome) {
    const resumed = this.welcome !== null;
    this.welcome = welcome;
    if (welcome.inbox) {
      // Recovered: the missed messages follow, each moving the offset; otherwise start at the top.
      if (welcome.recovered === true && this.inbox && this.inbox.epoch === welcome.inbox.epoch) {
        // keep this.inbox.offset
      } else {
        if (welcome.recovered === false) this.emit("notrecovered", { inbox: true, epoch: welcome.inbox.epoch });
        this.inbox = { epoch: welcome.inbox.epoch, offset: welcome.inbox.offset };
      }
    } else {
      this.inbox = null;
    }
    this.attempt = 0;
    this.startWatchdog(welcome.heartbeat);
    const socket = this.socket;
    await this.resumeRooms(socket);
    if (socket !== this.socket) return; // dropped while resuming: the next welcome finishes
    this.setState("open");
    for (const waiter of this.openWaiters) waiter.resolve(welcome);
    this.openWaiters.clear();
    this.emit("open", { ...welcome, resumed });
  }

  /** Joins every wanted room again, from its last position. */
  async resumeRooms(socket) {
    const joins = [...this.rooms.entries()].map(async ([room, position]) => {
      const command = { type: "join", room };
      if (position) command.since = { epoch: position.epoch, offset: position.offset };
      try {
        const ok = await this.command(command);
        if (ok.epoch === undefined) return;
        const current = this.rooms.get(room);
        if (ok.recovered === true && current && current.epoch === ok.epoch) return; // missed ones follow
        if (ok.recovered === false) this.emit("notrecovered", { room, epoch: ok.epoch });
        if (this.rooms.has(room)) this.rooms.set(room, { epoch: ok.epoch, offset: ok.offset });
      } catch (error) {
        if (socket !== this.socket) return;
        // Refused now (a token without the room): the app must know it is out of the room.
        this.rooms.delete(room);
        this.emit("servererror", { room, code: error.code, message: error.message });
      }
    });
    await Promise.all(joins);
  }

  lost(code, reason) {
    this.stopWatchdog();
    this.failPending(new SwitchboardError("disconnected", "the connection dropped before the reply"));
    if (this.state === "closed") return;
    this.emit("disconnected", { code, reason });
    // A refusal before the upgrade (401, 403) shows as code 1006 too: retried with backoff.
    if (!this.options.reconnect) {
      this.close();
      return;
    }
    this.setState("waiting");
    if (this.suspended) return; // back when the page is shown again
    const ceiling = Math.min(this.options.maxDelay, this.options.minDelay * 2 ** this.attempt);
    const delay = this.nextPause ?? Math.round(Math.random() * ceiling);
    this.nextPause = undefined;
    this.attempt += 1;
    this.emit("reconnecting", { attempt: this.attempt, delay });
    this.retryTimer = setTimeout(() => this.reconnect(), delay);
  }

  async reconnect() {
    if (this.state !== "waiting") return;
    const url = (this.options.assign && (await this.assigned())) || this.nextURL();
    if (this.state !== "waiting") return;
    if (!this.urls.includes(url)) this.urls.push(url);
    this.open(url);
  }

  /** The least loaded node, from the first known node that answers /api/assign in time. */
  async assigned() {
    const tried = [this.currentURL, ...this.urls.filter((url) => url !== this.currentURL)];
    for (const url of tried) {
      const base = httpBase(url);
      if (!base) continue;
      try {
        const response = await fetch(`${base}/api/assign`, { signal: AbortSignal.timeout(2000) });
        if (!response.ok) continue;
        const answer = await response.json();
        if (typeof answer.url === "string" && /^wss?:\/\//.test(answer.url)) return answer.url;
      } catch {
        // that node is down or refuses: try the next
      }
    }
    return null;
  }

  nextURL() {
    this.urlIndex = (this.urlIndex + 1) % this.urls.length;
    return this.urls[this.urlIndex];
  }

  // MARK: Commands on the wire

  /** Waits for an open connection (up to the timeout), then sends. */
  async request(command) {
    if (this.state === "closed") throw new SwitchboardError("closed", "the client is closed");
    if (this.state !== "open") await this.whenOpen(this.options.timeout);
    return this.command(command);
  }

  /** Sends on the current socket; resolves with the reply. */
  command(command) {
    return new Promise((resolve, reject) => {
      const socket = this.socket;
      if (!socket || socket.readyState !== WebSocket.OPEN) {
        reject(new SwitchboardError("disconnected", "not connected"));
        return;
      }
      const id = this.nextId++;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new SwitchboardError("timeout", `no reply to ${command.type} in ${this.options.timeout} ms`));
      }, this.options.timeout);
      this.pending.set(id, { resolve, reject, timer });
      socket.send(JSON.stringify({ ...command, id }));
    });
  }

  whenOpen(timeout) {
    if (this.state === "open") return Promise.resolve(this.welcome);
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      if (timeout !== undefined) {
        const timer = setTimeout(() => {
          this.openWaiters.delete(waiter);
          reject(new SwitchboardError("timeout", `not connected within ${timeout} ms`));
        }, timeout);
        waiter.resolve = (value) => (clearTimeout(timer), resolve(value));
        waiter.reject = (error) => (clearTimeout(timer), reject(error));
      }
      this.openWaiters.add(waiter);
    });
  }

  failPending(error) {
    for (const waiter of this.pending.values()) {
      clearTimeout(waiter.timer);
      waiter.reject(error);
    }
    this.pending.clear();
  }

  // MARK: Heartbeat

  // The server's pings are WebSocket pings, which browsers answer unseen; to notice a dead
  // connection the client sends its own `ping` each period and gives up after two silent ones.
  startWatchdog(seconds) {
    this.stopWatchdog();
    const period = Math.max(1, seconds || 25) * 1000;
    this.lastFrameAt = Date.now();
    this.watchdog = setInterval(() => {
      const socket = this.socket;
      if (!socket) return;
      if (Date.now() - this.lastFrameAt > 2 * period) {
        socket.close(4001, "no answer for two heartbeats");
        return;
      }
      if (socket.readyState === WebSocket.OPEN) socket.send('{"type":"ping"}');
    }, period);
  }

  stopWatchdog() {
    clearInterval(this.watchdog);
    this.watchdog = null;
  }

  // MARK: Events

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", { state });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** ws(s)://host/ws of the node that served the page. */
export function pageNodeURL() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

/** http(s)://host:port of a node from its WebSocket URL, or null. */
export function httpBase(url) {
  const match = /^(wss?):\/\/([^/?#]+)/.exec(url);
  if (!match) return null;
  return `${match[1] === "wss" ? "https" : "http"}://${match[2]}`;
}
