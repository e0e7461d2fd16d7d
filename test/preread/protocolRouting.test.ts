import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { http1, tlsClientHello } from '../../src/index.js';
import { startProxy } from '../helpers/proxy.js';
import { freePort } from '../helpers/peerProcess.js';
import { startNginxHttp } from '../helpers/nginxHttp.js';
import { selfSignedCert } from '../helpers/tlsPeers.js';
import { tool } from '../helpers/tools.js';

const run = promisify(execFile);

test('HTTP and TLS on one port: curl reaches real nginx servers chosen by Host and by SNI', async (t) => {
  const curl = tool(t, 'curl');
  const openssl = tool(t, 'openssl');
  if (tool(t, 'nginx') === undefined || curl === undefined || openssl === undefined) return;
  const cert = await selfSignedCert(openssl, 'secure.test');
  const [webA, webB, secure] = [await freePort(), await freePort(), await freePort()];
  const nginx = await startNginxHttp(
    [
      `server { listen 127.0.0.1:${webA}; return 200 "web-a $host $request_uri\\n"; }`,
      `server { listen 127.0.0.1:${webB}; return 200 "web-b $host $request_uri\\n"; }`,
      `server { listen 127.0.0.1:${secure} ssl; ssl_certificate $DIR/cert.pem; ssl_certificate_key $DIR/key.pem;`,
      `  return 200 "secure $ssl_server_name $request_uri\\n"; }`,
    ].join('\n'),
    { 'cert.pem': cert.cert, 'key.pem': cert.key },
  );
  t.after(() => nginx.stop());
  const { proxy, port, closes } = await startProxy({
    upstreams: [
      { id: 'web-a', host: '127.0.0.1', port: webA },
      { id: 'web-b', host: '127.0.0.1', port: webB },
      { id: 'secure', host: '127.0.0.1', port: secure },
    ],
    preread: { inspectors: { tls: tlsClientHello(), http: http1() } },
    selector: (ctx) => {
      const group =
        ctx.serverName === 'secure.test'
          ? 'secure'
          : ctx.preread?.http?.hostname === 'b.test'
            ? 'web-b'
            : 'web-a';
      return ctx.candidates.find((candidate) => candidate.id === group);
    },
  });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const fetch = async (...args: string[]): Promise<string> =>
    (await run(curl, ['-s', '--max-time', '10', ...args], { timeout: 15_000 })).stdout;

  assert.equal(
    await fetch('-H', 'Host: b.test:8080', `http://127.0.0.1:${port}/x?y=1`),
    'web-b b.test /x?y=1\n',
  );
  assert.equal(
    await fetch(`http://a.test:${port}/`, '--resolve', `a.test:${port}:127.0.0.1`),
    'web-a a.test /\n',
  );
  assert.equal(
    await fetch(
      '-k',
      '--resolve',
      `secure.test:${port}:127.0.0.1`,
      `https://secure.test:${port}/tls`,
    ),
    'secure secure.test /tls\n',
  );
  const summaries = await closes(3);
  const stats = proxy.stats();
  assert.equal(stats.preread_inspected, 3);
  assert.deepEqual(stats.preread_matched, { tls: 1, http: 2 });
  assert.match(proxy.metrics(), /^l4proxy_tcp_preread_matched_total\{inspector="http"\} 2$/m);
  assert.deepEqual(summaries.map((s) => [s.upstream?.id, s.serverName]).sort(), [
    ['secure', 'secure.test'],
    ['web-a', undefined],
    ['web-b', undefined],
  ]);
});
