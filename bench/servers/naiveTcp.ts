/** The naive baseline: a ten-line Node `pipe()` proxy. argv: upstream port. Sends `{ port }`. */
import net from 'node:net';
import type { AddressInfo } from 'node:net';

const upstreamPort = Number(process.argv[2]);
const server = net.createServer((client) => {
  const upstream = net.connect(upstreamPort, '127.0.0.1');
  client.pipe(upstream).pipe(client);
  client.on('error', () => upstream.destroy());
  upstream.on('error', () => client.destroy());
});
server.listen(0, '127.0.0.1', () =>
  process.send?.({ port: (server.address() as AddressInfo).port }),
);
process.once('SIGTERM', () => process.exit(0));
