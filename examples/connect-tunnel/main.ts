/**
 * An HTTP CONNECT tunnel built on `handle()` and a per-connection selector: the HTTP server
 * parses `CONNECT host:port`, checks it against an allow list, answers 200, and hands the raw
 * socket to a TcpProxy whose selector dials the requested target (an upstream outside any set).
 * Run: `node build/examples/connect-tunnel/main.js`.
 */
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { TcpProxy } from '../../src/index.js';
import type { Upstream } from '../../src/index.js';

/** Where each tunnelled client asked to go, set by the CONNECT handler before handle(). */
const byPeer = new Map<string, Upstream>();

async function main(): Promise<void> {
  const target = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.end('hello from the target\n');
  });
  await new Promise<void>((resolve) => target.listen(0, '127.0.0.1', resolve));
  const targetPort = (target.address() as AddressInfo).port;
  const allowed = new Set([`127.0.0.1:${targetPort}`]);

  const proxy = new TcpProxy({
    // The selector reads the target the CONNECT request named for this client.
    selector: (ctx) => byPeer.get(`${ctx.clientAddress}:${ctx.clientPort}`),
  });
  proxy.on('connectionClose', (s) => {
    byPeer.delete(`${s.clientAddress}:${s.clientPort}`);
    console.log(`tunnel to ${s.upstream?.id} closed: ${s.reason}`);
  });

  const server = http.createServer((_req, res) => res.writeHead(405).end());
  server.on('connect', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    const authority = req.url ?? '';
    const [host = '', port = '0'] = authority.split(':');
    if (!allowed.has(authority)) {
      socket.end('HTTP/1.1 403 Forbidden\r\n\r\n');
      return;
    }
    const upstream = { host, port: Number(port) };
    byPeer.set(`${socket.remoteAddress}:${socket.remotePort}`, upstream);
    socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    if (head.length > 0) socket.unshift(head);
    proxy.handle(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;

  const reply = await new Promise<string>((resolve, reject) => {
    const request = http.request({
      host: '127.0.0.1',
      port,
      method: 'CONNECT',
      path: `127.0.0.1:${targetPort}`,
    });
    request.on('connect', (res: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      console.log(`CONNECT answered ${String(res.statusCode)}`);
      // Bytes that arrived with the response head belong to the tunnel already.
      const chunks: Buffer[] = [head];
      socket.on('data', (chunk: Buffer) => chunks.push(chunk));
      socket.on('end', () => {
        socket.end();
        resolve(Buffer.concat(chunks).toString());
      });
    });
    request.on('error', reject);
    request.end();
  });
  console.log(`through the tunnel: ${reply.trim()}`);
  await proxy.close();
  await new Promise((resolve) => server.close(resolve));
  await new Promise((resolve) => target.close(resolve));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
