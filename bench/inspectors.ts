/**
 * CPU cost of each built-in preread inspector on a typical first flight, in process:
 *   node build/bench/inspectors.js [iterations]
 * Prints one Markdown row per inspector: microseconds per inspection (median of 5 rounds).
 * Each inspection is what the preread stage does once the first read arrives (one call).
 */
import tls from 'node:tls';
import net from 'node:net';
import { firstLine, http1, postgresStartup, tlsClientHello } from '../src/index.js';
import type { PrereadInspector } from '../src/index.js';
import { prereadContext as ctx } from '../test/helpers/prereadContext.js';

const iterations = Number(process.argv[2] ?? 20_000);

/** A real ClientHello from Node's TLS client (captured on a loopback socket). */
async function clientHello(): Promise<Buffer> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  const hello = new Promise<Buffer>((resolve) =>
    server.once('connection', (socket) =>
      socket.once('data', (chunk: Buffer) => {
        resolve(chunk);
        socket.destroy();
      }),
    ),
  );
  const client = tls.connect({
    host: '127.0.0.1',
    port,
    servername: 'bench.example',
    ALPNProtocols: ['h2', 'http/1.1'],
  });
  client.on('error', () => undefined);
  const bytes = await hello;
  client.destroy();
  server.close();
  return bytes;
}

function startup(): Buffer {
  const body = Buffer.from('user\0app\0database\0billing\0application_name\0psql\0\0');
  const head = Buffer.alloc(8);
  head.writeUInt32BE(8 + body.length, 0);
  head.writeUInt32BE(196_608, 4);
  return Buffer.concat([head, body]);
}

const cases: [string, PrereadInspector, Buffer][] = [
  ['tlsClientHello', tlsClientHello(), await clientHello()],
  [
    'http1',
    http1(),
    Buffer.from(
      'GET /index.html HTTP/1.1\r\nHost: bench.example\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n',
    ),
  ],
  ['postgresStartup', postgresStartup(), startup()],
  ['firstLine', firstLine(), Buffer.from('HELLO tenant-42 v1\r\n')],
];

console.log('| inspector | first flight (bytes) | µs per inspection (median of 5) |');
console.log('| --- | --- | --- |');
for (const [name, inspector, bytes] of cases) {
  const verdict = inspector(bytes, ctx);
  if (verdict.action !== 'match')
    throw new Error(`${name} did not match its sample: ${verdict.action}`);
  const rounds: number[] = [];
  for (let round = 0; round < 5; round++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) inspector(bytes, ctx);
    rounds.push(Number(process.hrtime.bigint() - start) / 1000 / iterations);
  }
  rounds.sort((a, b) => a - b);
  console.log(`| ${name} | ${bytes.length} | ${rounds[2]?.toFixed(2)} |`);
}
