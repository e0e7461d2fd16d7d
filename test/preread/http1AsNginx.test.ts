import assert from 'node:assert/strict';
import { test } from 'node:test';
import { http1 } from '../../src/index.js';
import { connect, readAll } from '../helpers/net.js';
import { prereadContext } from '../helpers/prereadContext.js';
import { tool } from '../helpers/tools.js';
import { hostRoutedNginx } from './hostRoutedNginx.js';

/*
 * An absolute name's final dot (`b.test.`) names the same host: nginx drops it from `$host` and
 * picks `server_name b.test` for it, as the TLS inspector drops it from the SNI. The http1
 * inspector's `hostname` (what routes match) must drop it too, or a rule on `b.test` is passed
 * by writing `b.test.`.
 */

test('hostname drops the final dot of the Host, of an absolute-form target and of a CONNECT', () => {
  const inspect = http1();
  const hostname = (request: string): unknown => {
    const verdict = inspect(Buffer.from(request, 'latin1'), prereadContext);
    return verdict.action === 'match' ? verdict.metadata.hostname : verdict.action;
  };
  assert.equal(hostname('GET / HTTP/1.1\r\nHost: B.test.\r\n\r\n'), 'b.test');
  assert.equal(hostname('GET / HTTP/1.1\r\nHost: b.test.:8080\r\n\r\n'), 'b.test');
  assert.equal(hostname('GET http://b.test./ HTTP/1.1\r\nHost: a.test\r\n\r\n'), 'b.test');
  assert.equal(hostname('CONNECT b.test.:443 HTTP/1.1\r\n\r\n'), 'b.test');
  assert.equal(hostname('GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n'), '[::1]');
  assert.equal(hostname('GET / HTTP/1.1\r\nHost: b.test\r\n\r\n'), 'b.test');
});

/*
 * Request lines nginx serves that the inspector skipped as not HTTP (so a route on the Host was
 * passed): empty lines before it (RFC 9112 2.2), several spaces between its parts or before its
 * end, a later HTTP/1 minor version.
 */
const LENIENT_LINES = [
  '\r\nGET / HTTP/1.1',
  '\r\n\r\n\nGET / HTTP/1.1',
  'GET  /  HTTP/1.1',
  'GET / HTTP/1.1 ',
  'GET / HTTP/1.2',
  'GET / HTTP/1.10',
];

test('request lines nginx serves are matched, with the Host it reads', () => {
  const inspect = http1();
  for (const line of LENIENT_LINES) {
    const request = Buffer.from(`${line}\r\nHost: b.test\r\n\r\n`, 'latin1');
    const verdict = inspect(request, prereadContext);
    const hostname = verdict.action === 'match' ? verdict.metadata.hostname : verdict.action;
    assert.equal(hostname, 'b.test', JSON.stringify(line));
    // Every prefix asks for more: the same verdict however the bytes arrive.
    for (let cut = 1; cut < request.length - 1; cut++)
      assert.equal(inspect(request.subarray(0, cut), prereadContext).action, 'more', `${cut}`);
  }
  // Only CR and LF so far: more, up to the header limit.
  assert.equal(
    http1({ maxHeaderBytes: 64 })(Buffer.alloc(60, '\r\n'), prereadContext).action,
    'more',
  );
  assert.equal(
    http1({ maxHeaderBytes: 64 })(Buffer.alloc(70, '\r\n'), prereadContext).action,
    'skip',
  );
  // nginx refuses these (400, 505): still not matched.
  for (const line of ['GET / http/1.1', 'GET / HTTP/01.1', 'GET / HTTP/2.0', ' GET / HTTP/1.1'])
    assert.equal(
      inspect(Buffer.from(`${line}\r\nHost: b.test\r\n\r\n`), prereadContext).action,
      'skip',
      line,
    );
});

test('a Host with a final dot, or a lenient request line, reaches the server real nginx picks', async (t) => {
  if (tool(t, 'nginx') === undefined) return;
  const { port, closes } = await hostRoutedNginx(t, { timeout: 5_000 });
  const ask = async (request: string): Promise<string> => {
    const client = await connect(port);
    const reply = readAll(client);
    client.end(request);
    return (await reply).toString('latin1');
  };
  for (const request of [
    'GET / HTTP/1.1\r\nHost: b.test.\r\nConnection: close\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: B.TEST.:80\r\nConnection: close\r\n\r\n',
    'GET http://b.test./ HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n',
    ...LENIENT_LINES.map((line) => `${line}\r\nHost: b.test\r\nConnection: close\r\n\r\n`),
  ])
    assert.match(await ask(request), /web-b b\.test\n/, JSON.stringify(request));
  await closes(3 + LENIENT_LINES.length);
});
