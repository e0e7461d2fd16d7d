/**
 * Soak of the `l4proxy` command from outside, as a user runs it: mixed normal and hostile
 * traffic for a few minutes, with reloads (valid and invalid files) and an admin drain, then
 * checks that the process comes back to idle. Not part of `npm test` (too long); not a
 * benchmark (it measures nothing's speed). See docs/operations.md, "Soak".
 *
 *   node build/bench/soak.js [--duration 180] [--workers 2] [--nofile 512]
 *
 * Needs haproxy (a PROXY v2 upstream), dnsmasq (the UDP upstream) and openssl (certificates);
 * prlimit with --nofile. Exit 0 when every check passed, 1 (the failures listed) when not.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { execFileSync } from 'node:child_process';
import {
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { freePort } from '../test/helpers/peerProcess.js';

const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '180' },
    workers: { type: 'string', default: '1' },
    nofile: { type: 'string' },
  },
});
const DURATION_MS = Number(values.duration) * 1000;
const WORKERS = Number(values.workers);
const CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));
const failures: string[] = [];
const fail = (what: string): void => {
  failures.push(what);
  console.log(`FAIL ${what}`);
};
const counts = new Map<string, number>();
const count = (key: string): void => {
  counts.set(key, (counts.get(key) ?? 0) + 1);
};
const children: ChildProcess[] = [];
const dir = mkdtempSync(join(tmpdir(), 'l4proxy-soak-'));
// Whatever ends the script (a failed start included), the peers it started go with it.
process.on('exit', () => {
  for (const child of children) child.kill();
  rmSync(dir, { recursive: true, force: true });
});

/** Runs `command` in the background, killed (by its PID) at the end. */
function background(command: string, args: readonly string[]): ChildProcess {
  const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  child.on('error', (err) => {
    fail(`${command}: ${err.message}`);
  });
  children.push(child);
  return child;
}

async function echoServer(secure?: { cert: Buffer; key: Buffer }): Promise<number> {
  const serve = (socket: net.Socket): void => {
    socket.on('error', () => undefined);
    socket.pipe(socket);
  };
  const server = secure
    ? tls.createServer({ ...secure, allowHalfOpen: true }, serve)
    : net.createServer({ allowHalfOpen: true }, serve);
  server.on('error', () => undefined);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  server.unref();
  return (server.address() as net.AddressInfo).port;
}

/** Waits (bounded) until something accepts TCP on `port`. */
async function accepting(port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.destroy();
        resolve(true);
      });
      socket.on('error', () => {
        resolve(false);
      });
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`nothing accepts on ${port}`);
}

// ---- peers ----
const certFile = join(dir, 'cert.pem');
const keyFile = join(dir, 'key.pem');
execFileSync(
  'openssl',
  [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '30',
    '-subj',
    '/CN=localhost',
    '-addext',
    'subjectAltName=DNS:localhost',
    '-keyout',
    keyFile,
    '-out',
    certFile,
  ],
  { stdio: 'ignore' },
);
const cert = readFileSync(certFile);
const key = readFileSync(keyFile);
const echo = await echoServer();
const tlsEcho = await echoServer({ cert, key });
const haproxyPort = await freePort();
writeFileSync(
  join(dir, 'haproxy.cfg'),
  [
    'global',
    '  maxconn 4000',
    'defaults',
    '  mode tcp',
    '  timeout connect 5s',
    '  timeout client 60s',
    '  timeout server 60s',
    'frontend f',
    `  bind 127.0.0.1:${haproxyPort} accept-proxy`,
    '  default_backend b',
    'backend b',
    `  server s1 127.0.0.1:${echo}`,
    '',
  ].join('\n'),
);
background('haproxy', ['-db', '-f', join(dir, 'haproxy.cfg')]);
const dnsPort = await freePort('127.0.0.1', 'udp');
background('dnsmasq', [
  '--no-daemon',
  `--port=${dnsPort}`,
  '--listen-address=127.0.0.1',
  '--bind-interfaces',
  '--no-resolv',
  '--no-hosts',
  '--conf-file=/dev/null',
  '--pid-file=',
  '--user=root',
  '--address=/soak.test/10.0.0.1',
]);
await accepting(haproxyPort);

// ---- the command ----
const port = (name: string): string => `127.0.0.1:${ports[name]}`;
const names = ['echo', 'hostile', 'tlsTerm', 'tlsOrig', 'sni', 'pp2', 'ppIn', 'tunnel'] as const;
const ports: Record<string, number> = {};
for (const name of [...names, 'metrics', 'admin']) ports[name] = await freePort();
ports.dns = await freePort('127.0.0.1', 'udp');
const configFile = join(dir, 'l4proxy.json');
const tcp = (name: string, upstream: number, extra: object = {}): object => ({
  name,
  protocol: 'tcp',
  listen: port(name),
  upstreams: [{ id: 'a', host: '127.0.0.1', port: upstream }],
  ...extra,
});
const config = (generation: number): object => ({
  listeners: [
    tcp('echo', echo, { idleTimeout: 30_000 + generation }),
    tcp('hostile', echo, {
      maxConnections: 200,
      idleTimeout: 5000,
      perClient: { maxConnections: 150 },
    }),
    tcp('tlsTerm', echo, { terminateTls: { certFile, keyFile, handshakeTimeout: 3000 } }),
    tcp('tlsOrig', tlsEcho, { tls: { caFile: certFile, servername: 'localhost' } }),
    tcp('sni', tlsEcho, {
      sni: { timeout: 3000 },
      routes: [{ serverName: 'localhost', group: 'a' }],
    }),
    tcp('pp2', haproxyPort, { proxyProtocol: 'v2' }),
    tcp('ppIn', echo, { acceptProxyProtocol: { trusted: ['127.0.0.1/32'], timeout: 3000 } }),
    {
      name: 'dns',
      protocol: 'udp',
      listen: port('dns'),
      maxResponses: 1,
      idleTimeout: 5000,
      upstreams: [{ host: '127.0.0.1', port: dnsPort }],
    },
    {
      name: 'tunnel',
      protocol: 'tunnel',
      listen: port('tunnel'),
      upstreams: [{ host: '127.0.0.1', port: echo }],
    },
  ],
  metrics: port('metrics'),
  admin: port('admin'),
  workers: WORKERS,
});
writeFileSync(configFile, JSON.stringify(config(0)));
const argv = [CLI, '--config', configFile, '--status-interval', '0'];
const wrapper = values.nofile === undefined ? [] : ['prlimit', `--nofile=${values.nofile}`, '--'];
const proxy = spawn(
  wrapper[0] ?? process.execPath,
  [...wrapper.slice(1), ...(wrapper.length > 0 ? [process.execPath] : []), ...argv],
  {
    stdio: ['ignore', 'pipe', 'pipe'],
  },
);
children.push(proxy);
const opsLines: Record<string, unknown>[] = [];
let accessLines = 0;
createInterface({ input: proxy.stdout }).on('line', () => accessLines++);
createInterface({ input: proxy.stderr }).on('line', (line) => {
  try {
    opsLines.push(JSON.parse(line) as Record<string, unknown>);
  } catch {
    fail(`a stderr line that is not JSON: ${line}`);
  }
});
let exitCode: number | string | undefined;
proxy.on('exit', (code, signal) => (exitCode = code ?? signal ?? -1));
for (let i = 0; i < 600 && !opsLines.some((l) => l.msg === 'ready'); i++) await sleep(100);
if (!opsLines.some((l) => l.msg === 'ready'))
  throw new Error(`not ready: ${JSON.stringify(opsLines)}`);

const admin = async (path: string, method = 'GET'): Promise<unknown> => {
  // One retry: a keep-alive connection the server closes as it is reused (a client's race).
  for (let attempt = 0; ; attempt++)
    try {
      const response = await fetch(`http://${port('admin')}${path}`, { method });
      return response.headers.get('content-type')?.includes('json')
        ? await response.json()
        : await response.text();
    } catch (err) {
      if (attempt > 0) throw err;
    }
};
/** The command's processes: the primary and, with --workers, its children. */
const pids = (): number[] => {
  const all = [proxy.pid!];
  for (const entry of readdirSync('/proc'))
    if (/^\d+$/.test(entry))
      try {
        const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
        if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === proxy.pid)
          all.push(Number(entry));
      } catch {
        // Gone.
      }
  return all;
};
const fds = (): number =>
  pids().reduce((sum, pid) => sum + readdirSync(`/proc/${pid}/fd`).length, 0);
const rssKiB = (): number =>
  pids().reduce(
    (sum, pid) =>
      sum + Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0),
    0,
  );
type Stats = { listeners: Record<string, { stats: Record<string, unknown> }> };
const stats = async (): Promise<Stats> => (await admin('/stats')) as Stats;
const active = (s: Stats): Record<string, number> =>
  Object.fromEntries(
    Object.entries(s.listeners).map(([name, l]) => [
      name,
      Number(l.stats.downstream_cx_active ?? l.stats.downstream_sess_active ?? 0),
    ]),
  );

await sleep(1000);
const idleFds = fds();
const idleRss = rssKiB();
console.log(`ready: pids ${pids().join(' ')}, ${idleFds} fds, RSS ${idleRss} KiB`);

// ---- clients ----
const deadline = Date.now() + DURATION_MS;
const payload = (n: number): Buffer => Buffer.alloc(n, 'x');
/** One echo exchange over `socket` once `ready`; resolves true when every byte came back. */
function exchange(socket: net.Socket, size: number, first?: Buffer): Promise<boolean> {
  return new Promise((resolve) => {
    let got = 0;
    const timer = setTimeout(() => {
      finish(false);
    }, 15_000);
    const finish = (ok: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    socket.on('error', () => {
      finish(false);
    });
    socket.on('close', () => {
      finish(got === size);
    });
    socket.on('data', (chunk: Buffer) => {
      got += chunk.length;
      if (got >= size) {
        socket.end();
        finish(got === size);
      }
    });
    socket.write(Buffer.concat([first ?? Buffer.alloc(0), payload(size)]));
  });
}
const normal: Record<string, () => Promise<boolean>> = {
  echo: () =>
    exchange(net.connect(ports.echo!, '127.0.0.1'), 1 + Math.floor(Math.random() * 65536)),
  tlsTerm: () =>
    exchange(
      tls.connect({ port: ports.tlsTerm!, host: '127.0.0.1', ca: cert, servername: 'localhost' }),
      4096,
    ),
  tlsOrig: () => exchange(net.connect(ports.tlsOrig!, '127.0.0.1'), 4096),
  sni: () =>
    exchange(
      tls.connect({ port: ports.sni!, host: '127.0.0.1', ca: cert, servername: 'localhost' }),
      4096,
    ),
  pp2: () => exchange(net.connect(ports.pp2!, '127.0.0.1'), 4096),
  ppIn: () =>
    exchange(
      net.connect(ports.ppIn!, '127.0.0.1'),
      100,
      Buffer.from('PROXY TCP4 10.1.2.3 10.1.2.4 5555 80\r\n'),
    ),
  tunnel: async () => {
    const socket = net.connect(ports.tunnel!, '127.0.0.1');
    socket.on('error', () => undefined);
    socket.write(`CONNECT 127.0.0.1:${echo} HTTP/1.1\r\nHost: 127.0.0.1:${echo}\r\n\r\n`);
    const head = await new Promise<string>((resolve) => {
      let text = '';
      const onData = (chunk: Buffer): void => {
        text += chunk.toString('latin1');
        if (text.includes('\r\n\r\n')) {
          socket.off('data', onData);
          resolve(text);
        }
      };
      socket.on('data', onData);
      socket.on('close', () => {
        resolve(text);
      });
      // An answer that never comes is a failure, not a stall of the soak.
      setTimeout(() => {
        resolve(text);
      }, 15_000).unref();
    });
    if (!head.startsWith('HTTP/1.1 200')) {
      socket.destroy();
      return false;
    }
    return exchange(socket, 4096);
  },
  // As a stub resolver: three tries, 1.5 s apart (a datagram may be lost under the floods).
  dns: () =>
    new Promise((resolve) => {
      const socket = dgram.createSocket('udp4');
      const id = Math.floor(Math.random() * 65536);
      const query = Buffer.concat([
        Buffer.from([id >> 8, id & 255, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
        Buffer.from([4, ...Buffer.from('soak'), 4, ...Buffer.from('test'), 0, 0, 1, 0, 1]),
      ]);
      let tries = 0;
      let timer: NodeJS.Timeout | undefined;
      const finish = (ok: boolean): void => {
        clearTimeout(timer);
        socket.close();
        if (ok && tries > 1) count('dns retried');
        resolve(ok);
      };
      const send = (): void => {
        if (++tries > 3) {
          finish(false);
          return;
        }
        socket.send(query, ports.dns, '127.0.0.1');
        timer = setTimeout(send, 1500);
      };
      socket.on('error', () => {
        finish(false);
      });
      socket.on('message', (answer) => {
        finish(answer.readUInt16BE(0) === id);
      });
      send();
    }),
};
/** Hostile clients: each returns once its harm is done (or bounded). */
const hostile: Record<string, () => Promise<undefined>> = {
  reset: async () => {
    const socket = net.connect(
      ports[['hostile', 'tlsTerm', 'pp2', 'tlsOrig'][Math.floor(Math.random() * 4)]!]!,
      '127.0.0.1',
    );
    socket.on('error', () => undefined);
    await sleep(Math.random() * 50);
    if (Math.random() < 0.5) socket.write(payload(Math.floor(Math.random() * 10_000)));
    await sleep(Math.random() * 50);
    socket.resetAndDestroy();
  },
  halfOpen: async () => {
    const socket = net.connect({ port: ports.hostile!, host: '127.0.0.1', allowHalfOpen: true });
    socket.on('error', () => undefined);
    socket.end(payload(1000));
    await sleep(2000);
    socket.destroy();
  },
  neverReads: async () => {
    const socket = net.connect(ports.hostile!, '127.0.0.1');
    socket.on('error', () => undefined);
    socket.pause();
    for (let i = 0; i < 64 && socket.write(payload(65536)); i++);
    await sleep(3000);
    socket.destroy();
  },
  slowloris: async () => {
    const socket = net.connect(ports[Math.random() < 0.5 ? 'tlsTerm' : 'sni']!, '127.0.0.1');
    socket.on('error', () => undefined);
    const hello = Buffer.from('160301020001', 'hex');
    for (const byte of hello) {
      if (socket.destroyed) break;
      socket.write(Buffer.from([byte]));
      await sleep(500);
    }
    socket.destroy();
  },
  garbage: async () => {
    const target = Math.random() < 0.5 ? 'ppIn' : 'tlsTerm';
    const socket = net.connect(ports[target]!, '127.0.0.1');
    socket.on('error', () => undefined);
    socket.write(
      target === 'ppIn'
        ? Buffer.concat([Buffer.from('0d0a0d0a000d0a515549540a2111ffff', 'hex'), payload(40)])
        : Buffer.from('1703030010' + 'ab'.repeat(16), 'hex'),
    );
    await sleep(200);
    socket.destroy();
  },
  udpFlood: async () => {
    const socket = dgram.createSocket('udp4');
    socket.on('error', () => undefined);
    // Malformed QUIC Initials: a long header, version 1, random bytes.
    for (let i = 0; i < 200; i++) {
      const datagram = Buffer.alloc(1200, Math.floor(Math.random() * 256));
      datagram[0] = 0xc3;
      datagram.writeUInt32BE(1, 1);
      socket.send(datagram, ports.dns, '127.0.0.1');
    }
    await sleep(100);
    socket.close();
  },
  storm: async () => {
    const sockets = Array.from({ length: 250 }, () => {
      const socket = net.connect(ports.hostile!, '127.0.0.1');
      socket.on('error', () => undefined);
      return socket;
    });
    await sleep(1000);
    for (const socket of sockets) socket.destroy();
  },
};

async function loop(
  kind: string,
  run: () => Promise<boolean | undefined>,
  concurrency: number,
): Promise<void> {
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (Date.now() < deadline) {
        running.set(kind, (running.get(kind) ?? 0) + 1);
        const ok = await run().catch(() => false);
        running.set(kind, (running.get(kind) ?? 0) - 1);
        if (ok === true) count(`${kind} ok`);
        else if (ok === false) count(`${kind} failed`);
        else count(`${kind} runs`);
      }
    }),
  );
}

/** Clients of each kind under way (a kind that never returns is named). */
const running = new Map<string, number>();
let generation = 0;
const operator = async (): Promise<void> => {
  for (let round = 0; Date.now() < deadline; round++) {
    await sleep(5000);
    if (round % 3 === 2) {
      writeFileSync(configFile, '{"listeners": [');
      proxy.kill('SIGHUP');
      await sleep(500);
      writeFileSync(configFile, JSON.stringify(config(generation)));
      count('reload invalid');
    } else if (round % 3 === 1) {
      writeFileSync(configFile, JSON.stringify(config(++generation)));
      proxy.kill('SIGHUP');
      count('reload valid');
    } else {
      await admin('/upstreams/hostile/a/drain', 'POST');
      await sleep(1000);
      await admin('/upstreams/hostile/a/enable', 'POST');
      count('admin drain');
    }
  }
};

const traffic = [
  ...Object.entries(normal).map(([kind, run]) => loop(kind, run, kind === 'echo' ? 4 : 2)),
  ...Object.entries(hostile).map(([kind, run]) => loop(kind, run, kind === 'storm' ? 1 : 2)),
  operator(),
];
const progress = setInterval(() => {
  console.log(
    `${Math.round((deadline - Date.now()) / 1000)} s left: ${fds()} fds, RSS ${rssKiB()} KiB`,
  );
}, 15_000);
const stalled = await Promise.race([
  Promise.all(traffic).then(() => false),
  sleep(DURATION_MS + 60_000).then(() => true),
]);
if (stalled)
  fail(
    `clients still waiting a minute after the end: ${JSON.stringify([...running].filter(([, n]) => n > 0))}`,
  );
clearInterval(progress);
console.log([...counts].map(([k, v]) => `${k} ${v}`).join(', '));

// ---- back to idle ----
let last: Stats | undefined;
for (let i = 0; i < 120; i++) {
  last = await stats();
  if (Object.values(active(last)).every((n) => n === 0)) break;
  await sleep(500);
}
const still = Object.entries(active(last!)).filter(([, n]) => n > 0);
if (still.length > 0) fail(`still active after 60 s: ${JSON.stringify(still)}`);
await sleep(1000);
const endFds = fds();
const endRss = rssKiB();
console.log(
  `idle again: ${endFds} fds (at start ${idleFds}), RSS ${endRss} KiB (at start ${idleRss})`,
);
if (endFds > idleFds + 2 * WORKERS + 2) {
  fail(`descriptors: ${endFds} now, ${idleFds} idle at start`);
  // Which sockets: by protocol, state and local port (ss names the process's).
  for (const protocol of ['-tanp', '-uanp']) {
    const lines = execFileSync('ss', [protocol], { encoding: 'utf8', maxBuffer: 1 << 28 })
      .split('\n')
      .filter((line) => pids().some((pid) => line.includes(`pid=${pid},`)));
    const byKind = new Map<string, number>();
    for (const line of lines) {
      const [state, , , local, peer] = line.split(/\s+/);
      const kind = `${protocol} ${state} ${local} -> ${peer?.replace(/:\d+$/, ':*')}`;
      byKind.set(kind, (byKind.get(kind) ?? 0) + 1);
    }
    console.log([...byKind].sort((a, b) => b[1] - a[1]).slice(0, 12));
  }
  const types = new Map<string, number>();
  for (const pid of pids())
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      let target = '?';
      try {
        target = readlinkSync(`/proc/${pid}/fd/${fd}`).replace(/\d+/g, 'N');
      } catch {
        // Closed meanwhile.
      }
      types.set(target, (types.get(target) ?? 0) + 1);
    }
  console.log([...types]);
  console.log(JSON.stringify(last!.listeners.dns?.stats).slice(0, 1500));
}
for (const [kind] of Object.entries(normal)) {
  const failed = counts.get(`${kind} failed`) ?? 0;
  if (failed > 0) fail(`${kind}: ${failed} normal client(s) did not get their bytes back`);
}
// Counters balance: every accepted connection closed with a reason; echo bytes in = out.
for (const [name, { stats: s }] of Object.entries(last!.listeners)) {
  if (s.close_reasons === undefined) continue;
  const closed = Object.values(s.close_reasons as Record<string, number>).reduce(
    (a, b) => a + b,
    0,
  );
  const total = Number(s.downstream_cx_total);
  if (closed !== total - Number(s.downstream_cx_active))
    fail(`${name}: ${total} accepted, ${closed} closed by reason`);
}
const echoStats = last!.listeners.echo!.stats;
if (echoStats.downstream_cx_rx_bytes_total !== echoStats.downstream_cx_tx_bytes_total)
  fail(
    `echo: ${String(echoStats.downstream_cx_rx_bytes_total)} bytes in, ${String(echoStats.downstream_cx_tx_bytes_total)} out`,
  );
const metrics = String(await admin('/metrics'));
if (!/l4proxy_tcp_downstream_cx_active\{[^}]*listener="echo"[^}]*\} 0/.test(metrics))
  fail('/metrics: the echo listener is not idle');
const errors = opsLines.filter(
  (l) => Number(l.level) >= 50 && l.msg !== 'reload refused, keeping the running configuration',
);
const byMsg = new Map<string, number>();
for (const line of opsLines.filter((l) => Number(l.level) >= 40))
  byMsg.set(String(line.msg), (byMsg.get(String(line.msg)) ?? 0) + 1);
console.log(`warn and error lines: ${JSON.stringify([...byMsg])}; access lines ${accessLines}`);
if (errors.length > 0) console.log(`error lines to judge: ${JSON.stringify(errors.slice(0, 10))}`);
if (exitCode !== undefined) fail(`the command exited (${exitCode}) during the soak`);
proxy.kill('SIGTERM');
for (let i = 0; i < 600 && exitCode === undefined; i++) await sleep(100);
if (exitCode !== 0) fail(`exit code after SIGTERM: ${String(exitCode)}`);
for (const child of children) child.kill();
rmSync(dir, { recursive: true, force: true });
console.log(
  failures.length === 0 ? 'soak: every check passed' : `soak: ${failures.length} failure(s)`,
);
process.exit(failures.length === 0 ? 0 : 1);
