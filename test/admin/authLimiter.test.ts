import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createAdminServer, InvalidOptionError } from '../../src/index.js';
import type { AdminServer } from '../../src/index.js';
import { AuthFailureLimiter } from '../../src/admin/authLimiter.js';
import { adminRequest } from '../helpers/adminClient.js';
import { curl } from '../helpers/curl.js';
import { tool } from '../helpers/tools.js';

const TOKEN = 'limiter-token-0123456789';

/** An admin server with a token and no proxies on 127.0.0.1 (closed after the test). */
async function tokenAdmin(
  t: { after: (fn: () => Promise<void>) => void },
  options: Record<string, number> = {},
): Promise<{ admin: AdminServer; port: number }> {
  const admin = createAdminServer({ listeners: () => [], token: TOKEN, ...options });
  t.after(() => admin.close());
  const { port } = await admin.listen({ port: 0 });
  return { admin, port };
}

/** The value of an unlabelled sample of the admin server's /metrics. */
async function counter(port: number, name: string): Promise<number> {
  const reply = await adminRequest(port, 'GET', '/metrics', {
    token: TOKEN,
    localAddress: '127.0.0.9',
  });
  assert.equal(reply.status, 200);
  const line = new RegExp(`^${name} (\\d+)$`, 'm').exec(reply.text);
  assert.ok(line !== null, `${name} in /metrics`);
  return Number(line[1]);
}

test('the 11th wrong token from one address is answered 429 with Retry-After, unchecked; another address is unaffected', async (t) => {
  const curlPath = tool(t, 'curl');
  if (curlPath === undefined) return;
  const { port } = await tokenAdmin(t);
  const url = `http://127.0.0.1:${port}/stats`;
  /** curl from 127.0.0.1: the status and the Retry-After header. */
  const attempt = async (token: string): Promise<[number, string | undefined]> => {
    const r = await curl(curlPath, [
      '-sS',
      '-o',
      '/dev/null',
      '-D',
      '-',
      '-w',
      '%{http_code}',
      '-H',
      `Authorization: Bearer ${token}`,
      url,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const retry = /^retry-after: (\d+)\r?$/im.exec(r.stdout)?.[1];
    return [Number(r.stdout.slice(-3)), retry];
  };
  for (let i = 1; i <= 10; i++)
    assert.deepEqual(await attempt(`wrong-${i}`), [401, undefined], `attempt ${i}`);
  // Before: every guess was checked, as fast as a client could send them.
  const [status, retry] = await attempt('wrong-11');
  assert.equal(status, 429);
  assert.ok(Number(retry) >= 1 && Number(retry) <= 60, `Retry-After ${String(retry)}`);
  // Throttled means unchecked: even the right token waits, so guessing gains nothing.
  assert.equal((await attempt(TOKEN))[0], 429);
  const body = await adminRequest(port, 'GET', '/stats', { token: 'wrong-12' });
  assert.equal(body.status, 429);
  assert.match((body.json as { error: string }).error, /too many wrong tokens/);
  // The probes need no token and stay open to a throttled address (a kubelet's).
  assert.equal((await adminRequest(port, 'GET', '/live')).status, 200);
  // Another address: its own state, the right token works, a wrong one is a plain 401.
  const other = { localAddress: '127.0.0.2' };
  assert.equal((await adminRequest(port, 'GET', '/stats', { ...other, token: TOKEN })).status, 200);
  assert.equal((await adminRequest(port, 'GET', '/stats', { ...other, token: 'x' })).status, 401);
  // And 127.0.0.2 succeeding reset nothing for 127.0.0.1.
  assert.equal((await attempt(TOKEN))[0], 429);
  assert.equal(await counter(port, 'l4proxy_admin_auth_failures_total'), 11);
  assert.equal(await counter(port, 'l4proxy_admin_auth_throttled_total'), 4);
});

test('a request without a token is refused but guesses nothing: it never throttles its address', async (t) => {
  const { port } = await tokenAdmin(t, { authFailureLimit: 2 });
  for (let i = 0; i < 6; i++)
    assert.equal((await adminRequest(port, 'GET', '/stats')).status, 401, `request ${i}`);
  assert.equal((await adminRequest(port, 'GET', '/stats', { token: TOKEN })).status, 200);
  assert.equal(await counter(port, 'l4proxy_admin_auth_failures_total'), 0);
});

test('after authFailureWindow an address may try again', async (t) => {
  const window = 400;
  const { port } = await tokenAdmin(t, { authFailureLimit: 2, authFailureWindow: window });
  const start = Date.now();
  assert.equal((await adminRequest(port, 'GET', '/stats', { token: 'a' })).status, 401);
  assert.equal((await adminRequest(port, 'GET', '/stats', { token: 'b' })).status, 401);
  const throttled = await adminRequest(port, 'GET', '/stats', { token: TOKEN });
  // The window opened at the first failure: unless this machine took that long, it still runs.
  if (Date.now() - start < window) assert.equal(throttled.status, 429);
  let status = throttled.status;
  for (let i = 0; i < 100 && status === 429; i++) {
    assert.ok(Date.now() - start < window + 5_000, 'throttled long after the window');
    await new Promise((resolve) => setTimeout(resolve, 50));
    status = (await adminRequest(port, 'GET', '/stats', { token: TOKEN })).status;
  }
  assert.equal(status, 200);
  assert.ok(Date.now() - start >= window - 50, 'not before the window ended');
  // A fresh window: two more tries before 429 again.
  assert.equal((await adminRequest(port, 'GET', '/stats', { token: 'c' })).status, 401);
});

test('the tracked addresses stay within authFailureSources; the least recently failing is forgotten', async (t) => {
  const { admin, port } = await tokenAdmin(t, { authFailureLimit: 1, authFailureSources: 3 });
  const limiter = admin.authLimiter;
  assert.ok(limiter !== undefined);
  for (let host = 2; host <= 6; host++) {
    const localAddress = `127.0.0.${host}`;
    const guess = { localAddress, token: 'guess' };
    assert.equal((await adminRequest(port, 'GET', '/stats', guess)).status, 401);
    assert.equal((await adminRequest(port, 'GET', '/stats', guess)).status, 429);
    assert.ok(limiter.size <= 3, `${limiter.size} sources tracked`);
  }
  assert.equal(limiter.size, 3);
  // 127.0.0.2 was forgotten (it may fail again); 127.0.0.6 is still throttled.
  const first = await adminRequest(port, 'GET', '/stats', {
    localAddress: '127.0.0.2',
    token: 'guess',
  });
  assert.equal(first.status, 401);
  const last = await adminRequest(port, 'GET', '/stats', {
    localAddress: '127.0.0.6',
    token: 'guess',
  });
  assert.equal(last.status, 429);
});

test('bounded under a flood of addresses: a million failures keep at most authFailureSources entries', () => {
  let now = 0;
  const limiter = new AuthFailureLimiter(
    { failures: 10, window: 60_000, sources: 1_000 },
    () => now,
  );
  for (let i = 0; i < 1_000_000; i++) {
    limiter.fail(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
    now++;
  }
  assert.equal(limiter.size, 1_000);
  assert.equal(limiter.failed, 1_000_000);
});

test('without a token nothing is limited (there is nothing to guess); the options are checked', async (t) => {
  const admin = createAdminServer({ listeners: () => [] });
  t.after(() => admin.close());
  assert.equal(admin.authLimiter, undefined);
  const { port } = await admin.listen({ port: 0 });
  for (let i = 0; i < 12; i++)
    assert.equal((await adminRequest(port, 'GET', '/stats', { token: 'any' })).status, 200);
  assert.doesNotMatch((await adminRequest(port, 'GET', '/metrics')).text, /l4proxy_admin_auth/);
  for (const [option, value] of [
    ['authFailureLimit', -1],
    ['authFailureWindow', 0],
    ['authFailureSources', 0],
    ['authFailureLimit', 1.5],
  ] as const) {
    assert.throws(
      () => createAdminServer({ listeners: () => [], token: TOKEN, [option]: value }),
      (err: unknown) => err instanceof InvalidOptionError && err.option === option,
    );
  }
});

test('authFailureLimit 0 turns the limit off', async (t) => {
  const { port } = await tokenAdmin(t, { authFailureLimit: 0 });
  for (let i = 0; i < 15; i++)
    assert.equal((await adminRequest(port, 'GET', '/stats', { token: `w${i}` })).status, 401);
  assert.equal((await adminRequest(port, 'GET', '/stats', { token: TOKEN })).status, 200);
  assert.equal(await counter(port, 'l4proxy_admin_auth_failures_total'), 15);
});
