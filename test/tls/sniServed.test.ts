import assert from 'node:assert/strict';
import tls from 'node:tls';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { TcpProxy, TunnelServer } from '../../src/index.js';
import type { TcpProxyOptions, TlsCertificateInfo } from '../../src/index.js';
import { SNI_SERVED_NAMES, SniServedCertificates } from '../../src/tls/sniServed.js';
import { opensslClient } from '../helpers/openssl.js';
import { testServer } from '../helpers/testServer.js';
import { sharedPki } from '../helpers/tlsCa.js';
import { parseExposition, valueOf } from '../metrics/exposition.js';

/** openssl-made certificates: the default, one expiring in a day, one in 400 days. */
const pki = sharedPki(async (ca) => ({
  localhost: await ca.issue('localhost', ['localhost', '127.0.0.1']),
  soon: await ca.issue('soon.test', ['soon.test', 'also.test']),
  later: await ca.issue('later.test', ['later.test', 'soon.test'], 'server', 400),
}));
type Pki = NonNullable<Awaited<ReturnType<typeof pki>>>;

/** The subject `openssl s_client -servername name` was served. */
async function servedTo(p: Pki, port: number, name: string): Promise<string> {
  const out = await opensslClient(p.openssl, [
    '-connect',
    `127.0.0.1:${port}`,
    '-servername',
    name,
    '-CAfile',
    p.ca.certFile,
    '-verify_return_error',
  ]);
  const subject = /subject=.*CN ?= ?([\w.*-]+)/.exec(out)?.[1];
  assert.ok(subject !== undefined, out);
  return subject;
}

function callbackServed(list: readonly TlsCertificateInfo[]): [string, string, string[]][] {
  return list
    .filter((c) => c.source === 'terminateTls.sniCallback')
    .map((c) => [c.subject, c.role, [...(c.serverNames ?? [])].sort()]);
}

async function proxyWith(
  t: TestContext,
  options: TcpProxyOptions,
): Promise<{ proxy: TcpProxy; port: number }> {
  const upstream = await testServer(t, (socket) => socket.end('hello\n'));
  const proxy = new TcpProxy({ ...options, upstreams: [{ host: '127.0.0.1', port: upstream }] });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const { port } = await proxy.listen({ host: '127.0.0.1', port: 0 });
  return { proxy, port };
}

for (const relay of ['handle', 'onread'] as const) {
  test(`relay ${relay}: certificates() and metrics() list what sniCallback served, by name; a renewal replaces it, the default forgets it`, async (t) => {
    const p = await pki(t);
    if (p === undefined) return;
    let forSoon: { cert: string; key: string } | undefined = { cert: p.soon.cert, key: p.soon.key };
    const context = tls.createSecureContext({ cert: p.later.cert, key: p.later.key });
    const { proxy, port } = await proxyWith(t, {
      relay,
      terminateTls: {
        cert: p.localhost.cert,
        key: p.localhost.key,
        sniCallback: (name) =>
          name === 'soon.test' || name === 'also.test'
            ? forSoon
            : name === 'later.test'
              ? context
              : undefined,
      },
    });
    // Before: nothing the callback served was listed, only the default.
    assert.deepEqual(callbackServed(proxy.certificates()), []);
    assert.equal(await servedTo(p, port, 'soon.test'), 'soon.test');
    assert.equal(await servedTo(p, port, 'also.test'), 'soon.test');
    assert.equal(await servedTo(p, port, 'later.test'), 'later.test');
    assert.equal(await servedTo(p, port, 'other.test'), 'localhost');
    // One entry per distinct certificate, with the names it was served for; a SecureContext too.
    assert.deepEqual(callbackServed(proxy.certificates()), [
      ['CN=soon.test', 'server', ['also.test', 'soon.test']],
      ['CN=later.test', 'server', ['later.test']],
    ]);
    const soon = proxy.certificates().find((c) => c.subject === 'CN=soon.test');
    assert.ok(soon !== undefined);
    assert.ok(soon.notAfter - Date.now() < 2 * 86_400_000, 'the one-day certificate');
    const families = parseExposition(proxy.metrics());
    assert.equal(
      valueOf(families, 'l4proxy_tls_certificate_expiry_timestamp_seconds', {
        role: 'server',
        source: 'terminateTls.sniCallback',
        subject: 'CN=soon.test',
        serial: soon.serialNumber,
      }),
      Math.floor(soon.notAfter / 1000),
    );
    // Renewed: the callback now serves `later` for soon.test; also.test falls back to the default.
    forSoon = { cert: p.later.cert, key: p.later.key };
    assert.equal(await servedTo(p, port, 'soon.test'), 'later.test');
    forSoon = undefined;
    assert.equal(await servedTo(p, port, 'also.test'), 'localhost');
    assert.deepEqual(callbackServed(proxy.certificates()), [
      ['CN=later.test', 'server', ['later.test', 'soon.test']],
    ]);
    // The one-day certificate is no longer served, so no longer reported as expiring.
    assert.doesNotMatch(proxy.metrics(), /CN=soon\.test/);
  });
}

test('TunnelServer.certificates() lists what its sniCallback served', async (t) => {
  const p = await pki(t);
  if (p === undefined) return;
  const server = new TunnelServer({
    upstreams: [{ host: '127.0.0.1', port: 9 }],
    terminateTls: {
      cert: p.localhost.cert,
      key: p.localhost.key,
      sniCallback: () => ({ cert: p.soon.cert, key: p.soon.key }),
    },
  });
  t.after(() => server.close());
  const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
  assert.equal(await servedTo(p, port, 'soon.test'), 'soon.test');
  assert.deepEqual(callbackServed(server.certificates()), [
    ['CN=soon.test', 'server', ['soon.test']],
  ]);
  assert.match(server.metrics(), /source="terminateTls\.sniCallback",subject="CN=soon\.test"/);
});

test(`a callback minting certificates per name is remembered for the last ${SNI_SERVED_NAMES} names only`, async (t) => {
  const p = await pki(t);
  if (p === undefined) return;
  const served = new SniServedCertificates('terminateTls.sniCallback');
  for (let i = 0; i < 10 * SNI_SERVED_NAMES; i++)
    served.record(`tenant-${i}.test`, i % 2 === 0 ? p.soon.cert : p.later.cert, undefined);
  const list = served.list();
  assert.equal(list.length, 2);
  const names = list.flatMap((c) => c.serverNames ?? []);
  assert.equal(names.length, SNI_SERVED_NAMES);
  assert.ok(names.includes(`tenant-${10 * SNI_SERVED_NAMES - 1}.test`), 'the latest kept');
  assert.ok(!names.includes('tenant-0.test'), 'the oldest forgotten');
  // An unparsable answer is served by OpenSSL's judgement, and listed as nothing.
  const odd = new SniServedCertificates('terminateTls.sniCallback');
  odd.record('x.test', 'not a certificate', undefined);
  assert.deepEqual(odd.list(), []);
});
