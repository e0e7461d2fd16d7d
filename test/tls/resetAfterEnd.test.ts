/**
 * docs/tls.md, "An upstream that resets after the client's end": when the proxy originates TLS,
 * a client's FIN goes on as close_notify (then FIN), and an upstream that closes its socket with
 * that alert unread makes its kernel send a reset in place of a FIN. PostgreSQL does so after a
 * Terminate, redis after a QUIT. The proxy reports `upstream_reset` (ECONNRESET, or ENOTCONN when
 * the reset came before its shutdown) though every byte was relayed both ways, as HAProxy logs
 * `SD` for it: a reset says the peer closed with bytes unread, and which bytes the proxy cannot
 * tell. redis-server is the peer: unlike PostgreSQL it sends no close_notify before its reset, so
 * the proxy sees the reset and nothing else, every time.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import type { TcpProxyOptions } from '../../src/index.js';
import { connect, lostAnswers, withTimeout } from '../helpers/net.js';
import { startNginxHttp } from '../helpers/nginxHttp.js';
import { freePort } from '../helpers/peerProcess.js';
import type { PeerProcess } from '../helpers/peerProcess.js';
import { startProxy } from '../helpers/proxy.js';
import { issueServerAndClient, sharedPki } from '../helpers/tlsCa.js';
import { tlsRedisPerFile } from '../helpers/tlsRedis.js';
import { tool } from '../helpers/tools.js';
import { until } from '../helpers/until.js';

const getPki = sharedPki(issueServerAndClient);

/**
 * `DEBUG SLEEP 1` holds redis (its whole event loop, so it reads nothing) for 1 s after it read
 * the commands, while the proxy passes the client's end on: QUIT then closes a socket whose
 * close_notify is queued unread. Without it, a redis quicker than the proxy could close first
 * (a FIN), and the alert would meet a closed socket after the proxy had seen that FIN.
 */
const COMMANDS = 'PING\r\nDEBUG SLEEP 1\r\nQUIT\r\n';
const REPLIES = '+PONG\r\n+OK\r\n+OK\r\n';

const tlsRedis = tlsRedisPerFile(getPki, ['--enable-debug-command', 'yes']);

describe("TLS origination: an upstream that resets after the client's end", () => {
  for (const relay of ['handle', 'stream'] as const satisfies TcpProxyOptions['relay'][]) {
    test(`redis QUIT with the close_notify unread: upstream_reset, every byte relayed (relay: '${relay}')`, async (t) => {
      const peer = await tlsRedis(t);
      if (peer === undefined) return;
      const { proxy, port, closes } = await startProxy({
        upstreams: [{ host: '127.0.0.1', port: peer.port }],
        tls: { ca: peer.ca },
        relay,
      });
      t.after(() => proxy.close({ drainTimeout: 0 }));
      const client = await connect(port);
      let received = '';
      client.on('data', (chunk: Buffer) => (received += chunk.toString()));
      const closed = new Promise<Error | undefined>((resolve) => {
        let error: Error | undefined;
        client.on('error', (err) => (error = err));
        client.once('close', () => {
          resolve(error);
        });
      });
      // Commands and FIN together, as psql sends Terminate and its FIN.
      client.end(COMMANDS);
      const [summary] = await closes(1, 15_000);
      assert.ok(summary !== undefined);
      const code = (summary.error as { code?: string } | undefined)?.code;
      // Reset, as redis closes with our close_notify unread; or, when redis read the close_notify
      // in the same read as QUIT (the client sends both at once: a loaded machine's timing), its
      // close is clean and 'completed' is the truth (once in a CI run of session 27).
      const reason = summary.reason;
      assert.ok(
        reason === 'upstream_reset' || reason === 'completed',
        `${reason}: ${String(code)}`,
      );
      if (reason === 'upstream_reset')
        assert.ok(code === 'ECONNRESET' || code === 'ENOTCONN', String(code));
      // Every byte both ways was relayed before the reset: the reset is not a loss of the proxy's.
      assert.equal(summary.bytesFromClient, COMMANDS.length);
      assert.equal(summary.bytesToUpstream, COMMANDS.length);
      assert.equal(summary.bytesFromUpstream, REPLIES.length);
      assert.equal(summary.bytesToClient, REPLIES.length);
      // The client is reset after the replies (docs/tcp.md, "Resets"), or ends if none was read.
      const error = await withTimeout(closed, 10_000, 'the client closed');
      assert.equal(received, REPLIES);
      assert.ok(error === undefined || (error as { code?: string }).code === 'ECONNRESET');
      const stats = proxy.stats();
      assert.equal(stats.close_reasons[reason], 1);
      assert.equal(stats.close_reasons.upstream_reset + stats.close_reasons.completed, 1);
      assert.match(
        proxy.metrics(),
        new RegExp(`^l4proxy_tcp_downstream_cx_closed_total\\{reason="${reason}"\\} 1$`, 'm'),
      );
    });
  }
});

/**
 * nginx answers a request and closes its socket at once (`Connection: close`): the close_notify
 * that follows the client's FIN is then still unread, and nginx's kernel resets. The reset often
 * arrives between the proxy's poll and its shutdown(2), which then fails ENOTCONN before the
 * proxy read the answer sitting in its receive queue. That answer was dropped (about 2 % of the
 * connections here, the client reset with nothing): it is read first now, then the reset.
 */
describe("TLS origination: an answer that crosses the client's end, then a reset", () => {
  const REQUEST = 'GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n';
  const ROUNDS = 200;
  let nginx: PeerProcess | undefined;
  let nginxPort: Promise<number> | undefined;
  after(() => nginx?.stop());

  for (const relay of ['handle', 'stream'] as const satisfies TcpProxyOptions['relay'][]) {
    test(`each of ${String(ROUNDS)} clients gets nginx's whole answer before any reset (relay: '${relay}')`, async (t) => {
      const p = await getPki(t);
      if (p === undefined || tool(t, 'nginx') === undefined) return;
      nginxPort ??= (async () => {
        const listening = await freePort();
        nginx = await startNginxHttp(
          `server { listen 127.0.0.1:${String(listening)} ssl;
            ssl_certificate ${p.server.certFile}; ssl_certificate_key ${p.server.keyFile};
            location / { return 200 "answered"; } }`,
        );
        return listening;
      })();
      const upstreamPort = await nginxPort;
      const { proxy, port, summaries } = await startProxy({
        upstreams: [{ host: '127.0.0.1', port: upstreamPort }],
        tls: { ca: p.ca.cert, servername: 'localhost' },
        relay,
      });
      t.after(() => proxy.close({ drainTimeout: 0 }));
      const lost = await lostAnswers(port, ROUNDS, REQUEST, (reply) =>
        reply.endsWith('\r\n\r\nanswered'),
      );
      await until(() => summaries.length === ROUNDS, `${String(ROUNDS)} connections closed`);
      assert.deepEqual(lost, [], `${String(lost.length)} of ${String(ROUNDS)} answers lost`);
      for (const summary of summaries) {
        assert.equal(summary.bytesToClient, summary.bytesFromUpstream, summary.reason);
        assert.ok(summary.bytesToClient > 0, `${summary.reason}: nothing relayed`);
      }
    });
  }
});
