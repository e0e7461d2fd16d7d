import assert from 'node:assert/strict';
import type { Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { connect, socketServer, withTimeout } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';
import { until } from '../helpers/until.js';

/*
 * shutdown(2) fails (ENOTCONN) on a connection the peer reset. A relay handle that is not
 * reading (paused: the other side's writes are full) does not see the reset, and when the other
 * side ends, the proxy's FIN is a shutdown that fails. Taken as done, as net.Socket takes it,
 * the connection stayed half-open until a timer ended it (an hour by default), its summary
 * `idle_timeout` for a client that reset. The failure is the reset: the relay must see it.
 */

describe('a failed shutdown(2)', () => {
  test('relay handle: a paused client that resets, then the upstream ends: downstream_reset at once', async () => {
    const accepted: Socket[] = [];
    // The upstream never reads: the client's bytes fill the buffers and the proxy pauses it.
    const upstream = await socketServer((socket) => {
      socket.pause();
      accepted.push(socket);
    });
    const { proxy, port, closes } = await startProxy({
      upstreams: [{ host: '127.0.0.1', port: upstream.port }],
      relay: 'handle',
      idleTimeout: 60_000,
    });
    try {
      const client = await connect(port);
      await until(() => accepted.length === 1, 'the upstream connection');
      const chunk = Buffer.alloc(1 << 20);
      // Written until the proxy stops reading the client (bounded: 256 MiB).
      for (
        let i = 0;
        i < 256 && proxy.stats().downstream_flow_control_paused_reading_total === 0;
        i++
      ) {
        if (!client.write(chunk))
          await Promise.race([sleep(20), new Promise((r) => client.once('drain', r))]);
      }
      assert.equal(proxy.stats().downstream_flow_control_paused_reading_total, 1);
      client.resetAndDestroy();
      await new Promise<void>((resolve) => {
        client.once('close', () => {
          resolve();
        });
      });
      (accepted[0] as Socket).end();
      const [summary] = await withTimeout(closes(1), 10_000, 'the connection to close');
      assert.equal(summary?.reason, 'downstream_reset');
    } finally {
      await proxy.close({ drainTimeout: 0 });
      await upstream.close();
    }
  });
});
