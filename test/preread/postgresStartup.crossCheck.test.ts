import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import net from 'node:net';
import { test } from 'node:test';
import { postgresStartup } from '../../src/index.js';
import type { PrereadMetadata } from '../../src/index.js';
import { closeAfter, listen, withTimeout } from '../helpers/net.js';
import { tool } from '../helpers/tools.js';
import { prereadContext } from '../helpers/prereadContext.js';
import { postgresTools, testCluster } from '../helpers/postgres.js';

/*
 * The postgresStartup inspector cross-checked against libpq: psql connects with the parameters
 * below to a server that runs the inspector as the preread stage does (every byte read so far,
 * answering the requests it answers), and the user, database and application name it reads must
 * be those psql was given.
 */

const ctx = prereadContext;

/** A server that inspects each client and reports its metadata (or how inspection ended). */
async function inspectingServer(
  t: Parameters<typeof closeAfter>[0],
): Promise<{ port: number; next(): Promise<PrereadMetadata | string> }> {
  const inspect = postgresStartup();
  const results: ((value: PrereadMetadata | string) => void)[] = [];
  const server = net.createServer((socket) => {
    socket.on('error', () => undefined);
    let held = Buffer.alloc(0);
    let replies = 0;
    socket.on('data', (chunk: Buffer) => {
      held = Buffer.concat([held, chunk]);
      for (let answered = true; answered && replies < 4;) {
        answered = false;
        const verdict = inspect(held, ctx);
        if (verdict.action === 'more') return;
        if (verdict.action === 'reply') {
          socket.write(verdict.data);
          held = held.subarray(verdict.consume);
          replies++;
          answered = held.length > 0;
          if (!answered) return;
          continue;
        }
        results.shift()?.(verdict.action === 'match' ? verdict.metadata : verdict.action);
        socket.destroy();
      }
    });
  });
  const port = await listen(server);
  closeAfter(t, server);
  return {
    port,
    next: () =>
      withTimeout(
        new Promise((resolve) => {
          results.push(resolve);
        }),
        10_000,
        'psql to send its startup message',
      ),
  };
}

function psql(path: string, conninfo: string): Promise<void> {
  return new Promise((resolve) => {
    execFile(path, ['-X', '-At', conninfo, '-c', 'select 1'], { timeout: 10_000 }, () => {
      resolve();
    });
  });
}

test('psql (libpq) startup messages: the user, database and application name it was given', async (t) => {
  const psqlPath = tool(t, 'psql');
  if (psqlPath === undefined) return;
  const server = await inspectingServer(t);
  const cases: [string, PrereadMetadata][] = [
    [
      'user=alice dbname=billing application_name=nightly sslmode=disable',
      { user: 'alice', database: 'billing', applicationName: 'nightly' },
    ],
    // An SSLRequest first: the inspector answers N, libpq goes on in clear.
    ['user=bob dbname=app sslmode=prefer', { user: 'bob', database: 'app' }],
    ['user=carol sslmode=disable', { user: 'carol', database: 'carol' }],
    [
      "user=d_1 dbname='a db' application_name='with spaces' options='-c search_path=x' sslmode=prefer",
      { user: 'd_1', database: 'a db', applicationName: 'with spaces' },
    ],
  ];
  for (const [conninfo, expected] of cases) {
    const seen = server.next();
    const client = psql(
      psqlPath,
      `host=127.0.0.1 port=${server.port} connect_timeout=5 ${conninfo}`,
    );
    const metadata = await seen;
    await client;
    assert.ok(typeof metadata === 'object', `${conninfo}: ${JSON.stringify(metadata)}`);
    assert.equal(metadata.protocol, 'postgres');
    assert.equal(metadata.protocolVersion, '3.0', conninfo);
    for (const [key, value] of Object.entries(expected))
      assert.equal(metadata[key], value, `${conninfo}: ${key}`);
    if (!('applicationName' in expected))
      assert.ok(metadata.applicationName === undefined || metadata.applicationName === 'psql');
  }
});

/** A startup message (protocol 3.0) with these parameters, in this order. */
function startupMessage(parameters: readonly (readonly [string, string])[]): Buffer {
  const body = Buffer.concat([
    ...parameters.map(([name, value]) => Buffer.from(`${name}\0${value}\0`)),
    Buffer.from([0]),
  ]);
  const head = Buffer.alloc(8);
  head.writeUInt32BE(8 + body.length, 0);
  head.writeUInt32BE(0x0003_0000, 4);
  return Buffer.concat([head, body]);
}

/**
 * Sends `startup` to a real server (trust auth), then `select current_database()`: the database
 * the server opened, or its error message.
 */
function databaseOpened(port: number, startup: Buffer): Promise<string> {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  socket.write(startup);
  let held = Buffer.alloc(0);
  let ready = 0;
  let value = '';
  const result = new Promise<string>((resolve) => {
    socket.on('close', () => {
      resolve(value === '' ? 'closed' : value);
    });
    socket.on('data', (chunk: Buffer) => {
      held = Buffer.concat([held, chunk]);
      while (held.length >= 5 && held.length >= 1 + held.readUInt32BE(1)) {
        const type = String.fromCharCode(held[0] ?? 0);
        const body = held.subarray(5, 1 + held.readUInt32BE(1));
        held = held.subarray(1 + held.readUInt32BE(1));
        if (type === 'E') value = `error: ${body.toString('latin1')}`;
        if (type === 'D') value = body.toString('utf8', 6, 6 + body.readInt32BE(2));
        if (type !== 'Z') continue;
        if (++ready === 2) {
          socket.end(Buffer.from([0x58, 0, 0, 0, 4])); // Terminate
          return;
        }
        const sql = Buffer.from('select current_database()\0');
        const query = Buffer.alloc(5);
        query.write('Q');
        query.writeUInt32BE(4 + sql.length, 1);
        socket.write(Buffer.concat([query, sql]));
      }
    });
  });
  return withTimeout(result, 15_000, 'the server to answer select current_database()');
}

test('the database the inspector reads is the one a real server opens (empty, repeated)', async (t) => {
  const pg = postgresTools(t);
  if (pg === undefined) return;
  const cluster = await testCluster(t, pg, ['app']);
  const cases: [string, [string, string][]][] = [
    // The server takes an empty database as none: the user's name (as PgBouncer does).
    [
      'an empty database',
      [
        ['user', 'postgres'],
        ['database', ''],
      ],
    ],
    ['no database', [['user', 'postgres']]],
    [
      'database twice, the last one wins',
      [
        ['database', 'postgres'],
        ['user', 'postgres'],
        ['database', 'app'],
      ],
    ],
    [
      'database twice, the last one empty',
      [
        ['user', 'postgres'],
        ['database', 'app'],
        ['database', ''],
      ],
    ],
  ];
  for (const [name, parameters] of cases) {
    const startup = startupMessage(parameters);
    const verdict = postgresStartup()(startup, ctx);
    const read = verdict.action === 'match' ? verdict.metadata.database : verdict.action;
    assert.equal(read, await databaseOpened(cluster.port, startup), name);
  }
});
