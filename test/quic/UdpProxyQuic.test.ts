import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { RemoteInfo, Socket } from 'node:dgram';
import { InvalidOptionError } from '../../src/errors.js';
import { UdpProxy } from '../../src/udp/UdpProxy.js';
import type { UdpSessionSummary } from '../../src/udp/events.js';
import type { UdpQuicOptions } from '../../src/quic/quicOptions.js';
import type { SelectionContext } from '../../src/select/SelectionContext.js';
import { QUIC_V1, QUIC_V2 } from '../../src/protocol/quicKeys.js';
import { withTimeout } from '../helpers/net.js';
import { openHandles } from '../helpers/proxy.js';
import { closeSocket, nextMessage, udpSocket } from '../udp/helpers.js';
import { buildInitial, cryptoFrame } from '../protocol/quicInitialFixtures.js';
import { alpnExtension, buildHandshake, sniExtension } from '../protocol/tlsHelloFixtures.js';
import { V1_CLIENT_INITIAL, V2_CLIENT_INITIAL } from '../protocol/quicVectors.js';

/**
 * A QUIC-ish upstream: replies to a long-header datagram with a Handshake-type long header whose
 * SCID is `cid` (what a server's first packets carry), to anything else with `tag:` + payload.
 * Records the proxy-side source ports it saw.
 */
async function fakeServer(tag: string, cid: Buffer, host = '127.0.0.1') {
  const socket = await udpSocket(host);
  const ports = new Set<number>();
  let received = 0;
  socket.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
    received++;
    ports.add(rinfo.port);
    if (((msg[0] ?? 0) & 0x80) !== 0) {
      const head = Buffer.from([0xe0, 0, 0, 0, 1, 0, cid.length]);
      socket.send(Buffer.concat([head, cid, Buffer.from(tag)]), rinfo.port, rinfo.address);
    } else socket.send(Buffer.concat([Buffer.from(`${tag}:`), msg]), rinfo.port, rinfo.address);
  });
  return {
    tag,
    port: socket.address().port,
    ports,
    get received() {
      return received;
    },
    close: () => closeSocket(socket),
  };
}

type Server = Awaited<ReturnType<typeof fakeServer>>;

function byName(ctx: SelectionContext) {
  const wanted = ctx.serverName === 'example.com' ? 'a' : 'b';
  return ctx.candidates.find((c) => c.id === wanted);
}

function closes(proxy: UdpProxy): UdpSessionSummary[] {
  const list: UdpSessionSummary[] = [];
  proxy.on('sessionClose', (s) => list.push(s));
  return list;
}

describe('UdpProxy quic option', () => {
  let a: Server;
  let b: Server;
  let client: Socket;
  const cidA = Buffer.from('aa00112233445566', 'hex');
  const cidB = Buffer.from('bb00112233445566', 'hex');
  const upstreams = () => [
    { id: 'a', host: '127.0.0.1', port: a.port },
    { id: 'b', host: '127.0.0.1', port: b.port },
  ];

  before(async () => {
    a = await fakeServer('A', cidA);
    b = await fakeServer('B', cidB);
  });
  after(async () => {
    await a.close();
    await b.close();
  });

  async function proxyWith(options: ConstructorParameters<typeof UdpProxy>[0]) {
    const proxy = new UdpProxy({ upstreams: upstreams(), ...options });
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    return { proxy, port };
  }

  test('selectors see serverName, alpn and quicVersion of RFC 9001 and RFC 9369 Initials', async () => {
    const seen: [string | undefined, readonly string[] | undefined, number | undefined][] = [];
    const { proxy, port } = await proxyWith({
      quic: { sni: true },
      selector: (ctx) => {
        seen.push([ctx.serverName, ctx.alpn, ctx.quicVersion]);
        return byName(ctx);
      },
    });
    const summaries = closes(proxy);
    try {
      for (const packet of [V1_CLIENT_INITIAL, V2_CLIENT_INITIAL]) {
        client = await udpSocket();
        client.send(packet, port, '127.0.0.1');
        const reply = await nextMessage(client);
        assert.equal(reply.subarray(-1).toString(), 'A');
        await closeSocket(client);
      }
      assert.deepEqual(seen, [
        ['example.com', ['alpn'], QUIC_V1],
        ['example.com', ['alpn'], QUIC_V2],
      ]);
      const stats = proxy.stats().quic;
      assert.ok(stats);
      assert.equal(stats.quic_initials_parsed, 2);
      assert.equal(stats.quic_sni_found, 2);
      assert.match(proxy.metrics(), /^l4proxy_udp_quic_sni_found_total 2$/m);
    } finally {
      await proxy.close();
    }
    assert.deepEqual(
      summaries.map((x) => [x.serverName, x.quicVersion]),
      [
        ['example.com', QUIC_V1],
        ['example.com', QUIC_V2],
      ],
    );
  });

  test('a ClientHello over two datagrams waits for both; other names go elsewhere', async () => {
    const hello = buildHandshake([sniExtension('other.example'), alpnExtension(['h3'])]);
    const dcid = Buffer.alloc(8, 3);
    const half = 30;
    const { proxy, port } = await proxyWith({ quic: {}, selector: byName });
    client = await udpSocket();
    try {
      client.send(
        buildInitial({
          version: QUIC_V1,
          dcid,
          frames: cryptoFrame(half, hello.subarray(half)),
          padTo: 1200,
        }),
        port,
        '127.0.0.1',
      );
      // Nothing is forwarded until the ClientHello is complete.
      await new Promise((r) => setImmediate(r));
      assert.equal(proxy.sessions()[0]?.upstream, undefined);
      client.send(
        buildInitial({
          version: QUIC_V1,
          dcid,
          packetNumber: 1,
          frames: cryptoFrame(0, hello.subarray(0, half)),
          padTo: 1200,
        }),
        port,
        '127.0.0.1',
      );
      const first = await nextMessage(client);
      assert.equal(first.subarray(-1).toString(), 'B');
      assert.equal(proxy.sessions()[0]?.serverName, 'other.example');
      assert.deepEqual(proxy.sessions()[0]?.alpn, ['h3']);
    } finally {
      await closeSocket(client);
      await proxy.close();
    }
  });

  // A forged Initial of another DCID coalesced behind the first carried the end of a ClientHello
  // naming example.com: the proxy read it and routed to A, while a server ignores it (RFC 9000
  // 12.2; ngtcp2, quic-go) and completed the ClientHello from the client's next datagram, whose
  // end names another server: a name route passed by a name the server never saw.
  test('a coalesced Initial of another DCID is skipped as a server skips it: the session is routed by the name the server reads', async () => {
    const { x, y, k } = divergingHellos();
    const dcid = Buffer.alloc(8, 4);
    const initial = (id: Buffer, packetNumber: number, frames: Buffer): Buffer =>
      buildInitial({ version: QUIC_V1, dcid: id, packetNumber, frames });
    const { proxy, port, names } = await nameRouted({});
    client = await udpSocket();
    try {
      client.send(
        Buffer.concat([
          initial(dcid, 0, cryptoFrame(0, x.subarray(0, k))),
          initial(Buffer.alloc(8, 5), 1, cryptoFrame(k, x.subarray(k))),
        ]),
        port,
        '127.0.0.1',
      );
      client.send(initial(dcid, 1, cryptoFrame(k, y.subarray(k))), port, '127.0.0.1');
      const reply = await nextMessage(client);
      assert.equal(reply.subarray(-1).toString(), 'B');
      assert.deepEqual(names, ['private.com']);
      assert.equal(proxy.sessions()[0]?.serverName, 'private.com');
    } finally {
      await closeSocket(client);
      await proxy.close();
    }
  });

  // The end of a ClientHello naming example.com in a datagram under 1200 bytes, which servers
  // discard (RFC 9000 14.1; ngtcp2, quic-go), routed the session to A; the server completed the
  // ClientHello from the client's next datagram, with another name.
  test('an Initial in a datagram under 1200 bytes is skipped as a server skips it: the session is routed by the name the server reads', async () => {
    const { x, y, k } = divergingHellos();
    const dcid = Buffer.alloc(8, 6);
    const { proxy, port, names } = await nameRouted({});
    client = await udpSocket();
    try {
      for (const [packetNumber, frames, padTo] of [
        [0, cryptoFrame(0, x.subarray(0, k)), undefined],
        [1, cryptoFrame(k, x.subarray(k)), 0],
        [2, cryptoFrame(k, y.subarray(k)), undefined],
      ] as const) {
        const datagram = buildInitial({
          version: QUIC_V1,
          dcid,
          packetNumber,
          frames,
          ...(padTo !== undefined && { padTo }),
        });
        client.send(datagram, port, '127.0.0.1');
      }
      const reply = await nextMessage(client);
      assert.equal(reply.subarray(-1).toString(), 'B');
      assert.deepEqual(names, ['private.com']);
    } finally {
      await closeSocket(client);
      await proxy.close();
    }
  });

  // A second packet of number 0 carrying the end of a ClientHello naming example.com routed the
  // session to A; servers discard it (RFC 9000 12.3; ngtcp2 before decrypting it) and completed
  // the ClientHello from packet 1, with another name.
  test('a packet number already read is skipped as a server skips it: the session is routed by the name the server reads', async () => {
    const { x, y, k } = divergingHellos();
    const dcid = Buffer.alloc(8, 7);
    const { proxy, port, names } = await nameRouted({});
    client = await udpSocket();
    try {
      for (const [packetNumber, frames] of [
        [0, cryptoFrame(0, x.subarray(0, k))],
        [0, cryptoFrame(k, x.subarray(k))],
        [1, cryptoFrame(k, y.subarray(k))],
      ] as const)
        client.send(
          buildInitial({ version: QUIC_V1, dcid, packetNumber, frames }),
          port,
          '127.0.0.1',
        );
      const reply = await nextMessage(client);
      assert.equal(reply.subarray(-1).toString(), 'B');
      assert.deepEqual(names, ['private.com']);
    } finally {
      await closeSocket(client);
      await proxy.close();
    }
  });

  // A Retry leaves no state on the server: the client's next Initial opens a connection whose
  // ClientHello the server reads afresh. It forwarded unread, a client routed by example.com
  // could name another server after the Retry and reach it on the chosen upstream.
  test('after a Retry, an Initial with another ClientHello ends the session unsent (quic_no_client_hello); the same one passes', async () => {
    const retryCid = Buffer.alloc(8, 0x42);
    const server = await udpSocket();
    const serverCid = Buffer.alloc(8, 0x5e);
    const got: Buffer[] = [];
    let lastPeer = { port: 0 };
    server.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
      got.push(msg);
      lastPeer = rinfo;
      if (got.length > 1) return;
      // A v1 Retry: type 3, DCID the client's SCID (empty), SCID the new ID, a token, a tag.
      const head = Buffer.from([0xf0, 0, 0, 0, 1, 0, retryCid.length]);
      server.send(Buffer.concat([head, retryCid, Buffer.alloc(20, 9)]), rinfo.port, rinfo.address);
    });
    const named = (name: string, dcid: Buffer, packetNumber: number): Buffer =>
      buildInitial({
        version: QUIC_V1,
        dcid,
        packetNumber,
        frames: cryptoFrame(0, buildHandshake([sniExtension(name), alpnExtension(['h3'])])),
      });
    const proxy = new UdpProxy({
      upstreams: [{ id: 'a', host: '127.0.0.1', port: server.address().port }],
      selector: (ctx) => (ctx.serverName === 'example.com' ? ctx.candidates[0] : undefined),
      quic: {},
    });
    const summaries = closes(proxy);
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    try {
      for (const [after, passes] of [
        ['private.com', false],
        ['example.com', true],
      ] as const) {
        got.length = 0;
        client = await udpSocket();
        client.send(named('example.com', Buffer.alloc(8, 1), 0), port, '127.0.0.1');
        const retry = await nextMessage(client);
        assert.equal(retry[0], 0xf0);
        const closed = summaries.length;
        // The client's Initial to the Retry's ID, then one to its first DCID again.
        client.send(named(after, retryCid, 1), port, '127.0.0.1');
        client.send(named(after, Buffer.alloc(8, 1), 2), port, '127.0.0.1');
        if (passes) {
          await withTimeout(
            (async () => {
              while (got.length < 3) await new Promise((r) => server.once('message', r));
            })(),
            10_000,
            'the Initials after the Retry',
          );
          assert.equal(summaries.length, closed);
          // The server's Initial from its own ID; the client acknowledges it in an Initial to
          // that ID, sealed with the keys of the Retry's ID (the one the server read the hello
          // under): forwarded, not read as a ClientHello of its own DCID.
          const serverInitial = Buffer.concat([
            Buffer.from([0xc0, 0, 0, 0, 1, 0, serverCid.length]),
            serverCid,
            Buffer.from([0, 0x40, 20]),
            Buffer.alloc(20, 7),
          ]);
          server.send(serverInitial, lastPeer.port, '127.0.0.1');
          await nextMessage(client);
          const ack = Buffer.from([0x02, 0, 0, 0, 0]);
          const acked = buildInitial({
            version: QUIC_V1,
            dcid: serverCid,
            keyCid: retryCid,
            packetNumber: 3,
            frames: ack,
          });
          client.send(acked, port, '127.0.0.1');
          await withTimeout(
            (async () => {
              while (got.length < 4) await new Promise((r) => server.once('message', r));
            })(),
            10_000,
            "the client's Initial to the server's ID",
          );
          assert.equal(summaries.length, closed);
          assert.equal(proxy.stats().quic?.quic_parse_errors, 1);
        } else {
          await withTimeout(
            (async () => {
              while (summaries.length === closed)
                await new Promise((r) => proxy.once('sessionClose', r));
            })(),
            10_000,
            'the session to end',
          );
          assert.equal(summaries[closed]?.reason, 'quic_no_client_hello');
          assert.equal(got.length, 1, 'only the first Initial reached the server');
          assert.equal(proxy.stats().quic?.quic_parse_errors, 1);
        }
        await closeSocket(client);
      }
    } finally {
      await proxy.close();
      await closeSocket(server);
    }
  });

  const namedInitial = (name: string, dcid: Buffer) =>
    buildInitial({
      version: QUIC_V1,
      dcid,
      frames: cryptoFrame(0, buildHandshake([sniExtension(name), alpnExtension(['h3'])])),
      padTo: 1200,
    });

  /**
   * ClientHellos naming example.com (`x`) and private.com (`y`), the same up to byte `k`: a
   * client can send `x`'s start and then either end.
   */
  function divergingHellos(): { x: Buffer; y: Buffer; k: number } {
    const x = buildHandshake([sniExtension('example.com'), alpnExtension(['h3'])]);
    const y = buildHandshake([sniExtension('private.com'), alpnExtension(['h3'])]);
    let k = 0;
    while (x[k] === y[k]) k++;
    return { x, y, k };
  }

  /** A proxy routing by name (`byName`) with `quic`; `names`: each name its selector was given. */
  async function nameRouted(quic: UdpQuicOptions) {
    const names: (string | undefined)[] = [];
    const { proxy, port } = await proxyWith({
      quic,
      selector: (ctx) => {
        names.push(ctx.serverName);
        return byName(ctx);
      },
    });
    return { proxy, port, names };
  }

  /** The client's Initial for `name` (a DCID of eight `dcidByte`s): the tag of the upstream that answered. */
  async function initialTo(port: number, name: string, dcidByte: number): Promise<string> {
    client.send(namedInitial(name, Buffer.alloc(8, dcidByte)), port, '127.0.0.1');
    return (await nextMessage(client)).subarray(-1).toString();
  }

  // docs/quic.md, "A name route is an access boundary": a client may run several QUIC
  // connections over one socket (quic-go's HTTP/3 client does, to every server it talks to).
  // Each connection's Initial opens a session of its own, routed by its own name. (Before
  // sessionPerConnection, the second Initial rode the first session to upstream A.)
  test('a second QUIC connection from the same address and port gets its own session, routed by its own name', async () => {
    const { proxy, port, names } = await nameRouted({});
    client = await udpSocket();
    try {
      assert.equal(await initialTo(port, 'example.com', 1), 'A');
      // A new connection (new DCID, another name that routes to b) from the same socket.
      assert.equal(await initialTo(port, 'other.example', 2), 'B');
      assert.deepEqual(names, ['example.com', 'other.example']);
      const sessions = proxy.sessions();
      assert.deepEqual(
        sessions.map((s) => [s.clientPort, s.serverName, s.upstream?.id]),
        [
          [client.address().port, 'example.com', 'a'],
          [client.address().port, 'other.example', 'b'],
        ],
      );
      const stats = proxy.stats();
      assert.equal(stats.quic?.quic_initials_parsed, 2);
      assert.equal(stats.quic.quic_connection_sessions, 1);
      assert.equal(stats.downstream_sess_total, 2);
      assert.match(proxy.metrics(), /^l4proxy_udp_quic_connection_sessions_total 1$/m);
    } finally {
      await closeSocket(client);
      await proxy.close();
    }
  });

  test('sessionPerConnection: false: a second QUIC connection from the same socket rides the first session and its upstream', async () => {
    const { proxy, port, names } = await nameRouted({ sessionPerConnection: false });
    client = await udpSocket();
    try {
      assert.equal(await initialTo(port, 'example.com', 1), 'A');
      assert.equal(await initialTo(port, 'other.example', 2), 'A');
      assert.deepEqual(names, ['example.com']);
      assert.equal(proxy.sessions().length, 1);
      assert.equal(proxy.stats().quic?.quic_initials_parsed, 1);
      assert.equal(proxy.stats().quic?.quic_connection_sessions, 0);
    } finally {
      await closeSocket(client);
      await proxy.close();
    }
  });

  test('the rest of a ClientHello that reached the proxy before maxInitialWait ran out is read, even when the event loop was busy past it', async () => {
    const hello = buildHandshake([sniExtension('example.com'), alpnExtension(['h3'])]);
    const dcid = Buffer.alloc(8, 4);
    const half = 30;
    const part = (packetNumber: number, offset: number, data: Buffer) =>
      buildInitial({
        version: QUIC_V1,
        dcid,
        packetNumber,
        frames: cryptoFrame(offset, data),
        padTo: 1200,
      });
    const { proxy, port } = await proxyWith({ quic: { maxInitialWait: 600 }, selector: byName });
    client = await udpSocket();
    try {
      const opened = new Promise<void>((resolve) =>
        proxy.once('session', () => {
          resolve();
        }),
      );
      client.send(part(0, half, hello.subarray(half)), port, '127.0.0.1');
      await withTimeout(opened, 3_000, 'the session');
      const started = Date.now();
      // The rest goes at 300 ms, after that turn's poll, then this process is busy until past
      // maxInitialWait (600 ms): the loop runs its due timers before the poll that reads it.
      // (The margins let a loaded machine fire the 300 ms timer up to 300 ms late.)
      setTimeout(() => {
        // Sent before the next immediate runs (dgram's lookup answers on the next tick).
        setImmediate(() => {
          client.send(part(1, 0, hello.subarray(0, half)), port, '127.0.0.1');
        });
        setImmediate(() => {
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, started + 700 - Date.now());
        });
      }, 300);
      const first = await nextMessage(client);
      assert.equal(first.subarray(-1).toString(), 'A', 'routed by the name it sent');
      assert.equal(proxy.sessions()[0]?.serverName, 'example.com');
      assert.equal(proxy.stats().quic?.quic_incomplete, 0);
    } finally {
      await closeSocket(client);
      await proxy.close();
    }
  });

  test('non-QUIC datagrams pass as without the option', async () => {
    const { proxy, port } = await proxyWith({ quic: { fallback: 'drop' }, selector: byName });
    client = await udpSocket();
    try {
      client.send('plain', port, '127.0.0.1');
      assert.equal((await nextMessage(client)).toString(), 'B:plain');
      assert.equal(proxy.stats().quic?.quic_not_quic, 1);
    } finally {
      await closeSocket(client);
      await proxy.close();
    }
  });

  test("an empty first datagram is not QUIC: routed at once, even with fallback 'drop'", async () => {
    const { proxy, port } = await proxyWith({
      quic: { fallback: 'drop', maxInitialWait: 60_000 },
      selector: byName,
    });
    client = await udpSocket();
    try {
      client.send(Buffer.alloc(0), port, '127.0.0.1');
      assert.equal((await nextMessage(client)).toString(), 'B:');
      assert.equal(proxy.stats().quic?.quic_not_quic, 1);
      assert.equal(proxy.stats().quic?.quic_incomplete, 0);
    } finally {
      await closeSocket(client);
      await proxy.close();
    }
  });

  test("an undecryptable Initial: fallback 'drop' closes the session, 'route' routes without a name", async () => {
    const bad = Buffer.from(V1_CLIENT_INITIAL);
    bad[100] = (bad[100] ?? 0) ^ 1;
    for (const fallback of ['drop', 'route'] as const) {
      const { proxy, port, names } = await nameRouted({ fallback });
      const closed = closes(proxy);
      const firstClose = new Promise<void>((resolve) =>
        proxy.once('sessionClose', () => {
          resolve();
        }),
      );
      client = await udpSocket();
      try {
        client.send(bad, port, '127.0.0.1');
        if (fallback === 'drop') {
          await withTimeout(firstClose, 3_000, 'the session to close');
          const summary = closed[0];
          assert.equal(summary?.reason, 'quic_no_client_hello');
          assert.ok(summary.error);
          assert.match(summary.error.message, /decrypt_failed/);
          assert.equal(proxy.stats().dropped.quic_no_client_hello, 1);
          assert.equal(proxy.stats().quic?.quic_fallback_dropped, 1);
          assert.deepEqual(names, []);
        } else {
          const reply = await nextMessage(client);
          assert.equal(reply.subarray(-1).toString(), 'B');
          assert.deepEqual(names, [undefined]);
          assert.equal(proxy.stats().quic?.quic_fallback_routed, 1);
        }
        assert.equal(proxy.stats().quic?.quic_parse_errors, 1);
      } finally {
        await closeSocket(client);
        await proxy.close();
      }
    }
  });

  test('a datagram of 1 700 tiny coalesced Initials is a parse error after 4 of them; a real client beside it is served', async () => {
    const dcid = Buffer.from('0011223344556677', 'hex');
    const flood = Buffer.concat(
      Array.from({ length: 1_700 }, (_, pn) =>
        buildInitial({
          version: QUIC_V1,
          dcid,
          packetNumber: pn,
          frames: Buffer.from([0x01]),
          padTo: 0,
        }),
      ),
    );
    assert.ok(flood.length <= 65_507);
    const { proxy, port } = await proxyWith({ quic: { fallback: 'drop' }, selector: byName });
    const closed = closes(proxy);
    const firstClose = new Promise<void>((resolve) =>
      proxy.once('sessionClose', () => {
        resolve();
      }),
    );
    const attacker = await udpSocket();
    client = await udpSocket();
    try {
      attacker.send(flood, port, '127.0.0.1');
      await withTimeout(firstClose, 3_000, 'the session to close');
      assert.equal(closed[0]?.reason, 'quic_no_client_hello');
      assert.match(closed[0].error?.message ?? '', /too_many_packets/);
      assert.equal(proxy.stats().quic?.quic_parse_errors, 1);
      assert.equal(proxy.stats().dropped.quic_no_client_hello, 1);
      client.send(V1_CLIENT_INITIAL, port, '127.0.0.1');
      assert.equal((await nextMessage(client)).subarray(-1).toString(), 'A');
    } finally {
      await closeSocket(attacker);
      await closeSocket(client);
      await proxy.close();
    }
  });

  test("a truncated Initial (cut inside its connection IDs) is a parse error: fallback 'drop' closes its session", async () => {
    const { proxy, port } = await proxyWith({ quic: { fallback: 'drop' }, selector: byName });
    const closed = closes(proxy);
    const firstClose = new Promise<void>((resolve) =>
      proxy.once('sessionClose', () => {
        resolve();
      }),
    );
    client = await udpSocket();
    try {
      client.send(V1_CLIENT_INITIAL.subarray(0, 10), port, '127.0.0.1');
      await withTimeout(firstClose, 3_000, 'the session to close');
      const summary = closed[0];
      assert.equal(summary?.reason, 'quic_no_client_hello');
      assert.ok(summary.error);
      assert.match(summary.error.message, /bad_header/);
      const stats = proxy.stats();
      assert.ok(stats.quic);
      assert.equal(stats.quic.quic_parse_errors, 1);
      assert.equal(stats.quic.quic_not_quic, 0);
      assert.equal(stats.quic.quic_fallback_dropped, 1);
      assert.equal(stats.upstream_sess_tx_datagrams, 0);
    } finally {
      await closeSocket(client);
      await proxy.close();
    }
  });

  test('an incomplete ClientHello is routed after maxInitialWait; maxInitialDatagrams bounds the count', async () => {
    const hello = buildHandshake([sniExtension('example.com')]);
    const dcid = Buffer.alloc(8, 4);
    const part = buildInitial({
      version: QUIC_V1,
      dcid,
      frames: cryptoFrame(0, hello.subarray(0, 10)),
      padTo: 1200,
    });
    const { proxy, port } = await proxyWith({
      quic: { maxInitialWait: 50, maxInitialDatagrams: 2 },
      selector: byName,
    });
    client = await udpSocket();
    const other = await udpSocket();
    try {
      client.send(part, port, '127.0.0.1');
      const reply = await nextMessage(client);
      assert.equal(reply.subarray(-1).toString(), 'B');
      other.send(part, port, '127.0.0.1');
      other.send(
        buildInitial({
          version: QUIC_V1,
          dcid,
          packetNumber: 1,
          frames: cryptoFrame(10, hello.subarray(10, 20)),
          padTo: 1200,
        }),
        port,
        '127.0.0.1',
      );
      await nextMessage(other);
      assert.equal(proxy.stats().quic?.quic_incomplete, 2);
    } finally {
      await closeSocket(client);
      await closeSocket(other);
      await proxy.close();
    }
  });

  for (const routing of [true, false]) {
    test(`a new client address with a known server connection ID ${routing ? 'keeps' : 'loses (routing off)'} its upstream`, async () => {
      const { proxy, port } = await proxyWith({
        quic: { sni: false, connectionIdRouting: routing },
      });
      const first = await udpSocket();
      const moved = await udpSocket();
      try {
        // Round robin: the first session goes to a, whose long-header reply names cidA.
        first.send(V1_CLIENT_INITIAL, port, '127.0.0.1');
        const hello = await nextMessage(first);
        assert.equal(hello.subarray(-1).toString(), 'A');
        const short = Buffer.concat([Buffer.from([0x41]), cidA, Buffer.from('data')]);
        moved.send(short, port, '127.0.0.1');
        const reply = await nextMessage(moved);
        assert.equal(reply.subarray(0, 2).toString(), routing ? 'A:' : 'B:');
        if (routing) {
          assert.equal(a.ports.size >= 2, true, 'a new proxy socket: the server sees a new path');
          assert.equal(proxy.stats().quic?.quic_cid_routed, 1);
          assert.equal(proxy.stats().quic?.quic_cids_active, 2);
          // The old path's session still gets nothing of the new path's replies.
          assert.equal(proxy.sessions().length, 2);
        }
      } finally {
        await closeSocket(first);
        await closeSocket(moved);
        await proxy.close();
      }
      assert.equal(proxy.stats().quic?.quic_cids_active, 0);
      a.ports.clear();
    });
  }

  test('connection-ID routing over IPv6 (::1)', async () => {
    const six = await fakeServer('6', cidA, '::1');
    const other = await fakeServer('X', cidB, '::1');
    const proxy = new UdpProxy({
      upstreams: [
        { id: 'six', host: '::1', port: six.port },
        { id: 'other', host: '::1', port: other.port },
      ],
      quic: { connectionIdRouting: true },
    });
    const { port } = await proxy.bind({ port: 0, address: '::1' });
    const first = await udpSocket('::1');
    const moved = await udpSocket('::1');
    try {
      first.send(V1_CLIENT_INITIAL, port, '::1');
      assert.equal((await nextMessage(first)).subarray(-1).toString(), '6');
      moved.send(Buffer.concat([Buffer.from([0x41]), cidA, Buffer.from('v6')]), port, '::1');
      assert.equal((await nextMessage(moved)).subarray(0, 2).toString(), '6:');
      assert.equal(proxy.stats().quic?.quic_cid_routed, 1);
      assert.equal(proxy.sessions()[1]?.clientFamily, 'IPv6');
    } finally {
      await closeSocket(first);
      await closeSocket(moved);
      await proxy.close();
      await six.close();
      await other.close();
    }
  });

  test('QUIC-LB plaintext server IDs route a new address to the encoded server', async () => {
    const { proxy, port } = await proxyWith({
      quic: { sni: false, quicLb: { serverIdLength: 3, servers: { c4605e: 'b', '0a0b0c': 'a' } } },
      selector: (ctx) => ctx.candidates.find((c) => c.id === 'a'),
    });
    const client1 = await udpSocket();
    try {
      // draft-ietf-quic-load-balancers "Unencrypted CIDs", cr_bits 0: cid 07c4605e4504cc4f -> sid c4605e.
      const cid = Buffer.from('07c4605e4504cc4f', 'hex');
      client1.send(Buffer.concat([Buffer.from([0x40]), cid, Buffer.from('x')]), port, '127.0.0.1');
      assert.equal((await nextMessage(client1)).subarray(0, 2).toString(), 'B:');
      assert.equal(proxy.stats().quic?.quic_lb_routed, 1);
      // A client Initial whose random DCID happens to look encoded is not routed by it.
      const initial = await udpSocket();
      try {
        initial.send(
          buildInitial({
            version: QUIC_V1,
            dcid: cid,
            frames: cryptoFrame(0, Buffer.alloc(30, 1)),
          }),
          port,
          '127.0.0.1',
        );
        assert.equal((await nextMessage(initial)).subarray(-1).toString(), 'A');
        assert.equal(proxy.stats().quic?.quic_lb_routed, 1);
      } finally {
        await closeSocket(initial);
      }
      // A Handshake packet with an empty DCID: its SCID (the client's choice) names no server.
      const empty = await udpSocket();
      try {
        const version = Buffer.alloc(4);
        version.writeUInt32BE(QUIC_V1);
        // Read from where a DCID would be, the SCID length (8: rotation 0) and c4605e follow.
        const scid = Buffer.from('c4605e4504cc4f00', 'hex');
        const handshake = Buffer.concat([
          Buffer.from([0xe3]),
          version,
          Buffer.from([0, scid.length]),
          scid,
          Buffer.from([0x05]),
          Buffer.alloc(5, 0xab),
        ]);
        empty.send(handshake, port, '127.0.0.1');
        assert.equal((await nextMessage(empty)).subarray(-1).toString(), 'A');
        assert.equal(proxy.stats().quic?.quic_lb_routed, 1);
      } finally {
        await closeSocket(empty);
      }
    } finally {
      await closeSocket(client1);
      await proxy.close();
    }
  });

  test('close() during a ClientHello wait and with tracked IDs leaves no socket open and no ID tracked', async () => {
    const before = openHandles();
    const hello = buildHandshake([sniExtension('example.com')]);
    const part = buildInitial({
      version: QUIC_V1,
      dcid: Buffer.alloc(8, 5),
      frames: cryptoFrame(0, hello.subarray(0, 10)),
      padTo: 1200,
    });
    const { proxy, port } = await proxyWith({
      quic: { maxInitialWait: 60_000, connectionIdRouting: true },
      idleTimeout: 60_000,
    });
    const waiting = await udpSocket();
    const routed = await udpSocket();
    try {
      waiting.send(part, port, '127.0.0.1');
      routed.send(V1_CLIENT_INITIAL, port, '127.0.0.1');
      await nextMessage(routed);
      assert.equal(proxy.sessions().length, 2);
      assert.equal(proxy.stats().quic?.quic_cids_active, 2);
    } finally {
      await closeSocket(waiting);
      await closeSocket(routed);
      await proxy.close();
    }
    assert.equal(proxy.stats().quic?.quic_cids_active, 0);
    const after = openHandles();
    // Unref'd timers (the ClientHello wait, the idle check) are not listed by
    // getActiveResourcesInfo(): sockets are what this checks.
    for (const kind of ['UDPWRAP', 'Timeout'])
      assert.ok((after[kind] ?? 0) <= (before[kind] ?? 0), `${kind}: ${JSON.stringify(after)}`);
  });

  test('invalid quic options throw InvalidOptionError naming the option', () => {
    assert.throws(() => new UdpProxy({ quic: { fallback: 'x' as never } }), /quic\.fallback/);
    assert.throws(
      () => new UdpProxy({ quic: { maxInitialDatagrams: 0 } }),
      /quic\.maxInitialDatagrams/,
    );
    assert.throws(
      () => new UdpProxy({ quic: { quicLb: { serverIdLength: 2, servers: { abc: 'a' } } } }),
      /quic\.quicLb\.servers/,
    );
    assert.throws(() => new UdpProxy({ quic: {}, perPacketBalancing: true }), /"quic"/);
    assert.throws(() => new UdpProxy({ quic: { bogus: 1 } as never }), /quic\.bogus/);
    assert.throws(
      () => new UdpProxy({ quic: { sessionPerConnection: 'yes' as never } }),
      /quic\.sessionPerConnection/,
    );
    for (const bad of [0, 1025, 2.5])
      assert.throws(
        () => new UdpProxy({ quic: { maxConnectionsPerSocket: bad } }),
        /quic\.maxConnectionsPerSocket/,
      );
  });

  test('quic.maxInitialDatagrams above maxPendingDatagrams is refused at construction (a hello over more datagrams than may wait lost its name)', async () => {
    // Before: the second Initial of a two-datagram hello (Chromium's) was dropped as
    // pending_overflow, never read, and the session routed without a name after maxInitialWait.
    assert.throws(
      () => new UdpProxy({ maxPendingDatagrams: 1, quic: {} }),
      (error: unknown) =>
        error instanceof InvalidOptionError &&
        error.option === 'quic.maxInitialDatagrams' &&
        /maxPendingDatagrams \(1\)/.test(error.message),
    );
    assert.throws(
      () => new UdpProxy({ maxPendingDatagrams: 3, quic: { maxInitialDatagrams: 4 } }),
      /quic\.maxInitialDatagrams/,
    );
    // Without the ClientHello peek nothing waits for it; at the bound, the hello is read whole.
    await new UdpProxy({ maxPendingDatagrams: 1, quic: { sni: false } }).close();
    const hello = buildHandshake([sniExtension('example.com'), alpnExtension(['h3'])]);
    const dcid = Buffer.alloc(8, 9);
    const { proxy, port } = await proxyWith({
      maxPendingDatagrams: 2,
      quic: { maxInitialDatagrams: 2 },
      selector: byName,
    });
    client = await udpSocket();
    try {
      for (const [packetNumber, frames] of [
        [0, cryptoFrame(30, hello.subarray(30))],
        [1, cryptoFrame(0, hello.subarray(0, 30))],
      ] as const) {
        client.send(
          buildInitial({ version: QUIC_V1, dcid, packetNumber, frames, padTo: 1200 }),
          port,
          '127.0.0.1',
        );
      }
      const first = await nextMessage(client);
      assert.equal(first.subarray(-1).toString(), 'A');
      assert.equal(proxy.sessions()[0]?.serverName, 'example.com');
      assert.equal(proxy.stats().dropped.pending_overflow, 0);
    } finally {
      await closeSocket(client);
      await proxy.close();
    }
  });

  test('after a Version Negotiation, a client that keeps its source port is routed by the ClientHello of its next Initial', async () => {
    // A server that answers a long header of an unknown version with a Version Negotiation packet
    // (RFC 8999 section 6: version 0, the client's CIDs swapped, the versions it supports).
    const negotiating = async (tag: string) => {
      const socket = await udpSocket();
      socket.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
        const version = msg.length >= 5 ? msg.readUInt32BE(1) : 0;
        let reply = Buffer.concat([Buffer.from(`${tag}:`), msg.subarray(0, 1)]);
        if (((msg[0] ?? 0) & 0x80) !== 0 && version !== QUIC_V1) {
          const dcid = msg.subarray(6, 6 + (msg[5] ?? 0));
          const at = 6 + dcid.length;
          const scid = msg.subarray(at + 1, at + 1 + (msg[at] ?? 0));
          const supported = Buffer.alloc(4);
          supported.writeUInt32BE(QUIC_V1);
          reply = Buffer.concat([
            Buffer.from([0xc5, 0, 0, 0, 0, scid.length]),
            scid,
            Buffer.from([dcid.length]),
            dcid,
            supported,
          ]);
        }
        socket.send(reply, rinfo.port, rinfo.address);
      });
      return { port: socket.address().port, close: () => closeSocket(socket) };
    };
    const [named, other] = [await negotiating('A'), await negotiating('B')];
    const proxy = new UdpProxy({
      upstreams: [
        { id: 'a', host: '127.0.0.1', port: named.port },
        { id: 'b', host: '127.0.0.1', port: other.port },
      ],
      quic: { sni: true },
      selector: byName,
    });
    const summaries = closes(proxy);
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const client1 = await udpSocket();
    try {
      // An Initial-shaped packet of a version the proxy cannot read: routed without a name (b).
      const dcid = Buffer.from('0102030405060708', 'hex');
      const scid = Buffer.from('a1a2a3a4', 'hex');
      const probe = Buffer.concat([
        Buffer.from([0xc0, 0x1a, 0x2a, 0x3a, 0x4a, dcid.length]),
        dcid,
        Buffer.from([scid.length]),
        scid,
        Buffer.alloc(1200 - 6 - dcid.length - 1 - scid.length),
      ]);
      client1.send(probe, port, '127.0.0.1');
      const vn = await nextMessage(client1);
      assert.equal(vn.readUInt32BE(1), 0, 'the Version Negotiation reaches the client');
      assert.deepEqual(vn.subarray(6, 6 + scid.length), scid);
      // The client retries with QUIC v1 from the same port: its ClientHello names example.com (a).
      client1.send(V1_CLIENT_INITIAL, port, '127.0.0.1');
      const reply = await nextMessage(client1);
      assert.equal(reply.subarray(0, 2).toString(), 'A:', 'routed by the new ClientHello');
      assert.equal(proxy.sessions().at(-1)?.serverName, 'example.com');
      assert.equal(proxy.stats().quic?.quic_version_negotiations, 1);
      assert.deepEqual(
        summaries.map((s) => [s.upstream?.id, s.reason]),
        [['b', 'quic_version_negotiation']],
      );
    } finally {
      await closeSocket(client1);
      await proxy.close();
      await named.close();
      await other.close();
    }
  });

  test('quicLb.servers naming an upstream id not in upstreams is refused at construction, naming the entry', () => {
    const list = [
      { id: 'shop', host: '127.0.0.1', port: 4433 },
      { id: 'api', host: '127.0.0.1', port: 4434 },
    ];
    const servers = { c4605e: 'shop', '0a0b0c': 'apj' };
    assert.throws(
      () => new UdpProxy({ upstreams: list, quic: { quicLb: { serverIdLength: 3, servers } } }),
      (err: unknown) =>
        err instanceof InvalidOptionError &&
        err.option === 'quic.quicLb.servers.0a0b0c' &&
        /'shop', 'api'/.test(err.message) &&
        /apj/.test(err.message),
    );
    // Ids a source will supply, or a set the host fills later, cannot be checked now.
    const source = { start: () => undefined, stop: () => undefined };
    const later = [
      new UdpProxy({
        upstreams: list,
        upstreamSource: source,
        quic: { quicLb: { serverIdLength: 3, servers } },
      }),
      new UdpProxy({ quic: { quicLb: { serverIdLength: 3, servers } } }),
    ];
    for (const proxy of later) void proxy.close();
  });

  test('a QUIC-LB server ID mapped to an upstream that left the set is counted in quic_lb_missing_upstream', async () => {
    const { proxy, port } = await proxyWith({
      quic: { sni: false, quicLb: { serverIdLength: 3, servers: { c4605e: 'b', '0a0b0c': 'a' } } },
      selector: (ctx) => ctx.candidates.find((c) => c.id === 'a'),
    });
    const client1 = await udpSocket();
    try {
      proxy.setUpstreams(upstreams().filter((u) => u.id === 'a'));
      const cid = Buffer.from('07c4605e4504cc4f', 'hex');
      client1.send(Buffer.concat([Buffer.from([0x40]), cid, Buffer.from('x')]), port, '127.0.0.1');
      assert.equal((await nextMessage(client1)).subarray(0, 2).toString(), 'A:');
      const stats = proxy.stats().quic;
      assert.ok(stats);
      assert.equal(stats.quic_lb_routed, 0);
      assert.equal(stats.quic_lb_missing_upstream, 1);
      assert.match(proxy.metrics(), /^l4proxy_udp_quic_lb_missing_upstream_total 1$/m);
    } finally {
      await closeSocket(client1);
      await proxy.close();
    }
  });
});
