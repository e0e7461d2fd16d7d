import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import type {
  L4Error,
  TcpProxyOptions,
  UpstreamCandidate,
  UpstreamTlsOptions,
} from '../../src/index.js';
import {
  closeAfter,
  connect,
  echoServer,
  listen,
  readAll,
  readUntil,
  refusedPort,
  withTimeout,
} from '../helpers/net.js';
import { startProxy } from '../helpers/proxy.js';
import type { ProxyUnderTest } from '../helpers/proxy.js';
import { freePort } from '../helpers/peerProcess.js';
import { startHaproxy } from '../helpers/haproxy.js';
import { startOpensslServer } from '../helpers/openssl.js';
import type { OpensslServer } from '../helpers/openssl.js';
import { selfSignedCert, tlsPeer } from '../helpers/tlsPeers.js';
import type { TestCert, TlsPeer } from '../helpers/tlsPeers.js';
import { issueServerAndClient, sharedPki } from '../helpers/tlsCa.js';
import { testServer } from '../helpers/testServer.js';
import { tlsRedisPerFile } from '../helpers/tlsRedis.js';
import { tool } from '../helpers/tools.js';
import { UpstreamTls } from '../../src/tls/UpstreamTls.js';

type Pki = NonNullable<Awaited<ReturnType<typeof getPki>>>;

/** One CA, a server certificate for localhost/127.0.0.1 and a client certificate per file. */
const getPki = sharedPki(issueServerAndClient);
const tlsRedis = tlsRedisPerFile(getPki);

/** A {@link tlsPeer} that the test's `after` closes. */
async function peerFor(t: TestContext, name: string, cert: TestCert): Promise<TlsPeer> {
  const peer = await tlsPeer(name, cert);
  t.after(() => peer.close());
  return peer;
}

async function proxyFor(t: TestContext, options: TcpProxyOptions): Promise<ProxyUnderTest> {
  const rig = await startProxy(options);
  t.after(() => rig.proxy.close({ drainTimeout: 0 }));
  return rig;
}

/** A proxy originating TLS to `server` (trusting the test CA, for localhost), on `relay`. */
async function originatingTo(
  t: TestContext,
  p: Pki,
  server: net.Server,
  relay: NonNullable<TcpProxyOptions['relay']>,
): Promise<ProxyUnderTest> {
  const port = await listen(server);
  closeAfter(t, server);
  return tlsProxyTo(t, p, relay, port);
}

/** A proxy on `relay` originating TLS to 127.0.0.1:`port`: the test CA, for localhost, plus `tls`. */
function tlsProxyTo(
  t: TestContext,
  p: Pki,
  relay: NonNullable<TcpProxyOptions['relay']>,
  port: number,
  tls: Partial<UpstreamTlsOptions> = {},
  extra: Partial<TcpProxyOptions> = {},
): Promise<ProxyUnderTest> {
  return proxyFor(t, {
    relay,
    upstreams: [{ host: '127.0.0.1', port }],
    ...extra,
    tls: { ca: p.ca.cert, servername: 'localhost', ...tls },
  });
}

/** One attempt per connection: a refused handshake fails it at once instead of retrying. */
const ONE_ATTEMPT = { maxConnectAttempts: 1 } as const;

function runTool(command: string, args: readonly string[], ms = 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, [...args], { timeout: ms }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${command} failed: ${stderr}${stdout}`, { cause: error }));
      else resolve(stdout);
    });
  });
}

describe('TLS origination against openssl s_server -Verify (client certificate required)', () => {
  async function sServer(t: TestContext, p: Pki): Promise<OpensslServer> {
    const peer = await startOpensslServer(p.openssl, p.server, {
      caFile: p.ca.certFile,
      verify: true,
    });
    t.after(() => peer.stop());
    return peer;
  }

  test('relays plain TCP to s_server over mutual TLS; the server sees the client certificate', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const server = await sServer(t, p);
    const rig = await proxyFor(t, {
      upstreams: [{ host: '127.0.0.1', port: server.port }],
      tls: { ca: p.ca.cert, cert: p.client.cert, key: p.client.key, servername: 'localhost' },
    });
    const client = await connect(rig.port);
    client.write('hello proxy\n');
    const text = await readUntil(client, /yxorp olleh/);
    assert.match(text, /yxorp olleh/);
    client.end();
    await readAll(client);
    const [summary] = await rig.closes(1);
    assert.equal(summary?.upstreamConnected, true);
    assert.match(server.output(), /CN ?= ?proxy-client/);
    assert.equal(rig.proxy.stats().upstream_tls_handshake, 1);
  });

  test('without a client certificate the handshake fails: upstream_tls_failed, counted', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const server = await sServer(t, p);
    const rig = await proxyFor(t, {
      upstreams: [{ host: '127.0.0.1', port: server.port }],
      maxConnectAttempts: 1,
      // TLS 1.2: the server refuses inside the handshake (1.3 refuses after the client finished).
      tls: { ca: p.ca.cert, servername: 'localhost', maxVersion: 'TLSv1.2' },
    });
    const errors: L4Error[] = [];
    rig.proxy.on('upstreamError', (_c, _u, error) => errors.push(error));
    const client = await connect(rig.port);
    await readAll(client);
    const [summary] = await rig.closes(1);
    assert.equal(summary?.reason, 'upstream_tls_failed');
    assert.equal((summary.error as L4Error | undefined)?.code, 'ERR_L4_TLS_HANDSHAKE');
    assert.deepEqual(
      errors.map((e) => e.code),
      ['ERR_L4_TLS_HANDSHAKE'],
    );
    const stats = rig.proxy.stats();
    assert.equal(stats.upstream_tls_connection_error, 1);
    assert.equal(stats.upstream_cx_connect_fail, 1);
    assert.equal(stats.close_reasons.upstream_tls_failed, 1);
    assert.match(rig.proxy.metrics(), /l4proxy_tcp_upstream_tls_connection_error_total 1/);
  });
});

test('redis-server with only its TLS port, driven by redis-cli and redis-benchmark in plain TCP', async (t) => {
  const redisCli = tool(t, 'redis-cli');
  const redisBenchmark = tool(t, 'redis-benchmark');
  if (!redisCli || !redisBenchmark) return;
  const redis = await tlsRedis(t);
  if (redis === undefined) return;
  const { port } = redis;
  // The upstream is an IP: no SNI is sent, and the certificate must name 127.0.0.1 (it does).
  const rig = await proxyFor(t, {
    upstreams: [{ host: '127.0.0.1', port }],
    tls: { ca: redis.ca },
  });
  const cli = (...args: string[]): Promise<string> =>
    runTool(redisCli, ['-h', '127.0.0.1', '-p', String(rig.port), ...args]);
  assert.equal((await cli('PING')).trim(), 'PONG');
  assert.equal((await cli('SET', 'l4proxy', 'over-tls')).trim(), 'OK');
  assert.equal((await cli('GET', 'l4proxy')).trim(), 'over-tls');
  const bench = await runTool(redisBenchmark, [
    '-h',
    '127.0.0.1',
    '-p',
    String(rig.port),
    '-n',
    '2000',
    '-c',
    '4',
    '-t',
    'set,get',
    '-q',
  ]);
  assert.match(bench, /SET: /);
  assert.match(bench, /GET: /);
  const stats = rig.proxy.stats();
  assert.ok(stats.upstream_tls_handshake >= 11, `handshakes: ${stats.upstream_tls_handshake}`);
  assert.ok(stats.upstream_tls_session_reused >= 1, 'sessions are resumed per upstream');
  assert.equal(stats.upstream_tls_connection_error, 0);
});

/**
 * For each read started on a TLS stream of this process driven by the relay's bare handle
 * (`UpstreamHandleTls`): whether its TCP connect was still under way. Started then, libuv
 * registers the socket with epoll once for the connect and the reads (one `epoll_ctl` fewer).
 */
function recordTlsReadStarts(t: TestContext): boolean[] {
  const binding = (
    process as unknown as { binding(name: string): Record<string, unknown> }
  ).binding('tls_wrap');
  type ReadStart = (this: object) => number;
  const proto = (binding.TLSWrap as { prototype: { readStart: ReadStart } }).prototype;
  const { readStart } = proto;
  const connecting: boolean[] = [];
  proto.readStart = function (this: object) {
    const owner = Object.getOwnPropertySymbols(this)
      .filter((key) => key.description === 'l4proxy.handleOwner')
      .map((key) => (this as Record<symbol, { connecting?: boolean } | undefined>)[key])[0];
    if (owner !== undefined) connecting.push(owner.connecting === true);
    return readStart.call(this);
  };
  t.after(() => {
    proto.readStart = readStart;
  });
  return connecting;
}

/** Counts the sessions the proxy keeps for resumption (`UpstreamTls.keep`). */
function countKeptSessions(t: TestContext): { kept: number } {
  const proto = UpstreamTls.prototype;
  // eslint-disable-next-line @typescript-eslint/unbound-method -- called with its `this` below
  const { keep } = proto;
  const count = { kept: 0 };
  proto.keep = function (this: UpstreamTls, ...args: Parameters<UpstreamTls['keep']>) {
    count.kept++;
    keep.apply(this, args);
  };
  t.after(() => {
    proto.keep = keep;
  });
  return count;
}

describe('TLS origination resumes sessions against openssl s_server', () => {
  for (const version of ['-tls1_2', '-tls1_3'] as const) {
    test(`every connection after the first resumes (${version})`, async (t) => {
      const p = await getPki(t);
      if (p === undefined) return;
      const server = await startOpensslServer(p.openssl, p.server, { version });
      t.after(() => server.stop());
      const readStarts = recordTlsReadStarts(t);
      const sessions = countKeptSessions(t);
      const rig = await proxyFor(t, {
        upstreams: [{ host: '127.0.0.1', port: server.port }],
        tls: { ca: p.ca.cert, servername: 'localhost' },
      });
      // s_server serves one client at a time: one connection after the other.
      for (let i = 0; i < 3; i++) {
        const client = await connect(rig.port);
        client.write(`ping ${i}\n`);
        assert.match(await readUntil(client, new RegExp(`${i} gnip`)), /gnip/);
        client.end();
        await readAll(client);
        await rig.closes(i + 1);
      }
      const stats = rig.proxy.stats();
      assert.equal(stats.upstream_tls_handshake, 3);
      // TLS 1.3 sessions are kept without the server's certificate (sessionWithoutPeer): they
      // still resume, and Node still counts them verified.
      assert.equal(stats.upstream_tls_session_reused, 2);
      assert.equal(stats.upstream_tls_connection_error, 0);
      // Each upstream's TLS stream read from its TCP connect on (the handshake ran on it).
      assert.deepEqual(readStarts, [true, true, true]);
      // One session kept per TLS 1.3 connection, though s_server gives two per handshake; a
      // resumed TLS 1.2 handshake gives none.
      assert.equal(sessions.kept, version === '-tls1_3' ? 3 : 1);
    });
  }

  test("an upstream's sessions are dropped when it leaves the set; the others' stay", async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const server = await startOpensslServer(p.openssl, p.server, { version: '-tls1_3' });
    t.after(() => server.stop());
    // Two upstreams (ids) on the one server: each keeps a session of its own.
    const a = { id: 'a', host: '127.0.0.1', port: server.port };
    const b = { id: 'b', host: '127.0.0.1', port: server.port };
    let wanted = 'a';
    const rig = await proxyFor(t, {
      upstreams: [a, b],
      selector: (ctx) => ctx.candidates.find((c) => c.id === wanted),
      tls: { ca: p.ca.cert, servername: 'localhost' },
    });
    let closed = 0;
    const through = async (id: string): Promise<void> => {
      wanted = id;
      const client = await connect(rig.port);
      client.write(`ping ${id}\n`);
      assert.match(await readUntil(client, new RegExp(`${id} gnip`)), /gnip/);
      client.end();
      await readAll(client);
      await rig.closes(++closed);
    };
    await through('a');
    await through('b');
    assert.equal(rig.proxy.stats().upstream_tls_session_reused, 0);
    rig.proxy.setUpstreams([a]);
    await through('a');
    assert.equal(rig.proxy.stats().upstream_tls_session_reused, 1, "a's session stays");
    rig.proxy.setUpstreams([a, b]);
    await through('b');
    const stats = rig.proxy.stats();
    assert.equal(stats.upstream_tls_handshake, 4);
    assert.equal(stats.upstream_tls_session_reused, 1, "b's session went with b: a full handshake");
  });
});

describe('TLS origination key-exchange groups, against openssl s_server -groups P-256', () => {
  for (const relay of ['handle', 'stream'] as const) {
    test(`groups: only what the upstream accepts completes (relay: ${relay})`, async (t) => {
      const p = await getPki(t);
      if (p === undefined) return;
      const server = await startOpensslServer(p.openssl, p.server, { groups: 'P-256' });
      t.after(() => server.stop());
      for (const groups of ['X25519', 'X25519:P-256']) {
        const rig = await tlsProxyTo(t, p, relay, server.port, { groups }, ONE_ATTEMPT);
        const client = await connect(rig.port);
        client.write('ping\n');
        if (groups === 'X25519') {
          // No group in common: the upstream refuses the handshake.
          await readAll(client);
          const [summary] = await rig.closes(1);
          assert.equal(summary?.reason, 'upstream_tls_failed');
          continue;
        }
        assert.match(await readUntil(client, /gnip/), /gnip/);
        client.end();
        await readAll(client);
        assert.equal(rig.proxy.stats().upstream_tls_handshake, 1);
      }
    });
  }
});

describe('TLS origination failures are connect failures, retried on another upstream', () => {
  /** A selector that tries the upstreams in their configured order. */
  const inOrder = (ctx: {
    candidates: readonly UpstreamCandidate[];
  }): UpstreamCandidate | undefined => ctx.candidates[0];

  async function retried(
    t: TestContext,
    bad: { port: number },
    expected: string,
    tlsExtra: Record<string, unknown> = {},
  ): Promise<ProxyUnderTest> {
    const p = await getPki(t);
    assert.ok(p);
    const good = await peerFor(t, 'good', p.server);
    const rig = await proxyFor(t, {
      upstreams: [
        { host: '127.0.0.1', port: bad.port, id: 'bad' },
        { host: '127.0.0.1', port: good.port, id: 'good' },
      ],
      selector: inOrder,
      tls: { ca: p.ca.cert, servername: 'localhost', ...tlsExtra },
    });
    const errors: L4Error[] = [];
    rig.proxy.on('upstreamError', (_c, _u, error) => errors.push(error));
    const client = await connect(rig.port);
    client.end('x');
    const text = (await readAll(client)).toString();
    assert.equal(text, 'hello from good\nx');
    const [summary] = await rig.closes(1);
    assert.equal(summary?.reason, 'completed');
    assert.equal(summary.attempts, 2);
    assert.deepEqual(
      errors.map((e) => e.code),
      [expected],
    );
    assert.equal(rig.proxy.stats().upstreams.bad?.upstream_cx_connect_fail, 1);
    return rig;
  }

  test('untrusted certificate: ERR_L4_TLS_UNTRUSTED, then the next upstream', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const rogue = await peerFor(t, 'rogue', await selfSignedCert(p.openssl, 'localhost'));
    const rig = await retried(t, rogue, 'ERR_L4_TLS_UNTRUSTED');
    assert.equal(rig.proxy.stats().upstream_tls_fail_verify_error, 1);
  });

  test('name mismatch: ERR_L4_TLS_NAME_MISMATCH, then the next upstream', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const other = await peerFor(t, 'other', await p.ca.issue('other.test'));
    const rig = await retried(t, other, 'ERR_L4_TLS_NAME_MISMATCH');
    assert.equal(rig.proxy.stats().upstream_tls_fail_verify_san, 1);
  });

  for (const relay of ['handle', 'stream'] as const) {
    test(`the upstream's name is checked as Node checks it: wildcard, partial wildcard, IP, mismatch (relay: ${relay})`, async (t) => {
      const p = await getPki(t);
      if (p === undefined) return;
      // OpenSSL matches the wildcard and the IP address; only Node's check accepts `a*i`.
      const peer = await peerFor(
        t,
        'named',
        await p.ca.issue('named.test', ['*.wild.test', 'a*i.partial.test', '127.0.0.1']),
      );
      const cases: [string | false, string | undefined][] = [
        ['x.wild.test', undefined],
        ['api.partial.test', undefined],
        [false, undefined],
        ['a.b.wild.test', 'ERR_L4_TLS_NAME_MISMATCH'],
        ['bpi.partial.test', 'ERR_L4_TLS_NAME_MISMATCH'],
      ];
      for (const [servername, expected] of cases) {
        const rig = await tlsProxyTo(t, p, relay, peer.port, { servername }, ONE_ATTEMPT);
        const errors: L4Error[] = [];
        rig.proxy.on('upstreamError', (_c, _u, error) => errors.push(error));
        const client = await connect(rig.port);
        client.end('x');
        const text = (await readAll(client)).toString();
        const [summary] = await rig.closes(1);
        const label = `servername ${String(servername)}`;
        assert.deepEqual(
          errors.map((e) => e.code),
          expected === undefined ? [] : [expected],
          label,
        );
        assert.equal(text, expected === undefined ? 'hello from named\nx' : '', label);
        assert.equal(summary?.upstreamConnected, expected === undefined, label);
        const stats = rig.proxy.stats();
        assert.equal(stats.upstream_tls_handshake, expected === undefined ? 1 : 0, label);
        assert.equal(stats.upstream_tls_fail_verify_san, expected === undefined ? 0 : 1, label);
        await rig.proxy.close({ drainTimeout: 0 });
      }
    });
  }

  for (const relay of ['handle', 'stream'] as const) {
    test(`an upstream that closes before the handshake fails the attempt then, not at the timeout (relay: ${relay})`, async (t) => {
      const p = await getPki(t);
      if (p === undefined) return;
      const hangUp = await testServer(t, (socket) => {
        socket.end();
      });
      const rig = await proxyFor(t, {
        relay,
        upstreams: [{ host: '127.0.0.1', port: hangUp }],
        maxConnectAttempts: 1,
        // Far beyond the test's own bound: the failure must come from the close.
        tls: { ca: p.ca.cert, servername: 'localhost', handshakeTimeout: 600_000 },
      });
      const client = await connect(rig.port);
      client.end('a');
      await withTimeout(readAll(client), 10_000, 'the proxy closing the client');
      const [summary] = await rig.closes(1);
      assert.equal(summary?.reason, 'upstream_tls_failed');
      assert.equal((summary.error as L4Error | undefined)?.code, 'ERR_L4_TLS_HANDSHAKE');
    });
  }

  // A plain server on the port, or one that starts TLS in-band (PostgreSQL before 17 reads the
  // ClientHello as a startup packet and hangs up): the error says to check the port speaks TLS,
  // not TLS versions and ciphers, which were never reached.
  const notTls = {
    'hangs up on the ClientHello': (socket: net.Socket) => {
      socket.once('data', () => socket.end());
    },
    'answers in clear': (socket: net.Socket) => {
      socket.once('data', () =>
        socket.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n'),
      );
    },
  };
  for (const relay of ['handle', 'stream'] as const) {
    for (const [what, serve] of Object.entries(notTls)) {
      test(`an upstream that ${what} is told to speak TLS on its port (relay: ${relay})`, async (t) => {
        const p = await getPki(t);
        if (p === undefined) return;
        const port = await testServer(t, (socket) => {
          socket.on('error', () => undefined);
          serve(socket);
        });
        const rig = await proxyFor(t, {
          relay,
          upstreams: [{ host: '127.0.0.1', port }],
          maxConnectAttempts: 1,
          tls: { ca: p.ca.cert, servername: 'localhost' },
        });
        const client = await connect(rig.port);
        client.end('a');
        await withTimeout(readAll(client), 10_000, 'the proxy closing the client');
        const [summary] = await rig.closes(1);
        assert.equal(summary?.reason, 'upstream_tls_failed');
        const error = summary.error as L4Error | undefined;
        assert.equal(error?.code, 'ERR_L4_TLS_HANDSHAKE');
        assert.match(error.message, /check that the upstream speaks TLS on this port/);
      });
    }
  }

  test('handshake timeout (a server that never answers): ERR_L4_TLS_HANDSHAKE_TIMEOUT', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    // Accepts and never answers: the handshake waits for a ServerHello that does not come.
    const port = await testServer(t, () => undefined);
    const rig = await retried(t, { port }, 'ERR_L4_TLS_HANDSHAKE_TIMEOUT', {
      handshakeTimeout: 200,
    });
    assert.equal(rig.proxy.stats().upstream_tls_handshake_timeout, 1);
  });

  test('a refused TCP connect is a connect failure, not a TLS one, then the next upstream', async (t) => {
    if ((await getPki(t)) === undefined) return;
    const rig = await retried(t, { port: await refusedPort() }, 'ERR_L4_CONNECT_FAILED');
    const stats = rig.proxy.stats();
    assert.equal(stats.upstream_tls_connection_error, 0);
    assert.equal(stats.upstream_tls_handshake, 1);
  });

  test('when every attempt fails verification the close reason names it', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const rogue = await peerFor(t, 'rogue', await selfSignedCert(p.openssl, 'localhost'));
    const rig = await proxyFor(t, {
      upstreams: [{ host: '127.0.0.1', port: rogue.port }],
      tls: { ca: p.ca.cert, servername: 'localhost' },
    });
    const client = await connect(rig.port);
    await readAll(client);
    const [summary] = await rig.closes(1);
    assert.equal(summary?.reason, 'upstream_tls_untrusted');
    assert.equal((summary.error as L4Error | undefined)?.code, 'ERR_L4_TLS_UNTRUSTED');
    // Nothing of the upstream reached the client.
    assert.equal(summary.bytesToClient, 0);
  });
});

describe('TLS origination behaviour', () => {
  test('half-close maps to close_notify both ways; sessions resume per upstream', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const peer = await peerFor(t, 'peer', p.server);
    for (const sessionResumption of [true, false]) {
      const rig = await proxyFor(t, {
        upstreams: [{ host: 'localhost', port: peer.port }],
        tls: { ca: p.ca.cert, sessionResumption },
      });
      for (let i = 0; i < 3; i++) {
        const client = await connect(rig.port);
        client.end(`ping ${i}`);
        assert.equal((await readAll(client)).toString(), `hello from peer\nping ${i}`);
      }
      const summaries = await rig.closes(3);
      assert.deepEqual(
        summaries.map((s) => s.reason),
        ['completed', 'completed', 'completed'],
      );
      const stats = rig.proxy.stats();
      assert.equal(stats.upstream_tls_handshake, 3);
      // Every connection after the first resumes the session the previous one saved.
      if (sessionResumption) assert.equal(stats.upstream_tls_session_reused, 2);
      else assert.equal(stats.upstream_tls_session_reused, 0);
    }
    // A host name upstream sends its name as SNI.
    assert.ok(peer.serverNames.every((name) => name === 'localhost'));
  });

  // 'handle': Node's TLS stream on the upstream's bare TCP handle; 'stream': a TLSSocket.
  for (const relay of ['handle', 'stream'] as const) {
    test(`ALPN is offered and negotiated with the upstream (relay: ${relay})`, async (t) => {
      const p = await getPki(t);
      if (p === undefined) return;
      const peer = await tlsPeer('peer', p.server, ['h2', 'http/1.1']);
      t.after(() => peer.close());
      const rig = await proxyFor(t, {
        relay,
        upstreams: [{ host: '127.0.0.1', port: peer.port }],
        tls: { ca: p.ca.cert, servername: 'localhost', alpn: ['http/1.1'] },
      });
      const client = await connect(rig.port);
      client.end('a');
      assert.equal((await readAll(client)).toString(), 'hello from peer\na');
      assert.deepEqual(peer.protocols, ['http/1.1']);
      assert.deepEqual(peer.serverNames, ['localhost']);
    });

    test(`rejectUnauthorized: false relays to an upstream nobody vouches for (relay: ${relay})`, async (t) => {
      const p = await getPki(t);
      if (p === undefined) return;
      const stranger = await peerFor(t, 'stranger', await selfSignedCert(p.openssl, 'stranger'));
      for (const rejectUnauthorized of [false, true]) {
        const rig = await tlsProxyTo(
          t,
          p,
          relay,
          stranger.port,
          { rejectUnauthorized },
          ONE_ATTEMPT,
        );
        const client = await connect(rig.port);
        client.end('a');
        const text = (await readAll(client)).toString();
        const [summary] = await rig.closes(1);
        if (rejectUnauthorized) {
          assert.equal(text, '');
          assert.equal(summary?.reason, 'upstream_tls_untrusted');
        } else {
          assert.equal(text, 'hello from stranger\na');
          assert.equal(summary?.reason, 'completed');
        }
      }
    });
  }

  for (const relay of ['handle', 'stream'] as const) {
    test(`a renegotiation the upstream starts (TLS 1.2) keeps the connection as it is (relay: ${relay})`, async (t) => {
      const p = await getPki(t);
      if (p === undefined) return;
      // Renegotiates on the first bytes, then echoes them: the relay must go on through it.
      const server = tls.createServer(
        { key: p.server.key, cert: p.server.cert, maxVersion: 'TLSv1.2', allowHalfOpen: true },
        (socket) => {
          socket.on('error', () => undefined);
          socket.once('data', (first: Buffer) => {
            socket.renegotiate({}, (err) => {
              if (err) socket.destroy(err);
              else socket.end(first);
            });
          });
        },
      );
      const rig = await originatingTo(t, p, server, relay);
      const client = await connect(rig.port);
      client.write('renegotiate me');
      assert.match(await readUntil(client, /renegotiate me/), /^renegotiate me$/);
      client.end();
      await readAll(client);
      const [summary] = await rig.closes(1);
      assert.equal(summary?.reason, 'completed');
      assert.equal(rig.proxy.stats().upstream_tls_handshake, 1);
    });
  }

  for (const relay of ['handle', 'stream'] as const) {
    test(`an upstream that writes and resets right after its handshake is an upstream reset (relay: ${relay})`, async (t) => {
      const p = await getPki(t);
      if (p === undefined) return;
      // Its reset can reach the proxy as a plain end (a write took the error first): the TCP
      // connection under the TLS stream tells it apart from a clean end.
      const server = net.createServer((raw) => {
        raw.on('error', () => undefined);
        const socket = new tls.TLSSocket(raw, {
          isServer: true,
          key: p.server.key,
          cert: p.server.cert,
        });
        socket.on('error', () => undefined);
        socket.once('secure', () => {
          socket.write(Buffer.alloc(3000, 7));
          setImmediate(() => raw.resetAndDestroy());
        });
      });
      const rig = await originatingTo(t, p, server, relay);
      const clients = await Promise.all(Array.from({ length: 5 }, () => connect(rig.port)));
      for (const client of clients) {
        client.on('error', () => undefined);
        client.resume();
        client.write('hi');
      }
      t.after(() => {
        for (const client of clients) client.destroy();
      });
      const summaries = await rig.closes(5);
      for (const summary of summaries) assert.equal(summary.reason, 'upstream_reset');
      assert.equal(rig.proxy.connections().length, 0);
    });
  }

  test('per-upstream tls wins; tls: false speaks plain TCP', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const peer = await peerFor(t, 'peer', p.server);
    const plain = await echoServer();
    t.after(() => plain.close());
    const order = ['tls', 'plain'];
    const rig = await proxyFor(t, {
      upstreams: [
        { host: '127.0.0.1', port: peer.port, id: 'tls', tls: { servername: 'localhost' } },
        { host: '127.0.0.1', port: plain.port, id: 'plain', tls: false },
      ],
      selector: (ctx) => {
        const id = order.shift();
        return ctx.candidates.find((c) => c.id === id);
      },
      tls: { ca: p.ca.cert },
    });
    const client = await connect(rig.port);
    client.end('a');
    assert.equal((await readAll(client)).toString(), 'hello from peer\na');
    assert.deepEqual(peer.serverNames, ['localhost']);
    const second = await connect(rig.port);
    second.end('plain');
    assert.equal((await readAll(second)).toString(), 'plain');
    const summaries = await rig.closes(2);
    assert.deepEqual(
      summaries.map((s) => s.reason),
      ['completed', 'completed'],
    );
    assert.equal(rig.proxy.stats().upstream_tls_handshake, 1);
  });

  test('a client trickling small writes to a TLS upstream that stops reading is held back, in order', async (t) => {
    // Node's TLS stream takes one write at a time; the bare-handle relay wrote each client chunk
    // as it came, and the second write while the first waited for the stalled upstream aborted
    // the whole process (an assertion in Node's C++).
    const p = await getPki(t);
    if (p === undefined) return;
    const received: Buffer[] = [];
    let upstream: tls.TLSSocket | undefined;
    const server = tls.createServer({ key: p.server.key, cert: p.server.cert }, (socket) => {
      socket.on('error', () => undefined);
      socket.on('data', (chunk: Buffer) => received.push(chunk));
      socket.pause();
      upstream = socket;
    });
    const rig = await originatingTo(t, p, server, 'handle');
    const client = await connect(rig.port);
    t.after(() => client.destroy());
    const CHUNK = 2000;
    let chunks = 0;
    const started = Date.now();
    // Small writes, one per loop turn, until the proxy stops taking them (bounded in count and time).
    while (chunks < 20_000 && Date.now() - started < 10_000) {
      const more = client.write(Buffer.alloc(CHUNK, chunks % 251));
      chunks++;
      if (!more) {
        const drained = await Promise.race([
          once(client, 'drain').then(() => true),
          new Promise<boolean>((resolve) => setTimeout(resolve, 500, false)),
        ]);
        if (!drained) break;
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
    assert.ok(upstream !== undefined, 'the upstream connection is open');
    assert.ok(rig.proxy.stats().downstream_cx_active === 1, 'the connection is still open');
    assert.ok(chunks < 20_000, 'the stalled upstream held the client back');
    upstream.resume();
    client.end();
    const [summary] = await rig.closes(1);
    assert.equal(summary?.reason, 'completed');
    const all = Buffer.concat(received);
    assert.equal(all.length, chunks * CHUNK);
    for (let i = 0; i < chunks; i++)
      assert.equal(all[i * CHUNK + CHUNK - 1], i % 251, `chunk ${i}`);
  });

  test('TCP keepalive with its delay reaches the upstream TLS socket (seen with ss)', async (t) => {
    const ss = tool(t, 'ss');
    const p = await getPki(t);
    if (ss === undefined || p === undefined) return;
    const peer = await peerFor(t, 'peer', p.server);
    const rig = await proxyFor(t, {
      upstreams: [{ host: '127.0.0.1', port: peer.port }],
      tls: { ca: p.ca.cert, servername: 'localhost' },
      keepAlive: { initialDelay: 7_000 },
    });
    const client = await connect(rig.port);
    t.after(() => client.destroy());
    await readUntil(client, /hello from peer\n/);
    const out = await runTool(ss, [
      '-tnoH',
      'state',
      'established',
      `( dport = :${String(peer.port)} )`,
    ]);
    const lines = out.split('\n').filter((line) => line.trim() !== '');
    assert.equal(lines.length, 1, out);
    // The remaining time before the first probe: at most the 7 s asked for (not libuv's 60 s).
    const timer = /timer:\(keepalive,([0-9.]+)(ms|sec|min)/.exec(lines[0] ?? '');
    assert.ok(timer, out);
    const seconds =
      (Number(timer[1]) / (timer[2] === 'ms' ? 1000 : 1)) * (timer[2] === 'min' ? 60 : 1);
    assert.ok(seconds <= 7, out);
  });

  test('health checks complete a TLS handshake: a plain TCP server is unhealthy', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const peer = await peerFor(t, 'peer', p.server);
    const plain = await echoServer();
    t.after(() => plain.close());
    const rig = await proxyFor(t, {
      upstreams: [
        { host: '127.0.0.1', port: plain.port, id: 'plain' },
        { host: '127.0.0.1', port: peer.port, id: 'tls' },
      ],
      tls: { ca: p.ca.cert, servername: 'localhost' },
      healthCheck: { interval: 50, timeout: 2_000, unhealthyThreshold: 1 },
    });
    const verdict = await withTimeout(
      new Promise<[string, boolean]>((resolve) => {
        rig.proxy.on('upstreamHealth', (u, healthy) => {
          resolve([u.id, healthy]);
        });
      }),
      5_000,
      'a health verdict',
    );
    assert.deepEqual(verdict, ['plain', false]);
    await withTimeout(
      (async () => {
        while ((rig.proxy.stats().upstreams.tls?.health_check_attempts ?? 0) < 3)
          await new Promise((r) => setTimeout(r, 20));
      })(),
      5_000,
      'three checks of the TLS upstream',
    );
    assert.equal(rig.proxy.stats().upstreams.tls?.health_check_failures, 0);
    assert.ok(peer.accepted() >= 2);
    assert.equal(rig.proxy.stats().upstreams.tls?.healthy, true);
  });

  test('a TLS health check that gets no answer times out, and says TLS', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const silent = net.createServer((socket) => {
      socket.on('error', () => undefined);
    });
    const port = await listen(silent);
    t.after(() => {
      silent.close();
    });
    const rig = await proxyFor(t, {
      upstreams: [{ host: '127.0.0.1', port }],
      tls: { ca: p.ca.cert, servername: 'localhost' },
      healthCheck: { interval: 50, timeout: 200, unhealthyThreshold: 1 },
    });
    const message = await withTimeout(
      new Promise<string>((resolve) => {
        rig.proxy.on('upstreamHealth', (_u, _healthy, change) => {
          resolve(change.error?.message ?? '');
        });
      }),
      5_000,
      'a health verdict',
    );
    assert.match(message, /^TLS health check of 127\.0\.0\.1:\d+ timed out after 200 ms/);
  });

  test('a PROXY TLV callback that throws ends that connection before any handshake', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const peer = await peerFor(t, 'peer', p.server);
    const rig = await proxyFor(t, {
      upstreams: [{ host: '127.0.0.1', port: peer.port }],
      proxyProtocol: {
        version: 'v2',
        tlvs: () => {
          throw new Error('tlvs callback failed');
        },
      },
      tls: { ca: p.ca.cert, servername: 'localhost' },
    });
    const client = await connect(rig.port);
    client.end('never relayed');
    const reply = await readAll(client).catch(() => Buffer.alloc(0));
    assert.equal(reply.length, 0);
    const [summary] = await rig.closes(1);
    assert.equal(summary?.reason, 'proxy_header_error');
    assert.match(String(summary.error?.message), /tlvs callback failed/);
    const stats = rig.proxy.stats();
    assert.equal(stats.upstream_tls_handshake, 0);
    assert.equal(stats.upstream_tls_connection_error, 0);
  });

  test('the PROXY header goes before the handshake, in clear (HAProxy accept-proxy + ssl)', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    if (tool(t, 'haproxy') === undefined) return;
    const echo = await echoServer();
    t.after(() => echo.close());
    const port = await freePort();
    const haproxy = await startHaproxy(
      [
        'listen tls_in',
        `  bind 127.0.0.1:${port} accept-proxy ssl crt ${p.server.bundleFile}`,
        '  option tcplog',
        `  server echo 127.0.0.1:${echo.port}`,
      ].join('\n'),
    );
    t.after(() => haproxy.stop());
    const rig = await proxyFor(t, {
      upstreams: [{ host: '127.0.0.1', port }],
      proxyProtocol: 'v2',
      tls: { ca: p.ca.cert, servername: 'localhost' },
    });
    for (let i = 0; i < 3; i++) {
      const client = await connect(rig.port);
      const clientPort = client.localPort;
      client.end(`through haproxy ${i}`);
      assert.equal((await readAll(client)).toString(), `through haproxy ${i}`);
      // HAProxy logs the client the PROXY header named: our client's own port.
      await haproxy.waitForOutput(new RegExp(`127\\.0\\.0\\.1:${clientPort}`), 5_000);
    }
    // The header went first on every connection, and the repeat ones resumed the TLS session.
    assert.equal(rig.proxy.stats().upstream_tls_session_reused, 2);
  });
});
