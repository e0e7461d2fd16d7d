import assert from 'node:assert/strict';
import type { RemoteInfo } from 'node:dgram';
import dns from 'node:dns';
import http2 from 'node:http2';
import { once } from 'node:events';
import type { TestContext } from 'node:test';
import { describe, test } from 'node:test';
import { InvalidOptionError, TunnelServer } from '../../src/index.js';
import { curlTunnel } from '../helpers/curl.js';
import { connect, readAll, socketServer, waitFor, withTimeout } from '../helpers/net.js';
import type { TestServer } from '../helpers/net.js';
import { startNginx } from '../helpers/nginx.js';
import { freePort } from '../helpers/peerProcess.js';
import { tool } from '../helpers/tools.js';
import { closeSocket, hasIpv6Loopback, udpSocket } from '../udp/helpers.js';

type Options = NonNullable<ConstructorParameters<typeof TunnelServer>[0]>;

/** A TCP target on `host` that answers each connection with the address it came from. */
function whoAmI(host: string): Promise<TestServer> {
  return socketServer((socket) => {
    socket.end(socket.remoteAddress ?? '');
  }, host);
}

/** A UDP target on `host` answering each datagram with the address it came from. */
async function udpWhoAmI(host: string): Promise<{ port: number; close(): Promise<void> }> {
  const socket = await udpSocket(host);
  socket.on('message', (_msg: Buffer, rinfo: RemoteInfo) => {
    socket.send(rinfo.address, rinfo.port, rinfo.address);
  });
  return { port: socket.address().port, close: () => closeSocket(socket) };
}

async function ipv6(t: TestContext): Promise<boolean> {
  if (await hasIpv6Loopback()) return true;
  t.skip('no IPv6 loopback (::1) on this machine');
  return false;
}

async function tunnelServer(t: TestContext, options: Options) {
  const server = new TunnelServer(options);
  const { port } = await server.listen({ port: 0, host: '127.0.0.1' });
  t.after(() => server.close());
  return { server, port };
}

/** An authority for `host` and `port` (an IPv6 address in brackets). */
function authority(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${String(port)}`;
}

/** CONNECT to `target` through the server on `port`: the status and what the target sent. */
async function tunnelTo(port: number, target: string): Promise<{ status: number; body: string }> {
  const socket = await connect(port);
  const reply = readAll(socket, 5_000);
  socket.end(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
  const text = (await reply).toString();
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
  return { status, body: text.slice(text.indexOf('\r\n\r\n') + 4) };
}

/** A DATAGRAM capsule (type 0, Context ID 0) carrying `payload` (under 63 bytes). */
function capsule(payload: string): Buffer {
  const body = Buffer.from(payload);
  return Buffer.concat([Buffer.from([0x00, body.length + 1, 0x00]), body]);
}

/**
 * CONNECT-UDP (node:http2: no independent client is installed, see udpStreamEnd.test.ts) to
 * `host`:`targetPort` through the server on `port`; sends one datagram and returns the payload
 * of the first datagram back (or `status <n>` when not answered 200).
 */
async function udpThrough(
  t: TestContext,
  port: number,
  host: string,
  targetPort: number,
): Promise<string> {
  const session = http2.connect(`http://127.0.0.1:${String(port)}`);
  session.on('error', () => undefined);
  t.after(() => {
    session.destroy();
  });
  await withTimeout(once(session, 'remoteSettings'), 5_000, 'the server SETTINGS');
  const stream = session.request({
    ':method': 'CONNECT',
    ':protocol': 'connect-udp',
    ':scheme': 'http',
    ':authority': `127.0.0.1:${String(port)}`,
    ':path': `/.well-known/masque/udp/${encodeURIComponent(host)}/${String(targetPort)}/`,
    'capsule-protocol': '?1',
  });
  stream.on('error', () => undefined);
  const [headers] = await withTimeout(
    waitFor<[http2.IncomingHttpHeaders]>(stream, 'response'),
    5_000,
    'the response',
  );
  const status = Number(headers[':status']);
  if (status !== 200) return `status ${String(status)}`;
  const [chunk] = await withTimeout(
    (async () => {
      stream.write(capsule('x'));
      return waitFor<[Buffer]>(stream, 'data');
    })(),
    5_000,
    'a datagram back',
  );
  // Type 0, a one-byte length, Context ID 0, then the payload (the echo is one capsule).
  stream.close();
  return chunk.subarray(3).toString();
}

describe('TunnelServer sourceAddress', () => {
  test('takes an IP literal or one per family; anything else is refused, naming the option', async () => {
    for (const value of [[], ['127.0.0.1', '127.0.0.2'], ['::1', '::2'], 'localhost', 4]) {
      assert.throws(
        () => new TunnelServer({ sourceAddress: value as string[] }),
        (err: unknown) => err instanceof InvalidOptionError && err.option === 'sourceAddress',
        JSON.stringify(value),
      );
    }
    await new TunnelServer({ sourceAddress: ['127.0.0.2', '::1'] }).close();
  });

  test('a CONNECT tunnel leaves from sourceAddress', async (t) => {
    const target = await whoAmI('127.0.0.1');
    t.after(() => target.close());
    const { server, port } = await tunnelServer(t, {
      upstreams: [{ host: '127.0.0.1', port: target.port }],
      sourceAddress: '127.0.0.2',
    });
    assert.deepEqual(await tunnelTo(port, authority('127.0.0.1', target.port)), {
      status: 200,
      body: '127.0.0.2',
    });
    assert.equal(server.stats().tunnel_refused_reasons.connect_failed, 0);
  });

  test('one per family: each target is dialled from the source of its family', async (t) => {
    if (!(await ipv6(t))) return;
    const v4 = await whoAmI('127.0.0.1');
    t.after(() => v4.close());
    const v6 = await whoAmI('::1');
    t.after(() => v6.close());
    const { port } = await tunnelServer(t, {
      upstreams: [
        { host: '127.0.0.1', port: v4.port },
        { host: '::1', port: v6.port },
      ],
      sourceAddress: ['127.0.0.2', '::1'],
    });
    assert.equal((await tunnelTo(port, authority('127.0.0.1', v4.port))).body, '127.0.0.2');
    assert.equal((await tunnelTo(port, authority('::1', v6.port))).body, '::1');
  });

  test('a host name with a source of each family: the family it resolves to, denyTargets kept', async (t) => {
    // Resolved as the server resolves it (dns.lookup, any family, ADDRCONFIG: the first).
    const { address, family } = await dns.promises.lookup('localhost', { hints: dns.ADDRCONFIG });
    if (!(await ipv6(t))) return;
    const target = await whoAmI(address);
    t.after(() => target.close());
    const base: Options = {
      route: 'direct',
      authorize: () => true,
      sourceAddress: ['127.0.0.2', '::1'],
    };
    const open = await tunnelServer(t, { ...base, denyTargets: ['10.0.0.0/8'] });
    assert.deepEqual(await tunnelTo(open.port, `localhost:${String(target.port)}`), {
      status: 200,
      body: family === 6 ? '::1' : '127.0.0.2',
    });
    // The name is resolved before the bind, through the lookup that leaves out denied addresses.
    const closed = await tunnelServer(t, { ...base, denyTargets: ['127.0.0.0/8', '::1/128'] });
    assert.equal((await tunnelTo(closed.port, `localhost:${String(target.port)}`)).status, 403);
    assert.equal(closed.server.stats().tunnel_refused_reasons.target_denied, 1);
  });

  test('health checks of its upstreams leave from sourceAddress too', async (t) => {
    const seen: string[] = [];
    let twoProbes: () => void = () => undefined;
    const probed = new Promise<void>((resolve) => (twoProbes = resolve));
    const target = await socketServer((socket) => {
      seen.push(socket.remoteAddress ?? '');
      if (seen.length === 2) twoProbes();
      socket.destroy();
    });
    t.after(() => target.close());
    await tunnelServer(t, {
      upstreams: [{ host: '127.0.0.1', port: target.port }],
      healthCheck: { interval: 50, timeout: 1_000 },
      sourceAddress: '127.0.0.2',
    });
    await withTimeout(probed, 5_000, 'two health probes');
    assert.deepEqual(seen.slice(0, 2), ['127.0.0.2', '127.0.0.2']);
  });

  test('a source address that cannot be bound is a failed dial: 502 connect_failed', async (t) => {
    const target = await whoAmI('127.0.0.1');
    t.after(() => target.close());
    const { server, port } = await tunnelServer(t, {
      upstreams: [{ host: '127.0.0.1', port: target.port }],
      // TEST-NET-1: not an address of this machine (EADDRNOTAVAIL).
      sourceAddress: '192.0.2.1',
    });
    assert.equal((await tunnelTo(port, authority('127.0.0.1', target.port))).status, 502);
    assert.equal(server.stats().tunnel_refused_reasons.connect_failed, 1);
  });

  test('CONNECT-UDP: the session socket is bound to the source of the target family', async (t) => {
    if (!(await ipv6(t))) return;
    const v4 = await udpWhoAmI('127.0.0.1');
    t.after(() => v4.close());
    const v6 = await udpWhoAmI('::1');
    t.after(() => v6.close());
    const { server, port } = await tunnelServer(t, {
      upstreams: [
        { host: '127.0.0.1', port: v4.port },
        { host: '::1', port: v6.port },
      ],
      sourceAddress: ['127.0.0.2', '::1'],
    });
    assert.equal(await udpThrough(t, port, '127.0.0.1', v4.port), '127.0.0.2');
    assert.equal(await udpThrough(t, port, '::1', v6.port), '::1');
    const single = await tunnelServer(t, {
      upstreams: [{ host: '127.0.0.1', port: v4.port }],
      sourceAddress: '127.0.0.2',
    });
    assert.equal(await udpThrough(t, single.port, '127.0.0.1', v4.port), '127.0.0.2');
    assert.equal(server.stats().tunnel_refused_reasons.connect_failed, 0);
    // A source that cannot be bound: 502, as a TCP target.
    const unbound = await tunnelServer(t, {
      upstreams: [{ host: '127.0.0.1', port: v4.port }],
      sourceAddress: '192.0.2.1',
    });
    assert.equal(await udpThrough(t, unbound.port, '127.0.0.1', v4.port), 'status 502');
    assert.equal(unbound.server.stats().tunnel_refused_reasons.connect_failed, 1);
  });

  test('curl through the server reaches nginx allowing only 127.0.0.2', async (t) => {
    const curl = tool(t, 'curl');
    if (curl === undefined || tool(t, 'nginx') === undefined) return;
    const nginxPort = await freePort();
    // A stream server answering as HTTP, to connections from 127.0.0.2 only (ngx_stream_access).
    const nginx = await startNginx(
      `server { listen 127.0.0.1:${nginxPort}; allow 127.0.0.2; deny all; ` +
        `return "HTTP/1.0 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\nfrom $remote_addr"; }`,
    );
    t.after(() => nginx.stop());
    const url = `http://127.0.0.1:${String(nginxPort)}/`;
    const upstreams = [{ host: '127.0.0.1', port: nginxPort }];
    const pinned = await tunnelServer(t, { upstreams, sourceAddress: '127.0.0.2' });
    const through = await curlTunnel(curl, `http://127.0.0.1:${String(pinned.port)}`, url);
    assert.equal(through.stdout, 'from 127.0.0.2 200', through.stderr);
    // Without it, the system's choice (127.0.0.1): nginx closes the connection unanswered.
    const unpinned = await tunnelServer(t, { upstreams });
    const refused = await curlTunnel(curl, `http://127.0.0.1:${String(unpinned.port)}`, url);
    assert.notEqual(refused.code, 0);
    assert.doesNotMatch(refused.stdout, /from/);
  });
});
