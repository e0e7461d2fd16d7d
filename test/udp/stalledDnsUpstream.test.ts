import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { UdpProxy } from '../../src/index.js';
import type { UdpProxyOptions } from '../../src/index.js';
import { withTimeout } from '../helpers/net.js';
import { tool } from '../helpers/tools.js';
import { startDnsmasq } from './helpers.js';
import type { Dnsmasq } from './helpers.js';

/**
 * A real DNS server behind the UDP proxy that stops answering (dnsmasq held by SIGSTOP: its
 * socket still takes the queries, nothing comes back) and real `dig` clients, which send each
 * try from a new source port (dig 9.18), so each try is a session of its own.
 */

interface Rig {
  readonly proxy: UdpProxy;
  readonly port: number;
  readonly dns: Dnsmasq;
  /** Resolves once `count` sessions have opened in all. */
  opened(count: number): Promise<void>;
  /** Resolves once every session opened has ended. */
  allClosed(): Promise<void>;
}

/** SIGSTOP and SIGCONT for a dnsmasq child. */
interface Holdable {
  hold(): void;
  /**
   * Idempotent; each test calls it in a `finally`: startDnsmasq's after hook sends SIGTERM,
   * which a stopped process does not act on until it is continued.
   */
  resume(): void;
}

function holdable(dns: Dnsmasq): Holdable {
  const pid = dns.child.pid;
  assert.ok(pid !== undefined);
  let held = false;
  return {
    hold() {
      process.kill(pid, 'SIGSTOP');
      held = true;
    },
    resume() {
      if (held && dns.child.exitCode === null) process.kill(pid, 'SIGCONT');
      held = false;
    },
  };
}

async function rig(t: TestContext, options: Omit<UdpProxyOptions, 'upstreams'>) {
  const digPath = tool(t, 'dig');
  if (digPath === undefined) return undefined;
  const dns = await startDnsmasq(t, 'example.test', '10.1.2.3');
  if (dns === undefined) return undefined;
  const server = holdable(dns);
  const proxy = new UdpProxy({
    upstreams: [{ id: 'dns', host: '127.0.0.1', port: dns.port }],
    ...options,
  });
  t.after(() => proxy.close());
  const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
  let sessions = 0;
  const waiters: (() => void)[] = [];
  const wake = (): void => {
    for (const resolve of waiters.splice(0)) resolve();
  };
  proxy.on('session', () => {
    sessions++;
    wake();
  });
  proxy.on('sessionClose', wake);
  const until = async (done: () => boolean, what: string): Promise<void> => {
    for (let i = 0; i < 1_000 && !done(); i++)
      await withTimeout(new Promise<void>((resolve) => waiters.push(resolve)), 20_000, what);
    assert.ok(done(), what);
  };
  const rigged: Rig = {
    proxy,
    port,
    dns,
    opened: (count) => until(() => sessions >= count, `${count} sessions`),
    allClosed: () =>
      until(() => proxy.stats().downstream_sess_active === 0, 'every session to end'),
  };
  return { rig: rigged, digPath, server };
}

/**
 * Runs dig through the proxy: its `+short` answer (empty when it got none; dig writes its
 * timeouts to stdout too, as `;;` lines) and exit code.
 */
function dig(
  digPath: string,
  port: number,
  tries: number,
): Promise<{ answer: string; code: number }> {
  return new Promise((resolve) => {
    execFile(
      digPath,
      ['@127.0.0.1', '-p', String(port), 'example.test', '+short', `+tries=${tries}`, '+time=1'],
      { timeout: 30_000 },
      (err, stdout) => {
        const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
        const lines = stdout.split('\n').filter((line) => line !== '' && !line.startsWith(';'));
        resolve({ answer: lines.join('\n'), code });
      },
    );
  });
}

describe('UdpProxy with a DNS upstream that stops answering (dnsmasq SIGSTOP) and dig clients', () => {
  test('each dig try is a session that ends idle_timeout, its query counted as sent and unanswered; nothing left open; once the server continues, queries are answered again', async (t) => {
    const setup = await rig(t, { maxResponses: 1, idleTimeout: 300 });
    if (setup === undefined) return;
    const { rig: r, digPath, server } = setup;
    try {
      await stopThenContinue(r, digPath, server);
    } finally {
      server.resume();
    }
  });

  async function stopThenContinue(r: Rig, digPath: string, server: Holdable): Promise<void> {
    assert.deepEqual(await dig(digPath, r.port, 1), { answer: '10.1.2.3', code: 0 });

    server.hold();
    // dig: "no servers could be reached", exit code 9, after its 3 tries.
    assert.deepEqual(await dig(digPath, r.port, 3), { answer: '', code: 9 });
    await r.allClosed();
    let stats = r.proxy.stats();
    assert.equal(stats.downstream_sess_total, 4);
    assert.equal(stats.session_close_reasons.max_responses, 1);
    assert.equal(stats.session_close_reasons.idle_timeout, 3);
    assert.equal(stats.idle_timeout, 3);
    const upstream = stats.upstreams.dns;
    assert.ok(upstream);
    assert.equal(upstream.upstream_sess_tx_datagrams, 4, 'every query went out');
    assert.equal(upstream.upstream_sess_rx_datagrams, 1, 'one answer came back');
    assert.equal(upstream.upstream_sess_active, 0);
    assert.equal(upstream.healthy, true);
    assert.equal(stats.datagrams_dropped, 0);

    server.resume();
    // Its late answers go to session sockets now closed; a new query is answered (a late
    // answer landing on a new session's reused port would end that try: dig tries again).
    assert.equal((await dig(digPath, r.port, 3)).answer, '10.1.2.3');
    await r.allClosed();
    stats = r.proxy.stats();
    assert.ok(stats.session_close_reasons.max_responses >= 2);
    assert.equal(stats.downstream_sess_active, 0);
  }

  test('the server continues while dig is still trying: the answers queued meanwhile reach their sessions, dig takes its own, every session ends max_responses', async (t) => {
    const setup = await rig(t, { maxResponses: 1, idleTimeout: 30_000 });
    if (setup === undefined) return;
    const { rig: r, digPath, server } = setup;
    server.hold();
    const run = dig(digPath, r.port, 10);
    try {
      // Two tries went out (two sessions) and got nothing: the server continues.
      await r.opened(2);
    } finally {
      server.resume();
    }
    const { answer, code } = await run;
    assert.equal(answer, '10.1.2.3');
    assert.equal(code, 0);
    // Every query the server held is answered: each session ends after its answer, none waits
    // for its idle timeout (30 s).
    await r.allClosed();
    const stats = r.proxy.stats();
    assert.ok(stats.downstream_sess_total >= 2);
    assert.equal(stats.session_close_reasons.max_responses, stats.downstream_sess_total);
    assert.equal(stats.upstreams.dns?.upstream_sess_rx_datagrams, stats.downstream_sess_total);
    assert.equal(stats.downstream_sess_tx_datagrams, stats.downstream_sess_total);
  });

  test('a UDP health check with a DNS query as its probe takes the held server out: every dig is answered by the other at its first try', async (t) => {
    const digPath = tool(t, 'dig');
    if (digPath === undefined) return;
    const held = await startDnsmasq(t, 'example.test', '10.1.2.3');
    const other = await startDnsmasq(t, 'example.test', '10.1.2.4');
    if (held === undefined || other === undefined) return;
    // A query for example.test A, ID 0xc0de: the answer starts with the same ID.
    const query = Buffer.concat([
      Buffer.from('c0de01000001000000000000', 'hex'),
      Buffer.from([7, ...Buffer.from('example'), 4, ...Buffer.from('test'), 0]),
      Buffer.from('00010001', 'hex'),
    ]);
    const proxy = new UdpProxy({
      upstreams: [
        { id: 'held', host: '127.0.0.1', port: held.port },
        { id: 'other', host: '127.0.0.1', port: other.port },
      ],
      maxResponses: 1,
      idleTimeout: 2_000,
      healthCheck: {
        interval: 100,
        timeout: 300,
        unhealthyThreshold: 2,
        udp: { send: query, expect: { hex: 'c0de' } },
      },
    });
    t.after(() => proxy.close());
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const server = holdable(held);
    try {
      const down = new Promise<void>((resolve) => {
        proxy.on('upstreamHealth', (upstream, healthy) => {
          if (upstream.id === 'held' && !healthy) resolve();
        });
      });
      server.hold();
      await withTimeout(down, 20_000, 'the held server to be found down');
      for (let i = 0; i < 4; i++)
        assert.deepEqual(await dig(digPath, port, 1), { answer: '10.1.2.4', code: 0 });
      const stats = proxy.stats();
      const stopped = stats.upstreams.held;
      assert.ok(stopped);
      assert.equal(stopped.healthy, false);
      assert.ok(stopped.health_check_failures >= 1);
      assert.equal(stopped.upstream_sess_total, 0);
    } finally {
      server.resume();
    }
  });
});
