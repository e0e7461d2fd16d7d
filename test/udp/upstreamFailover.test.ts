/**
 * A session whose upstream refuses its first datagrams (ICMP port unreachable, seen as
 * ECONNREFUSED on the session socket) before any reply moves, with those datagrams, to another
 * upstream (`maxConnectAttempts`), instead of losing them until the client retries.
 */
import { createHook } from 'node:async_hooks';
import { execFile } from 'node:child_process';
import type { Socket } from 'node:dgram';
import { once } from 'node:events';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { UdpProxy, type UdpDrop, type UdpSessionSummary } from '../../src/index.js';
import type { UdpProxyOptions, UdpProxyStats } from '../../src/index.js';
import { withTimeout } from '../helpers/net.js';
import { tool } from '../helpers/tools.js';
import { closeSocket, freeUdpPort, startDnsmasq, udpEcho, udpSocket } from './helpers.js';

async function startProxy(options: UdpProxyOptions): Promise<{ proxy: UdpProxy; port: number }> {
  const proxy = new UdpProxy(options);
  const bound = await proxy.bind({ port: 0, address: '127.0.0.1' });
  return { proxy, port: bound.port };
}

/** Resolves with the first `sessionClose` summary. */
function nextClose(proxy: UdpProxy): Promise<UdpSessionSummary> {
  return withTimeout(
    new Promise<UdpSessionSummary>((resolve) => {
      proxy.once('sessionClose', resolve);
    }),
    5_000,
    'sessionClose',
  );
}

/** Collects `count` datagrams on `socket` (bounded), as strings. */
async function replies(socket: Socket, count: number): Promise<string[]> {
  const got: string[] = [];
  await withTimeout(
    (async () => {
      while (got.length < count) {
        const [msg] = (await once(socket, 'message')) as [Buffer];
        got.push(msg.toString());
      }
    })(),
    5_000,
    `${String(count)} replies`,
  );
  return got;
}

/**
 * Every datagram from clients is sent, refused and taken back, or dropped, and every one from
 * upstreams is sent to its client or dropped: nothing unaccounted (docs/udp.md, Statistics).
 */
function assertAccounted(stats: UdpProxyStats): void {
  assert.equal(
    stats.downstream_sess_rx_datagrams +
      stats.upstream_sess_refused_datagrams +
      stats.upstream_sess_rx_datagrams,
    stats.upstream_sess_tx_datagrams + stats.downstream_sess_tx_datagrams + stats.datagrams_dropped,
  );
}

/** The first candidate: upstreams in their configured order, refused ones left out. */
const inOrder: UdpProxyOptions['selector'] = (ctx) => ctx.candidates[0];

describe('UdpProxy upstream failover (maxConnectAttempts)', () => {
  for (const relay of ['handle', 'dgram'] as const)
    test(`moves a session refused by its upstream to the next one: every datagram once, in order (relay: ${relay})`, async (t) => {
      const down = await freeUdpPort();
      const live = await udpEcho('B:');
      t.after(() => live.close());
      const order: string[] = [];
      live.socket.on('message', (msg: Buffer) => order.push(msg.toString()));
      const { proxy, port } = await startProxy({
        upstreams: [
          { id: 'down', host: '127.0.0.1', port: down },
          { id: 'live', host: '127.0.0.1', port: live.port },
        ],
        selector: inOrder,
        relay,
      });
      t.after(() => proxy.close());
      const errors: string[] = [];
      proxy.on('upstreamError', (_session, upstream, error) => {
        errors.push(`${upstream.id}:${String((error as NodeJS.ErrnoException).code)}`);
      });
      const client = await udpSocket();
      t.after(() => closeSocket(client));
      const answered = replies(client, 5);
      for (let i = 1; i <= 5; i++) client.send(String(i), port, '127.0.0.1');
      assert.deepEqual(await answered, ['B:1', 'B:2', 'B:3', 'B:4', 'B:5']);
      assert.deepEqual(order, ['1', '2', '3', '4', '5'], 'in order, none twice');
      assert.deepEqual(errors, ['down:ECONNREFUSED']);
      const stats = proxy.stats();
      assert.equal(stats.upstream_sess_retry, 1);
      assert.equal(stats.upstream_sess_attempts_exceeded, 0);
      assert.ok(stats.upstream_sess_refused_datagrams >= 1);
      assert.equal(stats.upstreams.live?.upstream_sess_tx_datagrams, 5);
      assert.equal(stats.datagrams_dropped, 0);
      assert.equal(stats.downstream_sess_active, 1);
      assert.equal(stats.upstream_sess_active, 1, 'the refused socket is closed');
      assertAccounted(stats);
    });

  test('gives the selector attempt and tried, and candidates without the refused upstream', async (t) => {
    const down = await freeUdpPort();
    const live = await udpEcho('B:');
    t.after(() => live.close());
    const seen: [number, string[], string[]][] = [];
    const { proxy, port } = await startProxy({
      upstreams: [
        { id: 'down', host: '127.0.0.1', port: down },
        { id: 'live', host: '127.0.0.1', port: live.port },
      ],
      // An async selector: the retry goes through the same bounded wait.
      selector: (ctx) => {
        seen.push([ctx.attempt, ctx.tried.map((u) => u.id), ctx.candidates.map((u) => u.id)]);
        return Promise.resolve(ctx.candidates[0]);
      },
    });
    t.after(() => proxy.close());
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    const answered = replies(client, 1);
    client.send('q', port, '127.0.0.1');
    assert.deepEqual(await answered, ['B:q']);
    assert.deepEqual(seen, [
      [1, [], ['down', 'live']],
      [2, ['down'], ['live']],
    ]);
  });

  test('keeps nothing once the upstream answered: a later refusal ends the session, nothing sent twice', async (t) => {
    const a = await udpEcho('A:');
    const b = await udpEcho('B:');
    t.after(() => b.close());
    const { proxy, port } = await startProxy({
      upstreams: [
        { id: 'a', host: '127.0.0.1', port: a.port },
        { id: 'b', host: '127.0.0.1', port: b.port },
      ],
      selector: inOrder,
    });
    t.after(() => proxy.close());
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    const first = replies(client, 3);
    for (const payload of ['1', '2', '3']) client.send(payload, port, '127.0.0.1');
    assert.deepEqual(await first, ['A:1', 'A:2', 'A:3']);
    await a.close();
    const closed = nextClose(proxy);
    client.send('4', port, '127.0.0.1');
    const summary = await closed;
    assert.equal(summary.reason, 'upstream_error');
    assert.equal(summary.upstream?.id, 'a');
    assert.equal(b.received, 0, 'nothing went to the other upstream');
    const stats = proxy.stats();
    assert.equal(stats.upstream_sess_retry, 0);
    assert.equal(stats.upstream_sess_refused_datagrams, 0);
    assert.equal(stats.datagrams_dropped, 0);
    assertAccounted(stats);
  });

  test('keeps nothing past connectTimeout: a refusal after it ends the session, nothing sent twice', async (t) => {
    // A silent upstream: it takes the first datagram and never answers, then goes away.
    const silent = await udpSocket();
    const received: string[] = [];
    silent.on('message', (msg: Buffer) => received.push(msg.toString()));
    const b = await udpEcho('B:');
    t.after(() => b.close());
    const { proxy, port } = await startProxy({
      upstreams: [
        { id: 'silent', host: '127.0.0.1', port: silent.address().port },
        { id: 'b', host: '127.0.0.1', port: b.port },
      ],
      selector: inOrder,
      connectTimeout: 1,
    });
    t.after(() => proxy.close());
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    client.send('1', port, '127.0.0.1');
    await withTimeout(once(silent, 'message'), 3_000, 'the silent upstream');
    // The proxy started its window before it sent datagram 1, so before this moment.
    const sent = Date.now();
    await closeSocket(silent);
    // Past the 1 ms window (event-loop turns, bounded), the next datagram meets the closed port.
    for (let i = 0; i < 10_000 && Date.now() - sent < 3; i++)
      await new Promise((resolve) => setImmediate(resolve));
    const closed = nextClose(proxy);
    client.send('2', port, '127.0.0.1');
    const summary = await closed;
    assert.equal(summary.reason, 'upstream_error');
    assert.deepEqual(received, ['1']);
    assert.equal(b.received, 0, 'datagram 1 reached the silent upstream: not sent again elsewhere');
    const stats = proxy.stats();
    assert.equal(stats.upstream_sess_retry, 0);
    assert.equal(stats.upstream_sess_refused_datagrams, 0);
    assertAccounted(stats);
  });

  test('stops after maxConnectAttempts refusals: upstream_error, the datagrams dropped as upstream_refused', async (t) => {
    const ports = [await freeUdpPort(), await freeUdpPort(), await freeUdpPort()];
    const { proxy, port } = await startProxy({
      upstreams: ports.map((p, i) => ({ id: `d${String(i)}`, host: '127.0.0.1', port: p })),
      selector: inOrder,
      maxConnectAttempts: 2,
    });
    t.after(() => proxy.close());
    const drops: UdpDrop[] = [];
    proxy.on('dropped', (drop) => drops.push(drop));
    const errors: string[] = [];
    proxy.on('upstreamError', (_session, upstream) => errors.push(upstream.id));
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    const closed = nextClose(proxy);
    client.send('x', port, '127.0.0.1');
    const summary = await closed;
    assert.equal(summary.reason, 'upstream_error');
    assert.equal((summary.error as NodeJS.ErrnoException | undefined)?.code, 'ECONNREFUSED');
    assert.equal(summary.upstream?.id, 'd1');
    assert.deepEqual(errors, ['d0', 'd1'], 'two attempts, the third upstream never tried');
    assert.deepEqual(
      drops.map((d) => [d.reason, d.size]),
      [['upstream_refused', 1]],
    );
    const stats = proxy.stats();
    assert.equal(stats.upstream_sess_retry, 1);
    assert.equal(stats.upstream_sess_attempts_exceeded, 1);
    assert.equal(stats.upstream_sess_refused_datagrams, 2);
    assert.equal(stats.upstream_sess_tx_datagrams, 2);
    assert.equal(stats.dropped.upstream_refused, 1);
    assert.equal(stats.upstreams.d2?.upstream_sess_total, 0);
    assert.equal(stats.upstream_sess_active, 0);
    assert.equal(stats.downstream_sess_active, 0);
    assertAccounted(stats);
    assert.match(proxy.metrics(), /^l4proxy_udp_upstream_sess_retry_total 1$/m);
    assert.match(proxy.metrics(), /^l4proxy_udp_upstream_sess_attempts_exceeded_total 1$/m);
  });

  test('ends with upstream_error when no upstream is left to try, before maxConnectAttempts', async (t) => {
    const ports = [await freeUdpPort(), await freeUdpPort()];
    const { proxy, port } = await startProxy({
      upstreams: ports.map((p, i) => ({ id: `d${String(i)}`, host: '127.0.0.1', port: p })),
      maxConnectAttempts: 5,
    });
    t.after(() => proxy.close());
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    const closed = nextClose(proxy);
    client.send('x', port, '127.0.0.1');
    const summary = await closed;
    assert.equal(summary.reason, 'upstream_error');
    const stats = proxy.stats();
    assert.equal(stats.upstream_sess_retry, 1);
    assert.equal(stats.upstream_sess_attempts_exceeded, 0);
    assert.equal(stats.dropped.upstream_refused, 1);
    assert.equal(stats.session_close_reasons.no_upstream, 0);
    assertAccounted(stats);
  });

  test('lets go of what it kept once connectTimeout has passed, with no further datagram (one-way traffic)', async (t) => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const silent = await udpSocket();
    t.after(() => closeSocket(silent));
    const sent: WeakRef<Buffer>[] = [];
    const { proxy, port } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: silent.address().port }],
      connectTimeout: 30,
      // What the proxy holds is only seen through a filter that lets each datagram through.
      sessionFilters: [
        () => ({
          onClientDatagram: (datagram) => {
            sent.push(new WeakRef(datagram));
            return datagram;
          },
        }),
      ],
    });
    t.after(() => proxy.close());
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    const arrived = once(silent, 'message');
    client.send(Buffer.alloc(1_000, 1), port, '127.0.0.1');
    await withTimeout(arrived, 3_000, 'the silent upstream');
    assert.equal(sent.length, 1);
    // The session lives on (idleTimeout 60 s, no reply ever): only the end of the failover
    // window lets the datagram go. Polled, bounded in count and time.
    const started = Date.now();
    let collected = false;
    for (let i = 0; i < 200 && Date.now() - started < 5_000 && !collected; i++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
      gc();
      collected = sent[0]?.deref() === undefined;
    }
    assert.ok(collected, 'the kept datagram was let go after connectTimeout');
    assert.equal(proxy.stats().downstream_sess_active, 1, 'the session itself lives on');
  });

  test('maxConnectAttempts: 1 keeps the old behaviour: the refused session ends, nothing kept', async (t) => {
    const down = await freeUdpPort();
    const live = await udpEcho('B:');
    t.after(() => live.close());
    const { proxy, port } = await startProxy({
      upstreams: [
        { id: 'down', host: '127.0.0.1', port: down },
        { id: 'live', host: '127.0.0.1', port: live.port },
      ],
      selector: inOrder,
      maxConnectAttempts: 1,
    });
    t.after(() => proxy.close());
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    const closed = nextClose(proxy);
    client.send('x', port, '127.0.0.1');
    assert.equal((await closed).reason, 'upstream_error');
    assert.equal(live.received, 0);
    const stats = proxy.stats();
    assert.equal(stats.upstream_sess_retry, 0);
    assert.equal(stats.upstream_sess_refused_datagrams, 0);
    assert.equal(stats.datagrams_dropped, 0);
    assertAccounted(stats);
  });

  test('leaves no socket or timer behind after failovers', async (t) => {
    const down = await freeUdpPort();
    const live = await udpEcho('B:');
    t.after(() => live.close());
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
        upstreams: [
          { id: 'down', host: '127.0.0.1', port: down },
          { id: 'live', host: '127.0.0.1', port: live.port },
        ],
        selector: (ctx) => Promise.resolve(ctx.candidates[0]),
        idleTimeout: 30_000,
      });
      const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
      const answered = replies(client, 2);
      client.send('1', port, '127.0.0.1');
      client.send('2', port, '127.0.0.1');
      assert.deepEqual(await answered, ['B:1', 'B:2']);
      assert.equal(proxy.stats().upstream_sess_retry, 1);
    }
    const deadline = Date.now() + 2_000;
    for (let i = 0; i < 1_000 && alive.size > 0 && Date.now() < deadline; i++) {
      await new Promise((resolve) => setImmediate(resolve));
    }
    assert.deepEqual([...alive.values()], []);
  });
});

/** One dig query, +tries=1 +time=1: the answer, or undefined when it timed out. */
function digOnce(digPath: string, port: number, name: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile(
      digPath,
      ['@127.0.0.1', '-p', String(port), name, '+short', '+tries=1', '+time=1'],
      { timeout: 10_000 },
      (err, stdout) => {
        resolve(err === null && stdout.trim() !== '' ? stdout.trim() : undefined);
      },
    );
  });
}

describe('UdpProxy upstream failover with dnsmasq and dig', () => {
  test('answers every query at once with a closed port among the upstreams; without failover the query sent there is lost', async (t) => {
    const digPath = tool(t, 'dig');
    if (digPath === undefined) return;
    const dns = await startDnsmasq(t, 'example.test', '10.1.2.3');
    if (dns === undefined) return;
    const down = await freeUdpPort();
    const upstreams = [
      { id: 'down', host: '127.0.0.1', port: down },
      { id: 'dns', host: '127.0.0.1', port: dns.port },
    ];
    // Round robin: every other session's first choice is the closed port.
    const { proxy, port } = await startProxy({ upstreams, maxResponses: 1 });
    t.after(() => proxy.close());
    for (let i = 0; i < 4; i++)
      assert.equal(await digOnce(digPath, port, 'example.test'), '10.1.2.3');
    const stats = proxy.stats();
    assert.equal(stats.upstream_sess_retry, 2);
    assert.equal(stats.session_close_reasons.max_responses, 4);
    assert.equal(stats.upstreams.dns?.upstream_sess_rx_datagrams, 4);

    const { proxy: plain, port: plainPort } = await startProxy({
      upstreams,
      maxResponses: 1,
      maxConnectAttempts: 1,
    });
    t.after(() => plain.close());
    const answers: (string | undefined)[] = [];
    for (let i = 0; i < 2; i++) answers.push(await digOnce(digPath, plainPort, 'example.test'));
    assert.deepEqual(
      answers,
      [undefined, '10.1.2.3'],
      'the query sent to the closed port times out',
    );
    assert.equal(plain.stats().session_close_reasons.upstream_error, 1);
  });
});
