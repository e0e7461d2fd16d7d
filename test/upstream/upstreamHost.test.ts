import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { InvalidOptionError, TcpProxy, UdpProxy } from '../../src/index.js';

/** Constructs both proxies with `host` as their one upstream; the error each throws, if any. */
function refusals(host: string): unknown[] {
  const errors: unknown[] = [];
  for (const create of [
    () => new TcpProxy({ upstreams: [{ host, port: 80 }] }),
    () => new UdpProxy({ upstreams: [{ host, port: 80 }] }),
  ]) {
    try {
      void create()
        .close()
        .catch(() => undefined);
    } catch (err) {
      errors.push(err);
    }
  }
  return errors;
}

describe('upstream host', () => {
  test('an IPv6 literal in brackets fails at construction naming the host to write (it failed every connect with ENOTFOUND)', () => {
    for (const [host, bare] of [
      ['[::1]', '::1'],
      ['[2001:db8::7]', '2001:db8::7'],
      ['[fe80::1%eth0]', 'fe80::1%eth0'],
    ] as const) {
      const errors = refusals(host);
      assert.equal(errors.length, 2, host);
      for (const err of errors) {
        assert.ok(err instanceof InvalidOptionError, host);
        assert.equal(err.option, 'upstreams[0].host');
        assert.match(err.message, new RegExp(`did you mean '${bare.replace(/\./g, '\\.')}'\\?`));
      }
    }
  });

  test('a host with a port in it fails at construction (the port goes in port)', () => {
    for (const host of [
      '10.0.0.7:5432',
      'db.internal:5432',
      '[::1]:5432',
      '::1]',
      '[db.internal]',
    ]) {
      const errors = refusals(host);
      assert.equal(errors.length, 2, host);
      for (const err of errors) {
        assert.ok(err instanceof InvalidOptionError, host);
        assert.equal(err.option, 'upstreams[0].host');
        assert.match(err.message, /without a port/);
      }
    }
  });

  test('names and bare IPv4/IPv6 literals (a zone index too) stay valid', () => {
    for (const host of [
      'db.internal',
      'localhost',
      '127.0.0.1',
      '::1',
      '2001:db8::7',
      'fe80::1%lo',
      '::ffff:127.0.0.1',
    ])
      assert.deepEqual(refusals(host), [], host);
  });
});
