import { createHook } from 'node:async_hooks';
import { lookup } from 'node:dns/promises';
import type { RemoteInfo, Socket } from 'node:dgram';
import { once } from 'node:events';
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  ListenError,
  ProxyClosedError,
  UdpProxy,
  type UdpDrop,
  type UdpProxyOptions,
  type UdpSessionSummary,
} from '../../src/index.js';
import { tool } from '../helpers/tools.js';
import { withTimeout } from '../helpers/net.js';
import { until as pollUntil } from '../helpers/until.js';
import {
  closeSocket,
  dig,
  freeUdpPort,
  hasIpv6Loopback,
  nextMessage,
  request,
  startDnsmasq,
  udpEcho,
  udpSocket,
} from './helpers.js';

/** A proxy bound on 127.0.0.1 (or `address`) and an ephemeral port. */
async function startProxy(
  options: UdpProxyOptions,
  address = '127.0.0.1',
): Promise<{ proxy: UdpProxy; port: number }> {
  const proxy = new UdpProxy(options);
  const bound = await proxy.bind({ port: 0, address });
  return { proxy, port: bound.port };
}

/** Collects events of one name. */
function collect<T>(proxy: UdpProxy, event: 'dropped' | 'sessionClose'): T[] {
  const items: T[] = [];
  proxy.on(event, (item: unknown) => items.push(item as T));
  return items;
}

/** Waits until `predicate` holds, re-checking on each `event` of the proxy (bounded). */
async function until(
  proxy: UdpProxy,
  event: 'dropped' | 'sessionClose' | 'upstreamError' | 'session',
  predicate: () => boolean,
  ms = 5_000,
): Promise<void> {
  if (predicate()) return;
  await withTimeout(
    new Promise<void>((resolve) => {
      const check = (): void => {
        if (predicate()) {
          proxy.off(event, check);
          resolve();
        }
      };
      proxy.on(event, check);
    }),
    ms,
    `${event} until condition`,
  );
}

describe('UdpProxy with a real DNS server', () => {
  test('answers dig queries from dnsmasq through the proxy', async (t) => {
    const digPath = tool(t, 'dig');
    if (digPath === undefined) return;
    const dns = await startDnsmasq(t, 'example.test', '10.1.2.3');
    if (dns === undefined) return;
    const { proxy, port } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: dns.port }],
      maxResponses: 1,
    });
    t.after(() => proxy.close());
    assert.equal(await dig(digPath, port, 'example.test'), '10.1.2.3');
    assert.equal(await dig(digPath, port, 'example.test'), '10.1.2.3');
    const stats = proxy.stats();
    assert.equal(stats.downstream_sess_total, 2);
    assert.equal(stats.downstream_sess_tx_datagrams, 2);
    assert.equal(stats.session_close_reasons.max_responses, 2);
    assert.equal(stats.downstream_sess_active, 0);
  });

  test('shares 20 queries 10/10 between two dnsmasq upstreams under round robin', async (t) => {
    const digPath = tool(t, 'dig');
    if (digPath === undefined) return;
    const a = await startDnsmasq(t, 'example.test', '10.1.2.3');
    if (a === undefined) return;
    const b = await startDnsmasq(t, 'example.test', '10.1.2.4');
    if (b === undefined) return;
    const { proxy, port } = await startProxy({
      upstreams: [
        { host: '127.0.0.1', port: a.port, id: 'a' },
        { host: '127.0.0.1', port: b.port, id: 'b' },
      ],
      maxResponses: 1,
    });
    t.after(() => proxy.close());
    const answers = new Map<string, number>();
    for (let i = 0; i < 20; i++) {
      // Each dig run uses a new source port, so each query is a new session.
      const answer = await dig(digPath, port, 'example.test');
      answers.set(answer, (answers.get(answer) ?? 0) + 1);
    }
    assert.deepEqual(Object.fromEntries(answers), { '10.1.2.3': 10, '10.1.2.4': 10 });
    const stats = proxy.stats();
    assert.equal(stats.upstreams.a?.upstream_sess_total, 10);
    assert.equal(stats.upstreams.b?.upstream_sess_total, 10);
    assert.equal(stats.upstreams.a.upstream_sess_rx_datagrams, 10);
    assert.equal(stats.upstreams.b.upstream_sess_rx_datagrams, 10);
    assert.equal(stats.downstream_sess_total, 20);
  });
});

describe('UdpProxy sessions', () => {
  /** Each client sends its unique payload (retrying a lost datagram) and must get only it back. */
  async function ownRepliesOnly(
    clients: Socket[],
    proxyPort: number,
    host: string,
    round: number,
  ): Promise<void> {
    const wave = 50;
    for (let start = 0; start < clients.length; start += wave) {
      await Promise.all(
        clients.slice(start, start + wave).map(async (client, offset) => {
          const payload = `client-${start + offset}-round-${round}`;
          for (let attempt = 0; ; attempt++) {
            try {
              const reply = await request(client, proxyPort, payload, host, 1_000);
              assert.equal(reply.toString(), `E:${payload}`);
              return;
            } catch (err) {
              // Loopback may drop a datagram under a burst; a wrong reply fails at once.
              if (err instanceof assert.AssertionError || attempt >= 4) throw err;
            }
          }
        }),
      );
    }
  }

  async function manyClients(
    t: import('node:test').TestContext,
    host: string,
    count: number,
  ): Promise<void> {
    const echo = await udpEcho('E:');
    t.after(() => echo.close());
    const { proxy, port } = await startProxy(
      { upstreams: [{ host: '127.0.0.1', port: echo.port }] },
      host,
    );
    t.after(() => proxy.close());
    const clients = await Promise.all(Array.from({ length: count }, () => udpSocket(host)));
    t.after(() => Promise.all(clients.map(closeSocket)));
    await ownRepliesOnly(clients, port, host, 1);
    await ownRepliesOnly(clients, port, host, 2);
    const stats = proxy.stats();
    assert.equal(stats.downstream_sess_total, count);
    assert.equal(stats.downstream_sess_active, count);
    assert.equal(stats.upstream_sess_active, count);
    assert.equal(proxy.sessions().length, count);
  }

  test('gives each of 500 IPv4 clients only its own replies', async (t) => {
    await manyClients(t, '127.0.0.1', 500);
  });

  test('gives each of 200 IPv6 clients on ::1 only its own replies', async (t) => {
    if (!(await hasIpv6Loopback())) {
      t.skip('::1 is not available on this host');
      return;
    }
    await manyClients(t, '::1', 200);
  });

  test('drops new clients beyond maxSessions with max_sessions; existing ones keep working', async (t) => {
    const echo = await udpEcho('E:');
    t.after(() => echo.close());
    const { proxy, port } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      maxSessions: 2,
    });
    t.after(() => proxy.close());
    const drops = collect<UdpDrop>(proxy, 'dropped');
    const [c1, c2, c3] = await Promise.all([udpSocket(), udpSocket(), udpSocket()]);
    t.after(() => Promise.all([c1, c2, c3].map(closeSocket)));
    assert.equal((await request(c1, port, 'one')).toString(), 'E:one');
    assert.equal((await request(c2, port, 'two')).toString(), 'E:two');
    c3.send('three', port, '127.0.0.1');
    await until(proxy, 'dropped', () => drops.length === 1);
    assert.equal(drops[0]?.reason, 'max_sessions');
    assert.equal(drops[0].clientPort, c3.address().port);
    assert.equal(drops[0].size, 5);
    assert.equal((await request(c1, port, 'again')).toString(), 'E:again');
    assert.equal((await request(c2, port, 'again')).toString(), 'E:again');
    assert.equal(proxy.stats().dropped.max_sessions, 1);
    assert.equal(proxy.stats().downstream_sess_active, 2);
  });

  test('counts drops and session ends with no dropped or sessionClose listener', async (t) => {
    const echo = await udpEcho('E:');
    t.after(() => echo.close());
    const { proxy, port } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      maxSessions: 1,
    });
    t.after(() => proxy.close());
    const [c1, c2] = await Promise.all([udpSocket(), udpSocket()]);
    t.after(() => Promise.all([c1, c2].map(closeSocket)));
    assert.equal((await request(c1, port, 'one')).toString(), 'E:one');
    c2.send('two', port, '127.0.0.1');
    // No 'dropped' listener to wait on (that is the point): poll the counter, bounded.
    for (let i = 0; i < 400 && proxy.stats().dropped.max_sessions === 0; i++)
      await new Promise((resolve) => setTimeout(resolve, 5));
    assert.equal(proxy.stats().dropped.max_sessions, 1);
    const [session] = proxy.sessions();
    session?.close();
    const stats = proxy.stats();
    assert.equal(stats.session_close_reasons.closed_by_user, 1);
    assert.equal(stats.downstream_sess_active, 0);
  });

  test('drops and counts oversized datagrams in both directions', async (t) => {
    const echo = await udpEcho('XX');
    t.after(() => echo.close());
    const { proxy, port } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      maxDatagramSize: 100,
    });
    t.after(() => proxy.close());
    const drops = collect<UdpDrop>(proxy, 'dropped');
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    // 98 + 2 = 100 bytes back: at the limit, forwarded.
    assert.equal((await request(client, port, Buffer.alloc(98, 1))).length, 100);
    client.send(Buffer.alloc(101, 1), port, '127.0.0.1');
    await until(proxy, 'dropped', () => drops.length === 1);
    assert.deepEqual(
      [drops[0]?.reason, drops[0]?.from, drops[0]?.size],
      ['oversized', 'client', 101],
    );
    // 99 + 2 = 101 bytes back: the reply is dropped.
    client.send(Buffer.alloc(99, 1), port, '127.0.0.1');
    await until(proxy, 'dropped', () => drops.length === 2);
    assert.deepEqual(
      [drops[1]?.reason, drops[1]?.from, drops[1]?.size],
      ['oversized', 'upstream', 101],
    );
    assert.equal(proxy.stats().dropped.oversized, 2);
    assert.equal(echo.received, 2);
  });

  test('a reply dropped as oversized does not count toward maxResponses: the valid one after it goes out', async (t) => {
    // Each query is answered twice: first with 600 bytes (over maxDatagramSize), then with 10.
    const upstream = await udpSocket();
    t.after(() => closeSocket(upstream));
    upstream.on('message', (_msg: Buffer, rinfo: RemoteInfo) => {
      upstream.send(Buffer.alloc(600, 1), rinfo.port, rinfo.address);
      upstream.send(Buffer.alloc(10, 2), rinfo.port, rinfo.address);
    });
    const { proxy, port } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: upstream.address().port }],
      maxDatagramSize: 500,
      maxResponses: 1,
    });
    t.after(() => proxy.close());
    const drops = collect<UdpDrop>(proxy, 'dropped');
    const closes = collect<UdpSessionSummary>(proxy, 'sessionClose');
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    const reply = await request(client, port, 'query');
    assert.deepEqual(reply, Buffer.alloc(10, 2));
    await until(proxy, 'sessionClose', () => closes.length === 1);
    assert.deepEqual(
      drops.map((drop) => [drop.reason, drop.from, drop.size]),
      [['oversized', 'upstream', 600]],
    );
    assert.equal(closes[0]?.reason, 'max_responses');
    assert.equal(closes[0].datagramsFromUpstream, 2);
    assert.equal(closes[0].datagramsToClient, 1);
    const stats = proxy.stats();
    assert.equal(stats.session_close_reasons.max_responses, 1);
    assert.equal(stats.downstream_sess_tx_datagrams, 1);
    // docs/udp.md, Statistics: datagrams_dropped counts the reply dropped on its way back too.
    assert.equal(
      stats.downstream_sess_rx_datagrams +
        stats.upstream_sess_refused_datagrams +
        stats.upstream_sess_rx_datagrams,
      stats.upstream_sess_tx_datagrams +
        stats.downstream_sess_tx_datagrams +
        stats.datagrams_dropped,
    );
  });

  for (const relay of ['handle', 'dgram'] as const) {
    test(`an IPv6 upstream's reply too large for an IPv4 client is dropped as oversized, not sent (relay '${relay}')`, async (t) => {
      if (!(await hasIpv6Loopback())) {
        t.skip('::1 is not available on this host');
        return;
      }
      // 65 527 bytes fit in a UDP payload over IPv6, 20 more than IPv4 can carry.
      const upstream = await udpSocket('::1');
      t.after(() => closeSocket(upstream));
      upstream.on('message', (msg, rinfo) => {
        const size = msg.toString() === 'big' ? 65_527 : 65_507;
        upstream.send(Buffer.alloc(size, 1), rinfo.port, rinfo.address);
      });
      // A dual-stack bind: the IPv4 client is seen as ::ffff:127.0.0.1.
      const { proxy, port } = await startProxy(
        {
          upstreams: [{ host: '::1', port: upstream.address().port }],
          maxDatagramSize: 65_535,
          relay,
        },
        '::',
      );
      t.after(() => proxy.close());
      const drops = collect<UdpDrop>(proxy, 'dropped');
      const client = await udpSocket();
      t.after(() => closeSocket(client));
      client.send('big', port, '127.0.0.1');
      await until(proxy, 'dropped', () => drops.length === 1);
      assert.deepEqual(
        [drops[0]?.reason, drops[0]?.from, drops[0]?.size],
        ['oversized', 'upstream', 65_527],
      );
      // The largest IPv4 payload still goes through.
      assert.equal((await request(client, port, 'max')).length, 65_507);
      const stats = proxy.stats();
      assert.equal(stats.dropped.oversized, 1);
      assert.equal(stats.downstream_sess_tx_datagrams, 1);
      assert.equal(stats.downstream_sess_tx_errors, 0);
    });
  }

  test('drops an oversized first datagram without opening a session', async (t) => {
    const echo = await udpEcho();
    t.after(() => echo.close());
    const { proxy, port } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      maxDatagramSize: 10,
    });
    t.after(() => proxy.close());
    const drops = collect<UdpDrop>(proxy, 'dropped');
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    client.send(Buffer.alloc(11), port, '127.0.0.1');
    await until(proxy, 'dropped', () => drops.length === 1);
    assert.equal(drops[0]?.sessionId, undefined);
    assert.equal(proxy.stats().downstream_sess_total, 0);
  });

  test('forwards zero-length datagrams both ways', async (t) => {
    const echo = await udpEcho();
    t.after(() => echo.close());
    const { proxy, port } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
    });
    t.after(() => proxy.close());
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    const reply = await request(client, port, Buffer.alloc(0));
    assert.equal(reply.length, 0);
    const stats = proxy.stats();
    assert.equal(stats.downstream_sess_rx_datagrams, 1);
    assert.equal(stats.downstream_sess_tx_datagrams, 1);
    assert.equal(stats.downstream_sess_rx_bytes, 0);
  });

  test('counts ECONNREFUSED from a down upstream, ends that session and keeps serving', async (t) => {
    const downPort = await freeUdpPort();
    const echo = await udpEcho('E:');
    t.after(() => echo.close());
    const { proxy, port } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: downPort, id: 'down' }],
    });
    t.after(() => proxy.close());
    const closes = collect<UdpSessionSummary>(proxy, 'sessionClose');
    const errors: Error[] = [];
    proxy.on('upstreamError', (_session, upstream, error) => {
      assert.equal(upstream.id, 'down');
      errors.push(error);
    });
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    client.send('ping', port, '127.0.0.1');
    await until(proxy, 'sessionClose', () => closes.length === 1);
    assert.equal(closes[0]?.reason, 'upstream_error');
    assert.equal((errors[0] as NodeJS.ErrnoException | undefined)?.code, 'ECONNREFUSED');
    const stats = proxy.stats();
    assert.equal(stats.upstreams.down?.upstream_sess_errors, 1);
    assert.equal(stats.upstream_sess_rx_errors, 1);
    assert.equal(stats.upstream_sess_active, 0);
    // The proxy still serves: the next datagram opens a new session on the new set.
    proxy.setUpstreams([{ host: '127.0.0.1', port: echo.port }]);
    assert.equal((await request(client, port, 'ping')).toString(), 'E:ping');
  });

  test('sends new sessions to a changed upstream set; live sessions keep theirs until they expire', async (t) => {
    const a = await udpEcho('A:');
    t.after(() => a.close());
    const b = await udpEcho('B:');
    t.after(() => b.close());
    const { proxy, port } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: a.port }],
      // c1's session must outlive a stall between its two requests on a loaded machine.
      idleTimeout: 1_000,
    });
    t.after(() => proxy.close());
    const closes = collect<UdpSessionSummary>(proxy, 'sessionClose');
    const [c1, c2] = await Promise.all([udpSocket(), udpSocket()]);
    t.after(() => Promise.all([closeSocket(c1), closeSocket(c2)]));
    assert.equal((await request(c1, port, 'x')).toString(), 'A:x');
    proxy.setUpstreams([{ host: '127.0.0.1', port: b.port }]);
    assert.equal((await request(c1, port, 'y')).toString(), 'A:y');
    assert.equal((await request(c2, port, 'z')).toString(), 'B:z');
    await until(proxy, 'sessionClose', () => closes.length === 2);
    assert.ok(closes.every((summary) => summary.reason === 'idle_timeout'));
    assert.equal(closes.find((s) => s.clientPort === c1.address().port)?.datagramsToClient, 2);
    assert.equal((await request(c1, port, 'w')).toString(), 'B:w');
    assert.equal(proxy.stats().idle_timeout, 2);
  });

  test('idle timeout is refreshed by traffic in either direction', async (t) => {
    const echo = await udpEcho();
    t.after(() => echo.close());
    const { proxy, port } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      // 1 s: a process stalled past the gap between two requests (100 ms) on a loaded machine
      // expired the session between them with 400 ms.
      idleTimeout: 1_000,
    });
    t.after(() => proxy.close());
    const closes = collect<UdpSessionSummary>(proxy, 'sessionClose');
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    const started = Date.now();
    // Keep traffic flowing for 1.5 idle periods and more: the session must survive it.
    for (let i = 0; i < 15; i++) {
      await request(client, port, `k${i}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal(closes.length, 0);
    await until(proxy, 'sessionClose', () => closes.length === 1);
    assert.equal(closes[0]?.reason, 'idle_timeout');
    assert.equal(closes[0].datagramsFromClient, 15);
    assert.ok(closes[0].durationMs >= Date.now() - started - 50 - 1_000);
  });

  test('a reply that reached the session socket before its idle expiry is relayed, not lost with the socket', async (t) => {
    const upstream = await udpSocket();
    t.after(() => closeSocket(upstream));
    const { proxy, port } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: upstream.address().port }],
      idleTimeout: 600,
    });
    t.after(() => proxy.close());
    const closes = collect<UdpSessionSummary>(proxy, 'sessionClose');
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    const query = once(upstream, 'message') as Promise<[Buffer, RemoteInfo]>;
    client.send('q', port, '127.0.0.1');
    const [, session] = await withTimeout(query, 3_000, 'the query upstream');
    const asked = Date.now();
    // The upstream answers at 300 ms, after that turn's poll, then this process is busy until
    // past the expiry (600 ms): the loop runs its due timers before the poll that reads the reply.
    // (The margins let a loaded machine fire the 300 ms timer up to 300 ms late.)
    setTimeout(() => {
      // Sent before the next immediate runs (dgram's lookup answers on the next tick).
      setImmediate(() => {
        upstream.send('late', session.port, session.address);
      });
      setImmediate(() => {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, asked + 700 - Date.now());
      });
    }, 300);
    assert.equal((await nextMessage(client)).toString(), 'late');
    await until(proxy, 'sessionClose', () => closes.length === 1);
    assert.equal(closes[0]?.reason, 'idle_timeout');
    assert.equal(closes[0].datagramsToClient, 1);
    assert.equal(proxy.stats().downstream_sess_total, 1);
  });

  test('resolves an upstream host name when the session socket is set up', async (t) => {
    // Bind the echo where 'localhost' resolves (from /etc/hosts), IPv4 or IPv6.
    const { address } = await lookup('localhost');
    const echo = await udpEcho('E:', address);
    t.after(() => echo.close());
    const { proxy, port } = await startProxy({
      upstreams: [{ host: 'localhost', port: echo.port, id: 'local' }],
    });
    t.after(() => proxy.close());
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    assert.equal((await request(client, port, 'named')).toString(), 'E:named');
    assert.equal(proxy.stats().upstreams.local?.upstream_sess_rx_datagrams, 1);
  });

  test('with perPacketBalancing, a down upstream loses only its own socket', async (t) => {
    const echo = await udpEcho('E:');
    t.after(() => echo.close());
    const downPort = await freeUdpPort();
    const { proxy, port } = await startProxy({
      upstreams: [
        { host: '127.0.0.1', port: downPort, id: 'down' },
        { host: '127.0.0.1', port: echo.port, id: 'up' },
      ],
      perPacketBalancing: true,
    });
    t.after(() => proxy.close());
    const errors: string[] = [];
    proxy.on('upstreamError', (_session, upstream) => errors.push(upstream.id));
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    client.send('lost', port, '127.0.0.1'); // round robin: to 'down'
    await until(proxy, 'upstreamError', () => errors.length === 1);
    assert.deepEqual(errors, ['down']);
    assert.equal((await request(client, port, 'kept')).toString(), 'E:kept'); // to 'up'
    const stats = proxy.stats();
    assert.equal(stats.downstream_sess_active, 1);
    assert.equal(stats.upstreams.down?.upstream_sess_active, 0);
    assert.equal(stats.upstreams.up?.upstream_sess_active, 1);
  });

  test('drops with no_upstream and counts downstream_sess_no_route when the set is empty', async (t) => {
    const { proxy, port } = await startProxy({ upstreams: [] });
    t.after(() => proxy.close());
    const drops = collect<UdpDrop>(proxy, 'dropped');
    const closes = collect<UdpSessionSummary>(proxy, 'sessionClose');
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    client.send('q', port, '127.0.0.1');
    await until(proxy, 'dropped', () => drops.length === 1);
    assert.equal(drops[0]?.reason, 'no_upstream');
    assert.equal(closes[0]?.reason, 'no_upstream');
    assert.equal(proxy.stats().downstream_sess_no_route, 1);
    assert.equal(proxy.stats().downstream_sess_active, 0);
  });
});

describe('UdpProxy selectors', () => {
  test('drops with selector_error when the selector throws or rejects, and keeps serving', async (t) => {
    const echo = await udpEcho('E:');
    t.after(() => echo.close());
    let mode: 'throw' | 'reject' | 'ok' = 'throw';
    const { proxy, port } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      selector: (ctx) => {
        if (mode === 'throw') throw new Error('selector bug');
        if (mode === 'reject') return Promise.reject(new Error('async selector bug'));
        return ctx.candidates[0];
      },
    });
    t.after(() => proxy.close());
    const drops = collect<UdpDrop>(proxy, 'dropped');
    const closes = collect<UdpSessionSummary>(proxy, 'sessionClose');
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    client.send('a', port, '127.0.0.1');
    await until(proxy, 'dropped', () => drops.length === 1);
    mode = 'reject';
    client.send('b', port, '127.0.0.1');
    await until(proxy, 'dropped', () => drops.length === 2);
    assert.deepEqual(
      drops.map((d) => [d.reason, d.error?.name]),
      [
        ['selector_error', 'SelectorError'],
        ['selector_error', 'SelectorError'],
      ],
    );
    assert.deepEqual(
      closes.map((c) => c.reason),
      ['selector_error', 'selector_error'],
    );
    mode = 'ok';
    assert.equal((await request(client, port, 'c')).toString(), 'E:c');
    assert.equal(proxy.stats().dropped.selector_error, 2);
  });

  test('bounds an async selector that never answers by connectTimeout: selector_error, signal aborted, a late answer ignored', async (t) => {
    const echo = await udpEcho();
    t.after(() => echo.close());
    // The selection timer is found by its callback's name: armed only for a promise.
    const timers = new Map<number, string>();
    let armed = 0;
    const hook = createHook({
      init(id, type, _trigger, resource) {
        const callback = (resource as { _onTimeout?: { name?: string } })._onTimeout;
        if (type !== 'Timeout' || callback?.name !== 'onSelectionTimeout') return;
        armed++;
        timers.set(id, type);
      },
      destroy(id) {
        timers.delete(id);
      },
    }).enable();
    t.after(() => hook.disable());
    let mode: 'never' | 'sync' = 'sync';
    let late: (() => void) | undefined;
    let signal: AbortSignal | undefined;
    const proxy = new UdpProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      connectTimeout: 200,
      selector: (ctx) => {
        if (mode === 'sync') return ctx.candidates[0];
        signal = ctx.signal;
        return new Promise((resolve) => {
          late = () => {
            resolve(ctx.candidates[0]);
          };
        });
      },
    });
    t.after(() => proxy.close());
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const drops = collect<UdpDrop>(proxy, 'dropped');
    const closes = collect<UdpSessionSummary>(proxy, 'sessionClose');
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    // A synchronous selector arms no timer.
    assert.equal((await request(client, port, 'sync')).toString(), 'sync');
    assert.equal(armed, 0);
    mode = 'never';
    const other = await udpSocket();
    t.after(() => closeSocket(other));
    for (const payload of ['1', '2', '3']) other.send(payload, port, '127.0.0.1');
    await until(proxy, 'sessionClose', () => closes.length === 1);
    assert.equal(armed, 1);
    const summary = closes[0];
    assert.equal(summary?.reason, 'selector_error');
    assert.equal(summary.error?.name, 'SelectorError');
    assert.match(summary.error.message, /connectTimeout \(200 ms\)/);
    assert.ok(summary.durationMs >= 150 && summary.durationMs < 3_000, String(summary.durationMs));
    assert.equal(signal?.aborted, true);
    assert.equal(signal.reason, summary.error);
    // Every datagram that waited for the selection is counted, with the session's reason.
    await until(proxy, 'dropped', () => drops.length === 3);
    assert.deepEqual(
      drops.map((d) => d.reason),
      ['selector_error', 'selector_error', 'selector_error'],
    );
    assert.equal(proxy.stats().dropped.selector_error, 3);
    // The late answer opens nothing and sends nothing.
    assert.ok(late);
    late();
    await new Promise((resolve) => setImmediate(resolve));
    const stats = proxy.stats();
    assert.equal(stats.upstream_sess_total, 1, 'only the synchronous session dialled');
    assert.equal(stats.downstream_sess_active, 1, 'the synchronous session, still live');
    assert.equal(stats.session_close_reasons.selector_error, 1);
    assert.equal(echo.received, 1);
    // No selection timer is left armed: the proxy closes cleanly and its timers are gone.
    await withTimeout(proxy.close(), 3_000, 'proxy.close()');
    await pollUntil(() => timers.size === 0, 'no selection timer left armed');
  });

  test("with perPacketBalancing, bounds each datagram's async choice by connectTimeout: selector_error, a late answer ignored, the session unstuck", async (t) => {
    const echo = await udpEcho('E:');
    t.after(() => echo.close());
    // The choice timer is found by its callback's name: one per session, not one per datagram.
    const timers = new Set<number>();
    let armed = 0;
    const hook = createHook({
      init(id, type, _trigger, resource) {
        const callback = (resource as { _onTimeout?: { name?: string } })._onTimeout;
        if (type !== 'Timeout' || callback?.name !== 'onChoiceTimeout') return;
        armed++;
        timers.add(id);
      },
      destroy(id) {
        timers.delete(id);
      },
    }).enable();
    t.after(() => hook.disable());
    let mode: 'never' | 'async' | 'sync' = 'sync';
    const late: (() => void)[] = [];
    const proxy = new UdpProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      perPacketBalancing: true,
      connectTimeout: 200,
      maxPendingDatagrams: 2,
      selector: (ctx) => {
        const [upstream] = ctx.candidates;
        if (mode === 'sync') return upstream;
        if (mode === 'async') return Promise.resolve(upstream);
        return new Promise((resolve) => {
          late.push(() => {
            resolve(upstream);
          });
        });
      },
    });
    t.after(() => proxy.close());
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const drops = collect<UdpDrop>(proxy, 'dropped');
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    // A synchronous selector arms no timer.
    assert.equal((await request(client, port, 'sync')).toString(), 'E:sync');
    assert.equal(armed, 0);
    mode = 'never';
    const sent = Date.now();
    for (const payload of ['1', '2', '3']) client.send(payload, port, '127.0.0.1');
    // Two wait (maxPendingDatagrams), the third is refused; the two go at connectTimeout.
    await until(proxy, 'dropped', () => drops.length === 3);
    const waited = Date.now() - sent;
    assert.deepEqual(
      drops.map((d) => d.reason),
      ['pending_overflow', 'selector_error', 'selector_error'],
    );
    assert.ok(waited >= 150 && waited < 3_000, String(waited));
    assert.equal(drops[1]?.error?.name, 'SelectorError');
    assert.match(drops[1].error.message, /connectTimeout \(200 ms\)/);
    assert.equal(armed, 1, 'one timer for the session');
    // The late answers send nothing and count nothing more.
    // (The selector was asked for the refused one too: it was refused once its answer was a promise.)
    assert.equal(late.length, 3);
    for (const answer of late) answer();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(echo.received, 1);
    assert.equal(proxy.stats().dropped.selector_error, 2);
    // The session is not stuck: the next datagram's choice is made and it goes.
    mode = 'async';
    assert.equal((await request(client, port, 'next')).toString(), 'E:next');
    const stats = proxy.stats();
    assert.equal(stats.downstream_sess_total, 1);
    assert.equal(stats.dropped.selector_error, 2);
    // No choice timer is left armed once the proxy has closed.
    await withTimeout(proxy.close(), 3_000, 'proxy.close()');
    await pollUntil(() => timers.size === 0, 'no choice timer left armed');
  });

  test('with perPacketBalancing, datagrams waiting for their async choice are dropped when the session ends, not at their late answer', async (t) => {
    const echo = await udpEcho('E:');
    t.after(() => echo.close());
    const proxy = new UdpProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      perPacketBalancing: true,
      connectTimeout: 60_000,
      selector: () => new Promise(() => undefined),
    });
    t.after(() => proxy.close());
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const drops = collect<UdpDrop>(proxy, 'dropped');
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    client.send('a', port, '127.0.0.1');
    await until(proxy, 'session', () => proxy.sessions().length === 1);
    const [session] = proxy.sessions();
    session?.close();
    await until(proxy, 'dropped', () => drops.length === 1);
    assert.equal(drops[0]?.reason, 'session_closed');
    assert.equal(echo.received, 0);
  });

  test('with perPacketBalancing, a datagram dropped as pending_overflow whose async choice later rejects leaves no unhandled rejection', async (t) => {
    const echo = await udpEcho('E:');
    t.after(() => echo.close());
    // Node ends the process on an unhandled rejection: the host's, not the proxy's, to decide.
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => {
      unhandled.push(reason);
    };
    process.on('unhandledRejection', onUnhandled);
    t.after(() => process.off('unhandledRejection', onUnhandled));
    const refuse: (() => void)[] = [];
    const proxy = new UdpProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      perPacketBalancing: true,
      maxPendingDatagrams: 1,
      selector: () =>
        new Promise((_resolve, reject) => {
          refuse.push(() => {
            reject(new Error('no upstream for this one'));
          });
        }),
    });
    t.after(() => proxy.close());
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const drops = collect<UdpDrop>(proxy, 'dropped');
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    client.send('a', port, '127.0.0.1');
    client.send('b', port, '127.0.0.1');
    await until(proxy, 'dropped', () => drops.length === 1);
    assert.equal(drops[0]?.reason, 'pending_overflow');
    assert.equal(refuse.length, 2, 'the selector was asked for both');
    for (const reject of refuse) reject();
    await until(proxy, 'dropped', () => drops.length === 2);
    assert.equal(drops[1]?.reason, 'selector_error');
    // Unhandled rejections are reported once the microtasks of the turn have run.
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setTimeout(resolve, 0));
    assert.deepEqual(unhandled, []);
    assert.equal(echo.received, 0);
  });

  test('clears the selection timer when an async selector answers in time, or the proxy closes first', async (t) => {
    const echo = await udpEcho('E:');
    t.after(() => echo.close());
    const timers = new Set<number>();
    const hook = createHook({
      init(id, type, _trigger, resource) {
        const callback = (resource as { _onTimeout?: { name?: string } })._onTimeout;
        if (type === 'Timeout' && callback?.name === 'onSelectionTimeout') timers.add(id);
      },
      destroy(id) {
        timers.delete(id);
      },
    }).enable();
    t.after(() => hook.disable());
    let hold = false;
    const proxy = new UdpProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      connectTimeout: 60_000,
      selector: (ctx) => (hold ? new Promise(() => undefined) : Promise.resolve(ctx.candidates[0])),
    });
    t.after(() => proxy.close());
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const closes = collect<UdpSessionSummary>(proxy, 'sessionClose');
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    assert.equal((await request(client, port, 'a')).toString(), 'E:a');
    hold = true;
    const other = await udpSocket();
    t.after(() => closeSocket(other));
    other.send('b', port, '127.0.0.1');
    await until(proxy, 'session', () => proxy.stats().downstream_sess_total === 2);
    // The proxy closes at once: it does not wait out the 60 s bound.
    await withTimeout(proxy.close(), 3_000, 'proxy.close()');
    assert.deepEqual(closes.map((c) => c.reason).sort(), ['proxy_closed', 'proxy_closed']);
    await pollUntil(() => timers.size === 0, 'no choice timer left armed');
  });

  test('holds datagrams while an async selector decides, in order, up to maxPendingDatagrams', async (t) => {
    const echo = await udpEcho();
    t.after(() => echo.close());
    let decide: (() => void) | undefined;
    const { proxy, port } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      maxPendingDatagrams: 3,
      selector: (ctx) =>
        new Promise((resolve) => {
          assert.equal(ctx.protocol, 'udp');
          assert.equal(ctx.attempt, 1);
          decide = () => {
            resolve(ctx.candidates[0]);
          };
        }),
    });
    t.after(() => proxy.close());
    const drops = collect<UdpDrop>(proxy, 'dropped');
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    const replies: string[] = [];
    client.on('message', (msg: Buffer) => replies.push(msg.toString()));
    for (const payload of ['1', '2', '3', '4', '5']) client.send(payload, port, '127.0.0.1');
    await until(proxy, 'dropped', () => drops.length === 2);
    assert.ok(drops.every((d) => d.reason === 'pending_overflow'));
    assert.ok(decide);
    decide();
    await withTimeout(
      (async () => {
        while (replies.length < 3) await once(client, 'message');
      })(),
      3_000,
      'three replies',
    );
    assert.deepEqual(replies, ['1', '2', '3']);
    assert.equal(proxy.stats().dropped.pending_overflow, 2);
  });

  test('chooses an upstream per datagram with perPacketBalancing', async (t) => {
    const a = await udpEcho('A:');
    t.after(() => a.close());
    const b = await udpEcho('B:');
    t.after(() => b.close());
    const { proxy, port } = await startProxy({
      upstreams: [
        { host: '127.0.0.1', port: a.port, id: 'a' },
        { host: '127.0.0.1', port: b.port, id: 'b' },
      ],
      perPacketBalancing: true,
    });
    t.after(() => proxy.close());
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    const tags: string[] = [];
    for (let i = 0; i < 10; i++)
      tags.push((await request(client, port, `${i}`)).toString().slice(0, 2));
    assert.equal(tags.filter((tag) => tag === 'A:').length, 5);
    assert.equal(tags.filter((tag) => tag === 'B:').length, 5);
    const stats = proxy.stats();
    assert.equal(stats.downstream_sess_total, 1);
    assert.equal(stats.upstream_sess_total, 2);
    assert.equal(stats.upstreams.a?.upstream_sess_tx_datagrams, 5);
  });
});

describe('UdpProxy lifecycle', () => {
  test('binds IPv4 and IPv6 ephemeral ports and reports them', async (t) => {
    const proxy = new UdpProxy({});
    t.after(() => proxy.close());
    const v4 = await proxy.bind({ port: 0, address: '127.0.0.1' });
    assert.equal(v4.family, 'IPv4');
    assert.ok(v4.port > 0);
    if (await hasIpv6Loopback()) {
      const v6 = await proxy.bind({ port: 0, address: '::1', ipv6Only: true });
      assert.equal(v6.family, 'IPv6');
      assert.equal(v6.address, '::1');
    }
    assert.ok(proxy.addresses().length >= 1);
  });

  test('binds all addresses by default and serves IPv4 clients through it', async (t) => {
    const echo = await udpEcho('E:');
    t.after(() => echo.close());
    const proxy = new UdpProxy({ upstreams: [{ host: '127.0.0.1', port: echo.port }] });
    t.after(() => proxy.close());
    const bound = await proxy.bind();
    assert.ok(['::', '0.0.0.0'].includes(bound.address), bound.address);
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    assert.equal((await request(client, bound.port, 'v4')).toString(), 'E:v4');
    const [session] = proxy.sessions();
    assert.match(session?.clientAddress ?? '', /127\.0\.0\.1$/);
  });

  test("sends a new client's first datagram upstream before emitting session (no tick)", async (t) => {
    const echo = await udpEcho();
    t.after(() => echo.close());
    const { proxy, port } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
    });
    t.after(() => proxy.close());
    const sentAtSession: number[] = [];
    proxy.on('session', () => sentAtSession.push(proxy.stats().upstream_sess_tx_datagrams));
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    await request(client, port, 'first');
    assert.deepEqual(sentAtSession, [1]);
  });

  test('rejects a taken port with ListenError and a closed proxy with ProxyClosedError', async (t) => {
    const taken = await udpSocket();
    t.after(() => closeSocket(taken));
    const proxy = new UdpProxy({});
    await assert.rejects(
      proxy.bind({ port: taken.address().port, address: '127.0.0.1' }),
      (err: unknown) => err instanceof ListenError && err.code === 'ERR_L4_LISTEN',
    );
    await proxy.close();
    await assert.rejects(proxy.bind({ port: 0, address: '127.0.0.1' }), ProxyClosedError);
  });

  test('close() ends every session with proxy_closed and is idempotent', async (t) => {
    const echo = await udpEcho();
    t.after(() => echo.close());
    const { proxy, port } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
    });
    const closes = collect<UdpSessionSummary>(proxy, 'sessionClose');
    const clients = await Promise.all([udpSocket(), udpSocket(), udpSocket()]);
    t.after(() => Promise.all(clients.map(closeSocket)));
    for (const client of clients) await request(client, port, 'hi');
    const closeEvent = new Promise<void>((resolve) => proxy.once('close', resolve));
    const first = proxy.close();
    assert.equal(proxy.close(), first);
    await first;
    await closeEvent;
    assert.deepEqual(
      closes.map((c) => c.reason),
      ['proxy_closed', 'proxy_closed', 'proxy_closed'],
    );
    assert.equal(proxy.stats().downstream_sess_active, 0);
    assert.equal(proxy.stats().upstream_sess_active, 0);
  });

  test('close() called again by a sessionClose listener during close() returns the same promise: one shutdown, one close event', async (t) => {
    const echo = await udpEcho();
    t.after(() => echo.close());
    const { proxy, port } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
    });
    let closeEvents = 0;
    proxy.on('close', () => closeEvents++);
    // A host that closes the proxy from its sessionClose listener (its last session, an error).
    const fromListener: Promise<void>[] = [];
    proxy.on('sessionClose', () => fromListener.push(proxy.close()));
    const clients = await Promise.all([udpSocket(), udpSocket()]);
    t.after(() => Promise.all(clients.map(closeSocket)));
    for (const client of clients) await request(client, port, 'hi');
    const first = proxy.close();
    assert.equal(fromListener.length, 2);
    for (const promise of fromListener) assert.equal(promise, first);
    await withTimeout(fromListener[0] ?? first, 5_000, 'close() from the listener');
    // Resolved once the bound socket is closed: its port can be bound again.
    const again = new UdpProxy({ upstreams: [{ host: '127.0.0.1', port: echo.port }] });
    await again.bind({ port, address: '127.0.0.1' });
    await again.close();
    await first;
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(closeEvents, 1);
  });

  test('sessions() lists live sessions; session.close() ends one with closed_by_user', async (t) => {
    const echo = await udpEcho();
    t.after(() => echo.close());
    const { proxy, port } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
    });
    t.after(() => proxy.close());
    const closes = collect<UdpSessionSummary>(proxy, 'sessionClose');
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    await request(client, port, 'hi');
    const [session] = proxy.sessions();
    assert.equal(session?.clientPort, client.address().port);
    assert.equal(session.upstream?.port, echo.port);
    session.close();
    assert.equal(closes[0]?.reason, 'closed_by_user');
    assert.equal(proxy.sessions().length, 0);
  });

  test('sessions() returns plain snapshots: the documented fields only, JSON-serializable', async (t) => {
    const echo = await udpEcho();
    t.after(() => echo.close());
    const { proxy, port } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port, id: 'echo', metadata: { zone: 'a' } }],
    });
    t.after(() => proxy.close());
    const closes = collect<UdpSessionSummary>(proxy, 'sessionClose');
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    await request(client, port, 'hello');
    const [session] = proxy.sessions();
    assert.ok(session);
    assert.deepEqual(Object.keys(session).sort(), [
      'alpn',
      'bytesFromClient',
      'bytesToClient',
      'clientAddress',
      'clientFamily',
      'clientPort',
      'close',
      'datagramsFromClient',
      'datagramsToClient',
      'id',
      'localAddress',
      'localPort',
      'quicVersion',
      'serverName',
      'startTime',
      'upstream',
    ]);
    const json = JSON.parse(JSON.stringify(proxy.sessions())) as unknown;
    assert.deepEqual(json, [
      {
        id: session.id,
        clientAddress: '127.0.0.1',
        clientPort: client.address().port,
        clientFamily: 'IPv4',
        localAddress: '127.0.0.1',
        localPort: port,
        startTime: session.startTime,
        upstream: {
          id: 'echo',
          host: '127.0.0.1',
          port: echo.port,
          weight: 1,
          priority: 0,
          metadata: { zone: 'a' },
          upstream: { host: '127.0.0.1', port: echo.port, id: 'echo', metadata: { zone: 'a' } },
          active: 1,
          healthy: true,
          // JSON has no Infinity: the cap that is not set reads null.
          maxConnections: null,
        },
        datagramsFromClient: 1,
        bytesFromClient: 5,
        datagramsToClient: 1,
        bytesToClient: 5,
      },
    ]);
    // A snapshot: later traffic shows in the next call, not in the one already taken.
    await request(client, port, 'again');
    assert.equal(session.datagramsFromClient, 1);
    assert.equal(proxy.sessions()[0]?.datagramsFromClient, 2);
    // Its close() still ends the live session.
    session.close();
    assert.equal(closes[0]?.reason, 'closed_by_user');
    assert.equal(proxy.sessions().length, 0);
  });

  test('leaves no socket or timer behind after close()', async (t) => {
    const echo = await udpEcho();
    t.after(() => echo.close());
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    const alive = new Map<number, string>();
    const hook = createHook({
      init(id, type) {
        if (type === 'UDPWRAP' || type === 'Timeout') alive.set(id, type);
      },
      destroy(id) {
        alive.delete(id);
      },
    }).enable();
    t.after(() => hook.disable());
    {
      await using proxy = new UdpProxy({
        upstreams: [{ host: '127.0.0.1', port: echo.port }],
        idleTimeout: 30_000,
      });
      const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
      await request(client, port, 'one');
      await request(client, port, 'two');
      assert.ok([...alive.values()].includes('UDPWRAP'));
    }
    // destroy hooks run asynchronously (from an immediate) after handles closed and timers cleared.
    // Polled on immediates, not with until(): its own timers would be Timeouts the hook counts.
    const deadline = Date.now() + 2_000;
    for (let i = 0; i < 1_000 && alive.size > 0 && Date.now() < deadline; i++) {
      await new Promise((resolve) => setImmediate(resolve));
    }
    assert.deepEqual([...alive.values()], []);
  });
});
