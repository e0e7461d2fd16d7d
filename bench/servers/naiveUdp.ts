/**
 * The naive UDP baseline: one upstream socket per client address, no limits, no timers beyond
 * an idle sweep. argv: upstream port, responses per session (0 = unlimited). Sends `{ port }`.
 */
import dgram from 'node:dgram';

const upstreamPort = Number(process.argv[2]);
const responses = Number(process.argv[3] ?? 0);
const sessions = new Map<string, { socket: dgram.Socket; seen: number; left: number }>();
const server = dgram.createSocket('udp4');

function session(address: string, port: number) {
  const key = `${address}:${port}`;
  let found = sessions.get(key);
  if (found) return found;
  const socket = dgram.createSocket('udp4');
  const entry = { socket, seen: Date.now(), left: responses };
  socket.on('error', () => undefined);
  socket.on('message', (reply) => {
    server.send(reply, port, address);
    if (responses > 0 && --entry.left === 0) {
      sessions.delete(key);
      socket.close();
    }
  });
  sessions.set(key, (found = entry));
  return found;
}

server.on('message', (msg, rinfo) => {
  const entry = session(rinfo.address, rinfo.port);
  entry.seen = Date.now();
  entry.socket.send(msg, upstreamPort, '127.0.0.1');
});
server.on('error', () => undefined);
setInterval(() => {
  const old = Date.now() - 10_000;
  for (const [key, entry] of sessions)
    if (entry.seen < old) {
      sessions.delete(key);
      entry.socket.close();
    }
}, 1_000).unref();
server.bind(0, '127.0.0.1', () => process.send?.({ port: server.address().port }));
process.once('SIGTERM', () => process.exit(0));
