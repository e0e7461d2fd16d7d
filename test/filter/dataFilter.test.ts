import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TcpProxy } from '../../src/index.js';
import type { DataFilterFactory, TcpConnectionSummary } from '../../src/index.js';
import {
  closed,
  connect,
  dial,
  echoServer,
  readAll,
  socketServer,
  waitFor,
} from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';
import { startNginx } from '../helpers/nginx.js';
import { freePort } from '../helpers/peerProcess.js';
import { tool } from '../helpers/tools.js';

const RELAYS = ['handle', 'onread', 'stream'] as const;

/** Rewrites the server's banner line, holding bytes back until the first line is complete. */
const rewriteBanner: DataFilterFactory = () => {
  let pending: Buffer | undefined = Buffer.alloc(0);
  return {
    onUpstreamData(chunk) {
      if (pending === undefined) return undefined;
      pending = Buffer.concat([pending, chunk]);
      const end = pending.indexOf('\n');
      if (end < 0) return pending.length > 4096 ? { end: true } : null;
      const line = pending.toString('latin1', 0, end).replace('upstream.example', 'proxy.example');
      const out = Buffer.concat([Buffer.from(line, 'latin1'), pending.subarray(end)]);
      pending = undefined;
      return out;
    },
    onUpstreamEnd() {
      const held = pending;
      pending = undefined;
      return held;
    },
  };
};

for (const relay of RELAYS) {
  test(`a filter rewrites the greeting of a real nginx server (relay ${relay})`, async (t) => {
    if (tool(t, 'nginx') === undefined) return;
    const port = await freePort();
    const nginx = await startNginx(
      `server { listen 127.0.0.1:${port}; return "220 upstream.example ESMTP ready\\r\\n"; }`,
    );
    t.after(() => nginx.stop());
    const proxy = await startProxy({
      upstreams: [{ host: '127.0.0.1', port }],
      relay,
      filters: [rewriteBanner],
    });
    t.after(() => proxy.proxy.close({ drainTimeout: 0 }));
    const client = await connect(proxy.port);
    const greeting = await readAll(client);
    assert.equal(greeting.toString(), '220 proxy.example ESMTP ready\r\n');
    client.end();
    const summary = (await proxy.closes(1))[0];
    assert.ok(summary);
    assert.equal(summary.reason, 'completed');
    assert.equal(summary.bytesFromUpstream, '220 upstream.example ESMTP ready\r\n'.length);
    assert.equal(summary.bytesToClient, greeting.length);
  });

  test(`a filter counts client bytes and ends the direction at a limit (relay ${relay})`, async (t) => {
    const echo = await echoServer();
    t.after(() => echo.close());
    const LIMIT = 40;
    const counts: { seen: number; closedWith?: TcpConnectionSummary }[] = [];
    const limit: DataFilterFactory = () => {
      const state: { seen: number; closedWith?: TcpConnectionSummary } = { seen: 0 };
      counts.push(state);
      return {
        onClientData(chunk) {
          const room = LIMIT - state.seen;
          state.seen += chunk.length;
          return chunk.length <= room ? undefined : { end: true, data: chunk.subarray(0, room) };
        },
        onClose(summary) {
          state.closedWith = summary;
        },
      };
    };
    const { proxy, port, closes } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      relay,
      filters: [limit],
    });
    t.after(() => proxy.close({ drainTimeout: 0 }));
    const client = await connect(port);
    const echoed = readAll(client);
    for (let i = 0; i < 10; i++) {
      client.write(Buffer.alloc(10, 0x61 + i));
      await new Promise((resolve) => setImmediate(resolve));
    }
    // The upstream got 40 bytes and a FIN, echoed them and closed; the client's FIN ends it.
    const got = await echoed;
    assert.equal(got.toString(), 'aaaaaaaaaabbbbbbbbbbccccccccccdddddddddd');
    client.end();
    const summary = (await closes(1))[0];
    assert.ok(summary);
    assert.equal(summary.reason, 'completed');
    assert.equal(summary.bytesToUpstream, LIMIT);
    assert.ok(summary.bytesFromClient >= LIMIT);
    assert.equal(counts[0]?.closedWith?.id, summary.id, 'onClose saw the summary');
  });

  test(`a throwing filter closes its connection with filter_error and nothing else (relay ${relay})`, async (t) => {
    const echo = await echoServer();
    t.after(() => echo.close());
    const fragile: DataFilterFactory = () => ({
      onClientData(chunk) {
        if (chunk.includes('boom')) throw new Error('filter bug');
        return undefined;
      },
    });
    const { proxy, port, closes } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      relay,
      filters: [fragile],
    });
    t.after(() => proxy.close({ drainTimeout: 0 }));
    const healthy = await connect(port);
    const healthyEcho = readAll(healthy);
    healthy.write('hello ');
    const victim = await connect(port);
    victim.write('boom');
    const error = await closed(victim);
    assert.equal((error as NodeJS.ErrnoException | undefined)?.code, 'ECONNRESET');
    healthy.end('world');
    assert.equal((await healthyEcho).toString(), 'hello world');
    const summaries = await closes(2);
    const reasons = summaries.map((s) => s.reason).sort();
    assert.deepEqual(reasons, ['completed', 'filter_error']);
    const failed = summaries.find((s) => s.reason === 'filter_error');
    assert.equal(failed?.error?.name, 'FilterError');
    assert.match(failed.error.message, /filter bug/);
    assert.equal(proxy.stats().close_reasons.filter_error, 1);
  });

  test(`a filter that closes its connection from a callback: what it returns is neither sent nor counted (relay ${relay})`, async (t) => {
    let upstreamGot = 0;
    const server = await socketServer((socket) => {
      socket.on('data', (chunk: Buffer) => (upstreamGot += chunk.length));
      socket.write('greeting');
    });
    t.after(() => server.close());
    for (const side of ['onClientData', 'onUpstreamData', 'onClientEnd'] as const) {
      upstreamGot = 0;
      const closing: DataFilterFactory = (connection) => ({
        [side]: (chunk?: Buffer) => {
          connection.close();
          return chunk ?? Buffer.from('held');
        },
      });
      const { proxy, port, closes } = await startProxy({
        upstreams: [{ host: '127.0.0.1', port: server.port }],
        relay,
        filters: [closing],
      });
      const client = await connect(port);
      let clientGot = 0;
      client.on('data', (chunk: Buffer) => (clientGot += chunk.length));
      if (side !== 'onUpstreamData') {
        await waitFor(proxy, 'upstreamConnect');
        if (side === 'onClientData') client.write('hello');
        else client.end();
      }
      await closed(client);
      const [summary] = await closes(1);
      assert.equal(summary?.reason, 'closed_by_user', side);
      const sent = side === 'onUpstreamData' ? summary.bytesToClient : summary.bytesToUpstream;
      assert.equal(sent, 0, `${side}: nothing counted as sent`);
      if (side === 'onUpstreamData') assert.equal(clientGot, 0);
      if (side === 'onClientData')
        assert.equal(summary.bytesFromClient, 5, 'received all the same');
      await proxy.close({ drainTimeout: 0 });
      assert.equal(upstreamGot, 0, `${side}: the upstream got nothing`);
    }
  });

  test(`an end callback returning a non-Buffer closes with filter_error, never reaches the socket (relay ${relay})`, async (t) => {
    const echo = await echoServer();
    t.after(() => echo.close());
    const { proxy, port, closes } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: echo.port }],
      relay,
      filters: [() => ({ onClientEnd: () => 'held text' as unknown as Buffer })],
    });
    t.after(() => proxy.close({ drainTimeout: 0 }));
    const client = await connect(port);
    await waitFor(proxy, 'upstreamConnect');
    client.end('hello');
    await closed(client);
    const [summary] = await closes(1);
    assert.equal(summary?.reason, 'filter_error');
    assert.match(summary.error?.message ?? '', /end callback returned/);
  });
}

test('filters see the preread bytes, lifecycle callbacks run in order, and half-close flushes held bytes', async (t) => {
  const echo = await echoServer();
  t.after(() => echo.close());
  const events: string[] = [];
  const upperCaseHeld: DataFilterFactory = (connection) => {
    events.push(`open ${connection.id}`);
    const held: Buffer[] = [];
    return {
      onUpstreamConnect: (upstream) => events.push(`upstream ${upstream.port === echo.port}`),
      onClientData(chunk) {
        held.push(chunk);
        return null;
      },
      onClientEnd() {
        events.push('client end');
        return Buffer.from(Buffer.concat(held).toString().toUpperCase());
      },
      onUpstreamEnd() {
        events.push('upstream end');
        return undefined;
      },
      onClose: (summary) => events.push(`close ${summary.reason}`),
    };
  };
  const { proxy, port, closes } = await startProxy({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    preread: {
      inspectors: { first: (bytes) => ({ action: 'match', metadata: { n: bytes.length } }) },
    },
    filters: [upperCaseHeld],
  });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const client = dial(port);
  const echoed = readAll(client);
  client.write('held ');
  await waitFor(proxy, 'upstreamConnect');
  client.end('until the end');
  assert.equal((await echoed).toString(), 'HELD UNTIL THE END');
  await closes(1);
  assert.deepEqual(events, [
    'open 1',
    'upstream true',
    'client end',
    'upstream end',
    'close completed',
  ]);
});

test('a filter ending a direction still hands its last bytes and the end to the filters after it', async (t) => {
  const echo = await echoServer();
  t.after(() => echo.close());
  const ends: string[] = [];
  const firstThree: DataFilterFactory = () => ({
    onClientData: (chunk) => ({ end: true, data: chunk.subarray(0, 3) }),
  });
  const upperCase: DataFilterFactory = () => ({
    onClientData: (chunk) => Buffer.from(chunk.toString().toUpperCase()),
  });
  const holdAll: DataFilterFactory = () => {
    const held: Buffer[] = [];
    return {
      onClientData(chunk) {
        held.push(chunk);
        return null;
      },
      onClientEnd() {
        ends.push('held released');
        return Buffer.concat(held);
      },
    };
  };
  const { proxy, port, closes } = await startProxy({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    filters: [firstThree, upperCase, holdAll],
  });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const client = dial(port);
  const echoed = readAll(client);
  client.write('abcdef');
  assert.equal((await echoed).toString(), 'ABC', 'upper-cased, released at the end, then FIN');
  client.end();
  const [summary] = await closes(1);
  assert.equal(summary?.reason, 'completed');
  assert.deepEqual(ends, ['held released']);
});

test('a factory that throws: the filters made before it still hear onClose', async (t) => {
  const echo = await echoServer();
  t.after(() => echo.close());
  const closedWith: string[] = [];
  const { proxy, port, closes } = await startProxy({
    upstreams: [{ host: '127.0.0.1', port: echo.port }],
    filters: [
      () => ({ onClose: (summary) => closedWith.push(summary.reason) }),
      () => {
        throw new Error('factory bug');
      },
    ],
  });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const client = dial(port);
  client.write('hello');
  await closed(client);
  const [summary] = await closes(1);
  assert.equal(summary?.reason, 'filter_error');
  assert.deepEqual(closedWith, ['filter_error']);
});

test('filters option is validated', () => {
  assert.throws(
    () => new TcpProxy({ filters: [1 as unknown as DataFilterFactory] }),
    /filters\[0\]/,
  );
  assert.throws(() => new TcpProxy({ filters: {} as unknown as DataFilterFactory[] }), /"filters"/);
});
