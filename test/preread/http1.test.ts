import assert from 'node:assert/strict';
import http from 'node:http';
import { test } from 'node:test';
import { http1 } from '../../src/index.js';
import { closeAfter, connect, echoServer, listen, readAll, withTimeout } from '../helpers/net.js';
import { prereadContext } from '../helpers/prereadContext.js';
import { startProxy } from '../helpers/proxy.js';
import { startSquid } from '../helpers/squid.js';
import { tool } from '../helpers/tools.js';
import { hostRoutedNginx } from './hostRoutedNginx.js';

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

test('an absolute-form request routes on its target authority, not Host, as nginx reads it (RFC 9112 3.2.2)', async (t) => {
  const inspect = (request: string): unknown => {
    const verdict = http1()(Buffer.from(request, 'latin1'), ctx);
    return verdict.action === 'match' ? verdict.metadata : verdict.action;
  };
  const fields = (target: string, host = 'Host: a.test\r\n'): unknown => {
    const metadata = inspect(`GET ${target} HTTP/1.1\r\n${host}\r\n`) as Record<string, unknown>;
    return [metadata.host, metadata.hostname, metadata.hostHeader];
  };
  assert.deepEqual(fields('http://b.test/x'), ['b.test', 'b.test', 'a.test']);
  assert.deepEqual(fields('HTTPS://B.Test:8443?q'), ['b.test:8443', 'b.test', 'a.test']);
  assert.deepEqual(fields('http://user:pw@b.test#f'), ['b.test', 'b.test', 'a.test']);
  assert.deepEqual(fields('http://[::1]:80/'), ['[::1]:80', '[::1]', 'a.test']);
  assert.deepEqual(fields('http://b.test/', ''), ['b.test', 'b.test', undefined]);
  // No authority (nginx answers 400): no host, rather than the Host the upstream ignores.
  assert.deepEqual(fields('http:///x'), [undefined, undefined, 'a.test']);
  // Origin-form, and a path that merely contains "://", keep reading Host.
  assert.deepEqual(fields('/http://b.test/'), ['a.test', 'a.test', 'a.test']);

  if (tool(t, 'nginx') === undefined) return;
  const { port } = await hostRoutedNginx(t);
  const socket = await connect(port);
  t.after(() => socket.destroy());
  socket.end('GET http://b.test/ HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n');
  const response = (await readAll(socket)).toString('latin1');
  // nginx serves b.test whatever the Host: the proxy must have chosen b.test's upstream too.
  assert.match(response, /\r\n\r\nweb-b b\.test\n$/, response);
});

test('a CONNECT routes on its authority-form target, where squid opens the tunnel, not on Host (RFC 9112 3.2.3)', async (t) => {
  const inspect = (request: string): unknown => {
    const verdict = http1()(Buffer.from(request, 'latin1'), ctx);
    return verdict.action === 'match' ? verdict.metadata : verdict.action;
  };
  assert.deepEqual(inspect('CONNECT B.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n'), {
    protocol: 'http1',
    method: 'CONNECT',
    path: 'B.test:443',
    version: '1.1',
    host: 'b.test:443',
    hostname: 'b.test',
    hostHeader: 'a.test:443',
  });

  if (tool(t, 'squid') === undefined) return;
  const servers = [await echoServer(), await echoServer()];
  t.after(() => Promise.all(servers.map((server) => server.close())));
  const [allowed, forbidden] = servers.map((server) => server.port) as [number, number];
  const squid = await startSquid();
  t.after(() => squid.stop());
  // A policy on the name: only tunnels to 127.0.0.1:<allowed> may reach the forward proxy.
  const { proxy, port } = await startProxy({
    upstreams: [{ id: 'squid', host: '127.0.0.1', port: squid.port }],
    preread: { inspectors: { http: http1() } },
    selector: (ctx) =>
      ctx.preread?.http?.host === `127.0.0.1:${allowed}` ? ctx.candidates[0] : undefined,
  });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const tunnel = async (target: number, host: number): Promise<string> => {
    const socket = await connect(port);
    t.after(() => socket.destroy());
    socket.end(`CONNECT 127.0.0.1:${target} HTTP/1.1\r\nHost: 127.0.0.1:${host}\r\n\r\n`);
    return (await readAll(socket)).toString('latin1');
  };
  assert.match(await tunnel(allowed, allowed), /^HTTP\/1\.1 200 /);
  assert.equal(await tunnel(forbidden, allowed), '', 'the tunnel to the other port was refused');
});
