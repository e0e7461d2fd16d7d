import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { UdpProxy } from '../../src/index.js';
import type { UdpDrop, UdpSessionFilterFactory, UdpSessionSummary } from '../../src/index.js';
import { closeSocket, dig, request, startDnsmasq, udpEcho, udpSocket } from '../udp/helpers.js';
import { tool } from '../helpers/tools.js';
import { withTimeout } from '../helpers/net.js';

/**
 * A UdpProxy on 127.0.0.1 in front of `upstreamPort` with `sessionFilters`, the summaries it
 * emits, and a client socket; both closed after the test.
 */
async function filteredProxy(
  t: TestContext,
  upstreamPort: number,
  sessionFilters: UdpSessionFilterFactory[],
) {
  const proxy = new UdpProxy({
    upstreams: [{ host: '127.0.0.1', port: upstreamPort }],
    sessionFilters,
  });
  const summaries: UdpSessionSummary[] = [];
  proxy.on('sessionClose', (s) => summaries.push(s));
  const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
  t.after(() => proxy.close());
  const client = await udpSocket();
  t.after(() => closeSocket(client));
  return { proxy, port, summaries, client };
}

/** Swaps one DNS label for another of the same length, wherever it appears in a datagram. */
function swapLabel(datagram: Buffer, from: string, to: string): Buffer {
  const needle = Buffer.from([from.length, ...Buffer.from(from)]);
  const at = datagram.indexOf(needle);
  if (at < 0) return datagram;
  const out = Buffer.from(datagram);
  out.write(to, at + 1, 'latin1');
  return out;
}

test('UDP session filters see each datagram both ways: a real dig through dnsmasq, rewritten, dropped, or failing', async (t) => {
  const digPath = tool(t, 'dig');
  if (digPath === undefined) return;
  const dnsmasq = await startDnsmasq(t, 'public.test', '10.1.2.3');
  if (dnsmasq === undefined) return;
  const counted = { client: 0, upstream: 0, closes: 0 };
  // One filter per session (dig uses a new source port per query): it remembers what it rewrote.
  const alias: UdpSessionFilterFactory = () => {
    let aliased = false;
    return {
      onClientDatagram(query) {
        counted.client++;
        if (query.includes('blocked')) return null;
        if (query.includes('boom')) throw new Error('session filter bug');
        const rewritten = swapLabel(query, 'secret', 'public');
        aliased ||= rewritten !== query;
        return rewritten;
      },
      onUpstreamDatagram(answer) {
        counted.upstream++;
        return aliased ? swapLabel(answer, 'public', 'secret') : undefined;
      },
      onClose() {
        counted.closes++;
      },
    };
  };
  const proxy = new UdpProxy({
    upstreams: [{ host: '127.0.0.1', port: dnsmasq.port }],
    sessionFilters: [alias],
  });
  const summaries: UdpSessionSummary[] = [];
  proxy.on('sessionClose', (s) => summaries.push(s));
  const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
  t.after(() => proxy.close());

  // dig checks that the answer's question matches its own: the rewrite must be undone both ways.
  assert.equal(await dig(digPath, port, 'secret.test'), '10.1.2.3');
  assert.equal(await dig(digPath, port, 'public.test'), '10.1.2.3');
  await assert.rejects(dig(digPath, port, 'blocked.test'), /dig failed/);
  await assert.rejects(dig(digPath, port, 'boom.test'), /dig failed/);
  const stats = proxy.stats();
  assert.ok(stats.dropped.filtered >= 1, 'the blocked query was dropped and counted');
  assert.ok(counted.upstream >= 2);
  await withTimeout(
    new Promise<void>((resolve) => {
      const check = (): void => {
        if (summaries.some((s) => s.reason === 'filter_error')) resolve();
        else setTimeout(check, 10);
      };
      check();
    }),
    5_000,
    'the failing session to close',
  );
  const failed = summaries.find((s) => s.reason === 'filter_error');
  assert.equal(failed?.error?.name, 'FilterError');
  assert.equal(proxy.stats().session_close_reasons.filter_error, 1);
  await proxy.close();
  assert.equal(counted.closes, summaries.length, 'every session told its filter it closed');
});

test('a session filter that resizes datagrams: the summary and stats count the bytes sent, not those received', async (t) => {
  const echo = await udpEcho('0123456789');
  t.after(() => echo.close());
  const { proxy, port, summaries, client } = await filteredProxy(t, echo.port, [
    () => ({
      onClientDatagram: (d) => Buffer.concat([d, d, d]),
      onUpstreamDatagram: (d) => d.subarray(0, 2),
    }),
  ]);
  assert.equal((await request(client, port, 'abc')).toString(), '01');
  await proxy.close();
  const summary = summaries[0];
  assert.ok(summary !== undefined);
  assert.equal(summary.bytesFromClient, 3);
  assert.equal(summary.bytesToUpstream, 9);
  assert.equal(summary.bytesFromUpstream, 19);
  assert.equal(summary.bytesToClient, 2, 'the 2 bytes the filter let through');
  assert.equal(proxy.stats().downstream_sess_tx_bytes, 2);
});

test('a session filter that makes a datagram larger than UDP carries: dropped as oversized, not counted as sent', async (t) => {
  const echo = await udpEcho('echo:');
  t.after(() => echo.close());
  const { proxy, port, summaries, client } = await filteredProxy(t, echo.port, [
    () => ({
      onClientDatagram: (d) => (d.toString() === 'big' ? Buffer.alloc(70_000) : d),
      onUpstreamDatagram: (d) => (d.toString().endsWith('grow') ? Buffer.alloc(70_000) : d),
    }),
  ]);
  client.send('big', port, '127.0.0.1');
  client.send('grow', port, '127.0.0.1');
  assert.equal((await request(client, port, 'fine')).toString(), 'echo:fine');
  await proxy.close();
  const stats = proxy.stats();
  assert.equal(stats.dropped.oversized, 2);
  assert.equal(stats.upstream_sess_tx_errors, 0);
  assert.equal(stats.downstream_sess_tx_errors, 0);
  assert.equal(echo.received, 2);
  const summary = summaries[0];
  assert.ok(summary !== undefined);
  assert.equal(summary.bytesToUpstream, 'grow'.length + 'fine'.length);
  assert.equal(summary.bytesToClient, 'echo:fine'.length);
});

test('a session filter factory that throws: the filters made before it still hear onClose', async (t) => {
  const echo = await udpEcho();
  t.after(() => echo.close());
  const closedWith: string[] = [];
  const { proxy, port, client } = await filteredProxy(t, echo.port, [
    () => ({ onClose: (summary) => closedWith.push(summary.reason) }),
    () => {
      throw new Error('factory bug');
    },
  ]);
  // No session before the client's first datagram: listening now misses nothing.
  const ended = new Promise<string>((resolve) => {
    proxy.once('sessionClose', (s) => {
      resolve(s.reason);
    });
  });
  client.send('hello', port, '127.0.0.1');
  assert.equal(await withTimeout(ended, 3_000, 'the session to close'), 'filter_error');
  assert.deepEqual(closedWith, ['filter_error']);
});

test('a session filter that closes its own session or throws: the datagram in hand is not sent, and counted dropped (session_closed)', async (t) => {
  const echo = await udpEcho();
  t.after(() => echo.close());
  for (const ending of ['close', 'throw'] as const) {
    for (const side of ['onClientDatagram', 'onUpstreamDatagram'] as const) {
      const label = `${ending} in ${side}`;
      const proxy = new UdpProxy({
        upstreams: [{ host: '127.0.0.1', port: echo.port }],
        sessionFilters: [
          (session) => ({
            [side]: (datagram: Buffer) => {
              if (ending === 'throw') throw new Error('filter bug');
              session.close();
              return datagram;
            },
          }),
        ],
      });
      const summaries: UdpSessionSummary[] = [];
      proxy.on('sessionClose', (s) => summaries.push(s));
      const drops: UdpDrop[] = [];
      proxy.on('dropped', (d) => drops.push(d));
      const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
      const client = await udpSocket();
      const received = echo.received;
      const replies: Buffer[] = [];
      client.on('message', (reply: Buffer) => replies.push(reply));
      const ended = new Promise((resolve) => proxy.once('sessionClose', resolve));
      client.send('after close', port, '127.0.0.1');
      await withTimeout(ended, 5_000, `the session to end (${label})`);
      // Its socket closed with it: no reply can come after this.
      await proxy.close();
      assert.deepEqual(replies, [], label);
      await closeSocket(client);
      const summary = summaries[0];
      assert.equal(summary?.reason, ending === 'close' ? 'closed_by_user' : 'filter_error', label);
      const from = side === 'onClientDatagram' ? 'client' : 'upstream';
      assert.deepEqual(
        drops.map((d) => [d.reason, d.from]),
        [['session_closed', from]],
        label,
      );
      const stats = proxy.stats();
      if (side === 'onClientDatagram') {
        assert.equal(echo.received, received, 'the upstream got nothing');
        assert.equal(summary.bytesToUpstream, 0);
      }
      // Every datagram from the client is sent or counted dropped; every reply alike.
      assert.equal(
        stats.downstream_sess_rx_datagrams,
        stats.upstream_sess_tx_datagrams + (from === 'client' ? stats.datagrams_dropped : 0),
        label,
      );
      assert.equal(
        stats.upstream_sess_rx_datagrams,
        stats.downstream_sess_tx_datagrams + (from === 'upstream' ? stats.datagrams_dropped : 0),
        label,
      );
      assert.equal(summary.bytesToClient, 0, label);
      assert.equal(stats.downstream_sess_tx_bytes, 0, label);
    }
  }
});
