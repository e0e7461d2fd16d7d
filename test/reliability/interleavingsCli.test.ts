import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { configDir, startCli } from '../cli/cli.js';
import { socketServer, withTimeout } from '../helpers/net.js';
import type { TestServer } from '../helpers/net.js';
import { after, Rng, RUNS, SEED, sum } from './interleavingHarness.js';

/**
 * The `l4proxy` command under random interleavings: clients that send and close or reset while
 * SIGHUP reloads swap the listener's upstreams (one process, or `--workers 2`). At the end,
 * `/stats` conserves (every connection counted closed once, by one reason, none active) and the
 * access log has exactly one line per connection. A CLI start costs about a second: a tenth of
 * L4PROXY_STRESS_RUNS sequences run (3 by default). Replay a failure with
 * L4PROXY_STRESS_SEED=<seed> L4PROXY_STRESS_RUNS=10.
 */

const TOKEN = 'interleavings-admin-token';

interface WebStats {
  downstream_cx_total: number;
  downstream_cx_active: number;
  upstream_cx_active: number;
  close_reasons: Record<string, number>;
}

async function webStats(admin: string): Promise<WebStats> {
  const response = await fetch(`http://${admin}/stats`, {
    headers: { authorization: `Bearer ${TOKEN}` },
  });
  const body = (await response.json()) as { listeners: { web: { stats: WebStats } } };
  return body.listeners.web.stats;
}

/** One client: connects, sends, then closes cleanly or resets; resolves once closed (bounded). */
function client(rng: Rng, port: number): Promise<void> {
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  socket.on('error', () => undefined);
  const reset = rng.chance(0.3);
  const delay = rng.int(0, 20);
  socket.once('connect', () => {
    socket.write(Buffer.alloc(rng.int(1, 5_000), 1));
    if (reset)
      setTimeout(() => {
        socket.resetAndDestroy();
      }, delay);
    else socket.end();
  });
  socket.resume();
  socket.on('end', () => {
    if (!socket.writableEnded) socket.end();
  });
  const giveUp = setTimeout(() => {
    socket.resetAndDestroy();
  }, 3_000);
  return new Promise<void>((resolve) =>
    socket.once('close', () => {
      clearTimeout(giveUp);
      resolve();
    }),
  );
}

async function sequence(t: TestContext, seed: number): Promise<void> {
  const rng = new Rng(seed);
  const echoes: TestServer[] = [];
  t.after(async () => {
    for (const echo of echoes) await echo.close();
  });
  for (let i = 0; i < 3; i++) echoes.push(await socketServer((socket) => socket.pipe(socket)));
  const dir = configDir(t);
  const tokenFile = dir.write('token', `${TOKEN}\n`);
  const workers = rng.chance(0.5) ? 2 : undefined;
  const configWith = (ports: number[]): unknown => ({
    ...(workers === undefined ? {} : { workers }),
    admin: { listen: '127.0.0.1:0', tokenFile },
    listeners: [
      {
        name: 'web',
        protocol: 'tcp',
        listen: '127.0.0.1:0',
        upstreams: ports.map((port) => ({ host: '127.0.0.1', port })),
      },
    ],
  });
  const pickPorts = (): number[] => {
    const chosen = rng.subset(echoes).map((echo) => echo.port);
    return chosen.length > 0 ? chosen : [echoes[0]!.port];
  };
  const file = dir.write('l4proxy.json', configWith(pickPorts()));
  const cli = startCli(t, ['--config', file]);
  const admin = String(
    (await cli.waitLine('stderr', (l) => l.msg === 'admin listening', 15_000)).address,
  );
  if (workers !== undefined) await cli.waitLine('stderr', (l) => l.msg === 'ready', 15_000);
  const port = Number(
    /:(\d+)$/.exec(
      String((await cli.waitLine('stderr', (l) => l.msg === 'listening')).address),
    )?.[1],
  );
  const running: Promise<unknown>[] = [];
  for (let i = rng.int(3, 15); i > 0; i--) {
    const clientRng = new Rng(rng.int(0, 2 ** 31));
    const delay = rng.int(0, 200);
    running.push(
      new Promise((resolve) => setTimeout(resolve, delay)).then(() => client(clientRng, port)),
    );
  }
  const reloads = rng.int(1, 3);
  for (let i = 0; i < reloads; i++) {
    await new Promise((resolve) => setTimeout(resolve, rng.int(0, 80)));
    dir.write('l4proxy.json', configWith(pickPorts()));
    const seen = cli.stderr.filter((l) => l.msg.startsWith('config reloaded')).length;
    process.kill(cli.pid, 'SIGHUP');
    await cli.waitLines('stderr', (l) => l.msg.startsWith('config reloaded'), seen + 1, 10_000);
  }
  await withTimeout(Promise.all(running), 15_000, 'clients');
  // Settled: nothing active, every close counted (each worker reports its own on its timer).
  let stats = await webStats(admin);
  const settled = async (): Promise<boolean> => {
    stats = await webStats(admin);
    const lines = cli.stdout.filter((l) => l.msg === 'connection closed').length;
    return (
      stats.downstream_cx_active === 0 &&
      sum(stats.close_reasons) === stats.downstream_cx_total &&
      lines === stats.downstream_cx_total
    );
  };
  const deadline = Date.now() + 5_000;
  while (!(await settled()) && Date.now() < deadline) await after(50); // the poll interval of /stats (no event to wait on across processes)
  const lines = cli.stdout.filter((l) => l.msg === 'connection closed');
  const what = `seed ${String(seed)} (workers ${String(workers ?? 1)}, ${String(reloads)} reloads)`;
  assert.equal(stats.downstream_cx_active, 0, `${what}: active`);
  assert.equal(stats.upstream_cx_active, 0, `${what}: upstream active`);
  assert.equal(sum(stats.close_reasons), stats.downstream_cx_total, `${what}: close_reasons`);
  assert.equal(lines.length, stats.downstream_cx_total, `${what}: access lines`);
  for (const [reason, count] of Object.entries(stats.close_reasons)) {
    const logged = lines.filter((l) => l.reason === reason).length;
    assert.equal(logged, count, `${what}: access lines with reason ${reason}`);
  }
  process.kill(cli.pid, 'SIGTERM');
  assert.equal(await cli.exited(15_000), 0, `${what}: exit code`);
}

const cliRuns = Math.max(1, Math.ceil(RUNS / 10));

test(`the CLI under SIGHUP reloads and traffic: ${String(cliRuns)} sequences from seed ${String(SEED)}`, async (t) => {
  for (let run = 0; run < cliRuns; run++) {
    const seed = SEED + run;
    await t.test(`seed ${String(seed)}`, async (sub) => {
      try {
        await sequence(sub, seed);
      } catch (error) {
        throw new Error(
          `sequence failed; replay with L4PROXY_STRESS_SEED=${String(seed)} L4PROXY_STRESS_RUNS=10`,
          { cause: error },
        );
      }
    });
  }
});
