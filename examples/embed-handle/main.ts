/**
 * Embedding l4proxy in a `net` server you already own: your server accepts, decides, and hands
 * the socket to `proxy.handle()`. Here the server greets clients of a blocked range itself and
 * proxies everyone else to an upstream. Run: `node build/examples/embed-handle/main.js`.
 */
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { TcpProxy } from '../../src/index.js';

async function main(): Promise<void> {
  // The upstream: an echo server, in this process to keep the example self-contained.
  const upstream = net.createServer({ allowHalfOpen: true }, (socket) => socket.pipe(socket));
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  const upstreamPort = (upstream.address() as AddressInfo).port;

  const proxy = new TcpProxy({ upstreams: [{ host: '127.0.0.1', port: upstreamPort }] });
  proxy.on('connectionClose', (s) => {
    console.log(
      `proxied ${s.clientAddress}:${s.clientPort} -> ${s.upstream?.id}: ${s.reason}, ${s.bytesToClient} bytes back`,
    );
  });

  // Your own server: allowHalfOpen so half-closed connections keep working through the proxy.
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    if (socket.remoteAddress === '127.0.0.2') {
      socket.resume(); // read (and discard) what it sends, so its FIN arrives and the socket closes
      socket.end('this address is served locally\n');
      return;
    }
    proxy.handle(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;

  for (const localAddress of ['127.0.0.1', '127.0.0.2']) {
    const reply = await new Promise<string>((resolve, reject) => {
      const chunks: Buffer[] = [];
      const client = net.connect({ port, host: '127.0.0.1', localAddress, allowHalfOpen: true });
      client.on('data', (chunk: Buffer) => chunks.push(chunk));
      client.on('end', () => {
        client.end();
        resolve(Buffer.concat(chunks).toString());
      });
      client.on('error', reject);
      client.end(`hello from ${localAddress}\n`);
    });
    console.log(`client ${localAddress} got: ${reply.trim()}`);
  }

  await proxy.close();
  await new Promise((resolve) => server.close(resolve));
  await new Promise((resolve) => upstream.close(resolve));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
