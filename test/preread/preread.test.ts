import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  firstLine,
  http1,
  InvalidOptionError,
  postgresStartup,
  tlsClientHello,
} from '../../src/index.js';
import type { PrereadInspector, PrereadResults, TcpRejection } from '../../src/index.js';
import { closed, dial, echoServer, readAll, waitFor } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';
import { prereadContext } from '../helpers/prereadContext.js';

const ctx = prereadContext;

test('http1: waits for the end of the headers, reads method, path and Host, skips non-HTTP at once', () => {
  const inspect = http1();
  const request = Buffer.from('GET /a?b HTTP/1.1\r\nX: y\r\nhOsT:  Api.Test:8443 \r\n\r\nbody');
  for (let cut = 1; cut < request.indexOf('\r\n\r\n') + 4; cut++)
    assert.deepEqual(inspect(request.subarray(0, cut), ctx), { action: 'more' }, `cut ${cut}`);
  assert.deepEqual(inspect(request, ctx), {
    action: 'match',
    metadata: {
      protocol: 'http1',
      method: 'GET',
      path: '/a?b',
      version: '1.1',
      host: 'api.test:8443',
      hostname: 'api.test',
      hostHeader: 'api.test:8443',
    },
  });
  assert.deepEqual(inspect(Buffer.from([0x16, 3, 1]), ctx), { action: 'skip' });
  assert.deepEqual(inspect(Buffer.from('SSH-2.0-OpenSSH\r\n\r\n'), ctx), { action: 'skip' });
  assert.deepEqual(inspect(Buffer.alloc(9000, 'A'), ctx), { action: 'skip' });
});

test('postgresStartup: SSLRequest answered N (S when terminating), GSSENCRequest N, startup parameters read, others skipped', () => {
  const inspect = postgresStartup();
  const ssl = Buffer.from('0000000804d2162f', 'hex');
  const gssenc = Buffer.from('0000000804d21630', 'hex');
  assert.deepEqual(inspect(ssl, ctx), { action: 'reply', data: Buffer.from('N'), consume: 8 });
  const passthrough = postgresStartup({ sslRequest: 'passthrough' });
  assert.deepEqual(passthrough(ssl, ctx), {
    action: 'match',
    metadata: { protocol: 'postgres', ssl: true },
  });
  // The proxy terminates TLS: it answers S whatever sslRequest says, and starts the handshake.
  for (const terminating of [inspect, passthrough])
    assert.deepEqual(terminating(ssl, { ...ctx, canStartTls: true }), {
      action: 'startTls',
      data: Buffer.from('S'),
      consume: 8,
    });
  // A GSSENCRequest is refused in every mode (the client goes on with TLS or in clear).
  for (const context of [ctx, { ...ctx, canStartTls: true }])
    for (const each of [inspect, passthrough])
      assert.deepEqual(each(gssenc, context), {
        action: 'reply',
        data: Buffer.from('N'),
        consume: 8,
      });
  // Already decrypted: another SSLRequest is a protocol violation.
  const tls = {
    version: 'TLSv1.3',
    cipher: 'TLS_AES_128_GCM_SHA256',
    serverName: undefined,
    alpnProtocol: undefined,
    sessionReused: false,
    handshakeMs: 1,
    peer: undefined,
  };
  assert.equal(inspect(ssl, { ...ctx, tls }).action, 'reject');
  const body = Buffer.from('user\0ann\0database\0shop\0\0');
  const head = Buffer.alloc(8);
  head.writeUInt32BE(8 + body.length, 0);
  head.writeUInt32BE(196608, 4);
  const startup = Buffer.concat([head, body]);
  assert.deepEqual(inspect(startup.subarray(0, 12), ctx), { action: 'more' });
  assert.deepEqual(inspect(startup, ctx), {
    action: 'match',
    metadata: {
      protocol: 'postgres',
      protocolVersion: '3.0',
      user: 'ann',
      database: 'shop',
      applicationName: undefined,
    },
  });
  assert.deepEqual(inspect(Buffer.from('GET / HTTP/1.1\r\n'), ctx), { action: 'skip' });
  assert.throws(() => postgresStartup({ sslRequest: 'accept' as 'refuse' }), InvalidOptionError);
});

test('http1 decides the same whatever the reads: headers of exactly maxHeaderBytes match', () => {
  const inspect = http1({ maxHeaderBytes: 64 });
  const head = 'GET / HTTP/1.1\r\nHost: a.test\r\nX: ';
  const request = `${head}${'y'.repeat(64 - head.length)}\r\n\r\n`;
  const whole = inspect(Buffer.from(request), ctx);
  assert.equal(whole.action, 'match');
  for (let cut = 60; cut < request.length; cut++)
    assert.deepEqual(
      inspect(Buffer.from(request.slice(0, cut)), ctx),
      { action: 'more' },
      `${cut}`,
    );
  assert.deepEqual(inspect(Buffer.from(`${request.slice(0, -4)}yyyy\r\n`), ctx), {
    action: 'skip',
  });
});

test('firstLine and tlsClientHello decide on partial input and skip what is not theirs', () => {
  const line = firstLine({ maxLength: 16 });
  assert.deepEqual(line(Buffer.from('HELLO t'), ctx), { action: 'more' });
  assert.deepEqual(line(Buffer.from('HELLO tenant\r\nrest'), ctx), {
    action: 'match',
    metadata: { protocol: 'text', line: 'HELLO tenant' },
  });
  assert.deepEqual(line(Buffer.from('a\0b'), ctx), { action: 'skip' });
  assert.deepEqual(line(Buffer.alloc(17, 'x'), ctx), { action: 'skip' });
  // A line of exactly maxLength whose \r and \n arrive in two reads: the same as in one.
  const longest = 'x'.repeat(16);
  assert.deepEqual(line(Buffer.from(`${longest}\r`), ctx), { action: 'more' });
  assert.deepEqual(line(Buffer.from(`${longest}\r\n`), ctx), {
    action: 'match',
    metadata: { protocol: 'text', line: longest },
  });
  const tls = tlsClientHello();
  assert.deepEqual(tls(Buffer.from('GET /'), ctx), { action: 'skip' });
  assert.deepEqual(tls(Buffer.from([0x16, 3, 1, 0]), ctx), { action: 'more' });
  const malformed = tls(Buffer.from([0x16, 3, 1, 0, 4, 2, 0, 0, 0]), ctx);
  assert.equal(malformed.action, 'reject');
});

test('every byte is forwarded unchanged after inspection, even when it arrives one byte at a time', async (t) => {
  const echo = await echoServer();
  t.after(() => echo.close());
  const seen: PrereadResults[] = [];
  const { proxy, port, closes } = await startProxy({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    preread: { inspectors: { line: firstLine(), http: http1(), tls: tlsClientHello() } },
    selector: (c) => {
      seen.push(c.preread ?? {});
      return c.candidates[0];
    },
  });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const client = dial(port);
  const message = Buffer.from('PING tenant-7\r\nand more\n');
  const received = readAll(client);
  for (const byte of message) {
    client.write(Buffer.from([byte]));
    await new Promise((resolve) => setImmediate(resolve));
  }
  client.end();
  assert.deepEqual(await received, message);
  assert.deepEqual(seen, [{ line: { protocol: 'text', line: 'PING tenant-7' } }]);
  const summary = (await closes(1))[0];
  assert.ok(summary);
  assert.equal(summary.bytesFromClient, message.length);
  assert.equal(summary.bytesToUpstream, message.length);
});

test('inspectors that reject, throw or stay undecided: preread_rejected with detail, preread_timeout, or routed without metadata', async (t) => {
  const echo = await echoServer();
  t.after(() => echo.close());
  const picky: PrereadInspector = (bytes) =>
    bytes.includes('bad') ? { action: 'reject', reason: 'bad word' } : { action: 'more' };
  const throwing: PrereadInspector = (bytes) => {
    if (bytes.includes('boom')) throw new Error('inspector bug');
    return { action: 'more' };
  };
  const strict = await startProxy({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    preread: {
      inspectors: { picky, throwing },
      timeout: 200,
      maxBytes: 64,
      onIncomplete: 'reject',
    },
  });
  t.after(() => strict.proxy.close({ drainTimeout: 0 }));
  const rejections: TcpRejection[] = [];
  strict.proxy.on('rejected', (r) => rejections.push(r));
  for (const text of ['a bad one', 'boom', 'undecided', 'x'.repeat(64)]) {
    const client = dial(strict.port);
    client.write(text);
    await closed(client);
  }
  assert.deepEqual(
    rejections.map((r) => [r.reason, r.detail?.replace(/ threw: .*/, ' threw')]),
    [
      ['preread_rejected', 'picky: bad word'],
      ['preread_rejected', 'throwing: inspector throwing threw'],
      ['preread_timeout', undefined],
      ['preread_timeout', undefined],
    ],
  );
  assert.equal(strict.proxy.stats().rejected_reasons.preread_rejected, 2);
  assert.equal(strict.proxy.stats().upstream_cx_total, 0);

  // A server-speaks-first client sends nothing: with 'continue' it is routed once time is up.
  const lenient = await startProxy({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    preread: { inspectors: { picky }, timeout: 100 },
  });
  t.after(() => lenient.proxy.close({ drainTimeout: 0 }));
  const [connection] = await Promise.all([
    waitFor<[{ preread: PrereadResults | undefined }]>(lenient.proxy, 'connection'),
    Promise.resolve(dial(lenient.port)),
  ]);
  assert.deepEqual(connection[0].preread, {});
  await waitFor(lenient.proxy, 'upstreamConnect');
  for (const c of lenient.proxy.connections()) c.close();
  await lenient.closes(1);
});

test('preread options are validated at construction', async () => {
  const { TcpProxy } = await import('../../src/index.js');
  assert.throws(() => new TcpProxy({ preread: { inspectors: {} } }), /preread\.inspectors/);
  assert.throws(
    () => new TcpProxy({ preread: { inspectors: { x: 1 as unknown as PrereadInspector } } }),
    /preread\.inspectors\.x/,
  );
  assert.throws(
    () =>
      new TcpProxy({ preread: { inspectors: { h: http1() }, onIncomplete: 'wait' as 'reject' } }),
    /preread\.onIncomplete/,
  );
});

test('a client that half-closes while inspected is routed with what it sent; one that sent nothing is gone', async (t) => {
  const echo = await echoServer();
  t.after(() => echo.close());
  const { proxy, port, closes } = await startProxy({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    preread: { inspectors: { http: http1() }, timeout: 5_000 },
  });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const rejections: TcpRejection[] = [];
  proxy.on('rejected', (r) => rejections.push(r));
  const partial = dial(port);
  const echoed = readAll(partial);
  partial.end('GET / HTTP/1.0\r\nHost: a'); // the headers never end: http1 stays undecided
  assert.equal((await echoed).toString(), 'GET / HTTP/1.0\r\nHost: a');
  const summary = (await closes(1))[0];
  assert.ok(summary);
  assert.equal(summary.reason, 'completed');
  const silent = dial(port);
  const refused = waitFor(proxy, 'rejected');
  silent.end();
  await refused;
  await closed(silent);
  assert.deepEqual(
    rejections.map((r) => r.reason),
    ['client_gone'],
  );
});
