import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import fc from 'fast-check';
import { sessionWithoutPeer } from '../../src/tls/sessionWithoutPeer.js';
import { startOpensslServer } from '../helpers/openssl.js';
import { issueServerAndClient, sharedPki } from '../helpers/tlsCa.js';
import { fuzzRuns } from '../helpers/fuzz.js';
import { withTimeout } from '../helpers/net.js';

const getPki = sharedPki(issueServerAndClient);
type Pki = NonNullable<Awaited<ReturnType<typeof getPki>>>;

interface Visit {
  readonly reused: boolean;
  readonly authorized: boolean;
  /** The last session the server gave; a resumed TLS 1.2 handshake gives none. */
  readonly session: Buffer | undefined;
}

/**
 * One Node TLS client connection to `port` (openssl s_server -rev): a line there and back, then
 * the last session the server gave (TLS 1.3 tickets come after the handshake).
 */
function visit(p: Pki, port: number, session?: Buffer): Promise<Visit> {
  return withTimeout(
    new Promise<Visit>((resolve, reject) => {
      let last: Buffer | undefined;
      const socket = tls.connect({
        host: '127.0.0.1',
        port,
        servername: 'localhost',
        ca: p.ca.cert,
        ...(session !== undefined && { session }),
      });
      socket.on('session', (s: Buffer) => (last = s));
      socket.on('error', reject);
      socket.once('secureConnect', () => socket.write('ping\n'));
      socket.on('data', (chunk: Buffer) => {
        if (!chunk.toString().includes('gnip')) return;
        const outcome = { reused: socket.isSessionReused(), authorized: socket.authorized };
        socket.destroy();
        resolve({ ...outcome, session: last });
      });
    }),
    10_000,
    'a TLS visit to s_server',
  );
}

/** A {@link visit} that must have been given a session. */
async function visitWithSession(p: Pki, port: number): Promise<Visit & { session: Buffer }> {
  const result = await visit(p, port);
  const session = result.session;
  if (session === undefined) throw new Error('the server gave no session');
  return { ...result, session };
}

async function sServer(t: TestContext, p: Pki, version: '-tls1_2' | '-tls1_3'): Promise<number> {
  const server = await startOpensslServer(p.openssl, p.server, { version });
  t.after(() => server.stop());
  return server.port;
}

describe('sessionWithoutPeer: saved sessions drop the server certificate', () => {
  test('a TLS 1.3 session from openssl s_server loses its certificate and still resumes', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const port = await sServer(t, p, '-tls1_3');
    const first = await visitWithSession(p, port);
    const der = new X509Certificate(p.server.cert).raw;
    assert.ok(first.session.includes(der), 'Node saves the server certificate in the session');
    const stripped = sessionWithoutPeer(first.session);
    assert.ok(!stripped.includes(der), 'the certificate is gone');
    // Exactly the certificate and its [3] wrapper (2–4 bytes) went, and the outer header shrank.
    const removed = first.session.length - stripped.length;
    assert.ok(removed >= der.length + 2 && removed <= der.length + 8, `removed ${removed}`);
    assert.deepEqual(sessionWithoutPeer(stripped), stripped);
    const again = await visit(p, port, stripped);
    assert.equal(again.reused, true, 'the stripped session resumes');
    assert.equal(again.authorized, true, 'its stored verification result says trusted');
    // A session saved from the resumed connection has no certificate to drop.
    assert.ok(again.session !== undefined && !again.session.includes(der));
  });

  test('a TLS 1.2 session keeps its certificate (Node refuses a resumed one without)', async (t) => {
    const p = await getPki(t);
    if (p === undefined) return;
    const port = await sServer(t, p, '-tls1_2');
    const first = await visitWithSession(p, port);
    assert.equal(sessionWithoutPeer(first.session), first.session);
    const again = await visit(p, port, first.session);
    assert.equal(again.reused, true);
  });

  test('anything else comes back unchanged, and no input throws (fast-check)', () => {
    const sessionLike = fc
      .uint8Array({ maxLength: 300 })
      .map((body) =>
        Buffer.concat([
          Buffer.from([0x30, 0x82, 0x01, 0x00, 0x02, 0x01, 0x01, 0x02, 0x02, 0x03, 0x04]),
          body,
        ]),
      );
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 400 }), sessionLike), (bytes) => {
        const input = Buffer.from(bytes);
        const output = sessionWithoutPeer(input);
        assert.ok(output === input || output.length < input.length);
      }),
      { numRuns: fuzzRuns(2000) },
    );
    // A SEQUENCE that is not a version-1 session, and a [3] element outside a session.
    const tls13 = [0x02, 0x01, 0x01, 0x02, 0x02, 0x03, 0x04];
    const notSession = Buffer.from([
      0x30, 0x0a, 0x02, 0x01, 0x02, 0x02, 0x02, 0x03, 0x04, 0xa3, 0x01, 0x00,
    ]);
    assert.equal(sessionWithoutPeer(notSession), notSession);
    const tls12 = Buffer.from([
      0x30, 0x0a, 0x02, 0x01, 0x01, 0x02, 0x02, 0x03, 0x03, 0xa3, 0x01, 0x00,
    ]);
    assert.equal(sessionWithoutPeer(tls12), tls12);
    const peerOnly = Buffer.from([0x30, 0x0c, ...tls13, 0xa3, 0x03, 0x04, 0x01, 0x00]);
    assert.deepEqual(sessionWithoutPeer(peerOnly), Buffer.from([0x30, 0x07, ...tls13]));
    const truncated = peerOnly.subarray(0, 12);
    assert.equal(sessionWithoutPeer(truncated), truncated);
    // Node 22.23/24.22 prefix the server name the session was verified for: kept as it is.
    const prefix = Buffer.concat([
      Buffer.from('\0nodejs:tls:session:1\0', 'latin1'),
      Buffer.from([0x00, 0x04]),
      Buffer.from('host'),
    ]);
    assert.deepEqual(
      sessionWithoutPeer(Buffer.concat([prefix, peerOnly])),
      Buffer.concat([prefix, Buffer.from([0x30, 0x07, ...tls13])]),
    );
    const cutName = prefix.subarray(0, prefix.length - 1);
    assert.equal(sessionWithoutPeer(cutName), cutName);
  });
});
