import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import { UdpProxy } from '../../src/index.js';
import type { UdpSessionSummary } from '../../src/index.js';
import { waitFor, withTimeout } from '../helpers/net.js';

/**
 * A node:http2 CONNECT-UDP proxy that refuses its first `refusals` streams unprocessed
 * (RST_STREAM REFUSED_STREAM, as a proxy at its stream limit or reloading does), then answers 200
 * and echoes the capsules. Its stream count says how many requests reached it.
 */
async function refusingProxy(t: TestContext, refusals: number) {
  const server = http2.createServer({ settings: { enableConnectProtocol: true } });
  let streams = 0;
  server.on('stream', (stream) => {
    stream.on('error', () => undefined);
    streams++;
    if (streams <= refusals) {
      stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      return;
    }
    stream.respond({ ':status': 200, 'capsule-protocol': '?1' });
    stream.on('data', (chunk: Buffer) => stream.write(chunk));
    stream.on('end', () => stream.end());
  });
  server.on('session', (session) => session.on('error', () => undefined));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    server.close();
  });
  return { port: (server.address() as AddressInfo).port, streams: () => streams };
}

/** A UdpProxy through the proxy at `proxyPort`, a client socket, and its session summaries. */
async function udpThrough(t: TestContext, proxyPort: number) {
  const proxy = new UdpProxy({
    upstreams: [
      { host: '127.0.0.1', port: proxyPort, tunnel: { protocol: 'h2', target: '127.0.0.1:53' } },
    ],
    idleTimeout: 5_000,
  });
  const summaries: UdpSessionSummary[] = [];
  proxy.on('sessionClose', (summary) => summaries.push(summary));
  proxy.on('upstreamError', () => undefined);
  const client = dgram.createSocket('udp4');
  t.after(async () => {
    client.close();
    await proxy.close();
  });
  const address = await proxy.bind({ port: 0, address: '127.0.0.1' });
  client.bind(0, '127.0.0.1');
  await once(client, 'listening');
  return { proxy, client, port: address.port, summaries };
}

describe('CONNECT-UDP: a request the proxy refused unprocessed (REFUSED_STREAM)', () => {
  test('is sent again once: the datagram waiting for it is delivered, the session goes on', async (t) => {
    const { port: proxyPort, streams } = await refusingProxy(t, 1);
    const { client, port, summaries } = await udpThrough(t, proxyPort);
    const reply = withTimeout(once(client, 'message'), 5_000, 'the echo');
    client.send('hello', port, '127.0.0.1');
    // The old code failed the session (socket_error) and dropped the datagram: no echo.
    assert.equal(String((await reply)[0]), 'hello');
    assert.equal(streams(), 2);
    assert.deepEqual(summaries, []);
  });

  test('refused again, it is not sent a third time: the session ends (socket_error)', async (t) => {
    const { port: proxyPort, streams } = await refusingProxy(t, 2);
    const { proxy, client, port, summaries } = await udpThrough(t, proxyPort);
    const closed = waitFor(proxy, 'sessionClose');
    client.send('hello', port, '127.0.0.1');
    await closed;
    assert.equal(streams(), 2);
    assert.deepEqual(
      summaries.map((s) => s.reason),
      ['socket_error'],
    );
  });
});
