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

test('a Host with a final dot reaches the server real nginx picks for it', async (t) => {
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
  ])
    assert.match(await ask(request), /web-b b\.test\n/, JSON.stringify(request));
  await closes(3);
});
