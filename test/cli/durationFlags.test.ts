import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { bareSecondsWarning, parseCliArgs } from '../../src/cli/args.js';
import { connect } from '../helpers/net.js';
import { roundTrip, taggedEcho } from '../helpers/testServer.js';
import { listenPort, runCli, startCli } from './cli.js';

const QUICK = ['tcp', '127.0.0.1:0', '127.0.0.1:9'];

describe('duration flags: a bare number of 1000 or more (milliseconds, as the file takes them?)', () => {
  test('is warned about, naming the flag, what it is read as and what to write', () => {
    assert.equal(
      bareSecondsWarning('30000', '--drain-timeout'),
      '--drain-timeout 30000 is 30000 s (8 h 20 min); write 30s for 30 seconds',
    );
    assert.equal(
      bareSecondsWarning('1500', '--status-interval'),
      '--status-interval 1500 is 1500 s (25 min); write 1500ms for 1.5 seconds',
    );
    assert.equal(
      bareSecondsWarning('90000', '--drain-timeout'),
      '--drain-timeout 90000 is 90000 s (1 d 1 h); write 90s for 90 seconds',
    );
    // Seconds as meant, and any unit, say nothing.
    for (const text of ['30', '999', '30000ms', '1000s', '20m'])
      assert.equal(bareSecondsWarning(text, '--drain-timeout'), undefined, text);
    const args = parseCliArgs([...QUICK, '--drain-timeout', '30000', '--status-interval', '5']);
    assert.equal(args.drainTimeout, 30_000_000, 'still seconds: a running setup keeps its meaning');
    assert.deepEqual(args.warnings, [
      '--drain-timeout 30000 is 30000 s (8 h 20 min); write 30s for 30 seconds',
    ]);
  });

  test('the command logs it at warn when it starts (once with --workers), and --check prints it', async (t) => {
    const upstream = await taggedEcho(t, 'A:');
    const quick = ['tcp', '127.0.0.1:0', `127.0.0.1:${String(upstream)}`];
    const warned = (line: { msg: string }): boolean => line.msg.startsWith('--drain-timeout 30000');
    for (const workers of [[], ['--workers', '2']]) {
      const cli = startCli(t, [...quick, '--drain-timeout', '30000', ...workers]);
      const line = await cli.waitLine('stderr', warned, 15_000);
      assert.equal(line.level, 40);
      assert.equal(
        line.msg,
        '--drain-timeout 30000 is 30000 s (8 h 20 min); write 30s for 30 seconds',
      );
      await cli.waitLine('stderr', (l) => l.msg === 'ready', 15_000);
      process.kill(cli.pid, 'SIGTERM');
      assert.equal(await cli.exited(15_000), 0);
      assert.equal(cli.stderr.filter(warned).length, 1, 'said once, by the primary');
    }
    const checked = await runCli([...quick, '--check', '--drain-timeout', '30000']);
    assert.equal(checked.code, 0);
    assert.match(checked.stderr, /warning: --drain-timeout 30000 is 30000 s \(8 h 20 min\)/);
    const plain = startCli(t, [...quick, '--drain-timeout', '30s']);
    await plain.waitLine('stderr', (l) => l.msg === 'ready');
    process.kill(plain.pid, 'SIGTERM');
    assert.equal(await plain.exited(), 0);
    assert.deepEqual(
      plain.stderr.filter((l) => l.level === 40),
      [],
    );
  });

  test('the longest drain timeout accepted (2147483647 ms) waits for the connections, alone and with --workers', async (t) => {
    const upstream = await taggedEcho(t, 'A:');
    const quick = ['tcp', '127.0.0.1:0', `127.0.0.1:${String(upstream)}`];
    for (const workers of [[], ['--workers', '2']]) {
      const cli = startCli(t, [...quick, '--drain-timeout', '2147483647ms', ...workers]);
      await cli.waitLine('stderr', (l) => l.msg === 'ready' && l.pid === cli.pid, 15_000);
      const client = await connect(await listenPort(cli));
      t.after(() => client.destroy());
      assert.equal(await roundTrip(client, 'x'), 'A:x');
      process.kill(cli.pid, 'SIGTERM');
      await cli.waitLine('stderr', (l) => l.msg === 'draining' && l.pid === cli.pid);
      // Before, the drain's watchdog (the timeout plus a margin) passed setTimeout's largest
      // delay, which Node turns into 1 ms: the process exited 1 at once, cutting the client.
      assert.equal(await roundTrip(client, 'y'), 'A:y', 'still relayed during the drain');
      client.end();
      assert.equal(await cli.exited(15_000), 0);
      assert.ok(!cli.stderr.some((l) => /did not finish/.test(l.msg)));
    }
  });
});
