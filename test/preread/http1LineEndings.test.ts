import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { http1 } from '../../src/index.js';
import { fuzzRuns } from '../helpers/fuzz.js';
import { connect, readAll } from '../helpers/net.js';
import { tool } from '../helpers/tools.js';
import { prereadContext } from '../helpers/prereadContext.js';
import { hostRoutedNginx } from './hostRoutedNginx.js';

const ctx = prereadContext;

test('http1 takes bare-LF line endings, alone or mixed with CRLF, as nginx and HAProxy do', () => {
  const inspect = http1();
  const expected = {
    action: 'match',
    metadata: {
      protocol: 'http1',
      method: 'GET',
      path: '/lf',
      version: '1.1',
      host: 'b.test',
      hostname: 'b.test',
      hostHeader: 'b.test',
    },
  };
  for (const request of [
    'GET /lf HTTP/1.1\nHost: b.test\n\n',
    'GET /lf HTTP/1.1\r\nX: a\nHost: b.test\r\n\r\n',
    'GET /lf HTTP/1.1\nHost: b.test\r\n\n',
    'GET /lf HTTP/1.1\r\nHost: b.test\n\r\n',
  ]) {
    assert.deepEqual(inspect(Buffer.from(request), ctx), expected, JSON.stringify(request));
    for (let cut = 1; cut < request.length - 1; cut++)
      assert.deepEqual(inspect(Buffer.from(request.slice(0, cut)), ctx), { action: 'more' });
  }
  // A request line alone, ended by an empty line.
  assert.equal(inspect(Buffer.from('GET / HTTP/1.0\n\n'), ctx).action, 'match');
  // Not HTTP: skipped at its first line end, LF or CRLF.
  assert.deepEqual(inspect(Buffer.from('HELLO there\n'), ctx), { action: 'skip' });
});

const token = fc.stringMatching(/^[A-Za-z]{1,8}$/);
const value = fc.stringMatching(/^[!-~]{1,16}$/);
const header = fc.tuple(token, value).filter(([name]) => name.toLowerCase() !== 'host');
const request = fc.record({
  method: fc.constantFrom('GET', 'POST', 'OPTIONS', 'PROPFIND'),
  path: fc.stringMatching(/^\/[!-~]{0,20}$/),
  host: fc.option(fc.stringMatching(/^[a-z0-9.-]{1,20}(:[0-9]{1,5})?$/), { nil: undefined }),
  before: fc.array(header, { maxLength: 4 }),
  after: fc.array(header, { maxLength: 4 }),
});

test('http1 property: the verdict does not depend on CRLF or LF per line, nor on where reads end', () => {
  const inspect = http1();
  fc.assert(
    fc.property(request, fc.array(fc.boolean(), { minLength: 12, maxLength: 12 }), (r, lf) => {
      const lines = [
        `${r.method} ${r.path} HTTP/1.1`,
        ...r.before.map(([n, v]) => `${n}: ${v}`),
        ...(r.host === undefined ? [] : [`Host: ${r.host}`]),
        ...r.after.map(([n, v]) => `${n}: ${v}`),
        '',
      ];
      const crlf = Buffer.from(`${lines.join('\r\n')}\r\n`);
      const mixed = Buffer.from(lines.map((line, i) => line + (lf[i] ? '\n' : '\r\n')).join(''));
      const verdict = inspect(crlf, ctx);
      assert.equal(verdict.action, 'match');
      assert.deepEqual(inspect(mixed, ctx), verdict);
      const last = mixed.length - (lf[lines.length - 1] ? 1 : 2);
      for (let cut = 1; cut < last; cut++)
        assert.deepEqual(inspect(mixed.subarray(0, cut), ctx), { action: 'more' });
    }),
    { numRuns: fuzzRuns(500) },
  );
});

test('a bare-LF request through the proxy reaches the server its Host names, as real nginx reads it', async (t) => {
  if (tool(t, 'nginx') === undefined) return;
  const { proxy, port, closes } = await hostRoutedNginx(t, { timeout: 5_000 });
  const ask = async (request: string): Promise<string> => {
    const client = await connect(port);
    const reply = readAll(client);
    client.end(request);
    return (await reply).toString('latin1');
  };
  const started = Date.now();
  assert.match(await ask('GET / HTTP/1.1\nHost: b.test\nConnection: close\n\n'), /web-b b\.test/);
  // nginx splits on the bare LF: the routing must read the same Host it does.
  assert.match(
    await ask('GET / HTTP/1.1\r\nX: a\nHost: b.test\r\nConnection: close\r\n\r\n'),
    /web-b b\.test/,
  );
  assert.ok(Date.now() - started < 4_000, 'decided at once, not at the preread timeout');
  await closes(2);
  assert.deepEqual(proxy.stats().preread_matched, { http: 2 });
});
