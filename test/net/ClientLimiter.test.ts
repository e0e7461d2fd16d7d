import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidOptionError } from '../../src/index.js';
import { ClientLimiter } from '../../src/net/ClientLimiter.js';

/** Each `[value, option]`: `ClientLimiter.from(value)` throws InvalidOptionError naming `option`. */
function refusesNaming(cases: readonly (readonly [unknown, string])[]): void {
  for (const [value, option] of cases) {
    assert.throws(
      () => ClientLimiter.from(value, 'perClient'),
      (error: unknown) => error instanceof InvalidOptionError && error.option === option,
      option,
    );
  }
}

describe('ClientLimiter', () => {
  test('no limit set means no limiter', () => {
    assert.equal(ClientLimiter.from(undefined, 'perClient'), undefined);
    assert.equal(ClientLimiter.from({}, 'perClient'), undefined);
  });

  test('invalid limits throw InvalidOptionError naming the option', () => {
    refusesNaming([
      [{ maxConnections: 0 }, 'perClient.maxConnections'],
      [{ connectionsPerSecond: 1.5 }, 'perClient.connectionsPerSecond'],
      [{ connectionsPerSecond: 1, burst: 0 }, 'perClient.burst'],
      [{ maxConnection: 1 }, 'perClient.maxConnection'],
    ]);
  });

  test('a bad burst is refused without connectionsPerSecond too (it was accepted unchecked)', () => {
    refusesNaming([
      [{ burst: '10' }, 'perClient.burst'],
      [{ maxConnections: 4, burst: 0 }, 'perClient.burst'],
      [{ maxConnections: 4, burst: 1.5 }, 'perClient.burst'],
    ]);
  });

  test('the token bucket refills at connectionsPerSecond up to burst, per client', () => {
    const limiter = ClientLimiter.from({ connectionsPerSecond: 2, burst: 3 }, 'perClient')!;
    for (let i = 0; i < 3; i++) assert.equal(limiter.acquire('192.0.2.1', 0), undefined);
    assert.equal(limiter.acquire('192.0.2.1', 0), 'rate_limited');
    assert.equal(limiter.acquire('192.0.2.2', 0), undefined, 'another client has its own bucket');
    assert.equal(limiter.acquire('192.0.2.1', 400), 'rate_limited', '0.8 token after 400 ms');
    assert.equal(limiter.acquire('192.0.2.1', 500), undefined, '1 token after 500 ms');
    assert.equal(limiter.acquire('192.0.2.1', 10_000), undefined);
    limiter.close();
  });

  test('maxConnections counts live connections; IPv4-mapped and IPv4 forms are one client', () => {
    const limiter = ClientLimiter.from({ maxConnections: 2 }, 'perClient')!;
    assert.equal(limiter.acquire('192.0.2.1'), undefined);
    assert.equal(limiter.acquire('::ffff:192.0.2.1'), undefined);
    assert.equal(limiter.acquire('192.0.2.1'), 'client_limit');
    assert.equal(limiter.active('::ffff:192.0.2.1'), 2);
    limiter.release('::ffff:192.0.2.1');
    assert.equal(limiter.acquire('192.0.2.1'), undefined);
    limiter.release('203.0.113.1'); // unknown: ignored
    limiter.close();
  });

  test('sweep forgets clients with nothing open and a full bucket, so memory follows active clients', () => {
    const limiter = ClientLimiter.from(
      { maxConnections: 5, connectionsPerSecond: 1, burst: 1 },
      'perClient',
    )!;
    assert.equal(limiter.acquire('192.0.2.1', 0), undefined);
    assert.equal(limiter.acquire('192.0.2.2', 0), undefined);
    limiter.release('192.0.2.1', 0);
    limiter.sweep(500);
    assert.equal(limiter.size, 2, 'bucket not full yet');
    limiter.sweep(1_000);
    assert.equal(limiter.size, 1, 'only the client with a live connection is kept');
    limiter.release('192.0.2.2', 1_000);
    limiter.sweep(2_000);
    assert.equal(limiter.size, 0);
    limiter.close();
  });

  test('a client with nothing open and a full bucket is forgotten at its last release, not at the next sweep', () => {
    // Without a rate every bucket is full: 20 000 distinct addresses, each connected then gone,
    // must leave nothing behind (they stayed up to the next 10 s sweep: a flood of distinct
    // sources, such as IPv6 /128s, grew the map by its rate times 10 s).
    const limiter = ClientLimiter.from({ maxConnections: 2 }, 'perClient')!;
    for (let i = 0; i < 20_000; i++) {
      const address = `2001:db8::${i.toString(16)}`;
      assert.equal(limiter.acquire(address), undefined);
      limiter.release(address);
    }
    assert.equal(limiter.size, 0);
    // Two connections: kept until the second one ends.
    limiter.acquire('192.0.2.1');
    limiter.acquire('192.0.2.1');
    limiter.release('192.0.2.1');
    assert.equal(limiter.size, 1);
    limiter.release('192.0.2.1');
    assert.equal(limiter.size, 0);
    limiter.close();
    // With a rate: kept while its bucket refills (the rate must hold), forgotten once full.
    const rated = ClientLimiter.from({ connectionsPerSecond: 10, burst: 1 }, 'perClient')!;
    assert.equal(rated.acquire('192.0.2.1', 0), undefined);
    rated.release('192.0.2.1', 50);
    assert.equal(rated.size, 1, 'half a token: the bucket is not full');
    assert.equal(rated.acquire('192.0.2.1', 60), 'rate_limited');
    assert.equal(rated.acquire('192.0.2.2', 0), undefined);
    rated.release('192.0.2.2', 100);
    assert.equal(rated.size, 1, 'a full bucket after 100 ms: forgotten');
    rated.close();
  });

  test('ipv4Prefix / ipv6Prefix: out of range or not an integer is refused naming the option', () => {
    refusesNaming([
      [{ maxConnections: 1, ipv6Prefix: 0 }, 'perClient.ipv6Prefix'],
      [{ maxConnections: 1, ipv6Prefix: 129 }, 'perClient.ipv6Prefix'],
      [{ maxConnections: 1, ipv6Prefix: '64' }, 'perClient.ipv6Prefix'],
      [{ maxConnections: 1, ipv4Prefix: 33 }, 'perClient.ipv4Prefix'],
      [{ maxConnections: 1, ipv4Prefix: 24.5 }, 'perClient.ipv4Prefix'],
    ]);
  });

  test('a prefix keys a client by its network: IPv4-mapped as IPv4, a zone index ignored, a Unix client ("") as one', () => {
    const limiter = ClientLimiter.from(
      { maxConnections: 1, ipv4Prefix: 24, ipv6Prefix: 64 },
      'perClient',
    )!;
    assert.equal(limiter.acquire('2001:db8:0:1::1'), undefined);
    assert.equal(limiter.acquire('2001:DB8:0:1:ffff:ffff:ffff:ffff'), 'client_limit');
    assert.equal(limiter.acquire('2001:db8:0:2::1'), undefined);
    assert.equal(limiter.acquire('192.0.2.1'), undefined);
    assert.equal(limiter.acquire('::ffff:192.0.2.200'), 'client_limit');
    assert.equal(limiter.acquire('192.0.3.1'), undefined);
    assert.equal(limiter.acquire('fe80::1%eth0'), undefined);
    assert.equal(limiter.acquire('fe80::2%eth1'), 'client_limit');
    assert.equal(limiter.acquire(''), undefined);
    assert.equal(limiter.acquire(''), 'client_limit');
    assert.equal(limiter.active('2001:db8:0:1::abcd'), 1, 'counted per /64');
    limiter.release('2001:db8:0:1:2::');
    assert.equal(limiter.acquire('2001:db8:0:1::9'), undefined, 'released by any address of it');
    assert.equal(limiter.size, 6);
    limiter.close();
  });

  test('tableSize bounds the clients remembered under a flood of distinct sources (100 000), never forgetting one with something open', () => {
    const flood = (limiter: ClientLimiter, from = 0, count = 100_000): void => {
      // One session each, ended at once: its bucket is not full, so the entry stays (10 s sweep).
      for (let i = from; i < from + count; i++) {
        const address = `127.${String((i >> 16) & 255)}.${String((i >> 8) & 255)}.${String(i & 255)}`;
        assert.equal(limiter.acquire(address, 0), undefined);
        limiter.release(address, 0);
      }
    };
    const keys = ['maxSessions', 'sessionsPerSecond'] as const;
    const bounded = ClientLimiter.from(
      { sessionsPerSecond: 1, tableSize: 1_000 },
      'perClient',
      keys,
    )!;
    assert.equal(bounded.acquire('192.0.2.1', 0), undefined, 'a client with a session open');
    flood(bounded);
    assert.equal(bounded.size, 1_000);
    assert.equal(bounded.evicted, 100_000 + 1 - 1_000);
    assert.equal(bounded.active('192.0.2.1'), 1, 'kept through the flood');
    bounded.release('192.0.2.1', 0);
    assert.equal(bounded.acquire('192.0.2.1', 0), 'rate_limited', 'its spent bucket too');
    bounded.close();
    // The default: 100 000 entries at most (about 15 MB), whatever the flood.
    const byDefault = ClientLimiter.from({ sessionsPerSecond: 1 }, 'perClient', keys)!;
    flood(byDefault);
    flood(byDefault, 100_000, 10);
    assert.equal(byDefault.size, 100_000);
    assert.equal(byDefault.evicted, 10);
    byDefault.close();
  });

  test('tableSize is validated', () => {
    refusesNaming([
      [{ maxConnections: 1, tableSize: 0 }, 'perClient.tableSize'],
      [{ maxConnections: 1, tableSize: 1.5 }, 'perClient.tableSize'],
    ]);
  });
});
