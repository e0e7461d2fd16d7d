import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ProxyTlvType } from '../../src/index.js';
import type { ProxyTlv } from '../../src/index.js';
import { connect, echoServer, readAll } from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';
import { startHaproxy } from '../helpers/haproxy.js';
import { freePort } from '../helpers/peerProcess.js';
import { tool } from '../helpers/tools.js';

/**
 * HAProxy 2.6 can send the UNIQUE_ID, AUTHORITY, SSL and CRC32C TLVs (`proxy-v2-options`);
 * arbitrary custom types need `set-proxy-v2-tlv-fmt` (HAProxy 2.9+). UNIQUE_ID carries any text
 * the test chooses (`unique-id-format`), so it stands for a custom value here.
 */
test('TLVs from HAProxy reach the selector and the chosen types pass through to another HAProxy', async (t) => {
  if (tool(t, 'haproxy') === undefined) return;
  const echo = await echoServer();
  t.after(() => echo.close());
  const [front, back] = [await freePort(), await freePort()];
  const seen: (readonly ProxyTlv[] | undefined)[] = [];
  const { proxy, port, closes } = await startProxy({
    upstreams: [{ host: '127.0.0.1', port: back }],
    acceptProxyProtocol: { trusted: ['127.0.0.1'] },
    proxyProtocol: {
      version: 'v2',
      passThroughTlvs: [ProxyTlvType.UNIQUE_ID, ProxyTlvType.CRC32C],
      tlvs: () => ({ authority: 'added.by.l4proxy' }),
    },
    selector: (ctx) => {
      seen.push(ctx.proxyTlvs);
      return ctx.candidates[0];
    },
  });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  const haproxy = await startHaproxy(
    [
      'listen front',
      `  bind 127.0.0.1:${front}`,
      '  unique-id-format tenant-42-%[src]',
      `  server l4proxy 127.0.0.1:${port} send-proxy-v2 proxy-v2-options unique-id,crc32c`,
      'listen back',
      `  bind 127.0.0.1:${back} accept-proxy`,
      '  log-format "passed uid=%[fc_pp_unique_id] authority=%[fc_pp_authority] src=%ci"',
      `  server echo 127.0.0.1:${echo.port}`,
    ].join('\n'),
  );
  t.after(() => haproxy.stop());
  const client = await connect(front);
  const echoed = readAll(client);
  client.end('through two HAProxies');
  assert.equal((await echoed).toString(), 'through two HAProxies');
  const log = await haproxy.waitForOutput(/passed uid=\S*/);
  assert.match(
    log,
    /passed uid=tenant-42-127\.0\.0\.1 authority=added\.by\.l4proxy src=127\.0\.0\.1/,
  );
  // The selector saw both TLVs HAProxy sent; CRC32C is recomputed, not copied.
  assert.deepEqual(
    seen[0]?.map((tlv) => tlv.type),
    [ProxyTlvType.CRC32C, ProxyTlvType.UNIQUE_ID],
  );
  assert.equal(seen[0][1]?.value.toString(), 'tenant-42-127.0.0.1');
  const summary = (await closes(1))[0];
  assert.ok(summary);
  assert.equal(summary.reason, 'completed');
});
