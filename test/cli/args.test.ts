import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { formatHostPort, parseHostPort } from '../../src/cli/address.js';
import { parseCliArgs, parseDuration, USAGE, UsageError } from '../../src/cli/args.js';

test('host:port parsing accepts IPv4, host names, bracketed IPv6 and :port', () => {
  assert.deepEqual(parseHostPort('127.0.0.1:8080', 0), {
    ok: true,
    value: { host: '127.0.0.1', port: 8080 },
  });
  assert.deepEqual(parseHostPort('[::1]:53', 1), { ok: true, value: { host: '::1', port: 53 } });
  assert.deepEqual(parseHostPort('db-1.internal:5432', 1), {
    ok: true,
    value: { host: 'db-1.internal', port: 5432 },
  });
  assert.deepEqual(parseHostPort(':9090', 0), { ok: true, value: { host: '', port: 9090 } });
  for (const bad of ['::1:53', '[nothost]:53', 'a:0', 'a:65536', 'a', '[::1]']) {
    assert.equal(parseHostPort(bad, 1).ok, false, bad);
  }
  assert.equal(formatHostPort('::1', 53), '[::1]:53');
});

test('durations take ms, s and m units; a bare number is seconds', () => {
  assert.equal(parseDuration('500ms', 'x'), 500);
  assert.equal(parseDuration('30s', 'x'), 30_000);
  assert.equal(parseDuration('2m', 'x'), 120_000);
  assert.equal(parseDuration('1.5', 'x'), 1_500);
  assert.throws(
    () => parseDuration('soon', '--drain-timeout'),
    /--drain-timeout: expected a duration/,
  );
});

test('the quick form and flags are parsed; mistakes are usage errors naming the argument', () => {
  const args = parseCliArgs([
    'tcp',
    '[::1]:8080',
    '10.0.0.7:80',
    '10.0.0.8:80',
    '--drain-timeout',
    '5s',
    '--workers',
    '2',
    '--log-level',
    'warn',
  ]);
  assert.deepEqual(args.quick, {
    protocol: 'tcp',
    listen: '[::1]:8080',
    upstreams: [
      { host: '10.0.0.7', port: 80 },
      { host: '10.0.0.8', port: 80 },
    ],
  });
  assert.equal(args.drainTimeout, 5_000);
  assert.equal(args.workers, 2);
  assert.equal(args.logLevel, 'warn');
  assert.throws(
    () => parseCliArgs(['udp', '127.0.0.1:53', '127.0.0.1:0']),
    (err: Error) =>
      err instanceof UsageError && err.message.startsWith('argument 3 ("127.0.0.1:0"): expected'),
  );
  assert.throws(
    () => parseCliArgs(['tcp', '127.0.0.1:80']),
    /expected a listen address and at least one upstream/,
  );
  assert.throws(
    () => parseCliArgs(['--config', 'a.json', 'tcp', ':1', 'a:1']),
    /cannot be combined/,
  );
  assert.equal(parseCliArgs(['--workers', 'auto', '-c', 'a.json']).workers, 'auto');
  assert.throws(
    () => parseCliArgs(['--workers', 'many', '-c', 'a.json']),
    /--workers: expected an integer/,
  );
  assert.throws(
    () => parseCliArgs(['--log-level', 'loud', '-c', 'a.json']),
    /--log-level: expected one of/,
  );
  assert.throws(() => parseCliArgs(['--bogus']), UsageError);
  assert.throws(() => parseCliArgs([]), /expected a quick form/);
});

test('a listen address given as a port alone says how a port alone is written', () => {
  assert.throws(
    () => parseCliArgs(['tcp', '8080', '127.0.0.1:80']),
    (err: Error) =>
      err instanceof UsageError &&
      err.message ===
        'argument 2 ("8080"): expected "host:port" (IPv6 as "[::1]:port") with a port from 0 to 65535; a port alone is ":8080"',
  );
  // An upstream needs a host: no such advice there.
  assert.throws(
    () => parseCliArgs(['tcp', ':8080', '80']),
    (err: Error) => err instanceof UsageError && !err.message.includes('a port alone'),
  );
});

/** `--flag` → its placeholder (`<d>`) and default, from the usage text or from a doc's table. */
type Flags = Map<string, { placeholder: string; defaultText: string }>;

/** The flags `l4proxy --help` prints, each with its `(default ...)`, if it says one. */
function usageFlags(): Flags {
  const flags: Flags = new Map();
  for (const [, flag = '', placeholder = '', text = ''] of USAGE.matchAll(
    /^ {2}(?:-\w, )? *(--[a-z-]+)(?: (<[^>]+>))? +(.*)$/gm,
  )) {
    const defaultText = /\(default ([^);]+)/.exec(text)?.[1] ?? /(\w+) \(default\)/.exec(text)?.[1];
    flags.set(flag, { placeholder, defaultText: defaultText ?? '' });
  }
  return flags;
}

/** The flag table of docs/operations.md, "The command": flag, placeholder and Default cell. */
function documentedFlags(): Flags {
  const text = readFileSync(new URL('../../../docs/operations.md', import.meta.url), 'utf8');
  const section = text.slice(text.indexOf('## The command'), text.indexOf('### Config file'));
  const flags: Flags = new Map();
  for (const [, flag = '', placeholder = '', defaultText = ''] of section.matchAll(
    /^\| `(?:-\w, )?(--[a-z-]+)(?: (<[^>]+>))?` *\|[^|]*\| *(.*?) *\|$/gm,
  )) {
    flags.set(flag, { placeholder: placeholder.replace('\\|', '|'), defaultText });
  }
  return flags;
}

/** The options `parseCliArgs` gives `util.parseArgs`, read from its source. */
function parserFlags(): string[] {
  const source = readFileSync(new URL('../../../src/cli/args.ts', import.meta.url), 'utf8');
  return [...source.matchAll(/^ +'?([a-z-]+)'?: \{ type: '(?:string|boolean)'/gm)].map(
    ([, name = '']) => `--${name}`,
  );
}

test('l4proxy --help, the parser and the flag table of docs/operations.md name the same flags, placeholders and defaults', () => {
  const usage = usageFlags();
  const documented = documentedFlags();
  assert.ok(usage.size >= 12, `${usage.size} flags in the usage`);
  assert.deepEqual(
    [...usage.keys()].sort(),
    [...documented.keys()].sort(),
    '--help against the docs',
  );
  assert.deepEqual([...usage.keys()].sort(), parserFlags().sort(), '--help against the parser');
  for (const [flag, { placeholder, defaultText }] of usage) {
    const doc = documented.get(flag);
    assert.equal(doc?.placeholder, placeholder, `${flag}: the same placeholder`);
    // The first word of the default (`30s`, `maxConnections`) is in the docs' Default cell.
    const first = defaultText.split(/[ ,]/)[0] ?? '';
    assert.ok(
      doc.defaultText.includes(first),
      `${flag}: default "${defaultText}" in "${doc.defaultText}"`,
    );
  }
  // Every placeholder the docs show is one the parser takes, with a value of that shape.
  const samples: Record<string, string> = {
    '<file>': 'l4proxy.json',
    '<level>': 'warn',
    '<d>': '2s',
    '<n|auto>': 'auto',
    '<n>': '128',
    '<host:port>': '127.0.0.1:9090',
    '<f>': 'token',
  };
  for (const [flag, { placeholder }] of documented) {
    const argv = placeholder === '' ? [flag] : [flag, samples[placeholder] ?? '?'];
    assert.doesNotThrow(() => parseCliArgs(['--config', 'l4proxy.json', ...argv]), flag);
  }
  assert.throws(() => parseCliArgs(['--config', 'l4proxy.json', '--no-such-flag']), UsageError);
});
