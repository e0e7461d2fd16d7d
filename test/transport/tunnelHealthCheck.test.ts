import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { TcpProxy } from '../../src/index.js';
import type { HealthCheckOptions, Upstream } from '../../src/index.js';
import { echoServer, refusedPort } from '../helpers/net.js';
import type { TestServer } from '../helpers/net.js';
import type { Nghttpx } from '../helpers/nghttpx.js';
import { startNghttpx } from '../helpers/nghttpx.js';
import type { Squid } from '../helpers/squid.js';
import { startSquid } from '../helpers/squid.js';
import type { TestCert } from '../helpers/tlsPeers.js';
import { selfSignedCert } from '../helpers/tlsPeers.js';
import { findTool, requireTools } from '../helpers/tools.js';
import { nextEvent } from '../upstream/helpers.js';

const needed = ['squid', 'nghttpx', 'openssl'].filter((name) => findTool(name) === undefined);
const missing = needed.length === 0 ? undefined : `${needed.join(', ')} not installed`;
if (missing !== undefined && requireTools)
  throw new Error(`L4PROXY_REQUIRE_TOOLS=1 but ${missing}`);

/** A CONNECT request for `target`, as a check's `send` (HTTP/1.1 tunnels). */
const connectTo = (target: string): string =>
  `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`;

/**
 * Health checks of tunnel upstreams whose HTTP proxy is reached over TLS (`tunnel.tls`): nghttpx
 * with a TLS frontend (HTTP/1.1 and h2 by ALPN) in front of squid, the real CONNECT proxies.
 */
describe('health checks of a tunnel upstream with tunnel.tls', { skip: missing }, () => {
  let squid: Squid;
  let nghttpx: Nghttpx;
  let cert: TestCert;
  let other: TestCert;
  let certDir: string;
  let target: TestServer;

  before(async () => {
    target = await echoServer();
    squid = await startSquid();
    const openssl = findTool('openssl') ?? 'openssl';
    cert = await selfSignedCert(openssl, 'localhost');
    other = await selfSignedCert(openssl, 'localhost');
    certDir = mkdtempSync(join(tmpdir(), 'l4proxy-nghttpx-'));
    writeFileSync(join(certDir, 'key.pem'), cert.key);
    writeFileSync(join(certDir, 'cert.pem'), cert.cert);
    nghttpx = await startNghttpx(squid.port, {
      key: join(certDir, 'key.pem'),
      cert: join(certDir, 'cert.pem'),
    });
  });

  after(async () => {
    await nghttpx.stop();
    await squid.stop();
    rmSync(certDir, { recursive: true, force: true });
    await target.close();
  });

  const viaTls = (ca: string, targetPort: number, protocol: 'http/1.1' | 'h2'): Upstream => ({
    host: '127.0.0.1',
    port: nghttpx.port,
    id: 'proxied',
    tunnel: { protocol, target: `127.0.0.1:${targetPort}`, tls: { ca, servername: 'localhost' } },
  });

  /** The first verdict of the upstream's checks: [healthy, detail] (a pass flips nothing). */
  async function firstVerdict(
    upstream: Upstream,
    healthCheck: HealthCheckOptions,
  ): Promise<boolean> {
    const proxy = new TcpProxy({
      upstreams: [upstream],
      healthCheck: { interval: 50, timeout: 2_000, healthyThreshold: 1, ...healthCheck },
    });
    try {
      const attempts = (): number => proxy.stats().upstream_health_check_attempts;
      const failed = nextEvent(proxy, 'upstreamHealth', (_u, healthy) => !healthy, 10_000);
      // Two checks completed with no flip, or a flip to unhealthy.
      const passed = (async () => {
        for (let i = 0; i < 400 && attempts() < 2; i++)
          await new Promise((resolve) => setTimeout(resolve, 25));
        return attempts() >= 2 && proxy.stats().upstream_health_check_failures === 0;
      })();
      return await Promise.race([failed.then(() => false), passed]);
    } finally {
      await proxy.close();
    }
  }

  for (const protocol of ['http/1.1', 'h2'] as const) {
    test(`${protocol}: the check completes the TLS handshake with the proxy: its CA passes`, async () => {
      assert.equal(await firstVerdict(viaTls(cert.cert, target.port, protocol), {}), true);
    });

    test(`${protocol}: a proxy whose certificate the tunnels would refuse fails the check`, async () => {
      // A TCP connect passed: the proxy was healthy while every tunnel failed its TLS.
      assert.equal(await firstVerdict(viaTls(other.cert, target.port, protocol), {}), false);
    });
  }

  test('send/expect go through the TLS to the proxy: a CONNECT to the target proves it is up', async () => {
    const check = (port: number): HealthCheckOptions => ({
      tcp: { send: connectTo(`127.0.0.1:${port}`), expect: /^HTTP\/1\.[01] 200/ },
    });
    assert.equal(
      await firstVerdict(viaTls(cert.cert, target.port, 'http/1.1'), check(target.port)),
      true,
    );
    // The proxy works, the target behind it is down: squid answers 503, the check fails.
    const dead = await refusedPort();
    assert.equal(await firstVerdict(viaTls(cert.cert, dead, 'http/1.1'), check(dead)), false);
  });
});
