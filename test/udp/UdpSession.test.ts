import type { Socket } from 'node:dgram';
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { UdpProxy } from '../../src/index.js';
import { withTimeout } from '../helpers/net.js';
import { blackhole, proxyChild } from './child.js';
import type { Child } from './child.js';
import {
  closeSocket,
  countFds,
  request,
  rssKb,
  udpEcho,
  udpQueuedBytes,
  udpSocket,
} from './helpers.js';

/**
 * Opens `count` sessions through the proxy (one client socket each, one round trip each), all at
 * once: one after the other took longer than the idle timeout on a loaded machine, and the first
 * sessions expired before the count.
 */
async function openSessions(port: number, count: number): Promise<Socket[]> {
  const clients = await Promise.all(Array.from({ length: count }, () => udpSocket()));
  const replies = await Promise.all(
    clients.map(async (client, index) => (await request(client, port, `c${index}`)).toString()),
  );
  assert.deepEqual(
    replies,
    clients.map((_client, index) => `c${index}`),
  );
  return clients;
}

/** One session opened and expired, so lazily created process resources exist before counting. */
async function warmUp(child: Child, port: number): Promise<void> {
  const [client] = await openSessions(port, 1);
  await child.next('drained');
  await closeSocket(client!);
}

describe('UdpSession expiry frees sockets (proxy in a child process)', () => {
  test('idle expiry closes session sockets: open fds before, during and after', async (t) => {
    const echo = await udpEcho();
    t.after(() => echo.close());
    const { child, port } = await proxyChild({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      // Long enough for 50 round trips and a count on a loaded machine (500 ms was not).
      idleTimeout: 2_000,
    });
    t.after(() => child.stop());
    await warmUp(child, port);
    const before = await countFds(child.pid);
    const clients = await openSessions(port, 50);
    t.after(() => Promise.all(clients.map(closeSocket)));
    const during = await countFds(child.pid);
    assert.equal(during - before, 50, 'one socket per live session');
    await child.next('drained', 15_000);
    const after = await countFds(child.pid);
    assert.equal(after, before, 'every session socket closed on expiry');
    const stats = await child.stats();
    assert.equal(stats.idle_timeout, 51);
    assert.equal(stats.upstream_sess_active, 0);
  });

  test('maxResponses closes each session at its reply, long before the idle timeout', async (t) => {
    const echo = await udpEcho();
    t.after(() => echo.close());
    const { child, port } = await proxyChild({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      idleTimeout: 60_000,
      maxResponses: 1,
    });
    t.after(() => child.stop());
    await warmUp(child, port);
    const before = await countFds(child.pid);
    const clients = await openSessions(port, 50);
    t.after(() => Promise.all(clients.map(closeSocket)));
    // Each session closed as its reply went out: nothing is left to expire.
    const stats = await child.stats();
    assert.equal(stats.downstream_sess_active, 0);
    assert.equal(await countFds(child.pid), before);
    assert.equal(stats.session_close_reasons.max_responses, 51);
    assert.equal(stats.idle_timeout, 0);
  });
});

describe('UdpSession under a flood', () => {
  test('a client flooding a slow upstream keeps proxy memory bounded; every drop is counted', async (t) => {
    const upstream = await blackhole();
    t.after(() => upstream.child.stop());
    const { child, port } = await proxyChild(
      {
        upstreams: [{ host: '127.0.0.1', port: upstream.port }],
        maxPendingDatagrams: 64,
        // The selector holds until 'release': a flood that outlasted the default 5 s on a
        // loaded machine ended held sessions (selector_error) and dropped their 64 otherwise.
        connectTimeout: 120_000,
      },
      { manualSelector: true },
    );
    t.after(() => child.stop());
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    const payload = Buffer.alloc(1200, 7);

    /** Sends `count` datagrams in bursts, sampling the proxy's RSS; returns the peak (kB). */
    async function flood(count: number): Promise<number> {
      let peak = 0;
      for (let sent = 0; sent < count; sent += 1_000) {
        for (let i = 0; i < 1_000; i++) client.send(payload, port, '127.0.0.1');
        await new Promise((resolve) => setImmediate(resolve));
        if (sent % 20_000 === 0) peak = Math.max(peak, await rssKb(child.pid));
      }
      return peak;
    }

    /**
     * Stats once the proxy has read everything still queued for it: its listening socket's
     * receive queue empty (a proxy descheduled on a loaded machine can leave two equal snapshots
     * with datagrams still queued), and two equal snapshots.
     */
    async function settled(): Promise<Awaited<ReturnType<Child['stats']>>> {
      let last = await child.stats();
      for (let i = 0; i < 100; i++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        const next = await child.stats();
        const queued = await udpQueuedBytes(port);
        const drained = queued === undefined || queued === 0;
        if (drained && next.downstream_sess_rx_datagrams === last.downstream_sess_rx_datagrams)
          return next;
        last = next;
      }
      throw new Error('the proxy kept receiving for 10 s after the flood');
    }

    const baseline = await rssKb(child.pid);
    // Phase 1: the selector holds the session's upstream choice; datagrams wait, up to 64.
    const peakHeld = await flood(150_000);
    const held = await settled();
    assert.ok(held.downstream_sess_rx_datagrams > 1_000, 'the proxy received the flood');
    assert.equal(held.dropped.pending_overflow, held.downstream_sess_rx_datagrams - 64);
    // Phase 2: the upstream is chosen but never reads; the proxy forwards and the kernel drops.
    await child.ask('release');
    const peakForwarding = await flood(150_000);
    const final = await settled();
    // All phase-2 datagrams went out (plus the 64 that waited); phase 2 dropped nothing more.
    assert.equal(
      final.upstream_sess_tx_datagrams,
      final.downstream_sess_rx_datagrams - held.downstream_sess_rx_datagrams + 64,
    );
    assert.ok(final.upstream_sess_tx_datagrams > 1_000, 'the proxy forwarded the flood');
    // Every datagram the proxy received was either handed to the upstream socket or counted
    // dropped (the upstream never answers: nothing came back, nothing dropped on the way back).
    assert.equal(final.upstream_sess_rx_datagrams, 0);
    assert.equal(
      final.upstream_sess_tx_datagrams + final.datagrams_dropped,
      final.downstream_sess_rx_datagrams,
    );
    const floodedMb = (300_000 * payload.length) / 1e6;
    const growthMb = (Math.max(peakHeld, peakForwarding, await rssKb(child.pid)) - baseline) / 1024;
    t.diagnostic(
      `flooded ${floodedMb.toFixed(0)} MB; proxy received ${final.downstream_sess_rx_datagrams} datagrams, ` +
        `dropped ${final.datagrams_dropped}; RSS ${(baseline / 1024).toFixed(1)} MB + ${growthMb.toFixed(1)} MB at peak`,
    );
    assert.ok(growthMb < 64, `proxy RSS grew by ${growthMb.toFixed(1)} MB`);
  });
});

describe('UdpSession reentrancy', () => {
  test('a per-packet selector that closes its own session: the datagram is dropped, no upstream socket is left open', async (t) => {
    const echo = await udpEcho();
    t.after(() => echo.close());
    let closing = false;
    const proxy = new UdpProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      perPacketBalancing: true,
      selector: (ctx) => {
        if (closing) for (const session of proxy.sessions()) session.close();
        return ctx.upstreams[0];
      },
    });
    t.after(() => withTimeout(proxy.close(), 5_000, 'proxy.close()'));
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const drops: string[] = [];
    proxy.on('dropped', (drop) => drops.push(drop.reason));
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    assert.equal((await request(client, port, 'first')).toString(), 'first');
    closing = true;
    const closed = new Promise((resolve) => proxy.once('sessionClose', resolve));
    client.send('second', port, '127.0.0.1');
    await withTimeout(closed, 5_000, 'sessionClose');
    assert.deepEqual(drops, ['session_closed']);
    const stats = proxy.stats();
    assert.equal(stats.upstream_sess_active, 0, 'no link opened for a closed session');
    assert.equal(stats.upstream_sess_total, 1);
    assert.equal(stats.upstream_sess_tx_datagrams, 1);
  });
});
