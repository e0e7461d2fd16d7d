import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { UdpProxy } from '../../src/udp/UdpProxy.js';
import type { UdpQuicOptions } from '../../src/quic/quicOptions.js';
import type { UdpSessionInfo } from '../../src/udp/events.js';
import { hasIpv6Loopback } from '../udp/helpers.js';
import { http3Pair, runHttp3Client } from './ngtcp2Peers.js';
import type { Http3Server } from './ngtcp2Peers.js';

describe('UdpProxy quic with ngtcp2 HTTP/3 peers', () => {
  const pair = http3Pair('l4proxy-quic-', (dir) => {
    writeFileSync(join(dir, 'upload.bin'), randomBytes(8 << 20));
  });
  const ready = (t: TestContext) => pair.ready(t);

  function proxyFor(
    a: Http3Server,
    b: Http3Server,
    quic: UdpQuicOptions,
    bySni: boolean,
  ): UdpProxy {
    return new UdpProxy({
      upstreams: [
        { id: 'alpha.test', host: '127.0.0.1', port: a.port },
        { id: 'beta.test', host: '127.0.0.1', port: b.port },
      ],
      idleTimeout: 10_000,
      quic,
      ...(bySni && { selector: (ctx) => ctx.candidates.find((c) => c.id === ctx.serverName) }),
    });
  }

  test('two HTTP/3 servers behind one UdpProxy: each client reaches the one it names', async (t) => {
    const peers = ready(t);
    if (!peers) return;
    const [paths, a, b] = peers;
    const proxy = proxyFor(a, b, { sni: true }, true);
    try {
      const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
      const [toAlpha, toBeta] = await Promise.all([
        runHttp3Client(paths.gtlsclient, paths.unshare, pair.dir, 'alpha.test', port),
        runHttp3Client(paths.gtlsclient, paths.unshare, pair.dir, 'beta.test', port),
      ]);
      assert.equal(toAlpha.body, 'served by alpha.test\n', toAlpha.output.slice(-2000));
      assert.equal(toBeta.body, 'served by beta.test\n', toBeta.output.slice(-2000));
      const stats = proxy.stats();
      assert.equal(stats.quic?.quic_sni_found, 2);
      assert.equal(stats.upstreams['alpha.test']?.upstream_sess_total, 1);
      assert.equal(stats.upstreams['beta.test']?.upstream_sess_total, 1);
    } finally {
      await proxy.close();
    }
  });

  for (const connectionIdRouting of [true, false]) {
    test(`a client rebinding while uploading ${connectionIdRouting ? 'keeps its connection and server (CID routing on)' : 'loses its connection (CID routing off)'}`, async (t) => {
      const peers = ready(t);
      if (!peers) return;
      const [paths, a, b] = peers;
      // Round robin, no SNI: with routing off, the rebound address gets the other server.
      const proxy = proxyFor(a, b, { sni: false, connectionIdRouting }, false);
      const sessions: UdpSessionInfo[] = [];
      proxy.on('session', (s) => sessions.push(s));
      try {
        const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
        const run = await runHttp3Client(
          paths.gtlsclient,
          paths.unshare,
          pair.dir,
          'alpha.test',
          port,
          [
            `--data=${join(pair.dir, 'upload.bin')}`,
            '--change-local-addr=150ms',
            '--nat-rebinding',
          ],
        );
        assert.ok(run.rebound, `the client rebound: ${run.output}`);
        assert.ok(sessions.length >= 2, 'the rebound client opened a second session');
        const firstUpstream = sessions[0]?.upstream?.id;
        const stats = proxy.stats().quic;
        if (connectionIdRouting) {
          assert.equal(run.body, `served by ${String(firstUpstream)}\n`, run.output);
          assert.ok((stats?.quic_cid_routed ?? 0) >= 1);
          assert.ok(sessions.every((s) => s.upstream?.id === firstUpstream));
        } else {
          // gtlsclient creates the download file when the request starts: it stays empty.
          assert.ok(
            !run.body?.includes('served by'),
            `no response on another server: ${String(run.body)}`,
          );
          assert.equal(stats?.quic_cid_routed, 0);
          assert.notEqual(sessions[1]?.upstream?.id, firstUpstream);
        }
      } finally {
        await proxy.close();
      }
    });
  }

  test('over IPv6: a client on ::1 routed by name, rebinding while uploading, keeps its server (CID routing)', async (t) => {
    const peers = ready(t);
    if (!peers) return;
    if (!(await hasIpv6Loopback())) {
      t.skip('::1 is not available on this host');
      return;
    }
    const [paths, a, b] = peers;
    // The client resolves the names to ::1 (its own hosts file); the servers stay on 127.0.0.1.
    const v6 = join(pair.dir, 'ipv6');
    mkdirSync(v6, { recursive: true });
    writeFileSync(join(v6, 'hosts'), '::1 localhost\n::1 alpha.test\n::1 beta.test\n');
    const proxy = proxyFor(a, b, { sni: true, connectionIdRouting: true }, true);
    const sessions: UdpSessionInfo[] = [];
    proxy.on('session', (s) => sessions.push(s));
    try {
      const { port } = await proxy.bind({ port: 0, address: '::1' });
      const run = await runHttp3Client(paths.gtlsclient, paths.unshare, v6, 'beta.test', port, [
        `--data=${join(pair.dir, 'upload.bin')}`,
        '--change-local-addr=150ms',
        '--nat-rebinding',
      ]);
      assert.ok(run.rebound, `the client rebound: ${run.output.slice(-2000)}`);
      assert.equal(run.body, 'served by beta.test\n', run.output.slice(-2000));
      assert.ok(sessions.length >= 2, 'the rebound client opened a second session');
      assert.ok(sessions.every((s) => s.clientFamily === 'IPv6'));
      assert.ok(sessions.every((s) => s.upstream?.id === 'beta.test'));
      const stats = proxy.stats().quic;
      assert.equal(stats?.quic_sni_found, 1);
      assert.ok(stats.quic_cid_routed >= 1);
    } finally {
      await proxy.close();
    }
  });
});
