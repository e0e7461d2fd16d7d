import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import tls from 'node:tls';
import { TcpProxy, TunnelServer } from '../../src/index.js';
import type { TcpProxyOptions, TerminateTlsOptions } from '../../src/index.js';
import { echoServer, withTimeout } from '../helpers/net.js';
import { opensslClient } from '../helpers/openssl.js';
import { recordingProxy } from '../helpers/recordingProxy.js';
import type { RecordingProxy } from '../helpers/recordingProxy.js';
import { sharedPki } from '../helpers/tlsCa.js';
import { testServer } from '../helpers/testServer.js';
import { TicketKeyRing } from '../../src/tls/ticketKeys.js';
import { keysKept, TicketKeyRotation } from '../../src/tls/TicketKeyRotation.js';
import { decodeTicketKeys, encodeTicketKeys } from '../../src/tls/sharedTicketKeys.js';

const getPki = sharedPki(async (ca) => ({
  localhost: await ca.issue('localhost', ['localhost']),
  renewed: await ca.issue('localhost', ['localhost']),
  api: await ca.issue('api.test', ['api.test']),
}));

type Pki = NonNullable<Awaited<ReturnType<typeof getPki>>>;

/** What a client's handshake found: resumed or not, and the last session it was given. */
interface Handshake {
  readonly reused: boolean;
  readonly session: Buffer | undefined;
}

/**
 * A Node TLS client's connection through `port` (echo upstream): its handshake, then one echoed
 * line, after which every ticket the proxy sends with the handshake has arrived.
 */
function handshake(
  p: Pki,
  port: number,
  options: {
    session?: Buffer | undefined;
    maxVersion?: tls.SecureVersion;
    servername?: string;
  } = {},
): Promise<Handshake> {
  return withTimeout(
    new Promise<Handshake>((resolve, reject) => {
      let session: Buffer | undefined;
      let reused = false;
      const socket = tls.connect({
        port,
        host: '127.0.0.1',
        ca: p.ca.cert,
        servername: options.servername ?? 'localhost',
        ...(options.session !== undefined && { session: options.session }),
        ...(options.maxVersion !== undefined && { maxVersion: options.maxVersion }),
      });
      socket.on('session', (s: Buffer) => (session = s));
      socket.once('secureConnect', () => {
        reused = socket.isSessionReused();
        socket.write('ping\n');
      });
      socket.once('data', () => socket.end());
      socket.once('error', reject);
      socket.once('close', () => {
        resolve({ reused, session });
      });
    }),
    5_000,
    'a TLS handshake through the proxy',
  );
}

async function tlsProxy(
  t: TestContext,
  echoPort: number,
  terminateTls: TerminateTlsOptions,
  extra: Partial<TcpProxyOptions> = {},
): Promise<RecordingProxy> {
  const rig = await recordingProxy({
    upstreams: [{ host: '127.0.0.1', port: echoPort }],
    terminateTls,
    ...extra,
  });
  t.after(() => rig.close());
  return rig;
}

async function echo(t: TestContext): Promise<number> {
  const server = await echoServer();
  t.after(() => server.close());
  return server.port;
}

const key = (): Buffer => randomBytes(48);

/**
 * Where the ticket starting at `at` in a saved session's DER ends: OpenSSL keeps it as
 * `[10] EXPLICIT OCTET STRING`, whose length is in the header just before it.
 */
function ticketEnd(der: Buffer, at: number): number {
  if (der[at - 2] === 0x04) return at + der[at - 1]!;
  if (der[at - 3] === 0x04 && der[at - 2] === 0x81) return at + der[at - 1]!;
  if (der[at - 4] === 0x04 && der[at - 3] === 0x82) return at + der.readUInt16BE(at - 2);
  throw new Error('no OCTET STRING header before the ticket');
}

describe('session ticket keys (terminateTls.ticketKeys)', () => {
  for (const relay of ['handle', 'stream'] as const) {
    test(`relay ${relay}: proxies with the same keys resume each other's tickets (TLS 1.3 and 1.2); one with its own keys does not`, async (t) => {
      const p = await getPki(t);
      if (p === undefined) return;
      const port = await echo(t);
      const keys = [key()];
      const cert = { cert: p.localhost.cert, key: p.localhost.key };
      const a = await tlsProxy(t, port, { ...cert, ticketKeys: keys }, { relay });
      const b = await tlsProxy(t, port, { ...cert, ticketKeys: keys }, { relay });
      const own = await tlsProxy(t, port, cert, { relay });
      for (const maxVersion of ['TLSv1.3', 'TLSv1.2'] as const) {
        const first = await handshake(p, a.port, { maxVersion });
        assert.equal(first.reused, false);
        assert.ok(first.session, `${maxVersion}: a ticket`);
        const atB = await handshake(p, b.port, { maxVersion, session: first.session });
        assert.equal(atB.reused, true, `${maxVersion}: resumed at the other proxy`);
        const atOwn = await handshake(p, own.port, { maxVersion, session: first.session });
        assert.equal(atOwn.reused, false, `${maxVersion}: Node's own keys cannot read it`);
      }
      assert.equal(b.proxy.stats().downstream_tls_session_reused, 2);
      assert.equal(own.proxy.stats().downstream_tls_session_reused, 0);
      assert.equal(own.proxy.stats().downstream_tls_handshake, 2);
    });
  }

  test('openssl s_client: a ticket from one proxy resumes at another with the keys, for an SNI-chosen certificate too', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    // An upstream that greets and ends: s_client (-ign_eof) returns when the proxy closes.
    const port = await testServer(t, (socket) => socket.end('hello\n'));
    const keys = [key(), key()];
    const options: TerminateTlsOptions = {
      cert: p.localhost.cert,
      key: p.localhost.key,
      certificates: [{ serverNames: ['api.test'], cert: p.api.cert, key: p.api.key }],
      ticketKeys: keys,
    };
    const a = await tlsProxy(t, port, options);
    const b = await tlsProxy(t, port, options);
    const dir = mkdtempSync(join(tmpdir(), 'l4proxy-tickets-'));
    t.after(() => {
      rmSync(dir, { recursive: true, force: true });
    });
    for (const name of ['localhost', 'api.test']) {
      const file = join(dir, `${name}.pem`);
      const common = ['-servername', name, '-CAfile', p.ca.certFile, '-verify_return_error'];
      // Until the connection closes (-ign_eof): TLS 1.3 tickets come after the handshake.
      const first = await opensslClient(p.openssl, [
        '-connect',
        `127.0.0.1:${a.port}`,
        ...common,
        '-sess_out',
        file,
        '-ign_eof',
      ]);
      assert.match(first, /^New, TLSv1\.3/m, first);
      const second = await opensslClient(p.openssl, [
        '-connect',
        `127.0.0.1:${b.port}`,
        ...common,
        '-sess_in',
        file,
      ]);
      assert.match(second, /^Reused, TLSv1\.3/m, `${name}: ${second}`);
    }
    assert.equal(b.proxy.stats().downstream_tls_session_reused, 2);
  });

  test('openssl s_client offering tampered tickets (bad MAC, unknown or older key name, random body): full handshakes, nothing thrown (TLS 1.3 and 1.2)', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const port = await testServer(t, (socket) => socket.end('hello\n'));
    const [current, older] = [key(), key()];
    const rig = await tlsProxy(t, port, {
      cert: p.localhost.cert,
      key: p.localhost.key,
      ticketKeys: [current, older],
    });
    const dir = mkdtempSync(join(tmpdir(), 'l4proxy-tickets-'));
    t.after(() => {
      rmSync(dir, { recursive: true, force: true });
    });
    const common = ['-servername', 'localhost', '-CAfile', p.ca.certFile, '-verify_return_error'];
    const connect = ['-connect', `127.0.0.1:${rig.port}`];
    const tampers: [string, (ticket: Buffer) => void][] = [
      ['a flipped byte of its MAC', (ticket) => (ticket[ticket.length - 1]! ^= 1)],
      ['an unknown key name', (ticket) => ticket.fill(0xab, 0, 16)],
      ['the older key name', (ticket) => older.copy(ticket, 0, 0, 16)],
      ['random bytes after the name', (ticket) => randomBytes(ticket.length - 16).copy(ticket, 16)],
    ];
    let handshakes = 0;
    for (const version of ['-tls1_3', '-tls1_2']) {
      const file = join(dir, `${version}.pem`);
      const first = await opensslClient(p.openssl, [
        ...connect,
        version,
        ...common,
        '-sess_out',
        file,
        '-ign_eof',
      ]);
      handshakes++;
      assert.match(first, /^New, /m, first);
      const pem = readFileSync(file, 'latin1');
      const der = Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
      // The ticket starts with the current key's name, sent in clear.
      const at = der.indexOf(current.subarray(0, 16));
      assert.ok(at > 0, `${version}: the ticket in the saved session`);
      const end = ticketEnd(der, at);
      for (const [what, tamper] of tampers) {
        const copy = Buffer.from(der);
        tamper(copy.subarray(at, end));
        const edited = join(dir, 'edited.pem');
        writeFileSync(
          edited,
          `-----BEGIN SSL SESSION PARAMETERS-----\n${copy.toString('base64')}\n-----END SSL SESSION PARAMETERS-----\n`,
        );
        const out = await opensslClient(p.openssl, [
          ...connect,
          version,
          ...common,
          '-sess_in',
          edited,
          '-ign_eof',
        ]);
        handshakes++;
        assert.match(out, /^New, /m, `${version}, ${what}: ${out}`);
        assert.match(out, /hello/, `${version}, ${what}: served`);
      }
    }
    await rig.closed(handshakes);
    const stats = rig.proxy.stats();
    assert.equal(stats.downstream_tls_session_reused, 0);
    assert.equal(stats.downstream_tls_handshake, handshakes);
    assert.deepEqual(rig.errors, []);
  });

  test('rotation: setTicketKeys([new, old]) resumes old tickets and renews them under the new key; without the old key, a full handshake', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const port = await echo(t);
    const cert = { cert: p.localhost.cert, key: p.localhost.key };
    const [k1, k2, k3] = [key(), key(), key()];
    const a = await tlsProxy(t, port, { ...cert, ticketKeys: [k1] });
    const b = await tlsProxy(t, port, { ...cert, ticketKeys: [k1] });
    const onlyNew = await tlsProxy(t, port, { ...cert, ticketKeys: [k2] });
    const old = await handshake(p, a.port);
    b.proxy.setTicketKeys([k2, k1]);
    const renewed = await handshake(p, b.port, { session: old.session });
    assert.equal(renewed.reused, true, 'the previous key still decrypts');
    assert.ok(renewed.session, 'a new ticket, under the first key');
    const withNew = await handshake(p, onlyNew.port, { session: renewed.session });
    assert.equal(withNew.reused, true, 'the renewed ticket is under the new key');
    b.proxy.setTicketKeys([k3]);
    const gone = await handshake(p, b.port, { session: old.session });
    assert.equal(gone.reused, false, 'a key left out decrypts nothing');
    assert.throws(
      () => {
        b.proxy.setTicketKeys([Buffer.alloc(47)]);
      },
      { code: 'ERR_L4_INVALID_OPTION', message: /"ticketKeys\[0\]".*47 bytes/ },
    );
    // The refused call changed nothing.
    const still = await handshake(p, b.port, { session: gone.session });
    assert.equal(still.reused, true);
  });

  test('setTerminateTls() without ticketKeys keeps the keys in force; setTicketKeys() on a proxy without keys gives it some', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const port = await echo(t);
    const keys = [key()];
    const a = await tlsProxy(t, port, {
      cert: p.localhost.cert,
      key: p.localhost.key,
      ticketKeys: keys,
    });
    const plain = await tlsProxy(t, port, { cert: p.localhost.cert, key: p.localhost.key });
    const ticket = await handshake(p, a.port);
    a.proxy.setTerminateTls({ cert: p.renewed.cert, key: p.renewed.key });
    const afterRenewal = await handshake(p, a.port, { session: ticket.session });
    assert.equal(afterRenewal.reused, true, 'a certificate renewal keeps the tickets');
    plain.proxy.setTicketKeys(keys);
    const atPlain = await handshake(p, plain.port, { session: ticket.session });
    assert.equal(atPlain.reused, true);
  });

  test('sessionTickets: false: nothing resumes; ticketKeys with it, or on a proxy without termination, is refused', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const port = await echo(t);
    const cert = { cert: p.localhost.cert, key: p.localhost.key };
    const off = await tlsProxy(t, port, { ...cert, sessionTickets: false });
    for (const maxVersion of ['TLSv1.3', 'TLSv1.2'] as const) {
      const first = await handshake(p, off.port, { maxVersion });
      const again = await handshake(p, off.port, { maxVersion, session: first.session });
      assert.equal(again.reused, false, maxVersion);
    }
    assert.equal(off.proxy.stats().downstream_tls_session_reused, 0);
    assert.throws(
      () => new TcpProxy({ terminateTls: { ...cert, sessionTickets: false, ticketKeys: [key()] } }),
      { code: 'ERR_L4_INVALID_OPTION', message: /"terminateTls\.ticketKeys"/ },
    );
    assert.throws(
      () => {
        off.proxy.setTicketKeys([key()]);
      },
      { code: 'ERR_L4_INVALID_OPTION', message: /sessionTickets is false/ },
    );
    const plain = new TcpProxy({ upstreams: [{ host: '127.0.0.1', port }] });
    t.after(() => plain.close());
    assert.throws(
      () => {
        plain.setTicketKeys([key()]);
      },
      { code: 'ERR_L4_INVALID_OPTION', message: /"terminateTls"/ },
    );
  });

  test('invalid ticketKeys fail at construction naming the option, never showing a key', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const cert = { cert: p.localhost.cert, key: p.localhost.key };
    const secret = Buffer.alloc(32, 0xab);
    const cases: [unknown, RegExp][] = [
      [[], /"terminateTls\.ticketKeys"/],
      [[secret], /"terminateTls\.ticketKeys\[0\]".*received "32 bytes"/],
      [['x'.repeat(48)], /"terminateTls\.ticketKeys\[0\]"/],
      [Array.from({ length: 17 }, key), /"terminateTls\.ticketKeys"/],
    ];
    const same = key();
    cases.push([[same, Buffer.from(same)], /"terminateTls\.ticketKeys\[1\]".*name/]);
    for (const [ticketKeys, message] of cases) {
      assert.throws(
        () => new TcpProxy({ terminateTls: { ...cert, ticketKeys } as TerminateTlsOptions }),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, 'ERR_L4_INVALID_OPTION');
          assert.match(err.message, message);
          assert.doesNotMatch(err.message, /abab|q6ur/i, 'no key bytes in the message');
          return true;
        },
      );
    }
  });

  test('TunnelServer: the same keys resume across two servers, counted in downstream_tls_session_reused; setTicketKeys() rotates', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const port = await echo(t);
    const keys = [key()];
    const servers = [0, 1].map(
      () =>
        new TunnelServer({
          upstreams: [{ host: '127.0.0.1', port }],
          terminateTls: { cert: p.localhost.cert, key: p.localhost.key, ticketKeys: keys },
        }),
    );
    t.after(() => Promise.all(servers.map((server) => server.close())));
    const ports = await Promise.all(
      servers.map(async (server) => (await server.listen({ port: 0, host: '127.0.0.1' })).port),
    );
    /** A handshake alone (ALPN http/1.1), ended once its tickets came. */
    const tunnelHandshake = (to: number, session?: Buffer): Promise<Handshake> =>
      withTimeout(
        new Promise<Handshake>((resolve, reject) => {
          let got: Buffer | undefined;
          let reused = false;
          const socket = tls.connect({
            port: to,
            host: '127.0.0.1',
            ca: p.ca.cert,
            servername: 'localhost',
            ALPNProtocols: ['http/1.1'],
            ...(session !== undefined && { session }),
          });
          socket.on('session', (s: Buffer) => {
            got = s;
            socket.end();
          });
          socket.once('secureConnect', () => {
            reused = socket.isSessionReused();
            // A resumption may bring no new ticket: nothing more to wait for then.
            if (reused) socket.end();
          });
          socket.once('error', reject);
          socket.once('close', () => {
            resolve({ reused, session: got });
          });
          socket.resume();
        }),
        5_000,
        'a TLS handshake with the tunnel server',
      );
    const [first, second] = servers as [TunnelServer, TunnelServer];
    const [firstPort, secondPort] = ports as [number, number];
    const ticket = await tunnelHandshake(firstPort);
    const resumed = await tunnelHandshake(secondPort, ticket.session);
    assert.equal(resumed.reused, true);
    assert.equal(second.stats().downstream_tls_session_reused, 1);
    assert.equal(first.stats().downstream_tls_session_reused, 0);
    second.setTicketKeys([key()]);
    const refused = await tunnelHandshake(secondPort, ticket.session);
    assert.equal(refused.reused, false);
    assert.equal(second.stats().downstream_tls_session_reused, 1);
  });
});

describe('ticket key ring and rotation', () => {
  test('the callback answers: 1 for the first key, 2 (renew) for an older one, 0 for an unknown name or no key', () => {
    const [k1, k2] = [key(), key()];
    const ring = new TicketKeyRing([Buffer.from(k1), Buffer.from(k2)]);
    const [encrypted, hmac, aes, name, iv] = ring.answer(Buffer.alloc(16), true);
    assert.equal(encrypted, 1);
    assert.deepEqual([name, hmac, aes], [k1.subarray(0, 16), k1.subarray(16, 32), k1.subarray(32)]);
    assert.equal(iv?.length, 16);
    assert.notDeepEqual(ring.answer(Buffer.alloc(16), true)[4], iv, 'a fresh IV each time');
    assert.equal(ring.answer(k1.subarray(0, 16), false)[0], 1);
    const older = ring.answer(k2.subarray(0, 16), false);
    assert.deepEqual(older, [2, k2.subarray(16, 32), k2.subarray(32)]);
    const unknown = ring.answer(Buffer.alloc(16, 7), false);
    assert.equal(unknown[0], 0);
    assert.equal(unknown[2].length, 16, 'Node needs 16-byte keys even for "not found"');
    const empty = new TicketKeyRing([]);
    const none = empty.answer(Buffer.alloc(16), true);
    assert.equal(none[0], 0, 'no key yet: no ticket');
    // Node reads a 16-byte name and IV from every answer to an encryption (it aborts otherwise).
    assert.deepEqual([none[3]?.length, none[4]?.length], [16, 16]);
  });

  test('a ring without a key: the handshake completes without a ticket (Node aborted the process)', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const context = tls.createSecureContext({ cert: p.localhost.cert, key: p.localhost.key });
    new TicketKeyRing([]).attach(context);
    const server = net.createServer((raw) => {
      const socket = new tls.TLSSocket(raw, { isServer: true, secureContext: context });
      socket.on('error', () => socket.destroy());
      socket.once('secure', () => socket.end('hello\n'));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    t.after(() => server.close());
    const { port } = server.address() as net.AddressInfo;
    for (const maxVersion of ['TLSv1.3', 'TLSv1.2'] as const) {
      const { session, reused } = await handshake(p, port, { maxVersion });
      assert.equal(reused, false);
      assert.equal(session, undefined, `${maxVersion}: no ticket`);
    }
  });

  test('keys replaced are zeroed; a Node without the callback gets the first key, set again on a change', () => {
    const first = key();
    const mine = Buffer.from(first);
    const ring = new TicketKeyRing([mine]);
    const set: Buffer[] = [];
    const context = { context: { setTicketKeys: (k: Buffer) => set.push(Buffer.from(k)) } };
    ring.attach(context);
    const next = key();
    ring.set([Buffer.from(next)]);
    assert.deepEqual(mine, Buffer.alloc(48), 'the old copy is zeroed');
    assert.deepEqual(set, [first, next]);
    assert.equal(ring.used, true);
  });

  test('rotation keeps enough keys for a ticket lifetime, passes them on and takes them back', () => {
    assert.equal(keysKept(3_600_000), 3, 'hourly: the current key and two older ones');
    assert.equal(keysKept(7_200_000), 2);
    assert.equal(keysKept(1_000), 16, 'capped');
    assert.equal(keysKept(0), 1, 'never rotated');
    const states: unknown[] = [];
    const rotation = new TicketKeyRotation();
    rotation.start(3_600_000, (state) => states.push(state));
    const before = rotation.ring.list();
    for (let i = 0; i < 4; i++) rotation.rotate();
    rotation.stop();
    assert.equal(rotation.rotations, 4);
    assert.equal(rotation.ring.size, 3);
    assert.equal(states.length, 4);
    const after = rotation.ring.list();
    assert.ok(!after.some((k) => k.equals(before[0]!)), 'the first key is gone by now');
    const passed = decodeTicketKeys(JSON.parse(JSON.stringify(rotation.state())));
    assert.deepEqual(passed?.keys, after);
    const inherited = new TicketKeyRotation(passed);
    assert.deepEqual(inherited.ring.list(), after, 'a new process keeps the keys it is given');
    assert.equal(decodeTicketKeys({ keys: ['short'], due: 0 }), undefined);
    assert.equal(decodeTicketKeys(encodeTicketKeys([], 0)), undefined);
  });
});
