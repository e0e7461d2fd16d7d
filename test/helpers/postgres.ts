import { execFile } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { TestContext } from 'node:test';
import { freePort } from './peerProcess.js';
import { requireTools, tool } from './tools.js';

const run = promisify(execFile);

/** Debian's server binaries (`initdb`, `pg_ctl`, `postgres`), newest major version first. */
const SERVER_DIRS = [
  '/usr/lib/postgresql/17/bin',
  '/usr/lib/postgresql/16/bin',
  '/usr/lib/postgresql/15/bin',
];

/** The unprivileged account a root test runs the server as (PostgreSQL refuses to run as root). */
const RUN_AS = 'nobody';
const NOBODY_UID = 65_534;

/** A PostgreSQL cluster a test started on 127.0.0.1:`port` (trust auth, superuser `postgres`). */
export interface PostgresCluster {
  readonly port: number;
  /** Runs `psql -Atc sql` against this cluster directly; resolves with its trimmed output. */
  query(sql: string, database?: string): Promise<string>;
  /** `pg_ctl stop -m immediate`, then removes the data directory. */
  stop(): Promise<void>;
}

/** The directory holding `initdb` and `pg_ctl`, or skips the test (fails under REQUIRE_TOOLS). */
export function postgresBin(t: TestContext): string | undefined {
  const dir = SERVER_DIRS.find((candidate) => existsSync(join(candidate, 'initdb')));
  if (dir !== undefined) return dir;
  const reason = 'PostgreSQL server binaries are not installed (apt-get install postgresql)';
  if (requireTools) throw new Error(`L4PROXY_REQUIRE_TOOLS=1 but ${reason}`);
  t.skip(reason);
  return undefined;
}

/** What a test needs to start clusters and talk to them. */
export interface PostgresTools {
  /** The directory holding `initdb` and `pg_ctl`. */
  readonly bin: string;
  readonly psql: string;
}

/** psql and the server binaries, or skips the test (fails under REQUIRE_TOOLS). */
export function postgresTools(t: TestContext): PostgresTools | undefined {
  const psql = tool(t, 'psql');
  if (psql === undefined) return undefined;
  const bin = postgresBin(t);
  return bin === undefined ? undefined : { bin, psql };
}

/**
 * Runs one `sql` command with `psql -X -At` as user postgres on 127.0.0.1:`port` (a cluster or a
 * proxy in front of one), with the libpq `conninfo` keywords added (dbname, sslmode, ...);
 * resolves with its trimmed output.
 */
export async function psqlVia(
  psql: string,
  port: number,
  conninfo: string,
  sql: string,
): Promise<string> {
  const target = `host=127.0.0.1 port=${port} user=postgres connect_timeout=10 ${conninfo}`;
  const { stdout } = await run(psql, ['-X', '-At', target, '-c', sql], { timeout: 15_000 });
  return stdout.trim();
}

/**
 * TLS for a cluster: `ssl = on` with this certificate and key (PEM), and `hostssl` rules only, so
 * the server refuses any TCP client that did not negotiate TLS.
 */
export interface PostgresTls {
  readonly cert: string;
  readonly key: string;
}

/** A cluster with `databases` for one test: {@link startPostgres}, stopped by the test's `after`. */
export async function testCluster(
  t: TestContext,
  tools: PostgresTools,
  databases: readonly string[],
  tls?: PostgresTls,
): Promise<PostgresCluster> {
  const cluster = await startPostgres(tools.bin, tools.psql, databases, tls);
  t.after(() => cluster.stop());
  return cluster;
}

/** The certificate files (the key owned by the server user, 0600, as it demands), `hostssl` only. */
function serveTls(dir: string, data: string, tls: PostgresTls): string[] {
  const cert = join(dir, 'server.crt');
  const key = join(dir, 'server.key');
  writeFileSync(cert, tls.cert);
  writeFileSync(key, tls.key, { mode: 0o600 });
  if (process.getuid?.() === 0) {
    chownSync(cert, NOBODY_UID, NOBODY_UID);
    chownSync(key, NOBODY_UID, NOBODY_UID);
  }
  // Over TCP, TLS or nothing: a client (or proxy) in clear is refused by the server itself.
  writeFileSync(
    join(data, 'pg_hba.conf'),
    [
      'local all all trust',
      'hostssl all all 127.0.0.1/32 trust',
      'hostnossl all all 127.0.0.1/32 reject',
      '',
    ].join('\n'),
  );
  return ['-c ssl=on', `-c ssl_cert_file=${cert}`, `-c ssl_key_file=${key}`];
}

function asServerUser(command: string, args: readonly string[]): [string, string[]] {
  const root = process.getuid?.() === 0;
  return root ? ['runuser', ['-u', RUN_AS, '--', command, ...args]] : [command, [...args]];
}

/** The data directory `initdb` made for this process, per server binaries directory. */
const initialized = new Map<string, Promise<string>>();

/**
 * A fresh `initdb` data directory (never started), made once per test process: each cluster
 * starts from a copy of it. initdb took 1 to 4 s a cluster (files with up to 7 clusters); the
 * copy of its 39 MB, a tenth of that. Removed when the process exits.
 */
function initializedCluster(bin: string): Promise<string> {
  let made = initialized.get(bin);
  if (made === undefined) {
    made = (async () => {
      const dir = mkdtempSync(join(tmpdir(), 'l4proxy-pg-initdb-'));
      process.once('exit', () => {
        rmSync(dir, { recursive: true, force: true });
      });
      if (process.getuid?.() === 0) chownSync(dir, NOBODY_UID, NOBODY_UID);
      const data = join(dir, 'data');
      await run(
        ...asServerUser(join(bin, 'initdb'), [
          '-D',
          data,
          '-U',
          'postgres',
          '--auth=trust',
          '--no-sync',
          '-E',
          'UTF8',
        ]),
        { timeout: 60_000 },
      );
      return data;
    })();
    initialized.set(bin, made);
  }
  return made;
}

/**
 * A copy of the process's `initdb` cluster and `pg_ctl start`: a throwaway cluster in a temp dir owned by the server user, listening
 * on 127.0.0.1 only (its Unix socket in the same temp dir), then creates `databases`.
 */
export async function startPostgres(
  bin: string,
  psql: string,
  databases: readonly string[],
  tls?: PostgresTls,
): Promise<PostgresCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'l4proxy-pg-'));
  if (process.getuid?.() === 0) chownSync(dir, NOBODY_UID, NOBODY_UID);
  const data = join(dir, 'data');
  const log = join(dir, 'server.log');
  const port = await freePort();
  const pgCtl = (args: readonly string[]): Promise<unknown> =>
    run(...asServerUser(join(bin, 'pg_ctl'), args), { timeout: 30_000 });
  const stop = async (): Promise<void> => {
    if (existsSync(join(data, 'postmaster.pid')))
      await pgCtl(['-D', data, '-m', 'immediate', '-w', 'stop']).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  };
  const query = (sql: string, database = 'postgres'): Promise<string> =>
    psqlVia(psql, port, `dbname=${database}`, sql);
  try {
    // A copy of this process's one initdb (cp -a as the server user keeps owner and modes).
    await run(...asServerUser('cp', ['-a', await initializedCluster(bin), data]), {
      timeout: 60_000,
    });
    const settings = [
      `-p ${port}`,
      `-k ${dir}`,
      '-c listen_addresses=127.0.0.1',
      '-c fsync=off',
      '-c shared_buffers=16MB',
      '-c max_connections=20',
      ...(tls === undefined ? [] : serveTls(dir, data, tls)),
    ].join(' ');
    await pgCtl(['-D', data, '-l', log, '-o', settings, '-w', '-t', '30', 'start']);
    for (const database of databases) await query(`CREATE DATABASE ${database}`);
  } catch (error) {
    const text = existsSync(log) ? readFileSync(log, 'utf8') : '';
    await stop();
    throw new Error(`PostgreSQL did not start: ${String(error)}\n${text}`, { cause: error });
  }
  return { port, query, stop };
}
