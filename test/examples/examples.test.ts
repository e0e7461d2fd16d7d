import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { selfSignedCertFiles } from '../helpers/tlsPeers.js';
import { tool } from '../helpers/tools.js';

const run = promisify(execFile);
const example = (name: string): string =>
  fileURLToPath(new URL(`../../examples/${name}/main.js`, import.meta.url));

test('example embed-handle: a server you own proxies some clients and serves others', async () => {
  const { stdout } = await run(process.execPath, [example('embed-handle')], { timeout: 30_000 });
  assert.match(stdout, /client 127\.0\.0\.1 got: hello from 127\.0\.0\.1/);
  assert.match(stdout, /client 127\.0\.0\.2 got: this address is served locally/);
  assert.match(stdout, /proxied 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+: completed/);
});

test('example connect-tunnel: an HTTP CONNECT tunnel built on handle()', async () => {
  const { stdout } = await run(process.execPath, [example('connect-tunnel')], { timeout: 30_000 });
  assert.match(stdout, /CONNECT answered 200/);
  assert.match(stdout, /through the tunnel: hello from the target/);
  assert.match(stdout, /tunnel to 127\.0\.0\.1:\d+ closed: completed/);
});

test('example tls-terminate: tls.createServer terminates TLS, the proxy relays plaintext', async (t) => {
  const openssl = tool(t, 'openssl');
  if (openssl === undefined) return;
  const dir = mkdtempSync(join(tmpdir(), 'l4proxy-tls-'));
  try {
    const { key, cert } = await selfSignedCertFiles(openssl, dir, 'localhost');
    const { stdout } = await run(process.execPath, [example('tls-terminate'), cert, key], {
      timeout: 30_000,
    });
    assert.match(stdout, /client got: HELLO OVER TLS/);
    assert.match(stdout, /closed: completed, 15 bytes decrypted from the client/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('example cluster: two workers share one port and both proxy connections', async () => {
  const { stdout } = await run(process.execPath, [example('cluster'), '2', '20'], {
    timeout: 60_000,
  });
  assert.match(stdout, /20 of 20 connections proxied by 2 workers/);
  const counts = [...stdout.matchAll(/worker \d+ \(pid \d+\): (\d+) connections/g)].map((m) =>
    Number(m[1]),
  );
  assert.equal(counts.length, 2);
  assert.ok(
    counts.every((n) => n > 0),
    `every worker served some: ${counts.join(', ')}`,
  );
});
