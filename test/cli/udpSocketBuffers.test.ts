import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, test } from 'node:test';
import { tool } from '../helpers/tools.js';
import { configDir, configErrorOf, listenPort, startCli } from './cli.js';

const upstreams = [{ host: '127.0.0.1', port: 9 }];

/** `rb` and `tb` of the UDP socket bound on 127.0.0.1:`port`: `ss -uamn` shows them in `skmem`. */
function socketBuffers(ss: string, port: number): { rb: number; tb: number } {
  const out = execFileSync(ss, ['-uamnH', `sport = :${port}`], { encoding: 'utf8' });
  const match = /skmem:\(r\d+,rb(\d+),t\d+,tb(\d+)/.exec(out);
  assert.ok(match, `ss shows no UDP socket on port ${port}: ${out}`);
  return { rb: Number(match[1]), tb: Number(match[2]) };
}

describe('l4proxy UDP listener socket buffers', () => {
  test('recvBufferSize and sendBufferSize of a UDP listener are applied to its bound socket (ss -uam; Linux doubles them)', async (t) => {
    const ss = tool(t, 'ss');
    if (ss === undefined) return;
    const file = configDir(t).write('l4proxy.json', {
      listeners: [
        {
          name: 'dns',
          protocol: 'udp',
          listen: '127.0.0.1:0',
          recvBufferSize: 4096,
          sendBufferSize: 8192,
          upstreams,
        },
      ],
    });
    const cli = startCli(t, ['--config', file, '--status-interval', '0']);
    assert.deepEqual(socketBuffers(ss, await listenPort(cli, 'dns')), { rb: 8192, tb: 16384 });
    cli.child.kill('SIGTERM');
    await cli.exited();
  });

  test('a bad recvBufferSize or sendBufferSize, or one on a TCP listener, is refused naming it', () => {
    const udp = { protocol: 'udp', listen: '127.0.0.1:0', upstreams };
    assert.match(
      configErrorOf({ listeners: [{ ...udp, recvBufferSize: '1m' }] }),
      /listeners\[0\]\.recvBufferSize: expected bytes, an integer from 1 to 2147483647 .*received "1m"/,
    );
    assert.match(
      configErrorOf({ listeners: [{ ...udp, sendBufferSize: 0 }] }),
      /listeners\[0\]\.sendBufferSize: expected bytes, .*UDP only, received 0/,
    );
    assert.match(
      configErrorOf({ listeners: [{ ...udp, protocol: 'tcp', recvBufferSize: 4096 }] }),
      /listeners\[0\]\.recvBufferSize: expected .*UDP only, received 4096/,
    );
  });
});
