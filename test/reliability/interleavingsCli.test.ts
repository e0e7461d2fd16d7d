import assert from 'node:assert/strict';
import type { Socket as DgramSocket } from 'node:dgram';
import net from 'node:net';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { configDir, startCli } from '../cli/cli.js';
import type { CliProcess } from '../cli/cli.js';
import { adminRequest } from '../helpers/adminClient.js';
import { socketServer, withTimeout } from '../helpers/net.js';
import type { TestServer } from '../helpers/net.js';
import { closeSocket, udpSocket } from '../udp/helpers.js';
import {
  after,
  onConnectAnswer,
  Rng,
  RUNS,
  SEED,
  Sequence,
  sequenceFailure,
  sum,
} from './interleavingHarness.js';

/**
 * The `l4proxy` command under random interleavings: a TCP, a UDP and a tunnel listener (one
 * process, or `--workers 2`) with clients that send and close or reset, datagrams, and CONNECT
 * tunnels, while SIGHUP reloads swap the listeners' upstreams and operators drain, disable,
 * enable or close upstreams through the admin API. At the end, `/stats` conserves for the TCP
 * and UDP listeners (every connection and session counted closed once, by one reason, none
 * active) and the access log has exactly one line per connection, session and tunnel. A CLI
 * start costs about a second: a tenth of L4PROXY_STRESS_RUNS sequences run (3 by default). A
 * failure prints its seed, plan and invariant (replay: L4PROXY_STRESS_SEED=<seed>
 * L4PROXY_STRESS_RUNS=10).
 */

const TOKEN = 'interleavings-admin-token';

interface ListenerStats {
  downstream_cx_total: number;
  downstream_cx_active: number;
  upstream_cx_active: number;
  close_reasons: Record<string, number>;
  downstream_sess_total: number;
  downstream_sess_active: number;
  upstream_sess_active: number;
  session_close_reasons: Record<string, number>;
}

async function listenerStats(admin: number): Promise<{ web: ListenerStats; dns: ListenerStats }> {
  const reply = await adminRequest(admin, 'GET', '/stats', { token: TOKEN });
  assert.equal(reply.status, 200, `GET /stats: ${reply.text}`);
  const body = reply.json as { listeners: Record<'web' | 'dns', { stats: ListenerStats }> };
  return { web: body.listeners.web.stats, dns: body.listeners.dns.stats };
}

/** Resolves once `socket` closed; it gives up (resets) after `ms`. */
function bounded(socket: net.Socket, ms: number): Promise<void> {
  const giveUp = setTimeout(() => {
    socket.resetAndDestroy();
  }, ms);
  return new Promise<void>((resolve) =>
    socket.once('close', () => {
      clearTimeout(giveUp);
      resolve();
    }),
  );
}

/** One TCP client: connects, sends, then closes cleanly or resets; resolves once closed. */
function tcpClient(rng: Rng, port: number): Promise<void> {
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
  return bounded(socket, 3_000);
}

/** One UDP client: a few datagrams, then closed once answered or after a bound. */
async function udpClient(rng: Rng, port: number): Promise<void> {
  const socket: DgramSocket = await udpSocket();
  try {
    const count = rng.int(1, 3);
    let answers = 0;
    const answered = new Promise<void>((resolve) => {
      socket.on('message', () => {
        if (++answers === count) resolve();
      });
    });
    for (let i = 0; i < count; i++)
      socket.send(Buffer.alloc(rng.int(1, 500), 2), port, '127.0.0.1');
    // A datagram the reload or a drain lands on may go unanswered: the client does not wait long.
    await Promise.race([answered, after(500)]);
  } finally {
    await closeSocket(socket);
  }
}

/**
 * One CONNECT client of the tunnel listener: it sends its whole request at once and waits for
 * the answer (so the server counts the request: one access line each), then relays and ends, or
 * resets.
 */
function tunnelClient(rng: Rng, port: number, authority: string): Promise<void> {
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  socket.on('error', () => undefined);
  const reset = rng.chance(0.3);
  const delay = rng.int(0, 20);
  const payload = Buffer.alloc(rng.int(1, 5_000), 3);
  socket.once('connect', () => {
    socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  });
  onConnectAnswer(socket, () => {
    socket.write(payload);
    if (reset)
      setTimeout(() => {
        socket.resetAndDestroy();
      }, delay);
    else socket.end();
  });
  return bounded(socket, 3_000);
}

/** The listeners' ports, from the start lines (one process) or the first worker's. */
async function listenerPorts(
  cli: CliProcess,
  workers: number | undefined,
): Promise<Map<string, number>> {
  const portOf = (address: unknown): number => Number(/:(\d+)$/.exec(String(address))?.[1]);
  if (workers !== undefined) {
    const ready = await cli.waitLine('stderr', (l) => l.msg === 'worker ready', 15_000);
    return new Map(
      (ready.listeners as { name: string; address: string }[]).map((l) => [
        l.name,
        portOf(l.address),
      ]),
    );
  }
  const lines = await cli.waitLines('stderr', (l) => l.msg === 'listening', 3, 15_000);
  return new Map(lines.map((l) => [String(l.listener), portOf(l.address)]));
}

async function sequence(t: TestContext, s: Sequence): Promise<void> {
  const { rng, what } = s;
  const echoes: TestServer[] = [];
  const udpEchoes: DgramSocket[] = [];
  t.after(async () => {
    for (const echo of echoes) await echo.close();
    for (const echo of udpEchoes) await closeSocket(echo);
  });
  for (let i = 0; i < 3; i++) echoes.push(await socketServer((socket) => socket.pipe(socket)));
  for (let i = 0; i < 2; i++) {
    const echo = await udpSocket();
    echo.on('message', (msg: Buffer, from) => {
      echo.send(msg, from.port, from.address);
    });
    udpEchoes.push(echo);
  }
  const udpPorts = udpEchoes.map((echo) => echo.address().port);
  const dir = configDir(t);
  const tokenFile = dir.write('token', `${TOKEN}\n`);
  const workers = rng.chance(0.5) ? 2 : undefined;
  const upstreams = (ports: number[]): unknown[] =>
    ports.map((port) => ({ host: '127.0.0.1', port }));
  const pick = (ports: number[]): number[] => {
    const chosen = rng.subset(ports);
    return chosen.length > 0 ? chosen : ports.slice(0, 1);
  };
  const configWith = (tcp: number[], udp: number[]): unknown => ({
    ...(workers === undefined ? {} : { workers }),
    admin: { listen: '127.0.0.1:0', tokenFile },
    listeners: [
      { name: 'web', protocol: 'tcp', listen: '127.0.0.1:0', upstreams: upstreams(tcp) },
      {
        name: 'dns',
        protocol: 'udp',
        listen: '127.0.0.1:0',
        idleTimeout: rng.int(50, 300),
        upstreams: upstreams(udp),
      },
      {
        name: 'egress',
        protocol: 'tunnel',
        listen: '127.0.0.1:0',
        route: 'any',
        upstreams: upstreams(tcp),
      },
    ],
  });
  const tcpPorts = echoes.map((echo) => echo.port);
  const first = { tcp: pick(tcpPorts), udp: pick(udpPorts) };
  s.note(
    `workers ${String(workers ?? 1)}; upstreams tcp ${first.tcp.join(',')} udp ${first.udp.join(',')}`,
  );
  const file = dir.write('l4proxy.json', configWith(first.tcp, first.udp));
  const cli = startCli(t, ['--config', file]);
  const admin = Number(
    /:(\d+)$/.exec(
      String((await cli.waitLine('stderr', (l) => l.msg === 'admin listening', 15_000)).address),
    )?.[1],
  );
  if (workers !== undefined) await cli.waitLine('stderr', (l) => l.msg === 'ready', 15_000);
  const ports = await listenerPorts(cli, workers);
  const at = (name: string): number => ports.get(name) ?? 0;
  const running: Promise<unknown>[] = [];
  let tunnels = 0;
  for (let i = rng.int(3, 15); i > 0; i--) {
    const kind = rng.pick(['tcp', 'tcp', 'udp', 'tunnel'] as const);
    const clientRng = new Rng(rng.int(0, 2 ** 31));
    running.push(
      s.at(rng.int(0, 200), `${kind} client`, async () => {
        if (kind === 'tcp') return tcpClient(clientRng, at('web'));
        if (kind === 'udp') return udpClient(clientRng, at('dns'));
        tunnels++;
        return tunnelClient(clientRng, at('egress'), `127.0.0.1:${String(tcpPorts[0])}`);
      }),
    );
  }
  for (let i = rng.int(0, 3); i > 0; i--) {
    const listener = rng.pick(['web', 'dns'] as const);
    const port = rng.pick(listener === 'web' ? tcpPorts : udpPorts);
    const action = rng.pick(['drain', 'disable', 'enable', 'close'] as const);
    const path = `/upstreams/${listener}/127.0.0.1%3A${String(port)}/${action}`;
    running.push(
      s.at(rng.int(0, 200), `POST ${path}`, async () => {
        const reply = await adminRequest(admin, 'POST', path, { token: TOKEN });
        // 404: a reload removed that upstream meanwhile; 503 (workers): it did so on one worker
        // and not yet on the other, which the primary reports as applied in part.
        const partial = workers !== undefined && reply.status === 503;
        if (reply.status !== 200 && reply.status !== 404 && !partial)
          throw new Error(`${what}: POST ${path}: ${String(reply.status)} ${reply.text}`);
      }),
    );
  }
  const reloads = rng.int(1, 3);
  for (let i = 0; i < reloads; i++) {
    await after(rng.int(0, 80));
    const next = { tcp: pick(tcpPorts), udp: pick(udpPorts) };
    s.note(`SIGHUP: tcp ${next.tcp.join(',')} udp ${next.udp.join(',')}`);
    dir.write('l4proxy.json', configWith(next.tcp, next.udp));
    const seen = cli.stderr.filter((l) => l.msg.startsWith('config reloaded')).length;
    process.kill(cli.pid, 'SIGHUP');
    await cli.waitLines('stderr', (l) => l.msg.startsWith('config reloaded'), seen + 1, 10_000);
  }
  await withTimeout(Promise.all(running), 15_000, `${what}: clients`);
  s.note('clients done');
  // Settled: nothing active, every close counted (each worker reports its own on its timer).
  const lines = (msg: string): Record<string, unknown>[] => cli.stdout.filter((l) => l.msg === msg);
  let stats = await listenerStats(admin);
  const settled = async (): Promise<boolean> => {
    stats = await listenerStats(admin);
    const { web, dns } = stats;
    return (
      web.downstream_cx_active === 0 &&
      sum(web.close_reasons) === web.downstream_cx_total &&
      lines('connection closed').length === web.downstream_cx_total &&
      dns.downstream_sess_active === 0 &&
      sum(dns.session_close_reasons) === dns.downstream_sess_total &&
      lines('session closed').length === dns.downstream_sess_total &&
      lines('tunnel closed').length === tunnels
    );
  };
  const deadline = Date.now() + 5_000;
  while (!(await settled()) && Date.now() < deadline) await after(50); // the poll interval of /stats (no event to wait on across processes)
  const { web, dns } = stats;
  assert.equal(web.downstream_cx_active, 0, `${what}: web active`);
  assert.equal(web.upstream_cx_active, 0, `${what}: web upstream active`);
  assert.equal(sum(web.close_reasons), web.downstream_cx_total, `${what}: web close_reasons`);
  assert.equal(
    lines('connection closed').length,
    web.downstream_cx_total,
    `${what}: web access lines`,
  );
  for (const [reason, count] of Object.entries(web.close_reasons)) {
    const logged = lines('connection closed').filter((l) => l.reason === reason).length;
    assert.equal(logged, count, `${what}: web access lines with reason ${reason}`);
  }
  assert.equal(dns.downstream_sess_active, 0, `${what}: dns sessions active`);
  assert.equal(dns.upstream_sess_active, 0, `${what}: dns upstream sessions active`);
  assert.equal(sum(dns.session_close_reasons), dns.downstream_sess_total, `${what}: dns reasons`);
  assert.equal(
    lines('session closed').length,
    dns.downstream_sess_total,
    `${what}: dns access lines`,
  );
  assert.equal(lines('tunnel closed').length, tunnels, `${what}: tunnel access lines`);
  process.kill(cli.pid, 'SIGTERM');
  assert.equal(await cli.exited(15_000), 0, `${what}: exit code`);
}

const cliRuns = Math.max(1, Math.ceil(RUNS / 10));

test(`the CLI under SIGHUP reloads, admin actions and traffic: ${String(cliRuns)} sequences from seed ${String(SEED)}`, async (t) => {
  for (let run = 0; run < cliRuns; run++) {
    const s = new Sequence(SEED + run);
    await t.test(s.what, async (sub) => {
      try {
        await sequence(sub, s);
      } catch (error) {
        throw sequenceFailure('l4proxy CLI', s, error, 10);
      }
    });
  }
});
