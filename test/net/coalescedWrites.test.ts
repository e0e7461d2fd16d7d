import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { TestContext } from 'node:test';
import tls from 'node:tls';
import {
  COALESCED_BYTES,
  afterRecord,
  coalesceTlsRecord,
  copyRecord,
} from '../../src/net/coalescedWrites.js';
import type { RelaySocket } from '../../src/net/RelaySocket.js';
import { readAll, readSlowly, withTimeout } from '../helpers/net.js';
import { handlePort, recordHandleWrites } from '../helpers/handleWrites.js';
import type { WrittenHandle } from '../helpers/handleWrites.js';
import { freePort, startPeer } from '../helpers/peerProcess.js';
import { testServer } from '../helpers/testServer.js';
import { recordingProxy } from '../helpers/recordingProxy.js';
import type { RecordingProxy } from '../helpers/recordingProxy.js';
import { testCa } from '../helpers/tlsCa.js';
import type { IssuedCert } from '../helpers/tlsCa.js';
import { tool } from '../helpers/tools.js';

const RECORD = 16 * 1024;
const MiB = 1024 * 1024;
/** What one read of a socket asks libuv for (Node's suggested buffer). */
const KERNEL_READ = 64 * 1024;

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

interface WriteCount {
  /** Sockets the proxy wrote to that `matches` picked, as they were written to. */
  readonly sockets: Set<{ readonly writableLength: number }>;
  /** Calls that handed the kernel one chunk. */
  single: number;
  /** Calls that handed it several chunks at once (writev), and how many chunks they held. */
  vectored: number;
  vectoredChunks: number;
  /** The most bytes one socket held at a write: those still in flight plus the write's own. */
  peakHeld: number;
}

/**
 * Counts the writes this process's TCP handles picked by `matches` make (the proxy runs in this
 * process), whichever socket drives them; restored by the test's `after`.
 */
function countWrites(
  t: TestContext,
  matches: (handle: WrittenHandle) => boolean,
): () => WriteCount {
  const writes = recordHandleWrites(t, matches);
  const count: WriteCount = {
    sockets: new Set(),
    single: 0,
    vectored: 0,
    vectoredChunks: 0,
    peakHeld: 0,
  };
  // Called when the test reads the counts: tallies what was recorded so far.
  return () => {
    for (const write of writes.splice(0)) {
      let bytes = 0;
      for (const chunk of write.chunks) bytes += chunk.length;
      if (write.owner !== undefined) {
        count.sockets.add(write.owner);
        // What the socket held when the write was made, plus the write's own bytes (a
        // net.Socket counts them already: an overestimate there, never under).
        count.peakHeld = Math.max(count.peakHeld, write.heldBefore + bytes);
      }
      if (write.chunks.length > 1) {
        count.vectored++;
        count.vectoredChunks += write.chunks.length;
      } else count.single++;
    }
    return count;
  };
}

/** A plain upstream that keeps what it receives; `hold` leaves it unread until `release()`. */
async function collector(
  t: TestContext,
  hold = false,
): Promise<{ port: number; received: Promise<Buffer>; release(): void }> {
  let release = (): void => undefined;
  let resolveReceived: (data: Buffer) => void = () => undefined;
  const received = new Promise<Buffer>((resolve) => (resolveReceived = resolve));
  const port = await testServer(t, (socket) => {
    const chunks: Buffer[] = [];
    if (hold) {
      socket.pause();
      release = () => socket.resume();
    }
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', () => {
      resolveReceived(Buffer.concat(chunks));
      socket.end();
    });
  });
  return {
    port,
    received,
    release: () => {
      release();
    },
  };
}

/** A test CA (made with openssl) and its certificate for localhost; undefined when skipped. */
async function localhost(t: TestContext) {
  const openssl = tool(t, 'openssl');
  if (!openssl) return undefined;
  const ca = await testCa(t, openssl);
  return { openssl, ca, cert: await ca.issue('localhost', ['localhost', '127.0.0.1']) };
}

async function terminating(t: TestContext, cert: IssuedCert, upstream: number) {
  const rig = await recordingProxy({
    upstreams: [{ host: '127.0.0.1', port: upstream }],
    terminateTls: { cert: cert.cert, key: cert.key },
  });
  t.after(() => rig.close());
  return rig;
}

/** A TLS client through the proxy that sends `data` in 1 MiB writes, then ends. */
function sendOverTls(rig: RecordingProxy, ca: string, data: Buffer): tls.TLSSocket {
  const client = tls.connect({ host: rig.host, port: rig.port, ca, servername: 'localhost' });
  client.on('error', () => undefined);
  client.once('secureConnect', () => {
    let offset = 0;
    const next = (): void => {
      while (offset < data.length) {
        const more = client.write(data.subarray(offset, offset + MiB));
        offset += MiB;
        if (!more) {
          client.once('drain', next);
          return;
        }
      }
      client.end();
    };
    next();
  });
  client.resume();
  return client;
}

describe('TLS records are written to the plain side coalesced, one writev per loop turn', () => {
  test("a TLS client's 8 MiB reach the upstream byte-exact, in far fewer writes than records", async (t) => {
    const pki = await localhost(t);
    if (!pki) return;
    const { ca, cert } = pki;
    const upstream = await collector(t);
    const writes = countWrites(t, (handle) => handlePort(handle, 'remote') === upstream.port);
    const rig = await terminating(t, cert, upstream.port);
    const data = randomBytes(8 * MiB);
    sendOverTls(rig, ca.cert, data);
    const received = await withTimeout(upstream.received, 20_000, 'the upstream received all');
    assert.equal(received.length, data.length);
    assert.equal(sha256(received), sha256(data));
    const records = data.length / RECORD;
    const counted = writes();
    const calls = counted.single + counted.vectored;
    assert.ok(counted.vectored > 0, `no writev: ${JSON.stringify({ ...counted, sockets: 0 })}`);
    assert.ok(
      calls <= records / 2,
      `${String(calls)} writes for ${String(records)} records: not coalesced`,
    );
    assert.deepEqual(rig.errors, []);
  });

  test('a stalled upstream pauses the TLS client; the bytes held stay bounded', async (t) => {
    const pki = await localhost(t);
    if (!pki) return;
    const { ca, cert } = pki;
    const upstream = await collector(t, true);
    const writes = countWrites(t, (handle) => handlePort(handle, 'remote') === upstream.port);
    const rig = await terminating(t, cert, upstream.port);
    // More than the kernel's buffers on both sides of the proxy hold, however large they are here.
    const data = randomBytes(64 * MiB);
    sendOverTls(rig, ca.cert, data);
    const paused = (): number => rig.proxy.stats().downstream_flow_control_paused_reading_total;
    for (let i = 0; i < 400 && paused() === 0; i++)
      await new Promise((resolve) => setTimeout(resolve, 25));
    assert.ok(paused() > 0, 'the proxy never paused the TLS client');
    const { sockets, peakHeld } = writes();
    assert.equal(sockets.size, 1);
    // Node's TLS stream hands over every record one read of the client decrypts, paused or not:
    // at most the limit, the record that crossed it, and the rest of that read (64 KiB of
    // ciphertext, plus a record begun in the read before).
    const bound = COALESCED_BYTES + RECORD + KERNEL_READ + RECORD;
    assert.ok(peakHeld <= bound, `${String(peakHeld)} bytes held, bound ${String(bound)}`);
    upstream.release();
    const received = await withTimeout(upstream.received, 30_000, 'the upstream received all');
    assert.equal(sha256(received), sha256(data));
    assert.deepEqual(rig.errors, []);
  });

  test("openssl s_server's 8 MiB reach a plain client of an originating proxy byte-exact, coalesced", async (t) => {
    const pki = await localhost(t);
    if (!pki) return;
    const { openssl, ca, cert } = pki;
    const files = mkdtempSync(join(tmpdir(), 'l4proxy-www-'));
    t.after(() => {
      rmSync(files, { recursive: true, force: true });
    });
    const data = randomBytes(8 * MiB);
    writeFileSync(join(files, 'big.bin'), data);
    const port = await freePort();
    const args = ['s_server', '-accept', `127.0.0.1:${String(port)}`, '-WWW'];
    const server = await startPeer(
      openssl,
      [...args, '-cert', cert.certFile, '-key', cert.keyFile],
      port,
      files,
    );
    t.after(() => server.stop());
    const rig = await recordingProxy({
      upstreams: [{ host: '127.0.0.1', port }],
      tls: { ca: ca.cert, servername: 'localhost' },
    });
    t.after(() => rig.close());
    const writes = countWrites(t, (handle) => handlePort(handle, 'local') === rig.port);
    const client = net.connect(rig.port, rig.host);
    client.on('error', () => undefined);
    client.end('GET /big.bin HTTP/1.0\r\n\r\n');
    const reply = await readAll(client, 20_000);
    const body = reply.subarray(reply.indexOf('\r\n\r\n') + 4);
    assert.match(reply.subarray(0, 64).toString('latin1'), /^HTTP\/1\.0 200/);
    assert.equal(sha256(body), sha256(data));
    const counted = writes();
    const calls = counted.single + counted.vectored;
    assert.ok(counted.vectored > 0, `no writev: ${JSON.stringify({ ...counted, sockets: 0 })}`);
    assert.ok(calls <= data.length / RECORD / 2, `${String(calls)} writes: not coalesced`);
    assert.deepEqual(rig.errors, []);
  });
});

/** A plain upstream per connection that reads in bursts of `burst` bytes, pausing between them. */
async function slowCollectors(
  t: TestContext,
  burst: number,
): Promise<{ port: number; received: Promise<Buffer>[] }> {
  const received: Promise<Buffer>[] = [];
  const port = await testServer(t, (socket) => {
    received.push(
      readSlowly(socket, burst).then((bytes) => {
        socket.end();
        return bytes;
      }),
    );
  });
  return { port, received };
}

/**
 * A destination as the record block sees it: corked by `coalesceTlsRecord`, and when uncorked it
 * either takes everything at once or leaves `pending` bytes in flight.
 */
function destination(pending: () => number): RelaySocket & { held: Buffer[] } {
  const socket = {
    held: [] as Buffer[],
    writableCorked: 0,
    writableLength: 0,
    cork() {
      socket.writableCorked++;
    },
    uncork() {
      socket.writableCorked = 0;
      socket.writableLength = pending();
    },
    write(chunk: Buffer) {
      socket.held.push(chunk);
      socket.writableLength += chunk.length;
      return true;
    },
  };
  return socket as unknown as RelaySocket & { held: Buffer[] };
}

/** A full record read into a (shared) buffer: `fill` repeated. */
function record(fill: number): Buffer {
  return Buffer.alloc(RECORD, fill);
}

function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

describe('decrypted records share one block, reused while their writes complete at once', () => {
  test('a record whose write is left pending keeps its bytes; one written at once gives its place back', async () => {
    // One turn whose flush completes: the next turn's record takes the same place.
    const quick = destination(() => 0);
    // Whatever the block held before this test (an earlier test's records) is given back.
    const warm = copyRecord(RECORD, record(0));
    coalesceTlsRecord(quick, warm);
    quick.write(warm);
    afterRecord(warm, quick);
    await nextTurn();
    const first = copyRecord(RECORD, record(1));
    coalesceTlsRecord(quick, first);
    quick.write(first);
    afterRecord(first, quick);
    await nextTurn();
    const second = copyRecord(RECORD, record(2));
    assert.equal(second.buffer, first.buffer, 'a new block after a completed flush');
    assert.equal(second.byteOffset, first.byteOffset, 'not reused from its start');
    coalesceTlsRecord(quick, second);
    quick.write(second);
    afterRecord(second, quick);
    await nextTurn();
    // A turn whose flush leaves its write pending: later records must not overwrite it.
    const slow = destination(() => RECORD);
    const pending = copyRecord(RECORD, record(3));
    coalesceTlsRecord(slow, pending);
    slow.write(pending);
    afterRecord(pending, slow);
    await nextTurn();
    const later = [4, 5, 6, 7, 8, 9, 10, 11, 12].map((fill) => {
      const chunk = copyRecord(RECORD, record(fill));
      afterRecord(chunk, quick);
      return chunk;
    });
    assert.ok(
      pending.every((byte) => byte === 3),
      'a pending record was overwritten',
    );
    assert.ok(
      later.every(
        (chunk) => chunk.buffer !== pending.buffer || chunk.byteOffset > pending.byteOffset,
      ),
    );
    // A record kept (early data, no destination yet) or written to a socket that left it
    // pending, uncorked: kept as it was too.
    for (const keep of [undefined, destination(() => RECORD)]) {
      const kept = copyRecord(RECORD, record(13));
      if (keep !== undefined) keep.write(kept);
      afterRecord(kept, keep);
      for (let i = 0; i < 9; i++) afterRecord(copyRecord(RECORD, record(14)), quick);
      assert.ok(
        kept.every((byte) => byte === 13),
        'a kept record was overwritten',
      );
    }
  });

  test('one TLS client read fast: its records come from a handful of blocks, byte-exact', async (t) => {
    const pki = await localhost(t);
    if (!pki) return;
    const upstream = await collector(t);
    const written = recordHandleWrites(
      t,
      (handle) => handlePort(handle, 'remote') === upstream.port,
    );
    const rig = await terminating(t, pki.cert, upstream.port);
    const data = randomBytes(8 * MiB);
    sendOverTls(rig, pki.ca.cert, data);
    const received = await withTimeout(upstream.received, 20_000, 'the upstream received all');
    assert.equal(sha256(received), sha256(data));
    const chunks = written.flatMap((write) => write.chunks.filter((chunk) => chunk.length > 0));
    const blocks = new Set(chunks.map((chunk) => chunk.buffer)).size;
    // A copy of its own per record was one block each (512 here).
    assert.ok(blocks * 8 <= chunks.length, `${chunks.length} records in ${blocks} blocks`);
    assert.deepEqual(rig.errors, []);
  });

  test('three TLS clients at once to slow upstreams: every byte intact while writes go pending', async (t) => {
    const pki = await localhost(t);
    if (!pki) return;
    const upstream = await slowCollectors(t, 256 * 1024);
    const rig = await terminating(t, pki.cert, upstream.port);
    const uploads = Array.from({ length: 3 }, () => randomBytes(6 * MiB));
    for (const data of uploads) sendOverTls(rig, pki.ca.cert, data);
    await rig.closed(uploads.length, 60_000);
    assert.equal(upstream.received.length, uploads.length);
    const got = (await Promise.all(upstream.received)).map(sha256).sort();
    assert.deepEqual(got, uploads.map(sha256).sort());
    assert.ok(rig.proxy.stats().downstream_flow_control_paused_reading_total > 0, 'never paused');
    assert.deepEqual(rig.errors, []);
  });
});
