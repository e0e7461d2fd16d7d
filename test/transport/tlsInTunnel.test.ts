import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { TunnelServer } from '../../src/index.js';
import type { L4Error } from '../../src/index.js';
import { connect, readAll, readUntil } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';
import { startOpensslServer } from '../helpers/openssl.js';
import type { OpensslServer } from '../helpers/openssl.js';
import type { Squid } from '../helpers/squid.js';
import { startSquid } from '../helpers/squid.js';
import { makeCa } from '../helpers/tlsCa.js';
import type { IssuedCert, TestCa } from '../helpers/tlsCa.js';
import { findTool, requireTools } from '../helpers/tools.js';

const openssl = findTool('openssl');
const missing =
  findTool('squid') === undefined
    ? 'squid is not installed'
    : openssl === undefined
      ? 'openssl is not installed'
      : undefined;
if (missing !== undefined && requireTools)
  throw new Error(`L4PROXY_REQUIRE_TOOLS=1 but ${missing}`);

describe(
  'TLS origination inside a CONNECT tunnel: l4proxy -> squid -> openssl s_server',
  { skip: missing },
  () => {
    let squid: Squid;
    let ca: TestCa;
    let other: TestCa;
    let server: IssuedCert;
    let sServer: OpensslServer;
    let sPort: number;

    before(async () => {
      const bin = openssl as string;
      ca = await makeCa(bin);
      other = await makeCa(bin, 'some other CA');
      server = await ca.issue('localhost', ['localhost', '127.0.0.1']);
      sServer = await startOpensslServer(bin, server);
      sPort = sServer.port;
      squid = await startSquid();
    });

    after(async () => {
      await squid.stop();
      await sServer.stop();
      ca.remove();
      other.remove();
    });

    test('the handshake with the final upstream runs inside the tunnel, verified against its CA', async (t) => {
      const rig = await startProxy({
        upstreams: [
          {
            host: '127.0.0.1',
            port: squid.port,
            tunnel: { target: `127.0.0.1:${sPort}` },
            tls: { ca: ca.cert, servername: 'localhost' },
          },
        ],
      });
      t.after(() => rig.proxy.close({ drainTimeout: 0 }));
      const client = await connect(rig.port);
      client.write('hello tunnel\n');
      assert.match(await readUntil(client, /lennut olleh/), /lennut olleh/);
      client.end();
      await readAll(client);
      const [summary] = await rig.closes(1);
      assert.equal(summary?.upstreamConnected, true);
      const stats = rig.proxy.stats();
      assert.equal(stats.upstream_tls_handshake, 1);
      assert.equal(stats.tunnels?.tunnel_opened_total, 1);
    });

    test('health checks of a tunnel upstream check the HTTP proxy: no TLS handshake and no PROXY header sent to it, so the upstream stays healthy', async (t) => {
      const rig = await startProxy({
        upstreams: [
          {
            id: 'tunnelled',
            host: '127.0.0.1',
            port: squid.port,
            tunnel: { target: `127.0.0.1:${sPort}` },
            tls: { ca: ca.cert, servername: 'localhost' },
          },
        ],
        proxyProtocol: 'v1',
        // A check through the proxy: it must reach squid bare, as an HTTP request.
        healthCheck: {
          interval: 50,
          jitter: 0,
          timeout: 2_000,
          tcp: {
            send: `CONNECT 127.0.0.1:${sPort} HTTP/1.1\r\nHost: 127.0.0.1:${sPort}\r\n\r\n`,
            expect: /^HTTP\/1\.[01] 200/,
          },
        },
      });
      t.after(() => rig.proxy.close({ drainTimeout: 0 }));
      const upstream = () => rig.proxy.stats().upstreams.tunnelled;
      // Three completed checks (the first alone could fail it), bounded in count and time.
      for (let i = 0; i < 250 && (upstream()?.health_check_attempts ?? 0) < 3; i++)
        await new Promise((resolve) => setTimeout(resolve, 20));
      assert.ok((upstream()?.health_check_attempts ?? 0) >= 3, 'the checks ran');
      assert.equal(upstream()?.health_check_failures, 0, 'squid accepted every check');
      assert.equal(upstream()?.healthy, true);
    });

    test('a certificate from another CA fails inside the tunnel: upstream_tls_untrusted', async (t) => {
      const rig = await startProxy({
        upstreams: [
          {
            host: '127.0.0.1',
            port: squid.port,
            tunnel: { target: `127.0.0.1:${sPort}` },
            tls: { ca: other.cert, servername: 'localhost' },
          },
        ],
        maxConnectAttempts: 1,
      });
      t.after(() => rig.proxy.close({ drainTimeout: 0 }));
      const client = await connect(rig.port);
      await readAll(client);
      const [summary] = await rig.closes(1);
      assert.equal(summary?.reason, 'upstream_tls_untrusted');
      assert.equal((summary.error as L4Error | undefined)?.code, 'ERR_L4_TLS_UNTRUSTED');
      // The tunnel itself opened: the failure is the TLS inside it.
      assert.equal(rig.proxy.stats().tunnels?.tunnel_opened_total, 1);
    });

    test('inside an HTTP/2 CONNECT stream too (l4proxy TunnelServer at the far end)', async (t) => {
      const server = new TunnelServer({ upstreams: [{ host: '127.0.0.1', port: sPort }] });
      const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
      t.after(() => server.close());
      const rig = await startProxy({
        upstreams: [
          {
            host: '127.0.0.1',
            port,
            tunnel: { protocol: 'h2', target: `127.0.0.1:${sPort}` },
            tls: { ca: ca.cert, servername: 'localhost' },
          },
        ],
      });
      t.after(() => rig.proxy.close({ drainTimeout: 0 }));
      const client = await connect(rig.port);
      client.write('over h2\n');
      assert.match(await readUntil(client, /2h revo/), /2h revo/);
      client.end();
      await readAll(client);
      await rig.closes(1);
      assert.equal(rig.proxy.stats().upstream_tls_handshake, 1);
      assert.equal(server.stats().tunnel_opened_total, 1);
    });
  },
);
