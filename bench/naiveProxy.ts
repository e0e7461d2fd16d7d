/** The naive baseline: a ten-line Node `pipe()` proxy. argv: listen port, upstream port. */
import net from 'node:net';

const [listenPort, upstreamPort] = process.argv.slice(2).map(Number);
net
  .createServer((client) => {
    const upstream = net.connect(upstreamPort!, '127.0.0.1');
    client.pipe(upstream).pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  })
  .listen(listenPort, '127.0.0.1', () => process.send?.('ready'));
