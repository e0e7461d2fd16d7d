import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import type { TestContext } from 'node:test';
import { TlsClientHelloError } from '../../src/errors.js';
import { ClientHelloParser } from '../../src/protocol/ClientHelloParser.js';
import type { ClientHelloResult } from '../../src/protocol/ClientHelloParser.js';
import { listen, withTimeout } from '../helpers/net.js';
import { issueServerAndClient, sharedPki } from '../helpers/tlsCa.js';
import { tool } from '../helpers/tools.js';
import {
  alpnExtension,
  extension,
  handshakeOf,
  nodeHello,
  recordsOf,
  sniExtension,
} from './tlsHelloFixtures.js';

/*
 * Cross-check of ClientHelloParser against an independent TLS implementation: every client below
 * connects through a relay that feeds the bytes, as TCP delivers them, to the parser, and on to a
 * Node (OpenSSL) TLS server. The name and ALPN list the parser reads must be those the server's
 * OpenSSL reads from the same bytes (the parser lower-cases the name).
 */

const pki = sharedPki(issueServerAndClient);

/** What the TLS server's OpenSSL read from one ClientHello. */
interface ServerView {
  readonly servername: string | undefined;
  readonly protocols: readonly string[] | undefined;
  /** OpenSSL's reason when it refused the handshake. */
  readonly error?: string;
}

/** What the parser made of the same bytes: its result or its error reason. */
type ParserView = { result: ClientHelloResult } | { error: string };

interface Observed {
  readonly server: ServerView;
  readonly parser: ParserView;
  readonly bytes: Buffer;
  readonly chunks: number;
}

/** A TLS server behind a teeing relay; `observe` runs one client and returns both views. */
interface Harness {
  readonly port: number;
  /** Emits `read` each time the relay reads from a client. */
  readonly reads: EventEmitter;
  observe(start: (port: number) => () => void): Promise<Observed>;
}

/** A fresh harness for one test (closed at its end), so no late event of another client leaks in. */
async function harness(t: TestContext): Promise<Harness | undefined> {
  const keys = await pki(t);
  if (keys === undefined) return undefined;
  let seen: ((view: ServerView) => void) | undefined;
  let servername: string | undefined;
  const report = (view: ServerView): void => {
    seen?.(view);
    seen = undefined;
    servername = undefined;
  };
  const server = tls.createServer({
    cert: keys.server.cert,
    key: keys.server.key,
    // OpenSSL calls it once the whole ClientHello is parsed (after the SNI callback).
    ALPNCallback: (offer) => {
      // Node gives `false` for no name.
      const name = typeof offer.servername === 'string' ? offer.servername : undefined;
      report({ servername: name, protocols: offer.protocols });
      return offer.protocols[0];
    },
    SNICallback: (name, callback) => {
      servername = name;
      callback(null, undefined);
    },
  });
  // Without ALPN: the handshake's end, either way.
  server.on('tlsClientError', (error) => {
    report({ servername, protocols: undefined, error: error.message });
  });
  server.on('secureConnection', (socket) => {
    // A resumed session skips the SNI callback (and Node then reports no name).
    report({ servername, protocols: undefined });
    socket.on('error', () => undefined);
    socket.end();
  });
  const tlsPort = await listen(server);
  const reads = new EventEmitter();
  let onParsed: ((view: ParserView, bytes: Buffer, chunks: number) => void) | undefined;
  const relay = net.createServer((client) => {
    client.on('error', () => undefined);
    const upstream = net.connect(tlsPort, '127.0.0.1');
    upstream.on('error', () => undefined);
    upstream.pipe(client);
    const parser = new ClientHelloParser();
    const got: Buffer[] = [];
    let decided = false;
    client.on('data', (chunk: Buffer) => {
      upstream.write(chunk);
      reads.emit('read');
      if (decided) return;
      got.push(chunk);
      let view: ParserView | undefined;
      try {
        const result = parser.push(chunk);
        if (result !== undefined) view = { result };
      } catch (error) {
        view = { error: error instanceof TlsClientHelloError ? error.reason : String(error) };
      }
      if (view === undefined) return;
      decided = true;
      onParsed?.(view, Buffer.concat(got), got.length);
    });
    client.on('close', () => upstream.destroy());
  });
  const port = await listen(relay);
  t.after(() => closeAll([relay, server]));
  return {
    port,
    reads,
    async observe(start) {
      const serverSeen = new Promise<ServerView>((resolve) => {
        seen = (view) => {
          seen = undefined;
          resolve(view);
        };
      });
      const parsed = new Promise<[ParserView, Buffer, number]>((resolve) => {
        onParsed = (...args) => {
          onParsed = undefined;
          resolve(args);
        };
      });
      const stop = start(port);
      try {
        const [view, [parser, bytes, chunks]] = await withTimeout(
          Promise.all([serverSeen, parsed]),
          10_000,
          'the server and the parser to read the ClientHello',
        );
        return { server: view, parser, bytes, chunks };
      } finally {
        stop();
      }
    },
  };
}

/** Runs a client program given the relay's port; killed by PID when the check is done. */
function program(path: string, args: (port: number) => string[]): (port: number) => () => void {
  return (port) => {
    const child = spawn(path, args(port), { stdio: ['pipe', 'ignore', 'ignore'] });
    child.on('error', () => undefined);
    return () => {
      if (child.exitCode === null) child.kill('SIGKILL');
    };
  };
}

function opensslClient(openssl: string, args: readonly string[]): (port: number) => () => void {
  return program(openssl, (port) => ['s_client', '-connect', `127.0.0.1:${port}`, ...args]);
}

function nodeClient(options: tls.ConnectionOptions): (port: number) => () => void {
  return (port) => {
    const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...options });
    socket.on('error', () => undefined);
    return () => socket.destroy();
  };
}

/** The parser, fed the same bytes one at a time and whole: the same result as over TCP. */
function reparsed(bytes: Buffer, size: number): ParserView {
  const parser = new ClientHelloParser();
  try {
    for (let at = 0; at < bytes.length; at += size) {
      const result = parser.push(bytes.subarray(at, at + size));
      if (result !== undefined) return { result };
    }
  } catch (error) {
    return { error: error instanceof TlsClientHelloError ? error.reason : String(error) };
  }
  return { error: 'undecided' };
}

function agrees(observed: Observed, what: string): void {
  const { server, parser } = observed;
  assert.ok('result' in parser, `${what}: parser failed with ${JSON.stringify(parser)}`);
  const hello = parser.result.kind === 'not_tls' ? undefined : parser.result.hello;
  assert.ok(hello !== undefined, `${what}: not_tls`);
  assert.equal(hello.serverName, server.servername?.toLowerCase(), `${what}: server name`);
  if (server.protocols !== undefined)
    assert.deepEqual(hello.alpn, server.protocols, `${what}: ALPN`);
  assert.equal(hello.length, observed.bytes.length, `${what}: length`);
  for (const size of [1, 7, observed.bytes.length])
    assert.deepEqual(reparsed(observed.bytes, size), parser, `${what}: chunks of ${size}`);
}

const longAlpn = Array.from({ length: 24 }, (_, i) => `proto-${i}-${'x'.repeat(40)}`);

describe('ClientHelloParser cross-checked against OpenSSL (a Node TLS server) on real clients', () => {
  const cases: { name: string; args: string[] }[] = [
    { name: 'TLS 1.3, SNI and ALPN', args: ['-servername', 'a.example', '-alpn', 'h2,http/1.1'] },
    { name: 'TLS 1.2 only', args: ['-tls1_2', '-servername', 'b.example', '-alpn', 'http/1.1'] },
    { name: '-no_tls1_3', args: ['-no_tls1_3', '-servername', 'c.example'] },
    { name: 'mixed-case name', args: ['-servername', 'MiXeD.Example.COM', '-alpn', 'h2'] },
    { name: 'no SNI', args: ['-noservername', '-alpn', 'h2'] },
    { name: 'underscore and punycode', args: ['-servername', '_srv.xn--bcher-kva.example'] },
    {
      name: '253-byte name',
      args: ['-servername', `${'a'.repeat(63)}.`.repeat(3) + 'b'.repeat(61)],
    },
    {
      name: 'ffdhe8192 key share (a 1.3 KB hello)',
      args: ['-tls1_3', '-groups', 'ffdhe8192:X25519', '-servername', 'big.example'],
    },
    {
      name: 'long ALPN list (24 names, 1.1 KB)',
      args: ['-servername', 'alpn.example', '-alpn', longAlpn.join(',')],
    },
    {
      name: 'hello split into 512-byte records (-max_send_frag)',
      args: [
        '-max_send_frag',
        '512',
        '-groups',
        'ffdhe8192:X25519',
        '-servername',
        'frag.example',
        '-alpn',
        longAlpn.join(','),
      ],
    },
  ];

  for (const { name, args } of cases)
    test(`openssl s_client: ${name}`, async (t) => {
      const openssl = tool(t, 'openssl');
      if (openssl === undefined) return;
      const shared = await harness(t);
      if (shared === undefined) return;
      const observed = await shared.observe(opensslClient(openssl, args));
      agrees(observed, name);
      if (name.includes('max_send_frag')) {
        const records = countRecords(observed.bytes);
        assert.ok(records > 2, `${records} records`);
      }
    });

  test('openssl s_client -sess_in: a resumption hello with a PSK and ticket', async (t) => {
    const openssl = tool(t, 'openssl');
    if (openssl === undefined) return;
    const shared = await harness(t);
    if (shared === undefined) return;
    const dir = mkdtempSync(join(tmpdir(), 'l4proxy-sess-'));
    t.after(() => {
      rmSync(dir, { recursive: true, force: true });
    });
    const session = join(dir, 'session.pem');
    await runToEnd(openssl, [
      's_client',
      '-connect',
      `127.0.0.1:${shared.port}`,
      '-tls1_2',
      '-servername',
      'resume.example',
      '-sess_out',
      session,
    ]);
    const observed = await shared.observe(
      opensslClient(openssl, ['-tls1_2', '-servername', 'resume.example', '-sess_in', session]),
    );
    // Node reports no server name on a resumed session (no SNI callback): what the client sent.
    agrees({ ...observed, server: { servername: 'resume.example', protocols: undefined } }, 'PSK');
    assert.ok(observed.bytes.includes(Buffer.from('resume.example')));
  });

  const nodeCases: { name: string; options: tls.ConnectionOptions }[] = [
    { name: 'SNI and ALPN', options: { servername: 'node.example', ALPNProtocols: ['h2', 'x'] } },
    { name: 'TLS 1.2', options: { servername: 'n12.example', maxVersion: 'TLSv1.2' } },
    { name: 'no SNI', options: { ALPNProtocols: ['http/1.1'] } },
  ];
  for (const { name, options } of nodeCases)
    test(`Node tls.connect: ${name}`, async (t) => {
      const shared = await harness(t);
      if (shared === undefined) return;
      agrees(await shared.observe(nodeClient(options)), name);
    });

  const curlCases: { name: string; args: string[] }[] = [
    { name: 'HTTP/2 and HTTP/1.1 ALPN', args: ['--http2'] },
    { name: 'TLS 1.2 at most', args: ['--tlsv1.2', '--tls-max', '1.2', '--http1.1'] },
    { name: 'TLS 1.3 only', args: ['--tlsv1.3'] },
  ];
  for (const { name, args } of curlCases)
    test(`curl: ${name}`, async (t) => {
      const curlPath = tool(t, 'curl');
      if (curlPath === undefined) return;
      const shared = await harness(t);
      if (shared === undefined) return;
      const host = 'curl.example';
      const observed = await shared.observe(
        program(curlPath, (port) => [
          ...args,
          ...['-sk', '--max-time', '5', '--resolve', `${host}:${port}:127.0.0.1`],
          `https://${host}:${port}/`,
        ]),
      );
      agrees(observed, name);
    });
});

/** A ClientHello's extensions as [type, data] pairs, and a way to put edited ones back. */
function editHello(
  records: Buffer,
  edit: (exts: [number, Buffer][]) => [number, Buffer][],
): Buffer {
  const handshake = handshakeOf(records);
  const body = handshake.subarray(4);
  let at = 2 + 32;
  at += 1 + (body[at] ?? 0);
  at += 2 + body.readUInt16BE(at);
  at += 1 + (body[at] ?? 0);
  const head = body.subarray(0, at);
  const exts: [number, Buffer][] = [];
  const end = at + 2 + body.readUInt16BE(at);
  for (let p = at + 2; p < end; p += 4 + body.readUInt16BE(p + 2))
    exts.push([body.readUInt16BE(p), body.subarray(p + 4, p + 4 + body.readUInt16BE(p + 2))]);
  const edited = edit(exts).map(([type, data]) => extension(type, data));
  const block = Buffer.concat(edited);
  const length = Buffer.alloc(2);
  length.writeUInt16BE(block.length);
  const newBody = Buffer.concat([head, length, block]);
  const header = Buffer.from([1, 0, 0, 0]);
  header.writeUIntBE(newBody.length, 1, 3);
  return recordsOf(Buffer.concat([header, newBody]), [16_384]);
}

/**
 * Sends `bytes` at once, or (with `reads`) one byte per TCP segment: the next byte only once the
 * relay has read the previous one.
 */
function rawClient(bytes: Buffer, reads?: EventEmitter): (port: number) => () => void {
  return (port) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.setNoDelay(true);
    socket.on('error', () => undefined);
    let at = 0;
    const next = (): void => {
      if (at < bytes.length && !socket.destroyed) socket.write(bytes.subarray(at, ++at));
    };
    socket.on('connect', () => {
      if (reads === undefined) socket.write(bytes);
      else {
        reads.on('read', next);
        next();
      }
    });
    return () => {
      reads?.off('read', next);
      socket.destroy();
    };
  };
}

const grease = (n: number): number => 0x0a0a + 0x1010 * n;

describe('ClientHelloParser and OpenSSL on crafted variations of a real hello', () => {
  let hello: Promise<Buffer> | undefined;
  /** The harness and a real hello from Node (captured once). */
  async function setUp(t: TestContext): Promise<[Harness, Buffer] | undefined> {
    hello ??= nodeHello({ servername: 'craft.example', ALPNProtocols: ['h2', 'http/1.1'] });
    const base = await hello;
    const h = await harness(t);
    return h === undefined ? undefined : [h, base];
  }

  const accepted: { name: string; edit: (exts: [number, Buffer][]) => [number, Buffer][] }[] = [
    {
      name: 'GREASE extensions first, middle and last (RFC 8701)',
      edit: (exts) => [
        [grease(0), Buffer.alloc(0)],
        ...exts.slice(0, 2),
        [grease(3), Buffer.from([0])],
        ...exts.slice(2),
        [grease(7), Buffer.alloc(0)],
      ],
    },
    {
      name: 'an ECH outer extension (0xfe0d) beside the public name',
      edit: (exts) => [
        ...exts,
        [0xfe0d, Buffer.concat([Buffer.from([0]), Buffer.alloc(200, 0x5a)])],
      ],
    },
    {
      name: 'a GREASE ALPN name first',
      edit: (exts) =>
        exts.map(([type, data]): [number, Buffer] =>
          type === 16 ? [16, alpnExtension(['\x0a\x0a', 'h2']).subarray(4)] : [type, data],
        ),
    },
    {
      name: 'SNI last, after a 3 KB padding extension',
      edit: (exts) => [
        ...exts.filter(([type]) => type !== 0),
        [21, Buffer.alloc(3000)],
        [0, sniExtension('last.example').subarray(4)],
      ],
    },
  ];
  for (const { name, edit } of accepted)
    test(`accepted by both: ${name}`, async (t) => {
      const setup = await setUp(t);
      if (setup === undefined) return;
      const [h, base] = setup;
      const bytes = editHello(base, edit);
      const observed = await h.observe(rawClient(bytes));
      assert.equal(observed.server.error, undefined);
      agrees(observed, name);
    });

  test('a hello written one byte per TCP segment: both read the same name', async (t) => {
    const setup = await setUp(t);
    if (setup === undefined) return;
    const [h, base] = setup;
    const observed = await h.observe(rawClient(base, h.reads));
    assert.equal(observed.chunks, observed.bytes.length, `${observed.chunks} reads`);
    agrees(observed, 'byte by byte');
  });

  const refused: { name: string; edit: (exts: [number, Buffer][]) => [number, Buffer][] }[] = [
    {
      name: 'an empty server_name extension',
      edit: (exts) =>
        exts.map(([type, data]): [number, Buffer] => [type, type === 0 ? Buffer.alloc(0) : data]),
    },
    {
      name: 'two server_name extensions',
      edit: (exts) => [...exts, [0, sniExtension('other.example').subarray(4)]],
    },
    {
      name: 'two ALPN extensions',
      edit: (exts) => [...exts, [16, alpnExtension(['h3']).subarray(4)]],
    },
    {
      name: 'an empty ALPN name',
      edit: (exts) =>
        exts.map(([type, data]): [number, Buffer] =>
          type === 16 ? [16, Buffer.from([0, 3, 2, 0x68, 0x32, 0])] : [type, data],
        ),
    },
    {
      name: 'a host_name with a NUL byte',
      edit: (exts) =>
        exts.map(([type, data]): [number, Buffer] =>
          type === 0 ? [0, sniExtension('a\0b.example').subarray(4)] : [type, data],
        ),
    },
  ];
  for (const { name, edit } of refused)
    test(`refused by both: ${name}`, async (t) => {
      const setup = await setUp(t);
      if (setup === undefined) return;
      const [h, base] = setup;
      const observed = await h.observe(rawClient(editHello(base, edit)));
      assert.ok(observed.server.error !== undefined, `${name}: OpenSSL accepted it`);
      assert.ok(
        'error' in observed.parser,
        `${name}: parser accepted ${JSON.stringify(observed.parser)}`,
      );
    });
});

function closeAll(servers: readonly net.Server[]): Promise<void> {
  return withTimeout(
    Promise.all(
      servers.map(
        (server) =>
          new Promise<void>((resolve) => {
            server.close(() => {
              resolve();
            });
          }),
      ),
    ).then(() => undefined),
    10_000,
    'the relay and the TLS server to close',
  );
}

function countRecords(bytes: Buffer): number {
  let count = 0;
  for (let at = 0; at + 5 <= bytes.length; at += 5 + bytes.readUInt16BE(at + 3)) count++;
  return count;
}

function runToEnd(program: string, args: readonly string[]): Promise<void> {
  return withTimeout(
    new Promise<void>((resolve) => {
      const child = spawn(program, [...args], { stdio: ['ignore', 'ignore', 'ignore'] });
      child.on('error', () => {
        resolve();
      });
      child.on('exit', () => {
        resolve();
      });
    }),
    10_000,
    `${program} ${args[0] ?? ''}`,
  );
}
