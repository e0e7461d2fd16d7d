import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { http1 } from '../../src/index.js';
import type { PrereadInspector, TcpRejection } from '../../src/index.js';
import { startProxy } from '../helpers/proxy.js';
import { freePort } from '../helpers/peerProcess.js';
import { startNginxHttp } from '../helpers/nginxHttp.js';
import { selfSignedCert } from '../helpers/tlsPeers.js';
import { tool } from '../helpers/tools.js';
import { closed, dial, echoServer, waitFor } from '../helpers/net.js';

const run = promisify(execFile);

test('with terminateTls the http1 inspector reads the decrypted request: HTTPS and HTTP on one port routed by Host to real nginx', async (t) => {
  const curl = tool(t, 'curl');
  const openssl = tool(t, 'openssl');
  if (tool(t, 'nginx') === undefined || curl === undefined || openssl === undefined) return;
  const cert = await selfSignedCert(openssl, 'a.test');
  const [webA, webB] = [await freePort(), await freePort()];
  const nginx = await startNginxHttp(
    [
      `server { listen 127.0.0.1:${webA}; return 200 "web-a $scheme $host $request_uri\\n"; }`,
      `server { listen 127.0.0.1:${webB}; return 200 "web-b $scheme $host $request_uri\\n"; }`,
    ].join('\n'),
    {},
  );
  t.after(() => nginx.stop());
  const serverNames: (string | undefined)[] = [];
  const { proxy, port, closes } = await startProxy({
    upstreams: [
      { id: 'web-a', host: '127.0.0.1', port: webA },
      { id: 'web-b', host: '127.0.0.1', port: webB },
    ],
    terminateTls: { cert: cert.cert, key: cert.key },
    preread: { inspectors: { http: http1() }, plaintext: 'accept' },
    selector: (ctx) => {
      serverNames.push(ctx.serverName);
      const group = ctx.preread?.http?.hostname === 'b.test' ? 'web-b' : 'web-a';
      return ctx.candidates.find((candidate) => candidate.id === group);
    },
  });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const fetch = async (...args: string[]): Promise<string> =>
    (await run(curl, ['-s', '--max-time', '10', ...args], { timeout: 15_000 })).stdout;

  // SNI a.test, Host b.test: the route follows the decrypted Host, the SNI is still known.
  assert.equal(
    await fetch(
      '-k',
      '-H',
      'Host: b.test',
      '--resolve',
      `a.test:${port}:127.0.0.1`,
      `https://a.test:${port}/tls`,
    ),
    'web-b http b.test /tls\n',
  );
  assert.equal(
    await fetch('-k', '--resolve', `a.test:${port}:127.0.0.1`, `https://a.test:${port}/`),
    'web-a http a.test /\n',
  );
  // The same port in clear (plaintext: 'accept').
  assert.equal(
    await fetch('-H', 'Host: b.test', `http://127.0.0.1:${port}/plain`),
    'web-b http b.test /plain\n',
  );
  assert.deepEqual(serverNames, ['a.test', 'a.test', undefined]);
  const summaries = await closes(3);
  assert.deepEqual(
    summaries.map((s) => `${s.upstream?.id ?? '-'} ${s.tls?.version ?? 'clear'}`).sort(),
    ['web-a TLSv1.3', 'web-b TLSv1.3', 'web-b clear'],
  );
  const stats = proxy.stats();
  assert.equal(stats.preread_inspected, 3);
  assert.deepEqual(stats.preread_matched, { http: 3 });
});

test('an inspector asking for startTls on a proxy that does not terminate TLS refuses only that client', async (t) => {
  const echo = await echoServer();
  t.after(() => echo.close());
  const starter: PrereadInspector = (bytes, ctx) =>
    bytes.length < 8
      ? { action: 'more' }
      : { action: 'startTls', data: Buffer.from(ctx.canStartTls ? 'S' : '?'), consume: 8 };
  const { proxy, port } = await startProxy({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    preread: { inspectors: { starter } },
  });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const rejections: TcpRejection[] = [];
  proxy.on('rejected', (rejection) => rejections.push(rejection));
  const refused = waitFor(proxy, 'rejected');
  const client = dial(port);
  client.write('STARTTLS');
  await refused;
  await closed(client);
  assert.deepEqual(
    rejections.map((r) => [r.reason, r.detail]),
    [['preread_rejected', 'starter: startTls without TLS termination to start']],
  );
  assert.equal(proxy.stats().upstream_cx_total, 0);
});
