import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { RemoteInfo, Socket } from 'node:dgram';
import { UdpProxy } from '../../src/udp/UdpProxy.js';
import type { UdpProxyOptions } from '../../src/udp/UdpProxyOptions.js';
import type { UdpDrop, UdpSessionSummary } from '../../src/udp/events.js';
import type { SelectionContext } from '../../src/select/SelectionContext.js';
import { QUIC_V1 } from '../../src/protocol/quicKeys.js';
import { closeSocket, nextMessage, udpSocket } from '../udp/helpers.js';
import { buildInitial, cryptoFrame } from '../protocol/quicInitialFixtures.js';
import { alpnExtension, buildHandshake, sniExtension } from '../protocol/tlsHelloFixtures.js';

/** Replies wait this long at most: generous, for a loaded machine (they come in microseconds). */
const REPLY_MS = 10_000;

/**
 * A QUIC-ish upstream: answers a long header with one of its own (first byte `firstByte`:
 * Handshake by default, Retry with 0xf0) whose SCID is `scid`, ending with `tag`; anything else
 * with `tag:` + the datagram. Counts what it received.
 */
async function quicServer(tag: string, scid: Buffer, firstByte = 0xe0) {
  const socket = await udpSocket();
  let received = 0;
  socket.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
    received++;
    const reply =
      ((msg[0] ?? 0) & 0x80) !== 0
        ? Buffer.concat([
            Buffer.from([firstByte, 0, 0, 0, 1, 0, scid.length]),
            scid,
            Buffer.from(tag),
          ])
        : Buffer.concat([Buffer.from(`${tag}:`), msg]);
    socket.send(reply, rinfo.port, rinfo.address);
  });
  return {
    port: socket.address().port,
    get received() {
      return received;
    },
    close: () => closeSocket(socket),
  };
}

type Server = Awaited<ReturnType<typeof quicServer>>;

const initial = (name: string, dcid: Buffer, packetNumber = 0) =>
  buildInitial({
    version: QUIC_V1,
    dcid,
    packetNumber,
    frames: cryptoFrame(0, buildHandshake([sniExtension(name), alpnExtension(['h3'])])),
    padTo: 1200,
  });

/** A short-header datagram whose DCID is `cid`. */
const short = (cid: Buffer, payload: string) =>
  Buffer.concat([Buffer.from([0x40]), cid, Buffer.from(payload)]);

/** A client Handshake-type long header to `dcid` (its payload is not read by the proxy). */
const handshake = (dcid: Buffer) =>
  Buffer.concat([
    Buffer.from([0xe0, 0, 0, 0, 1, dcid.length]),
    dcid,
    Buffer.from([0]),
    Buffer.alloc(40),
  ]);

function byName(ctx: SelectionContext) {
  const wanted = { 'a.example': 'a', 'b.example': 'b', 'c.example': 'c' }[ctx.serverName ?? ''];
  return ctx.candidates.find((c) => c.id === wanted);
}

const reply = async (socket: Socket): Promise<string> =>
  (await nextMessage(socket, REPLY_MS)).toString('latin1');

describe('QUIC sessionPerConnection: one session per connection of a client socket', () => {
  const scidA = Buffer.from('a1a2a3a4a5a6a7a8', 'hex');
  const scidB = Buffer.from('b1b2b3b4b5b6b7b8', 'hex');
  const scidC = Buffer.from('c1c2c3c4c5c6c7c8', 'hex');
  const dcid1 = Buffer.alloc(8, 0x11);
  const dcid2 = Buffer.alloc(8, 0x22);
  const dcid3 = Buffer.alloc(8, 0x33);
  let a: Server;
  let b: Server;
  let c: Server;
  let client: Socket;

  before(async () => {
    a = await quicServer('A', scidA);
    b = await quicServer('B', scidB);
    c = await quicServer('C', scidC);
  });
  after(async () => {
    await a.close();
    await b.close();
    await c.close();
  });

  async function proxyWith(options: UdpProxyOptions) {
    const proxy = new UdpProxy({
      upstreams: [
        { id: 'a', host: '127.0.0.1', port: a.port },
        { id: 'b', host: '127.0.0.1', port: b.port },
        { id: 'c', host: '127.0.0.1', port: c.port },
      ],
      selector: byName,
      ...options,
    });
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    client = await udpSocket();
    const send = async (msg: Buffer): Promise<string> => {
      client.send(msg, port, '127.0.0.1');
      return reply(client);
    };
    return { proxy, port, send };
  }

  test('after the handshake, short headers go to the session of the connection whose server ID they carry', async () => {
    const { proxy, send } = await proxyWith({ quic: {} });
    try {
      assert.ok((await send(initial('a.example', dcid1))).endsWith('A'));
      assert.ok((await send(initial('b.example', dcid2))).endsWith('B'));
      // The client's next long headers carry the server's SCID as their DCID.
      assert.ok((await send(handshake(scidB))).endsWith('B'));
      assert.ok((await send(handshake(scidA))).endsWith('A'));
      // A retransmitted Initial of the second connection stays on its session.
      assert.ok((await send(initial('b.example', dcid2, 1))).endsWith('B'));
      assert.equal(await send(short(scidB, 'one')), `B:${short(scidB, 'one').toString('latin1')}`);
      assert.equal(await send(short(scidA, 'two')), `A:${short(scidA, 'two').toString('latin1')}`);
      assert.equal(await send(short(scidB, 'six')), `B:${short(scidB, 'six').toString('latin1')}`);
      // An ID no connection of the socket has: the oldest session, as before the split.
      const unknown = short(Buffer.alloc(8, 0x99), 'x');
      assert.equal(await send(unknown), `A:${unknown.toString('latin1')}`);
      // So is a long header of another type whose DCID no session knows.
      assert.ok((await send(handshake(Buffer.alloc(8, 0x98)))).endsWith('A'));
      const sessions = proxy.sessions();
      assert.deepEqual(
        sessions.map((s) => [s.serverName, s.upstream?.id, s.datagramsFromClient]),
        [
          ['a.example', 'a', 5],
          ['b.example', 'b', 5],
        ],
      );
      assert.equal(proxy.stats().quic?.quic_connection_sessions, 1);
    } finally {
      await closeSocket(client);
      await proxy.close();
    }
    assert.equal(proxy.stats().quic?.quic_cids_active, 0);
  });

  test('maxConnectionsPerSocket: the Initial of one connection more is dropped (quic_connection_limit) until one ends', async () => {
    const { proxy, port, send } = await proxyWith({ quic: { maxConnectionsPerSocket: 2 } });
    const drops: UdpDrop[] = [];
    proxy.on('dropped', (drop) => drops.push(drop));
    const closed: UdpSessionSummary[] = [];
    proxy.on('sessionClose', (summary) => closed.push(summary));
    try {
      assert.ok((await send(initial('a.example', dcid1))).endsWith('A'));
      assert.ok((await send(initial('b.example', dcid2))).endsWith('B'));
      const before = c.received;
      client.send(initial('c.example', dcid3), port, '127.0.0.1');
      // The refusal is synchronous with the datagram's arrival: a datagram sent after it and
      // answered proves it was read.
      assert.ok((await send(handshake(scidB))).endsWith('B'));
      assert.equal(c.received, before);
      assert.equal(proxy.stats().dropped.quic_connection_limit, 1);
      assert.deepEqual(
        drops.map((d) => [d.reason, d.from, d.sessionId, d.clientPort]),
        [['quic_connection_limit', 'client', undefined, client.address().port]],
      );
      // The oldest session ends: the socket's second is now its first (what cannot be told goes
      // there), and the third connection may open.
      const [first] = proxy.sessions();
      first?.close();
      assert.deepEqual(
        closed.map((s) => s.serverName),
        ['a.example'],
      );
      const unknown = short(Buffer.alloc(8, 0x99), 'x');
      assert.equal(await send(unknown), `B:${unknown.toString('latin1')}`);
      assert.ok((await send(initial('c.example', dcid3, 1))).endsWith('C'));
      assert.deepEqual(
        proxy.sessions().map((s) => s.serverName),
        ['b.example', 'c.example'],
      );
      assert.equal(await send(short(scidC, 'y')), `C:${short(scidC, 'y').toString('latin1')}`);
      assert.equal(proxy.stats().quic?.quic_connection_sessions, 2);
    } finally {
      await closeSocket(client);
      await proxy.close();
    }
  });

  test('a refused name is refused on its own connection while the allowed one flows', async () => {
    const { proxy, port, send } = await proxyWith({
      quic: {},
      selector: (ctx) => (ctx.serverName === 'a.example' ? byName(ctx) : undefined),
    });
    const closed: UdpSessionSummary[] = [];
    proxy.on('sessionClose', (summary) => closed.push(summary));
    try {
      assert.ok((await send(initial('a.example', dcid1))).endsWith('A'));
      const before = b.received + c.received;
      const aBefore = a.received;
      client.send(initial('b.example', dcid2), port, '127.0.0.1');
      assert.equal(await send(short(scidA, 'z')), `A:${short(scidA, 'z').toString('latin1')}`);
      assert.deepEqual(
        closed.map((s) => [s.serverName, s.reason, s.upstream]),
        [['b.example', 'no_upstream', undefined]],
      );
      // Upstream a saw the first connection's Initial and the short header, never b's Initial.
      assert.equal(a.received, aBefore + 1);
      assert.equal(b.received + c.received, before);
      assert.equal(proxy.sessions().length, 1);
    } finally {
      await closeSocket(client);
      await proxy.close();
    }
  });

  test("Initials after a server's Retries (the Retry's ID, then the handshake's) stay on their session", async () => {
    // Every Initial to the first DCID gets a Retry of a new ID (the client sent its Initial three
    // times before one came back); the rest a Handshake-type reply naming the server's own ID.
    const serverCid = Buffer.from('5e5e5e5e5e5e5e5e', 'hex');
    const retryCid = (n: number) => Buffer.alloc(8, 0xf0 + n);
    const socket = await udpSocket();
    let retries = 0;
    socket.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
      const retry = msg.subarray(6, 14).equals(dcid1);
      const scid = retry ? retryCid(retries++) : serverCid;
      const head = Buffer.from([retry ? 0xf0 : 0xe0, 0, 0, 0, 1, 0, scid.length]);
      socket.send(Buffer.concat([head, scid, Buffer.from('R')]), rinfo.port, rinfo.address);
    });
    const proxy = new UdpProxy({
      upstreams: [{ id: 'r', host: '127.0.0.1', port: socket.address().port }],
      quic: {},
    });
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    client = await udpSocket();
    const send = async (msg: Buffer): Promise<string> => {
      client.send(msg, port, '127.0.0.1');
      return reply(client);
    };
    try {
      for (let n = 0; n < 3; n++)
        assert.ok((await send(initial('a.example', dcid1, n))).endsWith('R'));
      assert.equal(retries, 3);
      // The client takes the first Retry: its next Initials carry that ID, then the server's.
      assert.ok((await send(initial('a.example', retryCid(0)))).endsWith('R'));
      assert.ok((await send(initial('a.example', serverCid, 1))).endsWith('R'));
      assert.ok((await send(short(serverCid, 'x'))).endsWith('R'));
      assert.equal(proxy.sessions().length, 1);
      assert.equal(proxy.sessions()[0]?.datagramsFromClient, 6);
      assert.equal(proxy.stats().quic?.quic_connection_sessions, 0);
      // The client's first DCID, the first two Retries' IDs, the server's.
      assert.equal(proxy.stats().quic?.quic_cids_active, 4);
    } finally {
      await closeSocket(client);
      await proxy.close();
      await closeSocket(socket);
    }
  });

  test('per-client limits apply to each connection: perClient.maxSessions 1 refuses the second (client_limit)', async () => {
    const { proxy, port, send } = await proxyWith({ quic: {}, perClient: { maxSessions: 1 } });
    try {
      assert.ok((await send(initial('a.example', dcid1))).endsWith('A'));
      client.send(initial('b.example', dcid2), port, '127.0.0.1');
      assert.ok((await send(handshake(scidA))).endsWith('A'));
      const stats = proxy.stats();
      assert.equal(stats.dropped.client_limit, 1);
      assert.equal(stats.quic?.quic_connection_sessions, 0);
      assert.equal(proxy.sessions().length, 1);
    } finally {
      await closeSocket(client);
      await proxy.close();
    }
  });

  test('without the quic option, every datagram of a socket is one session, Initials or not', async () => {
    const { proxy, send } = await proxyWith({ selector: (ctx) => ctx.candidates[0] });
    try {
      assert.ok((await send(initial('a.example', dcid1))).endsWith('A'));
      assert.ok((await send(initial('b.example', dcid2))).endsWith('A'));
      assert.equal(proxy.sessions().length, 1);
      assert.equal(proxy.stats().quic, undefined);
    } finally {
      await closeSocket(client);
      await proxy.close();
    }
  });
});
