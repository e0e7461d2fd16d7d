import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  consistentHash,
  failover,
  leastConnections,
  random,
  roundRobin,
  withCandidates,
} from '../../src/index.js';
import type { UpstreamSelector } from '../../src/index.js';
import { connect, echoServer, readAll } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';

const shipped: Record<string, () => UpstreamSelector> = {
  roundRobin: () => roundRobin(),
  random: () => random(),
  leastConnections: () => leastConnections(),
  consistentHash: () => consistentHash(),
  'consistentHash ring': () => consistentHash({ algorithm: 'ring' }),
  failover: () => failover(),
};

/** The README's zone sample, written both ways: with withCandidates, and with the spread it once had. */
const wrappers: Record<string, (inner: UpstreamSelector) => UpstreamSelector> = {
  withCandidates: (inner) => (ctx) => {
    const local = ctx.candidates.filter((c) => c.metadata?.zone === 'a');
    return inner(local.length > 0 ? withCandidates(ctx, local) : ctx);
  },
  spread: (inner) => (ctx) => {
    const local = ctx.candidates.filter((c) => c.metadata?.zone === 'a');
    return inner(local.length > 0 ? { ...ctx, candidates: local, signal: ctx.signal } : ctx);
  },
};

test('the README selector sample works with every shipped selector, also written with a context spread', async (t) => {
  const a = await echoServer();
  const b = await echoServer();
  t.after(() => Promise.all([a.close(), b.close()]));
  for (const [selectorName, make] of Object.entries(shipped)) {
    for (const [wrapperName, wrap] of Object.entries(wrappers)) {
      const { proxy, port, closes } = await startProxy({
        upstreams: [
          { host: '127.0.0.1', port: a.port, metadata: { zone: 'a' } },
          { host: '127.0.0.1', port: b.port, metadata: { zone: 'b' } },
        ],
        selector: wrap(make()),
      });
      const client = await connect(port);
      const reply = readAll(client);
      client.end('ping');
      assert.equal((await reply).toString(), 'ping', `${selectorName} ${wrapperName}`);
      const [summary] = await closes(1);
      assert.equal(summary?.reason, 'completed', `${selectorName} ${wrapperName}`);
      assert.equal(summary.upstream?.port, a.port, 'the zone-a upstream');
      await proxy.close();
    }
  }
});
