"""A python-socketio node for the Switchboard benchmarks, clustered with its Redis manager.

Events, each acknowledged with "ok": join(room), publish({room, data}), send({to, data}).
The server emits "message" to a room's members or to a user's own room ("user:NAME", from
?user=), and "joined"/"left" to a room's other members, so that churn sees presence.
"""
import argparse
import json
import urllib.parse

import socketio
from aiohttp import web


class CompactJSON:
    """Socket.IO's own encoder with no spaces, like every other server in the run."""

    @staticmethod
    def dumps(obj, **kwargs):
        kwargs["separators"] = (",", ":")
        return json.dumps(obj, **kwargs)

    loads = staticmethod(json.loads)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    args = parser.parse_args()

    manager = socketio.AsyncRedisManager(args.redis)
    sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=manager, json=CompactJSON,
                               cors_allowed_origins="*", logger=False, engineio_logger=False)
    users = {}
    rooms = {}

    @sio.event
    async def connect(sid, environ):
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
        user = query.get("user", [sid])[0]
        users[sid] = user
        rooms[sid] = set()
        sio.enter_room(sid, "user:" + user)

    @sio.event
    async def join(sid, room):
        if room not in rooms[sid]:
            rooms[sid].add(room)
            sio.enter_room(sid, room)
            await sio.emit("joined", {"room": room, "user": users[sid]}, room=room, skip_sid=sid)
        return "ok"

    @sio.event
    async def publish(sid, message):
        await sio.emit("message", {"room": message["room"], "data": message["data"]}, room=message["room"])
        return "ok"

    @sio.event
    async def send(sid, message):
        await sio.emit("message", {"from": users[sid], "data": message["data"]}, room="user:" + message["to"])
        return "ok"

    @sio.event
    async def disconnect(sid):
        user = users.pop(sid, None)
        for room in rooms.pop(sid, ()):
            await sio.emit("left", {"room": room, "user": user}, room=room, skip_sid=sid)

    app = web.Application()
    sio.attach(app)
    app.router.add_get("/readyz", lambda request: web.Response(text="ok"))
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
