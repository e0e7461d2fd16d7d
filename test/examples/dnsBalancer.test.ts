import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withTimeout } from '../helpers/net.js';
import { tool } from '../helpers/tools.js';
import { dig, startDnsmasq, stopChild } from '../udp/helpers.js';

const main = fileURLToPath(new URL('../../examples/dns-balancer/main.js', import.meta.url));

test('the dns-balancer example spreads dig queries over two dnsmasq resolvers', async (t) => {
  const digPath = tool(t, 'dig');
  if (digPath === undefined) return;
  const a = await startDnsmasq(t, 'example.test', '10.1.2.3');
  if (a === undefined) return;
  const b = await startDnsmasq(t, 'example.test', '10.1.2.4');
  if (b === undefined) return;

  const child = spawn(
    process.execPath,
    [
      main,
      '--listen',
      '127.0.0.1:0',
      '--upstream',
      `127.0.0.1:${a.port}`,
      '--upstream',
      `127.0.0.1:${b.port}`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  t.after(() => stopChild(child, 'SIGKILL'));
  const events: Record<string, unknown>[] = [];
  let wake: (() => void) | undefined;
  createInterface({ input: child.stdout }).on('line', (line) => {
    events.push(JSON.parse(line) as Record<string, unknown>);
    wake?.();
  });
  /** The first event named `name`, waiting for it (bounded). */
  const event = (name: string): Promise<Record<string, unknown>> =>
    withTimeout(
      (async () => {
        for (;;) {
          const found = events.find((e) => e.event === name);
          if (found) return found;
          await new Promise<void>((resolve) => (wake = resolve));
        }
      })(),
      10_000,
      `example event '${name}'`,
    );

  const port = (await event('listening')).port as number;
  const answers: string[] = [];
  for (let i = 0; i < 10; i++) answers.push(await dig(digPath, port, 'example.test'));
  assert.equal(answers.filter((answer) => answer === '10.1.2.3').length, 5);
  assert.equal(answers.filter((answer) => answer === '10.1.2.4').length, 5);

  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const closed = await event('closed');
  assert.equal(await withTimeout(exited, 5_000, 'example exit'), 0);
  const stats = closed.stats as {
    downstream_sess_total: number;
    session_close_reasons: Record<string, number>;
  };
  assert.equal(stats.downstream_sess_total, 10);
  assert.equal(stats.session_close_reasons.max_responses, 10);
  assert.equal(events.filter((e) => e.event === 'query').length, 10);
});
