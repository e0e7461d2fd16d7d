import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { ProxyProtocolError, encodeProxyHeader, proxyTlvs } from '../../src/index.js';
import type { SelectionContext, TcpProxyOptions } from '../../src/index.js';
import { startHaproxy } from '../helpers/haproxy.js';
import net from 'node:net';
import type { Socket } from 'node:net';
import { echoServer, listen, socketServer, withTimeout } from '../helpers/net.js';
import type { TestServer } from '../helpers/net.js';
import { freePort } from '../helpers/peerProcess.js';
import { dialFrom, received, recordingProxy, writeByteByByte } from '../helpers/recordingProxy.js';
import type { RecordingProxy } from '../helpers/recordingProxy.js';
import { tool } from '../helpers/tools.js';
import { nginxReportingClient } from '../helpers/proxyProtocolReceivers.js';

/** A v1 or v2 PROXY header claiming a TCP4 client. */
function claim(
  version: 1 | 2,
  source: string,
  sourcePort: number,
  destination = '198.51.100.1',
  destinationPort = 443,
): Buffer {
  return encodeProxyHeader({
    version,
    command: 'PROXY',
    protocol: 'TCP4',
    source: { address: source, port: sourcePort },
    destination: { address: destination, port: destinationPort },
  });
}

type CountingEcho = TestServer & { accepted(): number };

/** An echo upstream that counts the connections it accepted. */
async function countingEcho(): Promise<CountingEcho> {
  const echo = await echoServer();
  let accepted = 0;
  echo.server.on('connection', () => {
    accepted++;
  });
  return { ...echo, accepted: () => accepted };
}

/**
 * A {@link countingEcho} behind a proxy that accepts PROXY headers from 127.0.0.1 (`options` add
 * to or replace that), both closed by the test's `after`.
 */
async function acceptingProxy(
  t: TestContext,
  options: Partial<TcpProxyOptions> = {},
): Promise<{ echo: CountingEcho; proxy: RecordingProxy }> {
  const echo = await countingEcho();
  t.after(() => echo.close());
  const proxy = await recordingProxy({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    acceptProxyProtocol: { trusted: ['127.0.0.1'] },
    ...options,
  });
  t.after(() => proxy.close());
  return { echo, proxy };
}

describe('acceptProxyProtocol: real senders (haproxy send-proxy) in front of l4proxy', () => {
  for (const [inbound, outbound] of [
    ['send-proxy', 'v1'],
    ['send-proxy-v2', 'v2'],
    ['send-proxy', 'v2'],
  ] as const) {
    test(`haproxy ${inbound} -> l4proxy -> nginx (${outbound}): everyone sees the original client, not haproxy`, async (t) => {
      if (!tool(t, 'haproxy') || !tool(t, 'nginx')) return;
      const nginx = await nginxReportingClient();
      t.after(() => nginx.stop());
      const l4 = await recordingProxy({
        upstreams: [{ host: '127.0.0.1', port: nginx.port }],
        acceptProxyProtocol: { trusted: ['127.0.0.1'] },
        proxyProtocol: outbound,
      });
      t.after(() => l4.close());
      const front = await freePort();
      const frontSix = await freePort('::1');
      const haproxy = await startHaproxy(
        [
          'listen front',
          `  bind 127.0.0.1:${front}`,
          `  bind [::1]:${frontSix}`,
          `  server l4 127.0.0.1:${l4.port} ${inbound}`,
        ].join('\n'),
      );
      t.after(() => haproxy.stop());

      // An IPv4 client that does not look like haproxy (127.0.0.2), then an IPv6 client. They
      // do not half-close first: haproxy 2.6 then sometimes drops the reply (not our subject).
      const four = dialFrom(front, '127.0.0.1', '127.0.0.2');
      await four.connected;
      const fourPort = four.socket.localPort;
      assert.equal((await four.done).data.toString(), `127.0.0.2:${fourPort}\n`);
      const six = dialFrom(frontSix, '::1');
      await six.connected;
      const sixPort = six.socket.localPort;
      assert.equal((await six.done).data.toString(), `::1:${sixPort}\n`);

      const [first, second] = await l4.closed(2);
      assert.equal(first?.clientAddress, '127.0.0.2');
      assert.equal(first.clientPort, fourPort);
      assert.equal(first.clientFamily, 'IPv4');
      assert.equal(first.peerAddress, '127.0.0.1', 'the TCP peer is haproxy');
      assert.notEqual(first.peerPort, fourPort);
      assert.equal(first.localAddress, '127.0.0.1');
      assert.equal(first.localPort, front, 'the address the client reached is haproxy’s frontend');
      assert.equal(second?.clientAddress, '::1');
      assert.equal(second.clientFamily, 'IPv6');
      assert.equal(second.localPort, frontSix);
      assert.deepEqual(l4.rejections, []);
    });
  }
});

describe('acceptProxyProtocol: trust', () => {
  test('a header from an untrusted peer is never believed: it reaches the upstream as payload', async (t) => {
    const { proxy } = await acceptingProxy(t);
    for (const version of [1, 2] as const) {
      const bytes = Buffer.concat([claim(version, '203.0.113.7', 4242), Buffer.from('payload')]);
      const client = dialFrom(proxy.port, '127.0.0.1', '127.0.0.2');
      client.socket.end(bytes);
      assert.deepEqual((await client.done).data, bytes, `v${version} header echoed back unchanged`);
    }
    const summaries = await proxy.closed(2);
    for (const summary of summaries) {
      assert.equal(summary.clientAddress, '127.0.0.2');
      assert.equal(summary.peerAddress, '127.0.0.2');
      assert.equal(summary.reason, 'completed');
    }
    assert.deepEqual(proxy.rejections, []);
  });

  test('missing, malformed, too long and too slow headers are refused with their reason while a good connection keeps flowing', async (t) => {
    const { echo, proxy } = await acceptingProxy(t, {
      acceptProxyProtocol: { trusted: ['127.0.0.0/8'], timeout: 300, maxLength: 256 },
    });

    const good = dialFrom(proxy.port);
    good.socket.write(Buffer.concat([claim(2, '203.0.113.7', 4242), Buffer.from('hello')]));
    assert.equal((await received(good.socket, 5)).toString(), 'hello');

    const bigTlv = proxyTlvs({ custom: [{ type: 0xe0, value: Buffer.alloc(400, 1) }] });
    const tooLongV2 = encodeProxyHeader({
      version: 2,
      command: 'PROXY',
      protocol: 'TCP4',
      source: { address: '203.0.113.8', port: 1 },
      destination: { address: '198.51.100.1', port: 443 },
      tlvs: bigTlv,
    });
    const cases = [
      { name: 'missing', bytes: Buffer.from('hello there\r\n'), reason: 'bad_signature' },
      {
        name: 'malformed',
        bytes: Buffer.from('PROXY TCP4 999.0.0.1 198.51.100.1 1 443\r\n'),
        reason: 'bad_address',
      },
      { name: 'too long (v2 over maxLength)', bytes: tooLongV2, reason: 'too_long' },
      {
        name: 'too long (v1 without CRLF)',
        bytes: Buffer.from(`PROXY UNKNOWN ${'x'.repeat(120)}`),
        reason: 'too_long',
      },
    ] as const;
    for (const [index, c] of cases.entries()) {
      const client = dialFrom(proxy.port);
      client.socket.write(c.bytes);
      const { error } = await client.done;
      assert.equal(error?.code, 'ECONNRESET', `${c.name}: the client is reset`);
      const rejection = (await proxy.rejected(index + 1))[index];
      assert.equal(rejection?.reason, 'proxy_protocol_error', c.name);
      assert.ok(rejection.error instanceof ProxyProtocolError, `${c.name}: a typed error`);
      assert.equal(rejection.error.reason, c.reason, c.name);
      assert.equal(rejection.peerAddress, '127.0.0.1');
    }

    const slow = dialFrom(proxy.port);
    slow.socket.write('PROXY TCP4 203.0.');
    assert.equal((await slow.done).error?.code, 'ECONNRESET', 'too slow: reset');
    const timedOut = (await proxy.rejected(5))[4];
    assert.equal(timedOut?.reason, 'proxy_protocol_timeout');
    assert.equal(timedOut.error, undefined);

    good.socket.write('still here');
    assert.equal((await received(good.socket, 10)).toString(), 'still here');
    good.socket.end();
    const [summary] = await proxy.closed(1);
    assert.equal(summary?.reason, 'completed');
    assert.equal(summary.clientAddress, '203.0.113.7');
    assert.equal(echo.accepted(), 1, 'nothing was dialled for a refused client');
    const stats = proxy.proxy.stats();
    assert.equal(stats.downstream_cx_rejected, 5);
    assert.equal(stats.rejected_reasons.proxy_protocol_error, 4);
    assert.equal(stats.rejected_reasons.proxy_protocol_timeout, 1);
    assert.equal(stats.downstream_cx_total, 1);
  });

  test('an optional header (required: false) may be absent: the bytes are proxied intact under the peer’s address', async (t) => {
    const { proxy } = await acceptingProxy(t, {
      acceptProxyProtocol: { trusted: ['127.0.0.1'], required: false },
    });
    // 'POST' starts like "PROXY ": the decision waits for the second byte, and nothing is lost.
    for (const payload of ['GET / HTTP/1.0\r\n\r\n', 'POST / HTTP/1.0\r\n\r\n', '\r\n\r\nx']) {
      const client = dialFrom(proxy.port);
      await client.connected;
      await writeByteByByte(client.socket, Buffer.from(payload));
      assert.equal((await received(client.socket, payload.length)).toString(), payload);
      client.socket.end();
      await client.done;
    }
    const withHeader = dialFrom(proxy.port);
    withHeader.socket.end(Buffer.concat([claim(1, '203.0.113.9', 999), Buffer.from('x')]));
    assert.equal((await withHeader.done).data.toString(), 'x');
    const summaries = await proxy.closed(4);
    assert.deepEqual(
      summaries.map((s) => s.clientAddress),
      ['127.0.0.1', '127.0.0.1', '127.0.0.1', '203.0.113.9'],
    );
    assert.deepEqual(proxy.rejections, []);
  });

  test('an optional header (required: false) from a silent peer: at the timeout it is proxied and the server speaks first', async (t) => {
    // A protocol where the server speaks first (SMTP, SSH, MySQL): the client waits in silence.
    const greeter = await socketServer((socket) => {
      socket.write('220 ready\r\n');
      socket.pipe(socket);
    });
    t.after(() => greeter.close());
    const proxy = await recordingProxy({
      upstreams: [{ host: '127.0.0.1', port: greeter.port }],
      acceptProxyProtocol: { trusted: ['127.0.0.1'], required: false, timeout: 100 },
    });
    t.after(() => proxy.close());
    const client = dialFrom(proxy.port);
    await client.connected;
    assert.equal((await received(client.socket, 11)).toString(), '220 ready\r\n');
    client.socket.end('quit');
    assert.equal((await client.done).data.toString(), '220 ready\r\nquit');
    const [summary] = await proxy.closed(1);
    assert.equal(summary?.clientAddress, '127.0.0.1');
    assert.equal(summary.reason, 'completed');
    // Part of a header, then silence: a stalled header, refused as before.
    const stalled = dialFrom(proxy.port);
    await stalled.connected;
    stalled.socket.write('PROX');
    const [rejection] = await proxy.rejected(1);
    assert.equal(rejection?.reason, 'proxy_protocol_timeout');
    await stalled.done;
  });

  for (const version of [1, 2] as const) {
    test(`a v${version} header written one byte at a time, then payload, is understood`, async (t) => {
      const { proxy } = await acceptingProxy(t);
      const header =
        version === 1
          ? claim(1, '192.0.2.33', 3333, '192.0.2.1', 8443)
          : encodeProxyHeader(
              {
                version: 2,
                command: 'PROXY',
                protocol: 'TCP6',
                source: { address: '2001:db8::33', port: 3333 },
                destination: { address: '2001:db8::1', port: 8443 },
                tlvs: proxyTlvs({ authority: 'split.example', uniqueId: Buffer.from('u1') }),
              },
              { crc32c: true },
            );
      const client = dialFrom(proxy.port);
      await client.connected;
      await writeByteByByte(client.socket, header);
      client.socket.end('payload after a split header');
      assert.equal((await client.done).data.toString(), 'payload after a split header');
      const [summary] = await proxy.closed(1);
      assert.equal(summary?.clientAddress, version === 1 ? '192.0.2.33' : '2001:db8::33');
      assert.equal(summary.clientPort, 3333);
      assert.equal(summary.clientFamily, version === 1 ? 'IPv4' : 'IPv6');
      assert.equal(summary.localAddress, version === 1 ? '192.0.2.1' : '2001:db8::1');
      assert.equal(summary.localPort, 8443);
      assert.equal(summary.peerAddress, '127.0.0.1');
      assert.equal(summary.bytesToUpstream, 'payload after a split header'.length);
    });
  }
});

describe('acceptProxyProtocol: the header’s client is the client', () => {
  test('deny, per-client limits, the selector and the sent header all see the header’s address', async (t) => {
    const seen: { address: string; port: number; local: string; localPort: number }[] = [];
    const { echo, proxy } = await acceptingProxy(t, {
      proxyProtocol: 'v1',
      deny: ['203.0.113.0/24'],
      perClient: { maxConnections: 1 },
      selector: (ctx: SelectionContext) => {
        seen.push({
          address: ctx.clientAddress,
          port: ctx.clientPort,
          local: ctx.localAddress,
          localPort: ctx.localPort,
        });
        return ctx.candidates[0];
      },
    });

    const denied = dialFrom(proxy.port);
    denied.socket.write(claim(1, '203.0.113.7', 4242));
    assert.equal((await denied.done).error?.code, 'ECONNRESET');
    const [rejection] = await proxy.rejected(1);
    assert.equal(rejection?.reason, 'denied');
    assert.equal(rejection.clientAddress, '203.0.113.7');
    assert.equal(rejection.clientPort, 4242);
    assert.equal(rejection.peerAddress, '127.0.0.1');

    const admitted = dialFrom(proxy.port);
    admitted.socket.write(Buffer.concat([claim(2, '198.51.100.9', 5000), Buffer.from('hi')]));
    const forwarded = 'PROXY TCP4 198.51.100.9 198.51.100.1 5000 443\r\nhi';
    assert.equal(
      (await received(admitted.socket, forwarded.length)).toString(),
      forwarded,
      'the upstream was told the original client and the address it originally reached',
    );
    assert.deepEqual(seen, [
      { address: '198.51.100.9', port: 5000, local: '198.51.100.1', localPort: 443 },
    ]);

    // Same claimed client, same TCP peer: over the per-client limit. Another claim: admitted.
    const again = dialFrom(proxy.port);
    again.socket.write(claim(1, '198.51.100.9', 5001));
    assert.equal((await again.done).error?.code, 'ECONNRESET');
    assert.equal((await proxy.rejected(2))[1]?.reason, 'client_limit');
    const other = dialFrom(proxy.port);
    other.socket.end(claim(1, '198.51.100.10', 5002));
    assert.equal(
      (await other.done).data.toString(),
      'PROXY TCP4 198.51.100.10 198.51.100.1 5002 443\r\n',
    );
    admitted.socket.end();
    await admitted.done;
    const summaries = await proxy.closed(2);
    assert.deepEqual(summaries.map((s) => s.clientAddress).sort(), [
      '198.51.100.10',
      '198.51.100.9',
    ]);
    assert.equal(echo.accepted(), 2);
  });

  test('a v1 TCP6 client written uncompressed or in upper case is the client as a v2 header or a socket names it', async (t) => {
    const seen: string[] = [];
    const { proxy } = await acceptingProxy(t, {
      proxyProtocol: 'v1',
      selector: (ctx: SelectionContext) => {
        seen.push(`${ctx.clientAddress} ${ctx.localAddress}`);
        return ctx.candidates[0];
      },
    });
    // Java's InetAddress writes the uncompressed form; others upper case.
    const lines = [
      'PROXY TCP6 2001:DB8:0:0:0:0:0:7 0:0:0:0:0:0:0:1 4000 443\r\n',
      'PROXY TCP6 ::FFFF:192.0.2.7 2001:db8:0::1 4001 443\r\n',
    ];
    const forwarded: string[] = [];
    for (const line of lines) {
      const client = dialFrom(proxy.port);
      client.socket.end(line);
      forwarded.push((await client.done).data.toString());
    }
    assert.deepEqual(seen, ['2001:db8::7 ::1', '::ffff:192.0.2.7 2001:db8::1']);
    assert.deepEqual(forwarded, [
      'PROXY TCP6 2001:db8::7 ::1 4000 443\r\n',
      'PROXY TCP6 ::ffff:192.0.2.7 2001:db8::1 4001 443\r\n',
    ]);
    const summaries = await proxy.closed(2);
    assert.deepEqual(summaries.map((s) => s.clientAddress).sort(), [
      '2001:db8::7',
      '::ffff:192.0.2.7',
    ]);
  });

  test('LOCAL (v2) and UNKNOWN (v1) headers name nobody: the TCP peer stays the client', async (t) => {
    const { proxy } = await acceptingProxy(t, {
      proxyProtocol: 'v1',
      deny: ['203.0.113.0/24'],
    });
    const headers = [
      encodeProxyHeader({ version: 2, command: 'LOCAL', protocol: 'UNKNOWN' }),
      encodeProxyHeader({ version: 1, command: 'PROXY', protocol: 'UNKNOWN' }),
    ];
    for (const header of headers) {
      const client = dialFrom(proxy.port);
      await client.connected;
      const port = client.socket.localPort;
      client.socket.end(Buffer.concat([header, Buffer.from('local')]));
      assert.equal(
        (await client.done).data.toString(),
        `PROXY TCP4 127.0.0.1 127.0.0.1 ${port} ${proxy.port}\r\nlocal`,
      );
    }
    const summaries = await proxy.closed(2);
    assert.deepEqual(
      summaries.map((s) => s.clientAddress),
      ['127.0.0.1', '127.0.0.1'],
    );
  });

  test('a burst of clients that reset mid-header are all client_gone, never invalid_socket', async (t) => {
    const { echo, proxy } = await acceptingProxy(t);
    const count = 100;
    const clients = Array.from({ length: count }, () => {
      const client = dialFrom(proxy.port);
      client.socket.once('connect', () => {
        client.socket.write('PROXY TCP4');
        client.socket.resetAndDestroy();
      });
      return client;
    });
    await Promise.all(clients.map((client) => client.done));
    const rejections = await proxy.rejected(count);
    const reasons: Record<string, number> = {};
    for (const { reason } of rejections) reasons[reason] = (reasons[reason] ?? 0) + 1;
    assert.deepEqual(reasons, { client_gone: count });
    assert.equal(echo.accepted(), 0);
  });

  test('a client leaving during its header is client_gone; close() during a header is proxy_closing', async (t) => {
    const { echo, proxy } = await acceptingProxy(t);
    const gone = dialFrom(proxy.port);
    gone.socket.write('PROXY TCP4 ');
    gone.socket.end();
    await gone.done;
    const [first] = await proxy.rejected(1);
    assert.equal(first?.reason, 'client_gone');

    // Accept through handle(), so the test knows when the proxy holds the socket in its preface.
    const server = net.createServer({ allowHalfOpen: true });
    const handed = new Promise<void>((resolve) => {
      server.once('connection', (socket: Socket) => {
        proxy.proxy.handle(socket);
        resolve();
      });
    });
    const port = await listen(server);
    t.after(
      () =>
        new Promise<void>((resolve) =>
          server.close(() => {
            resolve();
          }),
        ),
    );
    const waiting = dialFrom(port);
    waiting.socket.write('PROXY TCP4 ');
    await withTimeout(handed, 5_000, 'the proxy to take the socket');
    const closing = proxy.proxy.close({ drainTimeout: 0 });
    assert.equal((await waiting.done).error?.code, 'ECONNRESET');
    await closing;
    const [, second] = await proxy.rejected(2);
    assert.equal(second?.reason, 'proxy_closing');
    assert.equal(echo.accepted(), 0);
    const stats = proxy.proxy.stats();
    assert.equal(stats.rejected_reasons.client_gone, 1);
    assert.equal(stats.rejected_reasons.proxy_closing, 1);
  });
});
