import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { after, describe, test } from 'node:test';
import fc from 'fast-check';
import type { HealthCheckError } from '../../src/index.js';
import { HealthChecker } from '../../src/upstream/HealthChecker.js';
import { resolveHealthCheck } from '../../src/upstream/healthOptions.js';
import type { HttpHealthCheck } from '../../src/upstream/httpCheckOptions.js';
import { httpProbe } from '../../src/upstream/httpReply.js';
import type { ReplyVerdict } from '../../src/upstream/httpReply.js';
import { UpstreamSet } from '../../src/upstream/UpstreamSet.js';
import { fuzzRuns } from '../helpers/fuzz.js';
import { withTimeout } from '../helpers/net.js';
import { trackResources } from './helpers.js';

/*
 * The HTTP check's reply reader, attacked: every split of a reply gives the verdict of the whole
 * (a server may drip it a byte at a time), odd but valid framings pass, broken ones fail with a
 * reason, random bytes never throw; then real misbehaving servers (in a child process, so every
 * socket and timer left in this one is the check's) each get a verdict and leave nothing open.
 */

const probeOf = (http: HttpHealthCheck) => {
  const resolved = resolveHealthCheck({ http }, 'healthCheck', 'tcp');
  assert.ok(resolved?.http);
  return httpProbe(resolved.http, '127.0.0.1', 8080, false);
};

/** The verdict when `reply` arrives in pieces cut at `cuts`, then ends (when `ended`). */
function inPieces(http: HttpHealthCheck, reply: Buffer, cuts: readonly number[], ended: boolean) {
  const reader = probeOf(http).reader();
  let from = 0;
  for (const cut of [...cuts].sort((a, b) => a - b)) {
    const verdict = reader.push(reply.subarray(from, Math.max(from, cut)));
    if (verdict !== undefined) return verdict;
    from = Math.max(from, cut);
  }
  return reader.push(reply.subarray(from)) ?? (ended ? reader.end() : undefined);
}

/** A verdict, but for the bytes shown of a reply found not HTTP (fewer when found early). */
const bare = (verdict: ReplyVerdict) =>
  verdict !== undefined && 'fail' in verdict
    ? verdict.fail.replace(/^(not an HTTP response) \(got .*/s, '$1')
    : verdict;

/** Asserts the verdict of `text` (then a close) whole, byte by byte, and at every single cut. */
function verdictEverywhere(http: HttpHealthCheck, text: string, expected: RegExp | 'pass'): void {
  const reply = Buffer.from(text, 'latin1');
  const whole = probeOf(http).judge(reply, true);
  const shown = (verdict: ReplyVerdict): string =>
    verdict === undefined ? 'undefined' : 'pass' in verdict ? 'pass' : verdict.fail;
  if (expected === 'pass') assert.equal(shown(whole), 'pass', text);
  else assert.match(shown(whole), expected, text);
  const bytes = Array.from({ length: reply.length }, (_, i) => i);
  assert.deepEqual(bare(inPieces(http, reply, bytes, true)), bare(whole), `${text}: byte by byte`);
  // Every cut of a short reply; of a long one (a 17 kB head), 500 of them.
  const step = Math.max(1, Math.floor(reply.length / 500));
  for (let cut = 1; cut < reply.length; cut += step)
    assert.deepEqual(
      bare(inPieces(http, reply, [cut], true)),
      bare(whole),
      `${text}: cut at ${cut}`,
    );
}

describe('the HTTP check reply reader, at every split', () => {
  const ready = { expectBody: 'ready' };
  const chunked = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n';

  test('valid but unusual replies pass: no reason phrase, HTTP/1.0, bare LF line ends, folded headers, NUL bytes', () => {
    verdictEverywhere({}, 'HTTP/1.1 200\r\n\r\n', 'pass');
    verdictEverywhere(ready, 'HTTP/1.0 200 OK\r\n\r\nall ready', 'pass');
    // A hand-written endpoint (printf behind socat): the old reader waited for CRLF CRLF.
    verdictEverywhere(ready, 'HTTP/1.0 200 OK\nContent-Length: 5\n\nready', 'pass');
    verdictEverywhere(
      ready,
      'HTTP/1.1 200 OK\r\nX-Long: a\r\n b\r\nContent-Length: 5\r\n\r\nready',
      'pass',
    );
    verdictEverywhere(ready, 'HTTP/1.1 200 OK\r\nX-Nul: \0\r\n\r\n\0\0ready', 'pass');
    verdictEverywhere(
      {},
      `${'HTTP/1.1 100 Continue\r\n\r\n'.repeat(3)}HTTP/1.1 204 No Content\r\n\r\n`,
      'pass',
    );
  });

  test('chunked: extensions, trailers, upper-case hex, leading zeros; the text found across chunks', () => {
    const body =
      '5;name="a;b"\r\nready\r\nA\r\n0123456789\r\n000000001\r\n!\r\n0\r\nX-T: 1\r\n\r\n';
    verdictEverywhere({ expectBody: 'ready0123' }, `${chunked}${body}`, 'pass');
    verdictEverywhere({ expectBody: /^ready0123456789!$/ }, `${chunked}${body}`, 'pass');
    // Bare LF after the size and after the data.
    verdictEverywhere({ expectBody: /^ready$/ }, `${chunked}5\nready\n0\n\n`, 'pass');
    // Chunked is the framing only as the last coding; else the body runs to the close.
    verdictEverywhere(
      { expectBody: /^5\r\nready/ },
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nready',
      'pass',
    );
  });

  test('broken framing fails with a reason: chunk size overflow, bad chunk end, bad or conflicting Content-Length', () => {
    verdictEverywhere(ready, `${chunked}FFFFFFFFFFFFFFFFF\r\nready`, /^malformed chunked body$/);
    verdictEverywhere(ready, `${chunked}-5\r\nready`, /^malformed chunked body$/);
    verdictEverywhere(
      { expectBody: /^ready$/ },
      `${chunked}5\r\nreadyX\r\n0\r\n\r\n`,
      /^malformed chunked body$/,
    );
    verdictEverywhere(ready, `${chunked}${'1;'.repeat(3000)}\r\n`, /^malformed chunked body$/);
    const sized = (...values: string[]) =>
      `HTTP/1.1 200 OK\r\n${values.map((v) => `Content-Length: ${v}\r\n`).join('')}\r\nready`;
    verdictEverywhere(ready, sized('-5'), /^invalid Content-Length "-5"$/);
    verdictEverywhere(ready, sized('5', '50'), /^invalid Content-Length "5, 50"$/);
    verdictEverywhere(ready, sized('50', '5'), /^invalid Content-Length "50, 5"$/);
    verdictEverywhere(ready, sized('5, 6'), /^invalid Content-Length "5, 6"$/);
    verdictEverywhere(ready, sized('0x5'), /^invalid Content-Length/);
    verdictEverywhere({ expectBody: /^ready$/ }, sized('5, 5'), 'pass');
    verdictEverywhere(
      { expectBody: /^ready$/ },
      sized('99999999999999999999999'),
      /^closed within the response body$/,
    );
  });

  test('what is not HTTP, or not finished, fails as before', () => {
    verdictEverywhere({}, 'SSH-2.0-OpenSSH\r\n', /^not an HTTP response \(got "SSH-2/);
    verdictEverywhere({}, 'HTTP/1.1 2000 OK\r\n\r\n', /^not an HTTP\/1\.x status line/);
    verdictEverywhere({}, 'HTTP/1.1 200 OK\r\nX: 1\r\n', /^closed within the response head/);
    verdictEverywhere(
      {},
      'HTTP/1.1 100 Continue\r\n\r\n',
      /^closed within the response head \(got ""\)$/,
    );
    verdictEverywhere(
      ready,
      'HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nrea',
      /^closed within the response body$/,
    );
    verdictEverywhere(
      ready,
      'HTTP/1.1 200 OK\r\n\r\nbusy',
      /^no body containing "ready" \(got "busy"\)$/,
    );
    verdictEverywhere(
      {},
      `HTTP/1.1 200 OK\r\nX: ${'a'.repeat(17_000)}\r\n\r\n`,
      /^response head over 16384 bytes$/,
    );
  });

  test('a body larger than 64 KiB is judged on its first 64 KiB, sent in any pieces', () => {
    const text = `HTTP/1.1 200 OK\r\n\r\n${'x'.repeat(70_000)}ready`;
    const reply = Buffer.from(text, 'latin1');
    for (const cuts of [[], [19], [30_000, 65_555], Array.from({ length: 700 }, (_, i) => i * 100)])
      assert.match(
        String(Object.values(inPieces({ expectBody: /ready/ }, reply, cuts, false) ?? {})[0]),
        /^no body matching \/ready\/ in its first 65536 bytes/,
      );
  });

  test('20 000 one-byte chunks pushed a byte at a time are read in linear time (the old reader, judging the whole reply again on every read, took minutes)', () => {
    const text = `${chunked}${'1\r\nx\r\n'.repeat(20_000)}5;last\r\nready\r\n0\r\n\r\n`;
    const reply = Buffer.from(text, 'latin1');
    const reader = probeOf({ expectBody: /x{20000}ready/ }).reader();
    let at = 0;
    while (at < reply.length && reader.push(reply.subarray(at, at + 1)) === undefined) at++;
    // Decided on the last chunk's line, before its (empty) trailer section.
    assert.equal(at, reply.length - 3);
    assert.deepEqual(reader.end(), { pass: true });
  });

  const runs = fuzzRuns(1000);
  const cuts = fc.array(fc.nat({ max: 400 }), { maxLength: 12 });

  test('property: random bytes after any head never throw, and any cuts give the verdict of the whole', () => {
    const heads = fc.constantFrom(
      '',
      'HTTP/1.1 200 OK\r\n\r\n',
      chunked,
      'HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n',
      'HTTP/1.1 100 Continue\n\n',
    );
    const junk = fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a).toString('latin1'));
    const lines = fc.array(
      fc.constantFrom('\r\n', '\n', '\r', ':', ';', '0', 'f', 'F', ' ', 'HTTP/1.1 ', '200'),
      {
        maxLength: 40,
      },
    );
    fc.assert(
      fc.property(
        heads,
        fc.oneof(
          junk,
          lines.map((l) => l.join('')),
        ),
        cuts,
        fc.boolean(),
        (head, tail, at, ended) => {
          const reply = Buffer.from(head + tail, 'latin1');
          const http = { expectBody: /ready|\0/ };
          // A reply found not HTTP early shows fewer bytes of it: the rest of the verdict is equal.
          assert.deepEqual(
            bare(inPieces(http, reply, at, ended)),
            bare(probeOf(http).judge(reply, ended)),
          );
        },
      ),
      { numRuns: runs },
    );
  });

  test('property: a body framed by Content-Length, chunks or the close passes when it holds the text, in any pieces', () => {
    const body = fc.string({ maxLength: 200 });
    const sizes = fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 10 });
    const framing = fc.constantFrom('length', 'chunked', 'close');
    fc.assert(
      fc.property(body, body, sizes, framing, cuts, (before, afterText, sizeList, kind, at) => {
        const content = Buffer.from(`${before}ready${afterText}`, 'utf8');
        let payload: Buffer;
        let head = 'HTTP/1.1 200 OK\r\n';
        if (kind === 'chunked') {
          head += 'Transfer-Encoding: chunked\r\n';
          const parts: Buffer[] = [];
          let from = 0;
          for (let i = 0; from < content.length; i++) {
            const size = Math.min(sizeList[i % sizeList.length] ?? 1, content.length - from);
            parts.push(
              Buffer.from(`${size.toString(16)}\r\n`),
              content.subarray(from, from + size),
              Buffer.from('\r\n'),
            );
            from += size;
          }
          payload = Buffer.concat([...parts, Buffer.from('0\r\n\r\n')]);
        } else {
          if (kind === 'length') head += `Content-Length: ${content.length}\r\n`;
          payload = content;
        }
        const reply = Buffer.concat([Buffer.from(`${head}\r\n`, 'latin1'), payload]);
        assert.deepEqual(inPieces({ expectBody: 'ready' }, reply, at, true), { pass: true });
        assert.deepEqual(inPieces({ expectBody: /ready/ }, reply, at, true), { pass: true });
      }),
      { numRuns: runs },
    );
  });
});

/*
 * The misbehaving servers, one child process for the file: `/path` picks the behaviour on the
 * main port; the mute port accepts and never reads nor writes.
 */
const SERVERS = `
const net = require('node:net');
const drip = (s, text) => {
  const bytes = Buffer.from(text, 'latin1');
  let i = 0;
  const next = () => { if (s.destroyed) return; if (i >= bytes.length) return void s.end(); s.write(bytes.subarray(i, ++i), () => setImmediate(next)); };
  next();
};
const act = {
  '/drip': (s) => drip(s, 'HTTP/1.1 200 OK\\r\\nX-Folded: a\\r\\n b\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n5;n=v\\r\\nready\\r\\nA\\r\\n0123456789\\r\\n0\\r\\nX-Trailer: t\\r\\n\\r\\n'),
  '/lf': (s) => s.end('HTTP/1.0 200 OK\\nContent-Type: text/plain\\n\\nready\\n'),
  '/conflict': (s) => s.end('HTTP/1.1 200 OK\\r\\nContent-Length: 5\\r\\nContent-Length: 50\\r\\n\\r\\nready'),
  '/reset': (s) => s.write('HTTP/1.1 200 OK\\r\\nContent-Length: 100\\r\\n\\r\\nrea', () => s.resetAndDestroy()),
  '/endless': (s) => s.write('HTTP/1.1 200 OK\\r\\nContent-Length: 1000\\r\\n\\r\\nnot yet'),
};
const main = net.createServer((s) => {
  s.on('error', () => {});
  let head = '';
  const onData = (d) => {
    head += d.toString('latin1');
    if (!head.includes('\\r\\n\\r\\n')) return;
    s.off('data', onData);
    (act[head.split(' ')[1]] ?? ((t) => t.end('HTTP/1.1 404 Not Found\\r\\n\\r\\n')))(s);
  };
  s.on('data', onData);
});
const mute = net.createServer((s) => { s.on('error', () => {}); s.pause(); });
main.listen(0, '127.0.0.1', () => mute.listen(0, '127.0.0.1', () =>
  process.stdout.write(JSON.stringify({ main: main.address().port, mute: mute.address().port }) + '\\n')));
process.stdin.on('end', () => process.exit(0)).resume();
`;

let child: ChildProcess | undefined;
let ports: Promise<{ main: number; mute: number }> | undefined;
after(() => {
  if (child?.pid !== undefined && child.exitCode === null) process.kill(child.pid, 'SIGKILL');
});

/** The file's server process, started on first use. */
function servers(): Promise<{ main: number; mute: number }> {
  ports ??= new Promise((resolve, reject) => {
    const started = spawn(process.execPath, ['-e', SERVERS], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    child = started;
    let out = '';
    started.on('error', reject);
    started.stdout.on('data', (data: Buffer) => {
      out += data.toString();
      if (out.includes('\n')) resolve(JSON.parse(out) as { main: number; mute: number });
    });
  });
  return withTimeout(ports, 20_000, 'the misbehaving servers to listen');
}

/**
 * Runs one HTTP check of `port` (as a proxy's first check) with `http`; resolves with its
 * failure, or undefined when it passed, and asserts that no socket or timer is left after it.
 */
async function checkOnce(
  port: number,
  http: HttpHealthCheck,
  timeout: number,
): Promise<HealthCheckError | undefined> {
  const resources = trackResources();
  try {
    const set = new UpstreamSet([{ host: '127.0.0.1', port, id: 'u' }]);
    const options = { interval: 60_000, jitter: 0, timeout, http };
    const resolved = resolveHealthCheck(options, 'healthCheck', 'tcp');
    assert.ok(resolved);
    let failure: HealthCheckError | undefined;
    let checked = (): void => undefined;
    const done = new Promise<void>((resolve) => {
      checked = resolve;
    });
    const checker = new HealthChecker(set, resolved, {
      transition: (_state, _healthy, error) => {
        failure = error;
      },
      checked: () => {
        checked();
      },
    });
    checker.start();
    await withTimeout(done, timeout + 20_000, 'the first check');
    checker.stop();
    assert.deepEqual(await resources.settled(5_000), {}, 'no check socket or timer left');
    return failure;
  } finally {
    resources.stop();
  }
}

describe('HTTP checks of misbehaving servers: a verdict each, nothing left open', () => {
  test('a reply dripped one byte per segment (folded header, chunk extensions, trailers) passes', async () => {
    const { main } = await servers();
    assert.equal(
      await checkOnce(main, { path: '/drip', expectBody: 'ready0123' }, 20_000),
      undefined,
    );
  });

  test('bare LF line ends pass; conflicting Content-Length fails naming it', async () => {
    const { main } = await servers();
    assert.equal(await checkOnce(main, { path: '/lf', expectBody: /^ready$/m }, 20_000), undefined);
    assert.match(
      (await checkOnce(main, { path: '/conflict', expectBody: 'ready' }, 20_000))?.message ?? '',
      /^HTTP health check of 127\.0\.0\.1:\d+: invalid Content-Length "5, 50"$/,
    );
  });

  test('a reset after the head fails with the reset; a body that never ends and a server that never reads time out', async () => {
    const { main, mute } = await servers();
    assert.match(
      (await checkOnce(main, { path: '/reset', expectBody: 'ready' }, 20_000))?.message ?? '',
      /^HTTP health check of 127\.0\.0\.1:\d+(?: failed: read ECONNRESET|: closed within the response body)$/,
    );
    assert.match(
      (await checkOnce(main, { path: '/endless', expectBody: 'ready' }, 500))?.message ?? '',
      /^HTTP health check of 127\.0\.0\.1:\d+ timed out after 500 ms$/,
    );
    assert.match(
      (await checkOnce(mute, {}, 500))?.message ?? '',
      /^HTTP health check of 127\.0\.0\.1:\d+ timed out after 500 ms$/,
    );
  });
});
