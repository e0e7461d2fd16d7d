/**
 * The naive UDP baseline: one upstream socket per client address, no limits, no timers beyond
 * an idle sweep. argv: upstream port, responses per session (0 = unlimited), and optionally the
 * loopback address (default 127.0.0.1; `::1` for IPv6). Sends `{ port }`.
 */
import dgram from 'node:dgram';

const upstreamPort = Number(process.argv[2]);
const responses = Number(process.argv[3] ?? 0);
const host = process.argv[4] ?? '127.0.0.1';
const type = host.includes(':') ? 'udp6' : 'udp4';
const sessions = new Map<string, { socket: dgram.Socket; seen: number; left: number }>();
const server = dgram.createSocket(type);

function session(address: string, port: number) {
  const key = `${address}:${port}`;
  let found = sessions.get(key);
  if (found) return found;
  const socket = dgram.createSocket(type);
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
  entry.socket.send(msg, upstreamPort, host);
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
server.bind(0, host, () => process.send?.({ port: server.address().port }));
process.once('SIGTERM', () => process.exit(0));
