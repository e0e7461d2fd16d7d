import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { SUMMARY_KEYS, tcpSummaryMembers, udpSummaryMembers } from '../../src/cli/accessLine.js';
import fc from 'fast-check';
import { bufferedSink } from '../../src/cli/bufferedSink.js';
import { Logger } from '../../src/cli/jsonLogger.js';
import { SessionCloseReason, TcpProxy, UdpProxy } from '../../src/index.js';
import type { TcpConnectionSummary, UdpSessionSummary } from '../../src/index.js';
import { connect, echoServer, readAll, refusedPorts, waitFor } from '../helpers/net.js';
import { fuzzRuns } from '../helpers/fuzz.js';
import { closeSocket, request, udpEcho, udpSocket } from '../udp/helpers.js';

const udpBase: UdpSessionSummary = {
  id: 7,
  reason: SessionCloseReason.IDLE_TIMEOUT,
  error: undefined,
  clientAddress: '::1',
  clientPort: 1,
  clientFamily: 'IPv6',
  localAddress: '::1',
  localPort: 2,
  upstream: { id: 'db "1"', host: '127.0.0.1', port: 9 },
  datagramsFromClient: 1,
  bytesFromClient: 1,
  datagramsToUpstream: 1,
  bytesToUpstream: 1,
  datagramsFromUpstream: 0,
  bytesFromUpstream: 0,
  datagramsToClient: 0,
  bytesToClient: 0,
  startTime: 0,
  durationMs: 5,
};

describe('access log serialization', () => {
  /** What the access line should hold for a summary: `upstream` as its id, `error` as `err`. */
  function expected(summary: object): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    let err: unknown;
    for (const [key, value] of Object.entries(summary)) {
      if (value === undefined) continue;
      if (key === 'upstream') out.upstream = (value as { id: string }).id;
      else if (key === 'error') {
        const error = value as Error & { code?: string };
        err = { type: error.name, message: error.message, code: error.code };
      } else out[key] = value;
    }
    if (err !== undefined) out.err = err;
    return JSON.parse(JSON.stringify(out)) as Record<string, unknown>;
  }

  function parsed(members: string): Record<string, unknown> {
    return JSON.parse(`{${members.slice(1)}}`) as Record<string, unknown>;
  }

  test('a real TCP summary, relayed and failed, becomes the same members, err last', async (t) => {
    const echo = await echoServer();
    t.after(() => echo.close());
    const [refused] = await refusedPorts(1, [echo.port]);
    const summaries: TcpConnectionSummary[] = [];
    for (const port of [echo.port, refused!]) {
      const proxy = new TcpProxy({
        upstreams: [{ host: '127.0.0.1', port }],
        maxConnectAttempts: 1,
      });
      // Closed even when an await below fails: an open proxy would keep the test file running.
      t.after(() => proxy.close());
      const closed = waitFor<[TcpConnectionSummary]>(proxy, 'connectionClose');
      const address = await proxy.listen({ port: 0, host: '127.0.0.1' });
      if (typeof address === 'string') throw new Error('expected a TCP address');
      const client = await connect(address.port);
      client.end('ping');
      await readAll(client);
      summaries.push((await closed)[0]);
    }
    assert.equal(summaries.length, 2);
    for (const summary of summaries) {
      assert.deepEqual(Object.keys(summary).sort(), [...SUMMARY_KEYS.tcp].sort());
      const members = tcpSummaryMembers(summary);
      assert.deepEqual(parsed(members), expected(summary));
    }
    const failed = parsed(tcpSummaryMembers(summaries[1]!));
    assert.equal(Object.keys(failed).at(-1), 'err');
    assert.equal((failed.err as { code: string }).code, 'ERR_L4_CONNECT_FAILED');
  });

  test('a real UDP summary becomes the same members', async (t) => {
    const echo = await udpEcho();
    t.after(() => echo.close());
    const proxy = new UdpProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      maxResponses: 1,
    });
    const closed = waitFor<[UdpSessionSummary]>(proxy, 'sessionClose');
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    t.after(() => proxy.close());
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    await request(client, port, 'ping');
    const [summary] = await closed;
    const listed: readonly string[] = SUMMARY_KEYS.udp;
    assert.deepEqual(
      Object.keys(summary).filter((key) => !listed.includes(key)),
      [],
      'every field of the summary is written',
    );
    assert.deepEqual(parsed(udpSummaryMembers(summary)), expected(summary));
  });

  test('strings that need it are escaped, lists and numbers written as JSON', () => {
    const summary: UdpSessionSummary = {
      ...udpBase,
      upstream: { id: 'db "1"', host: '127.0.0.1', port: 9 },
      serverName: 'a"b\\c',
      alpn: ['h3'],
      quicVersion: 1,
    };
    const line = parsed(udpSummaryMembers(summary));
    assert.equal(line.upstream, 'db "1"');
    assert.equal(line.serverName, 'a"b\\c');
    assert.equal(line.quicVersion, 1);
    assert.deepEqual(line.alpn, ['h3']);
  });

  test('any string, escapes, control characters and lone surrogates included, reads back as written', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 40 }), (text) => {
        const members = udpSummaryMembers({
          ...udpBase,
          serverName: text,
          upstream: { id: text, host: '127.0.0.1', port: 9 },
        });
        const line = parsed(members);
        assert.equal(line.serverName, text);
        assert.equal(line.upstream, text);
        assert.ok(members.includes(`"serverName":${JSON.stringify(text)}`));
      }),
      { numRuns: fuzzRuns(500) },
    );
  });

  test('epoch times are written exactly, whatever their digits', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), (startTime) => {
        assert.equal(parsed(udpSummaryMembers({ ...udpBase, startTime })).startTime, startTime);
      }),
      { numRuns: fuzzRuns(1000) },
    );
    for (const startTime of [
      1_764_806_400_000_000, 1_000_000, 1_000_001, 999_999, 1_765_000_000_000, 1_765_000_099_999,
    ])
      assert.equal(parsed(udpSummaryMembers({ ...udpBase, startTime })).startTime, startTime);
  });

  test('membersWriter writes the pino line shape with bindings, fields and msg', () => {
    const lines: string[] = [];
    const logger = new Logger('info', (line) => lines.push(line), { worker: 2 });
    logger.membersWriter('info', 'connection closed')(',"listener":"web","id":1');
    logger.membersWriter('debug', 'not written')(',"id":2');
    assert.equal(lines.length, 1);
    const line = JSON.parse(lines[0]!) as Record<string, unknown>;
    assert.equal(line.level, 30);
    assert.equal(line.pid, process.pid);
    assert.equal(line.worker, 2);
    assert.equal(line.listener, 'web');
    assert.equal(line.id, 1);
    assert.equal(line.msg, 'connection closed');
    assert.ok(lines[0]!.endsWith('}\n'));
  });

  test('the buffered sink writes every line of one event-loop turn in one write, in order', async () => {
    const writes: string[] = [];
    const sink = bufferedSink((text) => writes.push(text));
    sink('a\n');
    sink('b\n');
    assert.deepEqual(writes, []);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(writes, ['a\nb\n']);
    sink('c\n');
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(writes, ['a\nb\n', 'c\n']);
    sink('x'.repeat(70_000));
    assert.equal(writes.length, 3, 'a large backlog is written at once');
  });

  test('with a delay, the buffered sink writes the lines of several turns in one write', async () => {
    const writes: string[] = [];
    let wrote = (): void => undefined;
    const written = new Promise<void>((resolve) => (wrote = resolve));
    const sink = bufferedSink((text) => {
      writes.push(text);
      wrote();
    }, 50);
    sink('a\n');
    await new Promise((resolve) => setImmediate(resolve));
    sink('b\n');
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(writes, [], 'nothing written at the end of a turn');
    // The sink's timer is unref'd (it never holds a process open): a bounded ref'd guard does.
    let guard: NodeJS.Timeout | undefined;
    await Promise.race([
      written,
      new Promise((_, reject) => {
        guard = setTimeout(() => {
          reject(new Error('no write within 2 s'));
        }, 2_000);
      }),
    ]);
    clearTimeout(guard);
    assert.deepEqual(writes, ['a\nb\n']);
  });
});
