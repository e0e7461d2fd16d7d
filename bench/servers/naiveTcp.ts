/**
 * The naive baseline: a ten-line Node `pipe()` proxy. argv: upstream port, and optionally the
 * loopback address to listen on and connect to (default 127.0.0.1; `::1` for IPv6). Sends `{ port }`.
 */
import net from 'node:net';
import type { AddressInfo } from 'node:net';

const upstreamPort = Number(process.argv[2]);
const host = process.argv[3] ?? '127.0.0.1';
const server = net.createServer((client) => {
  const upstream = net.connect(upstreamPort, host);
  client.pipe(upstream).pipe(client);
  client.on('error', () => upstream.destroy());
  upstream.on('error', () => client.destroy());
});
server.listen(0, host, () => process.send?.({ port: (server.address() as AddressInfo).port }));
process.once('SIGTERM', () => process.exit(0));
