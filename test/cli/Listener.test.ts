import assert from 'node:assert/strict';
import type { Server } from 'node:net';
import { constants } from 'node:os';
import { test } from 'node:test';
import { validateConfig } from '../../src/cli/config.js';
import { Listener } from '../../src/cli/Listener.js';
import type { TcpProxy } from '../../src/index.js';
import { failAccept } from '../helpers/acceptError.js';
import { closeAfter, echoServer } from '../helpers/net.js';
import { eventually, exchange } from '../reliability/load.js';

test('an accept error on a command TCP listener is counted and reported as the library counts it, and the listener keeps serving', async (t) => {
  const upstream = await echoServer();
  closeAfter(t, upstream.server);
  const config = validateConfig(
    {
      listeners: [
        {
          protocol: 'tcp',
          listen: '127.0.0.1:0',
          upstreams: [{ host: '127.0.0.1', port: upstream.port }],
        },
      ],
    },
    'test',
  );
  const prepared = config.listeners[0]!;
  const listener = new Listener(prepared, () => undefined);
  const proxy = prepared.proxy as TcpProxy;
  const errors: string[] = [];
  proxy.on('error', (error) => errors.push((error as { code?: string }).code ?? error.name));
  const address = await listener.start();
  t.after(() => listener.drain(0));
  const server = (listener as unknown as { server: Server }).server;
  // Before: dropped unseen, where TcpProxy.listen() counts EMFILE in resource_exhausted (and
  // reports it once a second) and reports any other accept error.
  for (let i = 0; i < 3; i++) failAccept(server, constants.errno.EMFILE);
  failAccept(server, constants.errno.ENOBUFS);
  assert.equal(proxy.stats().resource_exhausted, 3);
  assert.deepEqual(errors, ['ERR_L4_RESOURCE_EXHAUSTED', 'ENOBUFS']);
  // Served again once the backoff (50 ms, doubled per shortage: 200 ms here) is over.
  const port = Number(address.split(':').pop());
  await eventually(
    async () => (await exchange(port, Buffer.from('again'))).intact,
    'a clean exchange after the backoff',
    5_000,
  );
});

test('reloads that start a new TCP generation and change the upstreams: the totals carried from retired generations keep only upstreams still served', async (t) => {
  const upstream = await echoServer();
  closeAfter(t, upstream.server);
  const prepare = (generation: number) =>
    validateConfig(
      {
        listeners: [
          {
            name: 'web',
            protocol: 'tcp',
            listen: '127.0.0.1:0',
            // A new option value: a new proxy generation; a new id: the old upstream leaves.
            idleTimeout: 60_000 + generation,
            upstreams: [{ host: '127.0.0.1', port: upstream.port, id: `u${generation}` }],
          },
        ],
      },
      'test',
    ).listeners[0]!;
  const listener = new Listener(prepare(0), () => undefined);
  await listener.start();
  t.after(() => listener.drain(0));
  const reloads = 200;
  for (let generation = 1; generation <= reloads; generation++) {
    const outcome = listener.reload(prepare(generation));
    assert.equal(outcome.replaced, true);
  }
  const stats = listener.stats().stats as { upstreams: Record<string, unknown> };
  assert.deepEqual(Object.keys(stats.upstreams), [`u${reloads}`]);
  // Each retired generation's totals are carried; its upstreams' own counters only while they
  // are still in the set (the library itself forgets a removed upstream's counters).
  const carried = (listener as unknown as { carried?: { upstreams: Record<string, unknown> } })
    .carried;
  assert.ok(carried !== undefined);
  assert.ok(
    Object.keys(carried.upstreams).length <= 1,
    `${Object.keys(carried.upstreams).length} upstreams carried`,
  );
});
