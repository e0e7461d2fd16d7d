/**
 * The cost of the `quic` option per new session: parsing a client Initial (key derivation, header
 * protection, AES-128-GCM, ClientHello) alone, and new UDP sessions through a UdpProxy with and
 * without `quic: { sni: true }`. Prints a markdown table (reproduced in docs/quic.md).
 *
 *   npx tsc -p tsconfig.json && node build/bench/quicInitial.js
 */
import dgram from 'node:dgram';
import type { Socket } from 'node:dgram';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { parseQuicInitial } from '../src/protocol/QuicInitialParser.js';
import { QUIC_V1 } from '../src/protocol/quicKeys.js';
import { UdpProxy } from '../src/udp/UdpProxy.js';
import { buildInitial, cryptoFrame } from '../test/protocol/quicInitialFixtures.js';
import { alpnExtension, buildHandshake, sniExtension } from '../test/protocol/tlsHelloFixtures.js';

const SESSIONS = 200;
const ROUNDS = 7;
const BATCH = 20;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

/** Client Initials of 1200 bytes with distinct DCIDs (so keys are derived for each). */
function initials(count: number): Buffer[] {
  const hello = buildHandshake([sniExtension('bench.example'), alpnExtension(['h3'])]);
  return Array.from({ length: count }, () =>
    buildInitial({
      version: QUIC_V1,
      dcid: randomBytes(8),
      frames: cryptoFrame(0, hello),
      padTo: 1162,
    }),
  );
}

function parseCost(packets: Buffer[]): number {
  const start = process.hrtime.bigint();
  for (const packet of packets) {
    if (parseQuicInitial(packet)?.kind !== 'sni') throw new Error('no SNI');
  }
  return Number(process.hrtime.bigint() - start) / 1000 / packets.length;
}

async function bind(socket: Socket): Promise<void> {
  socket.bind(0, '127.0.0.1');
  await once(socket, 'listening');
}

/** µs per new session: SESSIONS clients send one Initial each and wait for the echo. */
async function sessionCost(quic: boolean, packets: Buffer[]): Promise<number> {
  const upstream = dgram.createSocket('udp4');
  await bind(upstream);
  upstream.on('message', (msg, rinfo) => {
    upstream.send(msg.subarray(0, 16), rinfo.port, rinfo.address);
  });
  const proxy = new UdpProxy({
    upstreams: [{ host: '127.0.0.1', port: upstream.address().port }],
    ...(quic && { quic: { sni: true } }),
  });
  const { port } = await proxy.bind({ port: 0, address: '127.0.0.1' });
  const clients: Socket[] = [];
  for (let i = 0; i < SESSIONS; i++) {
    const client = dgram.createSocket('udp4');
    await bind(client);
    clients.push(client);
  }
  const start = process.hrtime.bigint();
  // Batches of BATCH, so no socket buffer overflows (a lost datagram would stall the round).
  for (let at = 0; at < SESSIONS; at += BATCH) {
    await Promise.all(
      clients.slice(at, at + BATCH).map((client, i) => {
        const reply = once(client, 'message', { signal: AbortSignal.timeout(5_000) });
        client.send(packets[at + i] ?? Buffer.alloc(0), port, '127.0.0.1');
        return reply;
      }),
    );
  }
  const micros = Number(process.hrtime.bigint() - start) / 1000 / SESSIONS;
  for (const client of clients) client.close();
  await proxy.close();
  upstream.close();
  return micros;
}

const packets = initials(SESSIONS);
parseCost(packets); // warm-up
const parse: number[] = [];
const plain: number[] = [];
const withQuic: number[] = [];
for (let round = 0; round < ROUNDS; round++) {
  parse.push(parseCost(initials(SESSIONS)));
  plain.push(await sessionCost(false, packets));
  withQuic.push(await sessionCost(true, initials(SESSIONS)));
}
const fmt = (n: number): string => n.toFixed(1);
console.log(`Node ${process.version}, ${SESSIONS} sessions x ${ROUNDS} rounds, medians\n`);
console.log('| measure | µs per new session |');
console.log('| --- | --- |');
console.log(`| parseQuicInitial (1200-byte v1 Initial, new DCID) | ${fmt(median(parse))} |`);
console.log(`| new UdpProxy session, plain | ${fmt(median(plain))} |`);
console.log(`| new UdpProxy session, quic: { sni: true } | ${fmt(median(withQuic))} |`);
