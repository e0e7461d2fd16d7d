/**
 * Bad configuration: invalid values for every option of TcpProxy and UdpProxy, generated from the
 * option types (wrong types, out-of-range numbers, NaN, Infinity where not allowed, negatives,
 * strings, nested junk, unknown keys), fail at construction with ERR_L4_INVALID_OPTION naming the
 * option, and nothing is created: no server, no socket, no timer.
 * Cases: L4PROXY_CONFIG_CASES per proxy class (CI 5 000).
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { InvalidOptionError, ModeUnsupportedError } from '../../src/errors.js';
import { TcpProxy, UdpProxy } from '../../src/index.js';
import { setting, SOAK } from './load.js';

const CASES = setting('L4PROXY_CONFIG_CASES', SOAK ? 100_000 : 5_000);
const MAX_TIMER = 2_147_483_647;

/** Anything a caller might pass by mistake. */
const junk: fc.Arbitrary<unknown> = fc.oneof(
  fc.string({ maxLength: 8 }),
  fc.double(),
  fc.constantFrom(NaN, Infinity, -Infinity, -1, 0.5, -0, 2 ** 53, Number.MAX_VALUE),
  fc.integer(),
  fc.boolean(),
  fc.constant(null),
  fc.bigInt(),
  fc.object({ maxDepth: 2, maxKeys: 3 }),
  fc.array(fc.anything({ maxDepth: 1 }), { maxLength: 3 }),
);

type Valid = (value: unknown) => boolean;

const int =
  (min: number, max: number, infinity = false): Valid =>
  (value) =>
    (infinity && value === Infinity) ||
    (typeof value === 'number' && Number.isSafeInteger(value) && value >= min && value <= max);
const bool: Valid = (value) => typeof value === 'boolean';
const isEmptyRecord = (value: unknown): boolean =>
  typeof value === 'object' &&
  value !== null &&
  !Array.isArray(value) &&
  Object.keys(value).length === 0;
const isEmptyArray = (value: unknown): boolean => Array.isArray(value) && value.length === 0;

/** One invalid setting: the options object and the option path the error must name. */
interface Case {
  readonly options: Record<string, unknown>;
  readonly option: string;
}

/** `key: junk` where junk is not valid for the key. */
function flat(key: string, valid: Valid): fc.Arbitrary<Case> {
  return junk
    .filter((value) => !valid(value))
    .map((value) => ({ options: { [key]: value }, option: key }));
}

/** `key: { ...base, sub: junk }`: nested junk, named `key.sub`. */
function nested(
  key: string,
  base: Record<string, unknown>,
  sub: string,
  valid: Valid,
): fc.Arbitrary<Case> {
  return junk
    .filter((value) => !valid(value))
    .map((value) => ({ options: { [key]: { ...base, [sub]: value } }, option: `${key}.${sub}` }));
}

const unknownKey = (known: readonly string[]): fc.Arbitrary<Case> =>
  fc
    .tuple(fc.string({ minLength: 1, maxLength: 12 }), junk)
    .filter(([key]) => !known.includes(key) && key !== '__proto__')
    .map(([key, value]) => ({ options: { [key]: value }, option: key }));

const upstreamCases = fc.oneof(
  flat('upstreams', (value) => isEmptyArray(value)),
  junk
    .filter((value) => typeof value !== 'string' || value === '')
    .map((host) => ({ options: { upstreams: [{ host, port: 1 }] }, option: 'upstreams[0].host' })),
  junk
    .filter((value) => !int(1, 65535)(value))
    .map((port) => ({
      options: { upstreams: [{ host: '127.0.0.1', port }] },
      option: 'upstreams[0].port',
    })),
  junk
    .filter((value) => value !== undefined && !int(1, 1_000_000)(value))
    .map((weight) => ({
      options: { upstreams: [{ host: '127.0.0.1', port: 1, weight }] },
      option: 'upstreams[0].weight',
    })),
);

const listCases = (key: string): fc.Arbitrary<Case> =>
  fc.oneof(
    flat(key, isEmptyArray),
    fc
      .oneof(
        fc.string({ maxLength: 6 }).filter((s) => !/^[0-9a-f:.]+(\/\d+)?$/i.test(s)),
        fc.integer(),
        fc.constant(null),
        fc.constant('10.0.0.0/33'),
      )
      .map((entry) => ({ options: { [key]: [entry] }, option: `${key}[0]` })),
  );

const perClientCases = (concurrent: string, rate: string): fc.Arbitrary<Case> =>
  fc.oneof(
    flat('perClient', isEmptyRecord),
    nested('perClient', {}, concurrent, int(1, Number.MAX_SAFE_INTEGER, true)),
    nested('perClient', {}, rate, int(1, Number.MAX_SAFE_INTEGER, true)),
    nested('perClient', { [rate]: 10 }, 'burst', int(1, Number.MAX_SAFE_INTEGER)),
  );

const TCP_KNOWN = [
  'mode',
  'upstreams',
  'selector',
  'connectTimeout',
  'maxConnectAttempts',
  'idleTimeout',
  'maxConnectionDuration',
  'maxConnections',
  'maxEarlyData',
  'noDelay',
  'relay',
  'proxyProtocol',
  'acceptProxyProtocol',
  'sni',
  'allow',
  'deny',
  'perClient',
];

const tcpCases: fc.Arbitrary<Case> = fc.oneof(
  upstreamCases,
  flat('selector', (value) => typeof value === 'function'),
  flat('connectTimeout', int(1, MAX_TIMER)),
  flat('maxConnectAttempts', int(1, 100)),
  flat('idleTimeout', int(0, MAX_TIMER)),
  flat('maxConnectionDuration', int(0, MAX_TIMER)),
  flat('maxConnections', int(1, Number.MAX_SAFE_INTEGER, true)),
  flat('maxEarlyData', int(1, 64 * 1024 * 1024)),
  flat('noDelay', bool),
  flat('relay', (value) => value === 'onread' || value === 'stream'),
  flat('proxyProtocol', (value) => value === 'v1' || value === 'v2'),
  nested('proxyProtocol', {}, 'version', (value) => value === 'v1' || value === 'v2'),
  nested('proxyProtocol', { version: 'v2' }, 'crc32c', bool),
  nested('proxyProtocol', { version: 'v2' }, 'tlvs', (value) => typeof value === 'function'),
  flat('acceptProxyProtocol', () => false),
  nested('acceptProxyProtocol', { trusted: ['127.0.0.1'] }, 'timeout', int(1, MAX_TIMER)),
  nested('acceptProxyProtocol', { trusted: ['127.0.0.1'] }, 'required', bool),
  nested('acceptProxyProtocol', { trusted: ['127.0.0.1'] }, 'maxLength', int(232, 65_551)),
  nested('acceptProxyProtocol', {}, 'trusted', isEmptyArray),
  flat('sni', (value) => typeof value === 'boolean' || isEmptyRecord(value)),
  nested('sni', {}, 'timeout', int(1, MAX_TIMER)),
  nested('sni', {}, 'maxBytes', int(64, 1 << 20)),
  nested('sni', {}, 'required', bool),
  listCases('allow'),
  listCases('deny'),
  perClientCases('maxConnections', 'connectionsPerSecond'),
  unknownKey(TCP_KNOWN),
);

const UDP_KNOWN = [
  'mode',
  'upstreams',
  'selector',
  'idleTimeout',
  'maxSessions',
  'maxDatagramSize',
  'maxResponses',
  'perPacketBalancing',
  'maxPendingDatagrams',
  'maxSendQueue',
  'proxyProtocol',
  'allow',
  'deny',
  'perClient',
];

const udpCases: fc.Arbitrary<Case> = fc.oneof(
  upstreamCases,
  flat('selector', (value) => typeof value === 'function'),
  flat('idleTimeout', int(0, MAX_TIMER)),
  flat('maxSessions', int(1, Number.MAX_SAFE_INTEGER, true)),
  flat('maxDatagramSize', int(1, 65_535)),
  flat('maxResponses', int(1, Number.MAX_SAFE_INTEGER, true)),
  flat('perPacketBalancing', bool),
  flat('maxPendingDatagrams', int(0, 65_536)),
  flat('maxSendQueue', int(1, 1_048_576)),
  flat('proxyProtocol', (value) => value === 'v2'),
  listCases('allow'),
  listCases('deny'),
  perClientCases('maxSessions', 'sessionsPerSecond'),
  unknownKey(UDP_KNOWN),
);

/** Kinds and counts of live handles, requests and timers. */
function resources(): string {
  return [...process.getActiveResourcesInfo()].sort().join(',');
}

function checkRejected(
  create: (options: Record<string, unknown>) => unknown,
  { options, option }: Case,
): void {
  const before = resources();
  let thrown: unknown;
  try {
    create(options);
  } catch (error) {
    thrown = error;
  }
  assert.ok(
    thrown instanceof InvalidOptionError,
    `${JSON.stringify(options, replacer)} did not throw InvalidOptionError: ${String(thrown)}`,
  );
  assert.equal(thrown.code, 'ERR_L4_INVALID_OPTION');
  // The option itself, or a path inside it (`upstreams[0].port`, `acceptProxyProtocol.trusted`).
  assert.ok(
    thrown.option === option ||
      thrown.option.startsWith(`${option}.`) ||
      thrown.option.startsWith(`${option}[`),
    `error names ${thrown.option}, expected ${option}`,
  );
  assert.equal(resources(), before, 'nothing was created');
}

function replacer(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? `${value}n` : value;
}

describe(`bad configuration (${CASES} cases per proxy class)`, () => {
  test('every invalid TcpProxy option fails at construction with ERR_L4_INVALID_OPTION naming it, and nothing listens', () => {
    fc.assert(
      fc.property(tcpCases, (c) => {
        checkRejected((options) => new TcpProxy(options), c);
      }),
      { numRuns: CASES },
    );
  });

  test('every invalid UdpProxy option fails at construction with ERR_L4_INVALID_OPTION naming it, and nothing binds', () => {
    fc.assert(
      fc.property(udpCases, (c) => {
        checkRejected((options) => new UdpProxy(options), c);
      }),
      { numRuns: CASES },
    );
  });

  test('options that look valid but are almost surely mistakes fail at construction, naming the option', () => {
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ allow: ['10.0.0.1/24'] }, 'allow[0]', /did you mean '10\.0\.0\.0\/24'/],
      [{ deny: ['192.0.2.7/0'] }, 'deny[0]', /did you mean '0\.0\.0\.0\/0'/],
      [{ deny: ['2001:db8::1/32'] }, 'deny[0]', /did you mean '2001:db8::\/32'/],
      [{ acceptProxyProtocol: { trusted: [] } }, 'acceptProxyProtocol.trusted', /trusts nobody/],
      [{ upstreams: [{ host: ' ', port: 80 }] }, 'upstreams[0].host', /without spaces/],
      [{ upstreams: [{ host: 'db.internal ', port: 80 }] }, 'upstreams[0].host', /without spaces/],
    ];
    for (const [options, option, message] of cases) {
      const proxies: (() => unknown)[] = [() => new TcpProxy(options as never)];
      if (!('acceptProxyProtocol' in options)) proxies.push(() => new UdpProxy(options as never));
      for (const create of proxies) {
        assert.throws(
          create,
          (err: unknown) =>
            err instanceof InvalidOptionError && err.option === option && message.test(err.message),
          JSON.stringify(options),
        );
      }
    }
    // A network address, and a host address with a full-length prefix, stay valid.
    for (const entry of ['10.0.0.0/24', '10.0.0.1/32', '2001:db8::/32', '::1/128', '0.0.0.0/0'])
      new TcpProxy({ allow: [entry] }).close().catch(() => undefined);
  });

  test('a mode other than non-transparent fails with ERR_L4_MODE_UNSUPPORTED, for both proxies', () => {
    fc.assert(
      fc.property(
        junk.filter((value) => value !== 'non-transparent'),
        (mode) => {
          const before = resources();
          assert.throws(() => new TcpProxy({ mode } as never), ModeUnsupportedError);
          assert.throws(() => new UdpProxy({ mode } as never), ModeUnsupportedError);
          assert.equal(resources(), before);
        },
      ),
      { numRuns: Math.min(CASES, 1_000) },
    );
  });
});
