"""stomp.py, a real third-party STOMP client, and a JSON client (websocket-client) in the same
rooms across two nodes. Run by Tests/SwitchboardTests/StompClientTests.swift, which starts the
cluster (heartbeat 2 s); exits 0 when every check holds, else prints what failed and exits 1.

    python3 Tests/Interop/stomp_py.py --stomp-port P2 --json-port P1
"""

import argparse
import json
import sys
import threading
import time

import stomp
import websocket
from stomp.adapter.ws import WSStompConnection

WAIT = 15


class Failed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failed(message)


def until(what, condition, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise Failed(f"timed out waiting for {what}")


class Listener(stomp.ConnectionListener):
    def __init__(self):
        self.messages = []
        self.receipts = []
        self.errors = []
        self.heartbeats = 0
        self.lock = threading.Lock()

    def on_message(self, frame):
        with self.lock:
            self.messages.append(frame)

    def on_receipt(self, frame):
        with self.lock:
            self.receipts.append(frame.headers["receipt-id"])

    def on_error(self, frame):
        with self.lock:
            self.errors.append(frame)

    def on_heartbeat(self):
        self.heartbeats += 1


class JSONClient:
    """A JSON protocol client on websocket-client, reading in a thread."""

    def __init__(self, port, user):
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws?user={user}", timeout=WAIT)
        self.frames = []
        self.next_id = 1
        self.welcome = json.loads(self.ws.recv())
        # The reader waits as long as it takes: with the connect timeout left on the socket, a
        # quiet spell of 15 s (a loaded CI machine) ended the reader, and every later wait failed.
        self.ws.settimeout(None)
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        try:
            while True:
                self.frames.append(json.loads(self.ws.recv()))
        except Exception:
            pass

    def command(self, **fields):
        fields["id"] = self.next_id
        self.next_id += 1
        self.ws.send(json.dumps(fields))
        until(f"the answer to {fields}", lambda: any(f.get("id") == fields["id"] for f in self.frames))
        answer = next(f for f in self.frames if f.get("id") == fields["id"])
        check(answer["type"] == "ok", f"{fields}: {answer}")
        return answer

    def messages(self):
        return [f for f in self.frames if f["type"] == "message"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--stomp-port", type=int, required=True)
    parser.add_argument("--json-port", type=int, required=True)
    arguments = parser.parse_args()
    try:
        run(arguments.stomp_port, arguments.json_port)
    except Failed as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
    print("passed")


def run(stomp_port, json_port):
    jay = JSONClient(json_port, "jay")
    jay.command(type="join", room="interop")

    listener = Listener()
    sam = WSStompConnection([("127.0.0.1", stomp_port)], ws_path="/stomp", heartbeats=(1000, 1000))
    sam.set_listener("", listener)
    sam.connect(login="sam", wait=True, headers={"accept-version": "1.2"})
    check(sam.is_connected(), "stomp.py connected")
    check(jay.welcome["node"] != "", "jay is welcomed")

    sam.subscribe("/topic/interop", id="sub-0", headers={"receipt": "r-sub", "sb-presence": "true"})
    sam.subscribe("/user/queue/inbox", id="sub-1", headers={"receipt": "r-inbox"})
    until("the subscriptions' receipts", lambda: {"r-sub", "r-inbox"} <= set(listener.receipts))

    # STOMP to JSON, in the room and to the user.
    sam.send("/topic/interop", json.dumps({"from": "stomp.py", "n": 1}), headers={"receipt": "r-send"})
    until("the send's receipt", lambda: "r-send" in listener.receipts)
    until("jay to get sam's message", lambda: any(m.get("room") == "interop" for m in jay.messages()))
    message = next(m for m in jay.messages() if m.get("room") == "interop")
    check(message["from"] == "sam" and message["data"] == {"from": "stomp.py", "n": 1}, f"jay got {message}")
    sam.send("/user/jay", "hello jay")
    until("jay's direct message", lambda: any(m.get("to") == "jay" for m in jay.messages()))
    direct = next(m for m in jay.messages() if m.get("to") == "jay")
    check(direct["data"] == "hello jay", f"text becomes a JSON string: {direct}")

    # JSON to STOMP.
    jay.command(type="publish", room="interop", data={"from": "json", "n": 2})
    jay.command(type="send", to="sam", data=[3])
    until("sam's two messages from jay", lambda: sum(1 for f in listener.messages if f.headers.get("sb-from") == "jay") >= 2)
    frames = [f for f in listener.messages if f.headers.get("sb-from") == "jay"]
    room = next(f for f in frames if f.headers["subscription"] == "sub-0")
    check(room.headers["destination"] == "/topic/interop" and room.headers["sb-from"] == "jay", f"{room.headers}")
    check(json.loads(room.body) == {"from": "json", "n": 2}, f"body {room.body}")
    check("sb-offset" in room.headers and "message-id" in room.headers, f"{room.headers}")
    inbox = next(f for f in frames if f.headers["subscription"] == "sub-1")
    check(json.loads(inbox.body) == [3] and inbox.headers["destination"] == "/user/queue/inbox", f"{inbox.headers}")
    presence = [f for f in listener.messages if f.headers.get("sb-event") == "joined"]
    check(any(f.headers["sb-user"] == "sam" for f in presence), "presence arrives as MESSAGE with sb-event")

    # A transaction: nothing until COMMIT, then both in order.
    sam.begin("t1")
    sam.send("/topic/interop", "tx-1", transaction="t1")
    sam.send("/topic/interop", "tx-2", transaction="t1")
    sam.send("/topic/interop", "marker", headers={"receipt": "r-marker"})
    until("the marker", lambda: any(m.get("data") == "marker" for m in jay.messages()))
    check(not any(m.get("data", "").startswith("tx-") for m in jay.messages() if isinstance(m.get("data"), str)),
          "nothing of the transaction before COMMIT")
    sam.commit("t1")
    until("the committed messages", lambda: sum(1 for m in jay.messages() if m.get("data") in ("tx-1", "tx-2")) == 2)
    texts = [m["data"] for m in jay.messages() if m.get("data") in ("tx-1", "tx-2")]
    check(texts == ["tx-1", "tx-2"], f"in order: {texts}")

    # Heart-beats both ways keep an idle client connected past several periods.
    beats = listener.heartbeats
    time.sleep(3.5)  # idle on purpose: the connection must survive it
    check(sam.is_connected(), "still connected after 3.5 s of heart-beats")
    check(listener.heartbeats > beats, "the node's heart-beats arrived")
    check(listener.errors == [], f"no ERROR: {[e.body for e in listener.errors]}")

    sam.disconnect(receipt="bye")
    until("the DISCONNECT receipt", lambda: "bye" in listener.receipts)
    until("jay to see sam leave", lambda: any(f["type"] == "left" and f["user"] == "sam" for f in jay.frames))
    jay.ws.close()


if __name__ == "__main__":
    main()
