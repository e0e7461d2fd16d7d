import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ProxyTlvType } from '../../src/index.js';
import type { ProxyTlv } from '../../src/index.js';
import { startProxy } from '../helpers/proxy.js';
import { startDnsdist } from '../helpers/dnsdist.js';
import { freePort } from '../helpers/peerProcess.js';
import { tool } from '../helpers/tools.js';

const run = promisify(execFile);

/**
 * dnsdist (PowerDNS) sends arbitrary TLV types in the PROXY v2 header it puts before each TCP
 * connection to a backend (`useProxyProtocol`, `SetProxyProtocolValuesAction`), and decodes them
 * on a listener that accepts the header (`setProxyProtocolACL`, `getProxyProtocolValues()`):
 * an independent encoder and decoder on both sides of l4proxy, custom types 0xE0-0xEF included.
 */
test('custom TLVs from dnsdist reach the selector and the chosen ones pass through to another dnsdist, which decodes them', async (t) => {
  const digPath = tool(t, 'dig');
  if (tool(t, 'dnsdist') === undefined || digPath === undefined) return;
  const [front, back] = [await freePort(), await freePort()];
  const seen: (readonly ProxyTlv[] | undefined)[] = [];
  const { proxy, port } = await startProxy({
    upstreams: [{ host: '127.0.0.1', port: back }],
    acceptProxyProtocol: { trusted: ['127.0.0.1'] },
    proxyProtocol: {
      version: 'v2',
      passThroughTlvs: [0xe4],
      tlvs: () => ({ authority: 'added.by.l4proxy' }),
    },
    selector: (ctx) => {
      seen.push(ctx.proxyTlvs);
      return ctx.candidates[0];
    },
  });
  t.after(() => proxy.close({ drainTimeout: 0 }));
  // The receiving dnsdist prints the TLVs it decoded, by type, and answers the query itself.
  const receiver = await startDnsdist(
    back,
    [
      "setProxyProtocolACL({'127.0.0.1/32'})",
      'function report(dq)',
      '  local parts = {}',
      '  for kind, value in pairs(dq:getProxyProtocolValues()) do',
      "    table.insert(parts, tostring(kind) .. '=' .. tostring(value))",
      '  end',
      "  io.stderr:write('decoded from=' .. dq.remoteaddr:toString() .. ' ' .. table.concat(parts, ' ') .. ' end\\n')",
      '  io.stderr:flush()',
      "  return DNSAction.Spoof, '127.0.0.7'",
      'end',
      'addAction(AllRule(), LuaAction(report))',
    ].join('\n'),
  );
  t.after(() => receiver.stop());
  const sender = await startDnsdist(
    front,
    [
      `newServer({address='127.0.0.1:${port}', useProxyProtocol=true, tcpOnly=true}):setUp()`,
      "addAction(AllRule(), SetProxyProtocolValuesAction({[0xE4]='tenant-42', [0xEA]='blue'}))",
    ].join('\n'),
  );
  t.after(() => sender.stop());

  const { stdout } = await run(
    digPath,
    ['@127.0.0.1', '-p', String(front), 'tlv.test', 'A', '+tcp', '+short', '+tries=1', '+time=3'],
    { timeout: 10_000 },
  );
  assert.equal(stdout.trim(), '127.0.0.7');
  const line = await receiver.waitForOutput(/decoded from=.* end/);
  const decoded = /decoded from=(\S+) (.*) end/.exec(line)?.slice(1) ?? [];
  // The client is still dig's address, the custom 0xE4 passed through, 0xEA was not chosen,
  // the authority (type 2) is the one l4proxy added.
  assert.equal(decoded[0], '127.0.0.1');
  // (dnsdist 1.7 also lists an empty entry under 0, whatever the sender.)
  assert.deepEqual(
    (decoded[1] ?? '')
      .split(' ')
      .filter((entry) => entry !== '0=')
      .sort(),
    ['2=added.by.l4proxy', '228=tenant-42'].sort(),
  );
  // The selector saw both custom TLVs dnsdist sent (its order comes from a Lua table: sorted here).
  const custom = seen[0]?.filter((tlv) => tlv.type >= 0xe0 && tlv.type <= 0xef);
  assert.deepEqual(
    custom
      ?.map((tlv) => [tlv.type, tlv.value.toString()])
      .sort((a, b) => Number(a[0]) - Number(b[0])),
    [
      [0xe4, 'tenant-42'],
      [0xea, 'blue'],
    ],
  );
  assert.ok(seen[0]?.every((tlv) => tlv.type !== ProxyTlvType.AUTHORITY));
});
