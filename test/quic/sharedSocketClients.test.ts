import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import type { RemoteInfo } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { UdpProxy } from '../../src/udp/UdpProxy.js';
import type { UdpSessionSummary } from '../../src/udp/events.js';
import { closeSocket, udpSocket } from '../udp/helpers.js';
import { http3Pair, runHttp3Client } from './ngtcp2Peers.js';
import type { ClientRun, Http3Server, Ngtcp2Tools } from './ngtcp2Peers.js';

/** The clients' Source Connection IDs (gtlsclient --scid): how replies find their client. */
const SCIDS = { 'alpha.test': 'a1a1a1a1a1a1a1a1', 'beta.test': 'b2b2b2b2b2b2b2b2' } as const;
const SCID_LENGTH = 8;

/**
 * What quic-go's HTTP/3 client and libp2p do, made of real clients: every connection leaves
 * through one UDP socket. Clients send to `port`; their datagrams go on to the proxy from one
 * `shared` socket, and each reply goes back to the client whose SCID is its DCID (any other, to
 * every client: a QUIC endpoint drops what it cannot decrypt).
 */
async function sharedSocket(proxyPort: number) {
  const front = await udpSocket();
  const shared = await udpSocket();
  const clients = new Map<string, number>();
  front.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
    // A client's long header carries its SCID after its DCID.
    if (((msg[0] ?? 0) & 0x80) !== 0 && msg.length > 6) {
      const scidAt = 6 + (msg[5] ?? 0);
      const scid = msg.subarray(scidAt + 1, scidAt + 1 + (msg[scidAt] ?? 0));
      if (scid.length === SCID_LENGTH) clients.set(scid.toString('hex'), rinfo.port);
    }
    shared.send(msg, proxyPort, '127.0.0.1');
  });
  shared.on('message', (msg: Buffer) => {
    const long = ((msg[0] ?? 0) & 0x80) !== 0;
    const dcid = long ? msg.subarray(6, 6 + (msg[5] ?? 0)) : msg.subarray(1, 1 + SCID_LENGTH);
    const port = clients.get(dcid.toString('hex'));
    for (const each of port === undefined ? clients.values() : [port])
      front.send(msg, each, '127.0.0.1');
  });
  return {
    port: front.address().port,
    sharedPort: shared.address().port,
    close: async () => {
      await closeSocket(front);
      await closeSocket(shared);
    },
  };
}

describe('QUIC connections of one client socket, each routed by its own name (gtlsclient, gtlsserver)', () => {
  const pair = http3Pair('l4proxy-shared-socket-', (dir) => {
    writeFileSync(join(dir, 'upload.bin'), randomBytes(1 << 20));
  });
  const ready = (t: TestContext) => pair.ready(t);

  function proxyFor(a: Http3Server, b: Http3Server, allowed: readonly string[]): UdpProxy {
    return new UdpProxy({
      upstreams: [
        { id: 'alpha.test', host: '127.0.0.1', port: a.port },
        { id: 'beta.test', host: '127.0.0.1', port: b.port },
      ],
      idleTimeout: 30_000,
      quic: { sni: true },
      selector: (ctx) =>
        allowed.includes(ctx.serverName ?? '')
          ? ctx.candidates.find((c) => c.id === ctx.serverName)
          : undefined,
    });
  }

  /** Both clients at once through one socket, each uploading 1 MiB (short headers interleave). */
  async function bothClients(paths: Ngtcp2Tools, port: number) {
    const run = (name: keyof typeof SCIDS) =>
      runHttp3Client(paths.gtlsclient, paths.unshare, pair.dir, name, port, [
        `--scid=${SCIDS[name]}`,
        `--data=${join(pair.dir, 'upload.bin')}`,
      ]);
    return Promise.all([run('alpha.test'), run('beta.test')]);
  }

  /** What both clients got through the shared socket, and the proxy they went through. */
  interface SharedRun {
    readonly proxy: UdpProxy;
    readonly closed: readonly UdpSessionSummary[];
    /** The shared socket's port: every session's client port. */
    readonly sharedPort: number;
    readonly toAlpha: ClientRun;
    readonly toBeta: ClientRun;
  }

  /**
   * Both clients at once through one shared socket and a proxy routing the `allowed` names;
   * `check` is given what they got, before the proxy closes. Nothing when the peers are missing
   * (the test skipped).
   */
  async function throughSharedSocket(
    t: TestContext,
    allowed: readonly string[],
    check: (run: SharedRun) => void,
  ): Promise<void> {
    const peers = ready(t);
    if (!peers) return;
    const [paths, a, b] = peers;
    const proxy = proxyFor(a, b, allowed);
    const closed: UdpSessionSummary[] = [];
    proxy.on('sessionClose', (summary) => closed.push(summary));
    const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
    const socket = await sharedSocket(port);
    try {
      const [toAlpha, toBeta] = await bothClients(paths, socket.port);
      check({ proxy, closed, sharedPort: socket.sharedPort, toAlpha, toBeta });
    } finally {
      await socket.close();
      await proxy.close();
    }
  }

  test('two names from one socket reach two servers; short headers find their connection', async (t) => {
    await throughSharedSocket(
      t,
      ['alpha.test', 'beta.test'],
      ({ proxy, closed, sharedPort, toAlpha, toBeta }) => {
        assert.equal(toAlpha.body, 'served by alpha.test\n', toAlpha.output.slice(-2000));
        assert.equal(toBeta.body, 'served by beta.test\n', toBeta.output.slice(-2000));
        const sessions = proxy.sessions();
        assert.deepEqual(sessions.map((s) => [s.clientPort, s.serverName, s.upstream?.id]).sort(), [
          [sharedPort, 'alpha.test', 'alpha.test'],
          [sharedPort, 'beta.test', 'beta.test'],
        ]);
        // Each carried its 1 MiB upload: the handshake's long headers alone are a few KB.
        for (const session of sessions) assert.ok(session.bytesFromClient > 1 << 20);
        const stats = proxy.stats();
        assert.equal(stats.quic?.quic_connection_sessions, 1);
        assert.equal(stats.downstream_sess_total, 2);
        assert.deepEqual(closed, []);
      },
    );
  });

  test('a name no route allows is refused on its own connection while the allowed one is served', async (t) => {
    await throughSharedSocket(
      t,
      ['alpha.test'],
      ({ proxy, closed, sharedPort, toAlpha, toBeta }) => {
        assert.equal(toAlpha.body, 'served by alpha.test\n', toAlpha.output.slice(-2000));
        assert.ok(!toBeta.body?.includes('served by'), `beta.test was served: ${toBeta.output}`);
        const refused = closed.filter((s) => s.serverName === 'beta.test');
        assert.ok(refused.length >= 1, 'the beta.test connection opened sessions');
        assert.ok(refused.every((s) => s.reason === 'no_upstream' && s.upstream === undefined));
        assert.deepEqual(
          proxy.sessions().map((s) => [s.clientPort, s.serverName, s.upstream?.id]),
          [[sharedPort, 'alpha.test', 'alpha.test']],
        );
        assert.equal(proxy.stats().upstreams['beta.test']?.upstream_sess_total, 0);
      },
    );
  });
});
