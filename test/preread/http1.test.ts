import assert from 'node:assert/strict';
import http from 'node:http';
import { test } from 'node:test';
import { http1 } from '../../src/index.js';
import { closeAfter, connect, listen, withTimeout } from '../helpers/net.js';
import { prereadContext } from '../helpers/prereadContext.js';

const ctx = prereadContext;

function hostOf(request: string): unknown {
  const verdict = http1()(Buffer.from(request, 'latin1'), ctx);
  return verdict.action === 'match' ? verdict.metadata.host : verdict.action;
}

test('the Host routed on is the one the upstream reads: only SP and HTAB surround it (RFC 9110 5.5)', async (t) => {
  assert.equal(hostOf('GET / HTTP/1.1\r\nHost: \t A.test \t\r\n\r\n'), 'a.test');
  // NBSP (0xa0) is part of the value: Node's HTTP parser (llhttp) keeps it, as the upstream would.
  const nbsp = 'GET / HTTP/1.1\r\nHost: a.test\xa0\r\n\r\n';
  assert.equal(hostOf(nbsp), 'a.test\xa0');
  assert.equal(hostOf('GET / HTTP/1.1\r\nHost: \xa0a.test\r\n\r\n'), '\xa0a.test');
  assert.equal(hostOf('GET / HTTP/1.1\r\nHost: a.test\x0c\r\n\r\n'), 'a.test\x0c');

  let seen: ((host: string | undefined) => void) | undefined;
  const server = http.createServer((req, res) => {
    seen?.(req.headers.host);
    res.end();
  });
  const port = await listen(server);
  closeAfter(t, server);
  const host = new Promise<string | undefined>((resolve) => {
    seen = resolve;
  });
  const socket = await connect(port);
  t.after(() => socket.destroy());
  socket.write(Buffer.from(nbsp, 'latin1'));
  assert.equal(await withTimeout(host, 5_000, 'the request'), hostOf(nbsp));
});
