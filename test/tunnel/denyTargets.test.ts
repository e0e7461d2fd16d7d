import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { InvalidOptionError, TunnelServer } from '../../src/index.js';
import type { TunnelSummary } from '../../src/index.js';
import { connect, readUntil } from '../helpers/net.js';

/** Encodings of this host that a check on the authority string misses. */
const LOOPBACK_SPELLINGS = [
  '2130706433',
  '127.1',
  '0x7f000001',
  '0.0.0.0',
  '[::ffff:127.0.0.1]',
  '[::ffff:7f00:1]',
  'localhost',
];

/** The ranges docs/tunneling.md recommends for a forward proxy. */
const INTERNAL = [
  '127.0.0.0/8',
  '0.0.0.0/8',
  '10.0.0.0/8',
  '172.16.0.0/12',
  '192.168.0.0/16',
  '169.254.0.0/16',
  '100.64.0.0/10',
  '::1/128',
  '::/128',
  'fe80::/10',
  'fc00::/7',
];

/** A TCP server on 127.0.0.1 counting the connections it accepts (the internal service). */
async function internalService(t: { after(fn: () => unknown): void }) {
  const accepted: string[] = [];
  const server = net.createServer((socket) => {
    accepted.push(socket.remoteAddress ?? '');
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen({ port: 0, host: '127.0.0.1' }, resolve));
  t.after(() => {
    server.close();
  });
  return { port: (server.address() as net.AddressInfo).port, accepted };
}

async function tunnelServer(
  t: { after(fn: () => unknown): void },
  options: ConstructorParameters<typeof TunnelServer>[0],
) {
  const server = new TunnelServer(options);
  const summaries: TunnelSummary[] = [];
  server.on('tunnelClose', (summary) => summaries.push(summary));
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  t.after(() => server.close());
  return { port, summaries };
}

/** The status a CONNECT to `authority` is answered with. */
async function connectStatus(port: number, authority: string): Promise<number> {
  const socket = await connect(port);
  try {
    socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
    const head = await readUntil(socket, /\r\n/, 5_000);
    return Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0);
  } finally {
    socket.destroy();
  }
}

/** The naive check a forward proxy's author writes on the authority string. */
function naiveAuthorize(request: { host: string }): boolean {
  return !['127.0.0.1', 'localhost', '::1'].includes(request.host);
}

test('a check on the authority string misses other spellings of loopback (why denyTargets exists)', async (t) => {
  const service = await internalService(t);
  const { port } = await tunnelServer(t, { route: 'direct', authorize: naiveAuthorize });
  assert.equal(await connectStatus(port, `127.0.0.1:${service.port}`), 403);
  assert.equal(await connectStatus(port, `2130706433:${service.port}`), 200);
  assert.equal(await connectStatus(port, `[::ffff:127.0.0.1]:${service.port}`), 200);
  assert.equal(service.accepted.length, 2);
});

test('denyTargets refuses every spelling of loopback with 403 target_denied, dialling nothing', async (t) => {
  const service = await internalService(t);
  const { port, summaries } = await tunnelServer(t, {
    route: 'direct',
    authorize: () => true,
    denyTargets: INTERNAL,
  });
  for (const host of LOOPBACK_SPELLINGS) {
    assert.equal(await connectStatus(port, `${host}:${service.port}`), 403, host);
  }
  assert.deepEqual(service.accepted, []);
  assert.deepEqual(
    summaries.map((s) => s.refusal),
    LOOPBACK_SPELLINGS.map(() => 'target_denied'),
  );
});

test('denyTargets is checked on the address dialled: other targets pass, a bad entry is refused', async (t) => {
  const service = await internalService(t);
  const { port } = await tunnelServer(t, {
    route: 'direct',
    authorize: () => true,
    denyTargets: ['127.0.0.2', '::1'],
  });
  assert.equal(await connectStatus(port, `127.0.0.1:${service.port}`), 200);
  assert.equal(await connectStatus(port, `127.0.0.2:${service.port}`), 403);
  // A name: its answers outside the list (127.0.0.1, not ::1) are dialled.
  assert.equal(await connectStatus(port, `localhost:${service.port}`), 200);
  assert.equal(service.accepted.length, 2);
  assert.throws(
    () => new TunnelServer({ route: 'direct', authorize: () => true, denyTargets: ['10.0.0.1/8'] }),
    (err: unknown) => err instanceof InvalidOptionError && /denyTargets\[0\]/.test(err.message),
  );
});
