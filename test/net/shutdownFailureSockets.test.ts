import assert from 'node:assert/strict';
import net from 'node:net';
import type { Socket } from 'node:net';
import tls from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import type { TcpProxyOptions } from '../../src/index.js';
import { connect, socketServer, withTimeout } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';
import { sharedPki } from '../helpers/tlsCa.js';
import { until } from '../helpers/until.js';

const getPki = sharedPki(async (ca) => ({ localhost: await ca.issue('localhost', ['localhost']) }));

/*
 * The failed shutdown(2) of test/net/shutdownFailure.test.ts, on `net.Socket` sides: a side the
 * proxy stopped reading resets unread, the other side ends, and the FIN passed on fails ENOTCONN.
 * Node's net.Socket drops that status (its afterShutdown ignores it): the connection stayed
 * half-open until idleTimeout, its summary `idle_timeout` for a peer that reset.
 */

const CHUNK = Buffer.alloc(1 << 20);

/** Writes until `paused()` (bounded: 256 MiB); the reader never reads. */
async function fill(writer: Socket, paused: () => boolean): Promise<void> {
  for (let i = 0; i < 256 && !paused(); i++) {
    if (!writer.write(CHUNK))
      await Promise.race([sleep(20), new Promise((r) => writer.once('drain', r))]);
  }
  assert.ok(paused(), 'the proxy stopped reading the writer');
}

const SIDES: readonly [string, Partial<TcpProxyOptions>][] = [
  ["relay 'onread'", { relay: 'onread' }],
  ["relay 'stream'", { relay: 'stream' }],
  ["relay 'handle' with an admit hook (a net.Socket client)", { admit: () => true }],
];

/** A filter that passes bytes on and ends their direction at a 0x01 byte (the fill is zeros). */
const endAtMarker = (chunk: Buffer) => (chunk.includes(1) ? ({ end: true } as const) : chunk);
const MARKER = Buffer.from([1]);

/**
 * The proxy stops reading `paused` (its writes fill the other side, which does not read), then
 * `paused` resets; the other side then ends its direction, by a FIN or (`byFilter`) by a byte a
 * data filter ends the direction at. The connection must close at once as that side's reset.
 */
async function resetThenEnd(
  paused: 'client' | 'upstream',
  options: Partial<TcpProxyOptions>,
  byFilter: boolean,
): Promise<void> {
  const accepted: Socket[] = [];
  const upstream = await socketServer((socket) => {
    if (paused === 'client') socket.pause();
    accepted.push(socket);
  });
  const { proxy, port, closes } = await startProxy({
    upstreams: [{ host: '127.0.0.1', port: upstream.port }],
    idleTimeout: 60_000,
    ...options,
    ...(byFilter && {
      filters: [() => ({ onClientData: endAtMarker, onUpstreamData: endAtMarker })],
    }),
  });
  try {
    const client = await connect(port);
    if (paused === 'upstream') client.pause();
    await until(() => accepted.length === 1, 'the upstream connection');
    const server = accepted[0] as Socket;
    const [writer, other] = paused === 'client' ? [client, server] : [server, client];
    const stats = proxy.stats();
    await fill(writer, () =>
      paused === 'client'
        ? proxy.stats().downstream_flow_control_paused_reading_total > 0
        : proxy.stats().upstream_flow_control_paused_reading_total >
          stats.upstream_flow_control_paused_reading_total,
    );
    writer.resetAndDestroy();
    await new Promise((resolve) => writer.once('close', resolve));
    if (byFilter) other.write(MARKER);
    else other.end();
    const [summary] = await withTimeout(closes(1), 10_000, 'the connection to close');
    assert.equal(summary?.reason, paused === 'client' ? 'downstream_reset' : 'upstream_reset');
    client.destroy();
  } finally {
    await proxy.close({ drainTimeout: 0 });
    await upstream.close();
  }
}

describe('a failed shutdown(2) on a net.Socket side', () => {
  // The relay handle reports its own failed shutdown: only a net.Socket upstream is probed.
  for (const paused of ['client', 'upstream'] as const)
    for (const [name, options] of paused === 'client' ? SIDES : SIDES.slice(0, 2)) {
      const end = paused === 'client' ? 'the upstream ends' : 'the client ends';
      const reason = paused === 'client' ? 'downstream_reset' : 'upstream_reset';
      test(`${name}: a paused ${paused} that resets, then ${end}: ${reason} at once`, async () => {
        await resetThenEnd(paused, options, false);
      });
    }

  // The FIN a data filter sends when it ends a direction went out unprobed.
  for (const paused of ['client', 'upstream'] as const)
    for (const [name, options] of SIDES.slice(0, 2)) {
      const reason = paused === 'client' ? 'downstream_reset' : 'upstream_reset';
      test(`${name}, a data filter: a paused ${paused} that resets, then the filter ends the direction to it: ${reason} at once`, async () => {
        await resetThenEnd(paused, options, true);
      });
    }
});

describe('a failed shutdown(2) under TLS', () => {
  for (const relay of ['handle', 'onread'] as const) {
    test(`terminateTls, relay '${relay}': a paused TLS client whose TCP resets, then the upstream ends: downstream_reset at once`, async (t) => {
      const p = await getPki(t);
      if (p === undefined) return;
      const accepted: Socket[] = [];
      const upstream = await socketServer((socket) => {
        socket.pause();
        accepted.push(socket);
      });
      const { proxy, port, closes } = await startProxy({
        upstreams: [{ host: '127.0.0.1', port: upstream.port }],
        idleTimeout: 60_000,
        relay,
        terminateTls: { cert: p.localhost.cert, key: p.localhost.key },
      });
      try {
        const raw = net.connect({ port, host: '127.0.0.1' });
        raw.on('error', () => undefined);
        const client = tls.connect({ socket: raw, ca: p.ca.cert, servername: 'localhost' });
        client.on('error', () => undefined);
        await new Promise((resolve) => client.once('secureConnect', resolve));
        await until(() => accepted.length === 1, 'the upstream connection');
        await fill(client, () => proxy.stats().downstream_flow_control_paused_reading_total > 0);
        raw.resetAndDestroy();
        await new Promise((resolve) => raw.once('close', resolve));
        (accepted[0] as Socket).end();
        const [summary] = await withTimeout(closes(1), 10_000, 'the connection to close');
        assert.equal(summary?.reason, 'downstream_reset');
        client.destroy();
      } finally {
        await proxy.close({ drainTimeout: 0 });
        await upstream.close();
      }
    });
  }

  test('tls upstream: a paused TLS upstream whose TCP resets, then the client ends: upstream_reset at once', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const raws: Socket[] = [];
    const servers: Socket[] = [];
    const secure = tls.createServer({ cert: p.localhost.cert, key: p.localhost.key }, (socket) => {
      socket.on('error', () => undefined);
      servers.push(socket);
    });
    const upstream = net.createServer((raw) => {
      raw.on('error', () => undefined);
      raws.push(raw);
      secure.emit('connection', raw);
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    const upstreamPort = (upstream.address() as net.AddressInfo).port;
    const { proxy, port, closes } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: upstreamPort }],
      idleTimeout: 60_000,
      tls: { ca: p.ca.cert, servername: 'localhost' },
    });
    try {
      const client = await connect(port);
      client.pause();
      await until(() => servers.length === 1, 'the upstream TLS connection');
      const server = servers[0] as tls.TLSSocket;
      await fill(server, () => proxy.stats().upstream_flow_control_paused_reading_total > 0);
      const raw = raws[0] as Socket;
      raw.resetAndDestroy();
      await new Promise((resolve) => raw.once('close', resolve));
      client.end();
      const [summary] = await withTimeout(closes(1), 10_000, 'the connection to close');
      assert.equal(summary?.reason, 'upstream_reset');
      client.destroy();
    } finally {
      await proxy.close({ drainTimeout: 0 });
      for (const socket of raws) socket.destroy();
      await new Promise((resolve) => upstream.close(resolve));
    }
  });
});
