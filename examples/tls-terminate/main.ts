/**
 * Terminating TLS with `tls.createServer`, then proxying the decrypted stream at layer 4 with
 * `handle()`: the upstream speaks plain TCP, the client speaks TLS. The certificate comes from
 * the command line (a test generates a throwaway one with openssl):
 *
 *   node build/examples/tls-terminate/main.js cert.pem key.pem
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';
import { TcpProxy } from '../../src/index.js';

async function main(certPath: string, keyPath: string): Promise<void> {
  const cert = readFileSync(certPath);
  const upstream = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.on('data', (chunk: Buffer) => socket.write(chunk.toString().toUpperCase()));
    socket.on('end', () => socket.end());
  });
  await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
  const proxy = new TcpProxy({
    upstreams: [{ host: '127.0.0.1', port: (upstream.address() as AddressInfo).port }],
  });
  proxy.on('connectionClose', (s) => {
    console.log(`closed: ${s.reason}, ${s.bytesFromClient} bytes decrypted from the client`);
  });

  // The TLS server owns the handshake; each decrypted TLSSocket is a stream the proxy relays.
  const server = tls.createServer(
    { cert, key: readFileSync(keyPath), allowHalfOpen: true },
    (socket) => {
      proxy.handle(socket);
    },
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;

  const reply = await new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = [];
    const client = tls.connect(
      { port, host: '127.0.0.1', ca: cert, servername: 'localhost' },
      () => {
        client.end('hello over tls\n');
      },
    );
    client.on('data', (chunk: Buffer) => chunks.push(chunk));
    client.on('end', () => {
      resolve(Buffer.concat(chunks).toString());
    });
    client.on('error', reject);
  });
  console.log(`client got: ${reply.trim()}`);
  await proxy.close();
  await new Promise((resolve) => server.close(resolve));
  await new Promise((resolve) => upstream.close(resolve));
}

const [certPath, keyPath] = process.argv.slice(2);
if (certPath === undefined || keyPath === undefined) {
  console.error('usage: main.js cert.pem key.pem');
  process.exitCode = 2;
} else {
  main(certPath, keyPath).catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
