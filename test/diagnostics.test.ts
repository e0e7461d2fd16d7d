import assert from 'node:assert/strict';
import diagnosticsChannel from 'node:diagnostics_channel';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { test } from 'node:test';
import { DiagnosticsChannel, TcpProxy, UdpProxy } from '../src/index.js';
import type {
  TcpConnectionCloseMessage,
  TcpConnectionMessage,
  TcpRejectedMessage,
  UdpDroppedMessage,
  UdpSessionCloseMessage,
  UdpSessionMessage,
} from '../src/index.js';
import { closed, connect, echoServer, readAll, waitFor } from './helpers/net.js';
import { closeSocket, request, udpEcho, udpSocket } from './udp/helpers.js';

/** Subscribes to `name` for the rest of the test, collecting messages. */
function collect<T>(t: { after(fn: () => void): void }, name: string): T[] {
  const messages: T[] = [];
  const listener = (message: unknown): void => {
    messages.push(message as T);
  };
  diagnosticsChannel.subscribe(name, listener);
  t.after(() => diagnosticsChannel.unsubscribe(name, listener));
  return messages;
}

test('channel names are the documented ones', () => {
  assert.deepEqual(Object.values(DiagnosticsChannel).sort(), [
    'l4proxy:tcp:connection',
    'l4proxy:tcp:connectionClose',
    'l4proxy:tcp:rejected',
    'l4proxy:udp:dropped',
    'l4proxy:udp:session',
    'l4proxy:udp:sessionClose',
  ]);
});

test('TCP connection, close and rejection are published with the proxy and the event payload', async (t) => {
  const connections = collect<TcpConnectionMessage>(t, DiagnosticsChannel.TCP_CONNECTION);
  const closes = collect<TcpConnectionCloseMessage>(t, DiagnosticsChannel.TCP_CONNECTION_CLOSE);
  const rejections = collect<TcpRejectedMessage>(t, DiagnosticsChannel.TCP_REJECTED);
  const echo = await echoServer();
  t.after(() => echo.close());
  const proxy = new TcpProxy({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    deny: ['127.0.0.2'],
  });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const address = await proxy.listen({ port: 0, host: '127.0.0.1' });
  const port = typeof address === 'string' ? 0 : address.port;
  const emitted = waitFor<[unknown]>(proxy, 'connectionClose');

  const socket = await connect(port);
  const body = readAll(socket);
  socket.end('hi');
  assert.equal((await body).toString(), 'hi');
  const [summary] = await emitted;
  await closed(net.connect({ port, host: '127.0.0.1', localAddress: '127.0.0.2' }));

  assert.equal(connections.length, 1);
  assert.equal(connections[0]?.proxy, proxy);
  assert.equal(connections[0].connection.clientAddress, '127.0.0.1');
  assert.equal(closes.length, 1);
  assert.equal(closes[0]?.proxy, proxy);
  assert.equal(closes[0].summary, summary, 'the same summary object as the event');
  assert.equal(closes[0].summary.reason, 'completed');
  assert.equal(rejections.length, 1);
  assert.equal(rejections[0]?.rejection.reason, 'denied');
  assert.equal(rejections[0].rejection.peerAddress, '127.0.0.2');
});

test('UDP session, close and drop are published, drops even with no dropped listener', async (t) => {
  const sessions = collect<UdpSessionMessage>(t, DiagnosticsChannel.UDP_SESSION);
  const closes = collect<UdpSessionCloseMessage>(t, DiagnosticsChannel.UDP_SESSION_CLOSE);
  const drops = collect<UdpDroppedMessage>(t, DiagnosticsChannel.UDP_DROPPED);
  const echo = await udpEcho();
  t.after(() => echo.close());
  const proxy = new UdpProxy({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    maxDatagramSize: 10,
  });
  t.after(() => proxy.close());
  const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
  const client = await udpSocket();
  t.after(() => closeSocket(client));
  assert.equal((await request(client, port, 'ping')).toString(), 'ping');
  const other = await udpSocket();
  t.after(() => closeSocket(other));
  other.send(Buffer.alloc(50), port, '127.0.0.1');
  for (let i = 0; i < 100 && drops.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  const [session] = proxy.sessions();
  const ended = waitFor(proxy, 'sessionClose');
  session?.close();
  await ended;

  assert.equal(sessions.length, 1);
  assert.equal(sessions[0]?.proxy, proxy);
  assert.equal(sessions[0].session.clientPort, client.address().port);
  assert.equal(drops.length, 1);
  assert.equal(drops[0]?.proxy, proxy);
  assert.equal(drops[0].drop.reason, 'oversized');
  assert.equal(drops[0].drop.size, 50);
  assert.equal(closes.length, 1);
  assert.equal(closes[0]?.summary.reason, 'closed_by_user');
});

test('every channel name and message type is documented in docs/operations.md', () => {
  const doc = readFileSync(new URL('../../docs/operations.md', import.meta.url), 'utf8');
  for (const name of Object.values(DiagnosticsChannel))
    assert.ok(doc.includes(`\`${name}\``), name);
  for (const type of [
    'TcpConnectionMessage',
    'TcpConnectionCloseMessage',
    'TcpRejectedMessage',
    'UdpSessionMessage',
    'UdpSessionCloseMessage',
    'UdpDroppedMessage',
  ]) {
    assert.ok(doc.includes(type), type);
  }
});
