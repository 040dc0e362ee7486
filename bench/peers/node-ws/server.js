// A Node `ws` node for the Switchboard benchmarks, clustered over Redis pub/sub: the common way
// to scale a hand-written ws server. It speaks the subset of Switchboard's protocol the
// benchmarks use (join, publish, send; welcome, ok, message, joined, left), so the load
// generator needs no dialect for it. Each node subscribes to a Redis channel per room and per
// user that it has local members for, and writes each message, encoded once, to them.
'use strict';
const http = require('http');
const { WebSocketServer } = require('ws');
const { createClient } = require('redis');

const args = Object.fromEntries(process.argv.slice(2).map((arg) => arg.replace(/^--/, '').split('=')));
const port = Number(args.port || 8000);
const redisURL = args.redis || 'redis://127.0.0.1:6379';

const members = new Map(); // Redis channel ("room:R" or "user:U") -> Set of local sockets

async function main() {
  const publisher = createClient({ url: redisURL });
  const subscriber = publisher.duplicate();
  await publisher.connect();
  await subscriber.connect();

  const deliver = (text, channel) => {
    const local = members.get(channel);
    if (local) for (const socket of local) socket.send(text);
  };
  async function add(channel, socket) {
    let local = members.get(channel);
    if (!local) {
      local = new Set();
      members.set(channel, local);
      await subscriber.subscribe(channel, deliver);
    }
    local.add(socket);
  }
  function remove(channel, socket) {
    const local = members.get(channel);
    if (!local) return;
    local.delete(socket);
    if (local.size === 0) {
      members.delete(channel);
      subscriber.unsubscribe(channel).catch(() => {});
    }
  }

  const server = http.createServer((request, response) => {
    response.writeHead(request.url === '/readyz' ? 200 : 404);
    response.end();
  });
  const wss = new WebSocketServer({ server, path: '/ws', maxPayload: 65536 });
  wss.on('connection', async (socket, request) => {
    const user = new URL(request.url, 'http://localhost').searchParams.get('user') || 'anonymous';
    const rooms = new Set();
    const reply = (object) => socket.send(JSON.stringify(object));
    socket.on('message', async (raw) => {
      let command;
      try {
        command = JSON.parse(raw);
      } catch {
        return reply({ type: 'error', code: 'bad_request' });
      }
      const data = JSON.stringify(command.data === undefined ? null : command.data);
      switch (command.type) {
        case 'join':
          if (!rooms.has(command.room)) {
            rooms.add(command.room);
            await add('room:' + command.room, socket);
            await publisher.publish('room:' + command.room, JSON.stringify({ type: 'joined', room: command.room, user }));
          }
          return reply({ type: 'ok' });
        case 'publish':
          await publisher.publish('room:' + command.room, '{"type":"message","room":' + JSON.stringify(command.room) + ',"data":' + data + '}');
          return reply({ type: 'ok' });
        case 'send':
          await publisher.publish('user:' + command.to, '{"type":"message","from":' + JSON.stringify(user) + ',"data":' + data + '}');
          return reply({ type: 'ok' });
        default:
          return reply({ type: 'error', code: 'bad_request' });
      }
    });
    socket.on('close', () => {
      remove('user:' + user, socket);
      for (const room of rooms) {
        remove('room:' + room, socket);
        publisher.publish('room:' + room, JSON.stringify({ type: 'left', room, user })).catch(() => {});
      }
    });
    await add('user:' + user, socket);
    reply({ type: 'welcome', user });
  });
  // Heartbeats, like every other server here: a ping every 25 s.
  setInterval(() => { for (const socket of wss.clients) socket.ping(); }, 25000);
  server.listen(port, '127.0.0.1');
  const stop = () => { server.close(); process.exit(0); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((error) => { console.error(error); process.exit(1); });
