import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { readAdminToken } from '../../src/cli/adminConfig.js';

const STRONG = '4f9c2d7e1a8b3c6d5e0f9a8b7c6d5e4f';

/** Writes `token` to a file of `mode` in a fresh directory (removed when the test ends). */
function tokenFile(t: { after(fn: () => void): void }, token: string, mode: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'l4proxy-token-'));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  const file = join(dir, 'token');
  writeFileSync(file, `${token}\n`);
  chmodSync(file, mode);
  return file;
}

test(
  'a token file other users can read is warned about (chmod 600), the token kept out',
  {
    skip: process.platform === 'win32' ? 'no POSIX file modes on Windows' : false,
  },
  async (t) => {
    const warnings: string[] = [];
    const open = tokenFile(t, STRONG, 0o644);
    const listen = { host: '127.0.0.1', port: 0 };
    assert.equal(
      await readAdminToken({ listen, tokenFile: open }, (m) => warnings.push(m)),
      STRONG,
    );
    assert.equal(warnings.length, 1);
    assert.match(warnings[0] ?? '', /readable by other users \(mode 0644\): chmod 600/);
    assert.ok(!(warnings[0] ?? '').includes(STRONG));
    const closed = tokenFile(t, STRONG, 0o600);
    await readAdminToken({ listen, tokenFile: closed }, (m) => warnings.push(m));
    assert.equal(warnings.length, 1, 'a file only its owner reads is not warned about');
  },
);

test('a short admin token is warned about, from a file or the environment', async (t) => {
  const warnings: string[] = [];
  const listen = { host: '127.0.0.1', port: 0 };
  await readAdminToken({ listen, tokenFile: tokenFile(t, 'secret', 0o600) }, (m) =>
    warnings.push(m),
  );
  const saved = process.env.L4PROXY_ADMIN_TOKEN;
  process.env.L4PROXY_ADMIN_TOKEN = 'hunter2';
  t.after(() => {
    if (saved === undefined) delete process.env.L4PROXY_ADMIN_TOKEN;
    else process.env.L4PROXY_ADMIN_TOKEN = saved;
  });
  assert.equal(await readAdminToken({ listen }, (m) => warnings.push(m)), 'hunter2');
  assert.equal(warnings.length, 2);
  for (const warning of warnings) {
    assert.match(warning, /can be guessed/);
    assert.doesNotMatch(warning, /secret|hunter2/);
  }
});
