import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { SUMMARY_KEYS, tcpSummaryMembers, udpSummaryMembers } from '../../src/cli/accessLine.js';
import fc from 'fast-check';
import { LineBuffer } from '../../src/cli/lineBuffer.js';
import { Logger } from '../../src/cli/jsonLogger.js';
import { SessionCloseReason, TcpProxy, UdpProxy } from '../../src/index.js';
import type { TcpConnectionSummary, UdpSessionSummary } from '../../src/index.js';
import { connect, echoServer, readAll, refusedPorts, waitFor } from '../helpers/net.js';
import { fuzzRuns } from '../helpers/fuzz.js';
import { binaryUnit } from '../helpers/binaryUnit.js';
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

  /** What a serializer writes for `summary`, as text. */
  function written<T>(write: (out: LineBuffer, summary: T) => void, summary: T): string {
    let text = '';
    const out = new LineBuffer((bytes) => (text += bytes.toString('utf8')), null);
    write(out, summary);
    out.endLine();
    return text;
  }
  const tcpMembers = (summary: TcpConnectionSummary): string => written(tcpSummaryMembers, summary);
  const udpMembers = (summary: UdpSessionSummary): string => written(udpSummaryMembers, summary);

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
      const members = tcpMembers(summary);
      assert.deepEqual(parsed(members), expected(summary));
    }
    const failed = parsed(tcpMembers(summaries[1]!));
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
    assert.deepEqual(parsed(udpMembers(summary)), expected(summary));
  });

  test('strings that need it are escaped, lists and numbers written as JSON', () => {
    const summary: UdpSessionSummary = {
      ...udpBase,
      upstream: { id: 'db "1"', host: '127.0.0.1', port: 9 },
      serverName: 'a"b\\c',
      alpn: ['h3'],
      quicVersion: 1,
    };
    const line = parsed(udpMembers(summary));
    assert.equal(line.upstream, 'db "1"');
    assert.equal(line.serverName, 'a"b\\c');
    assert.equal(line.quicVersion, 1);
    assert.deepEqual(line.alpn, ['h3']);
  });

  test('the client family is written as the summary holds it: IPv4, IPv6, or unix for a Unix socket client', () => {
    // The client members are written by one function for TCP and UDP; only TCP has 'unix'.
    for (const clientFamily of ['IPv4', 'IPv6', 'unix'] as const) {
      const summary = { ...udpBase, clientFamily } as unknown as UdpSessionSummary;
      assert.equal(parsed(udpMembers(summary)).clientFamily, clientFamily);
    }
  });

  test('any string, escapes, control characters and lone surrogates included, reads back as written', () => {
    fc.assert(
      fc.property(fc.string({ unit: binaryUnit, maxLength: 40 }), (text) => {
        const members = udpMembers({
          ...udpBase,
          reason: text as SessionCloseReason,
          localAddress: text,
          serverName: text,
          upstream: { id: text, host: '127.0.0.1', port: 9 },
        });
        const line = parsed(members);
        assert.equal(line.serverName, text);
        assert.equal(line.upstream, text);
        assert.equal(line.reason, text);
        assert.equal(line.localAddress, text);
        assert.ok(members.includes(`"serverName":${JSON.stringify(text)}`));
      }),
      { numRuns: fuzzRuns(500) },
    );
  });

  test('epoch times are written exactly, whatever their digits', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), (startTime) => {
        assert.equal(parsed(udpMembers({ ...udpBase, startTime })).startTime, startTime);
      }),
      { numRuns: fuzzRuns(1000) },
    );
    for (const startTime of [
      1_764_806_400_000_000, 1_000_000, 1_000_001, 999_999, 1_765_000_000_000, 1_765_000_099_999,
    ])
      assert.equal(parsed(udpMembers({ ...udpBase, startTime })).startTime, startTime);
  });

  test('times that follow each other (later, earlier, the same, more digits) are written exactly', () => {
    // The start time's digits are kept from line to line and updated: any sequence reads back.
    const step = fc.oneof(
      fc.integer({ min: 0, max: 3 }),
      fc.integer({ min: 1, max: 2_000_000 }),
      fc.integer({ min: -2_000_000, max: -1 }),
    );
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2e13 }),
        fc.array(step, { minLength: 1, maxLength: 30 }),
        (first, steps) => {
          let startTime = first;
          for (const delta of steps) {
            startTime = Math.max(0, startTime + delta);
            assert.equal(parsed(udpMembers({ ...udpBase, startTime })).startTime, startTime);
          }
        },
      ),
      { numRuns: fuzzRuns(300) },
    );
    for (const startTime of [999_998, 999_999, 1_000_000, 1_000_009, 999_999, 0, 9, 10, 1.5, -3])
      assert.equal(parsed(udpMembers({ ...udpBase, startTime })).startTime, startTime);
  });

  test('lineWriter writes the pino line shape with bindings, members and msg', () => {
    const lines: string[] = [];
    const logger = new Logger('info', (line) => lines.push(line), { worker: 2 });
    const members = (out: LineBuffer, id: number): void => {
      out.bytes(Buffer.from(',"listener":"web"'));
      out.bytes(Buffer.from(',"id":'));
      out.number(id);
    };
    logger.lineWriter('info', 'connection closed', members)(1);
    logger.lineWriter('debug', 'not written', members)(2);
    assert.equal(lines.length, 1);
    const line = JSON.parse(lines[0]!) as Record<string, unknown>;
    assert.equal(line.level, 30);
    assert.equal(line.pid, process.pid);
    assert.equal(line.worker, 2);
    assert.equal(line.listener, 'web');
    assert.equal(line.id, 1);
    assert.equal(line.msg, 'connection closed');
    assert.ok(Math.abs((line.time as number) - Date.now()) < 60_000, 'the time is now');
    assert.ok(lines[0]!.endsWith('}\n'));
  });

  test('lines written piece by piece and whole lines keep their order in one buffer', async () => {
    const writes: string[] = [];
    const buffer = new LineBuffer((bytes) => writes.push(bytes.toString('utf8')), 0);
    const logger = new Logger('info', buffer);
    const write = logger.lineWriter('info', 'closed', (out, id: number) => {
      out.bytes(Buffer.from(',"id":'));
      out.number(id);
    });
    write(1);
    logger.info('between', { note: 'é€😀' });
    write(2);
    assert.equal(writes.length, 0, 'nothing before the end of the turn');
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(writes.length, 1);
    const lines = writes[0]!.split('\n').filter(Boolean);
    const parsedLines = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
    assert.deepEqual(
      parsedLines.map((line) => line.msg),
      ['closed', 'between', 'closed'],
    );
    assert.equal(parsedLines[1]!.note, 'é€😀');
    assert.deepEqual([parsedLines[0]!.id, parsedLines[2]!.id], [1, 2]);
  });

  test('any number reads back as written; what JSON cannot hold is null', () => {
    const roundTrip = (value: number): unknown => {
      let text = '';
      const out = new LineBuffer((bytes) => (text += bytes.toString('latin1')), null);
      out.number(value);
      out.endLine();
      return JSON.parse(text);
    };
    fc.assert(
      fc.property(fc.double(), (value) => {
        assert.equal(roundTrip(value), Number.isFinite(value) ? (value === 0 ? 0 : value) : null);
      }),
      { numRuns: fuzzRuns(1000) },
    );
    fc.assert(
      fc.property(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), (value) => {
        assert.equal(roundTrip(value), value);
      }),
      { numRuns: fuzzRuns(1000) },
    );
    for (const value of [0, 9, 10, 0x3fffffff, 0x40000000, 1e9, 1e9 + 1, 1_765_000_000_000])
      assert.equal(roundTrip(value), value);
  });

  test('the line buffer writes every line of one event-loop turn in one write, in order', async () => {
    const writes: string[] = [];
    const buffer = new LineBuffer((bytes) => writes.push(bytes.toString('utf8')), 0);
    const line = (text: string): void => {
      buffer.text(text);
      buffer.endLine();
    };
    line('a\n');
    line('b\n');
    assert.equal(writes.length, 0);
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(writes, ['a\nb\n']);
    line('c\n');
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(writes, ['a\nb\n', 'c\n']);
    line(`${'x'.repeat(70_000)}\n`);
    assert.equal(writes.length, 3, 'a large backlog is written at once');
    assert.equal(writes[2]!.length, 70_001);
  });

  test('the line buffer hands out whole lines only, however long a line and wherever it ends', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 150_000 }), { minLength: 1, maxLength: 40 }),
        (lengths) => {
          const writes: Buffer[] = [];
          const buffer = new LineBuffer((bytes) => writes.push(Buffer.from(bytes)), 60_000);
          const expectedText = lengths.map((length, i) => `${i}:${'y'.repeat(length)}\n`);
          for (const [i, length] of lengths.entries()) {
            // A line written in pieces, as the access line is.
            buffer.number(i);
            buffer.text(':');
            buffer.string('y'.repeat(length));
            buffer.bytes(Buffer.from('\n'));
            buffer.endLine();
          }
          buffer.flush();
          const text = Buffer.concat(writes).toString('latin1');
          assert.equal(text, expectedText.join('').replace(/:(y*)\n/g, ':"$1"\n'));
          for (const write of writes) assert.equal(write.at(-1), 0x0a, 'each write ends a line');
        },
      ),
      { numRuns: fuzzRuns(50) },
    );
  });

  test('with a delay, the line buffer writes the lines of several turns in one write', async () => {
    const writes: string[] = [];
    let wrote = (): void => undefined;
    const written = new Promise<void>((resolve) => (wrote = resolve));
    const buffer = new LineBuffer((bytes) => {
      writes.push(bytes.toString('utf8'));
      wrote();
    }, 1_000);
    // A second apart: two loop turns take longer than 50 ms on a loaded machine (it failed so).
    buffer.text('a\n');
    buffer.endLine();
    await new Promise((resolve) => setImmediate(resolve));
    buffer.text('b\n');
    buffer.endLine();
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(writes, [], 'nothing written at the end of a turn');
    // The buffer's timer is unref'd (it never holds a process open): a bounded ref'd guard does.
    let guard: NodeJS.Timeout | undefined;
    await Promise.race([
      written,
      new Promise((_, reject) => {
        guard = setTimeout(() => {
          reject(new Error('no write within 10 s'));
        }, 10_000);
      }),
    ]);
    clearTimeout(guard);
    assert.deepEqual(writes, ['a\nb\n']);
  });
});
