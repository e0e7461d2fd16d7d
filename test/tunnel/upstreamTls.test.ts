import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { TunnelServer } from '../../src/index.js';
import type { TunnelSelector } from '../../src/index.js';
import { connect, readAll, readUntil } from '../helpers/net.js';
import { startOpensslServer } from '../helpers/openssl.js';
import { issueServerAndClient, sharedPki } from '../helpers/tlsCa.js';
import { until } from '../helpers/until.js';

const getPki = sharedPki(issueServerAndClient);

/** A CONNECT to `port` through the server at `proxyPort`; one line through the tunnel, echoed. */
async function through(proxyPort: number, port: number, line: string): Promise<void> {
  const client = await connect(proxyPort);
  client.write(
    `CONNECT 127.0.0.1:${String(port)} HTTP/1.1\r\nHost: 127.0.0.1:${String(port)}\r\n\r\n`,
  );
  assert.match(await readUntil(client, /\r\n\r\n/), /^HTTP\/1\.1 200/);
  client.write(`${line}\n`);
  const reversed = Array.from(line).reverse().join('');
  assert.match(await readUntil(client, new RegExp(reversed)), new RegExp(reversed));
  client.end();
  await readAll(client);
}

describe('TunnelServer TLS origination against openssl s_server', () => {
  test("counts its upstream handshakes, resumptions and failures, and drops a removed upstream's sessions", async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const server = await startOpensslServer(p.openssl, p.server, { version: '-tls1_3' });
    t.after(() => server.stop());
    // Two upstreams (ids) on the one server: each keeps a session of its own.
    const a = { id: 'a', host: '127.0.0.1', port: server.port };
    const b = { id: 'b', host: '127.0.0.1', port: server.port };
    let wanted = 'a';
    const selector: TunnelSelector = (ctx) => ctx.candidates.find((c) => c.id === wanted);
    const tunnels = new TunnelServer({
      upstreams: [a, b],
      selector,
      tls: { ca: p.ca.cert, servername: 'localhost' },
    });
    t.after(() => tunnels.close());
    const { port } = await tunnels.listen({ host: '127.0.0.1', port: 0 });
    let closed = 0;
    const via = async (id: string): Promise<void> => {
      wanted = id;
      await through(port, server.port, `ping ${id}`);
      closed++;
      await until(() => tunnels.stats().tunnel_active === 0, `tunnel ${String(closed)} closed`);
    };
    await via('a');
    await via('b');
    assert.equal(tunnels.stats().upstream_tls_handshake, 2);
    assert.equal(tunnels.stats().upstream_tls_session_reused, 0);
    tunnels.setUpstreams([a]);
    await via('a');
    assert.equal(tunnels.stats().upstream_tls_session_reused, 1, "a's session stays");
    tunnels.setUpstreams([a, b]);
    await via('b');
    const stats = tunnels.stats();
    assert.equal(stats.upstream_tls_handshake, 4);
    assert.equal(stats.upstream_tls_session_reused, 1, "b's session went with b: a full handshake");
    assert.equal(stats.upstream_tls_failed, 0);
    assert.match(tunnels.metrics(), /^l4proxy_tunnel_server_upstream_tls_session_reused_total 1$/m);
  });

  test('a certificate the server does not trust is counted in upstream_tls_failed', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const server = await startOpensslServer(p.openssl, p.server);
    t.after(() => server.stop());
    const tunnels = new TunnelServer({
      upstreams: [{ host: '127.0.0.1', port: server.port }],
      maxConnectAttempts: 1,
      // No `ca`: the system CAs, which do not know the test CA.
      tls: { servername: 'localhost' },
    });
    tunnels.on('error', () => undefined);
    t.after(() => tunnels.close());
    const { port } = await tunnels.listen({ host: '127.0.0.1', port: 0 });
    const client = await connect(port);
    client.write(`CONNECT 127.0.0.1:${String(server.port)} HTTP/1.1\r\nHost: x\r\n\r\n`);
    assert.match(await readUntil(client, /\r\n\r\n/), /^HTTP\/1\.1 502/);
    client.destroy();
    const stats = tunnels.stats();
    assert.equal(stats.upstream_tls_failed, 1);
    assert.equal(stats.upstream_tls_handshake, 0);
  });
});
