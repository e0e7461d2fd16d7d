import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { UdpProxy } from '../../src/index.js';
import type { UdpProxyStats } from '../../src/index.js';
import { tool } from '../helpers/tools.js';
import { closeSocket, request, udpEcho, udpSocket } from './helpers.js';

/**
 * Sends one UDP datagram to 127.0.0.1:`port` from source port 0, through a raw socket: no
 * socket API sends from port 0, but anyone with a raw socket can (RFC 768 even allows it, as
 * "no reply wanted"), so it reaches an exposed proxy from the network.
 */
function sendFromPortZero(python: string, port: number, payload: string): void {
  const script = `
import socket, struct, sys
payload = sys.argv[2].encode()
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
s.sendto(struct.pack('!HHHH', 0, int(sys.argv[1]), 8 + len(payload), 0) + payload, ('127.0.0.1', 0))
`;
  execFileSync(python, ['-c', script, String(port), payload], { timeout: 5_000 });
}

/** Polls `stats()` until `done` holds (bounded: 3 s, every 10 ms). */
async function statsUntil(
  proxy: UdpProxy,
  done: (stats: UdpProxyStats) => boolean,
): Promise<UdpProxyStats> {
  const deadline = Date.now() + 3_000;
  let stats = proxy.stats();
  while (!done(stats) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 10));
    stats = proxy.stats();
  }
  return stats;
}

describe('UdpProxy and forged client sources', () => {
  test('a datagram from source port 0 is forwarded, its reply counted as a failed send, with either relay; no crash', async (t) => {
    const python = tool(t, 'python3');
    if (python === undefined) return;
    if (process.getuid?.() !== 0) {
      t.skip('forging a source port needs a raw socket (root or CAP_NET_RAW)');
      return;
    }
    const echo = await udpEcho();
    t.after(() => echo.close());
    const client = await udpSocket();
    t.after(() => closeSocket(client));
    for (const relay of ['handle', 'dgram'] as const) {
      const proxy = new UdpProxy({ upstreams: [{ host: '127.0.0.1', port: echo.port }], relay });
      try {
        const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
        const received = echo.received;
        sendFromPortZero(python, port, 'forged');
        // The echo answers; the reply cannot go to port 0. Before: with relay 'dgram',
        // dgram.send threw ERR_SOCKET_BAD_PORT out of the session socket's 'message' handler.
        let stats = await statsUntil(proxy, (s) => s.downstream_sess_tx_errors === 1);
        assert.equal(echo.received, received + 1, `${relay}: the datagram was forwarded`);
        assert.equal(stats.downstream_sess_tx_errors, 1, `${relay}: the reply is a failed send`);
        assert.equal(stats.downstream_sess_tx_datagrams, 1);
        // A well-behaved client beside it is served.
        assert.equal((await request(client, port, 'real')).toString(), 'real');
        stats = proxy.stats();
        assert.equal(stats.downstream_sess_rx_datagrams, 2);
        assert.equal(stats.upstream_sess_tx_datagrams, 2);
        assert.equal(stats.downstream_sess_tx_datagrams, 2);
        assert.equal(stats.datagrams_dropped, 0);
      } finally {
        await proxy.close();
      }
    }
  });
});
