import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InvalidOptionError, TcpProxy, UdpProxy } from '../../src/index.js';

/** The message of the InvalidOptionError `build` throws, the list of known keys left out. */
function unknownKeyMessage(build: () => unknown): string {
  try {
    build();
  } catch (err) {
    assert.ok(err instanceof InvalidOptionError, String(err));
    return err.message.replace(/ \(mode, [^)]*\)/, ' (...)');
  }
  assert.fail('expected an InvalidOptionError');
}

test('an unknown option names the known option a typo most likely meant', () => {
  assert.equal(
    unknownKeyMessage(() => new TcpProxy({ upstreams: [], conectTimeout: 5 } as never)),
    'Invalid option "conectTimeout": expected one of the known options (...) (did you mean "connectTimeout"?), received 5.',
  );
  assert.equal(
    unknownKeyMessage(() => new UdpProxy({ upstreams: [], IdleTimeout: 5 } as never)),
    'Invalid option "IdleTimeout": expected one of the known options (...) (did you mean "idleTimeout"?), received 5.',
  );
  assert.match(
    unknownKeyMessage(
      () => new TcpProxy({ upstreams: [{ host: 'a', port: 1, wieght: 2 }] } as never),
    ),
    /^Invalid option "upstreams\[0\]\.wieght": expected one of the known options \(host, port, weight, .*\) \(did you mean "weight"\?\), received 2\.$/,
  );
  // Nothing near: the list alone.
  assert.equal(
    unknownKeyMessage(() => new TcpProxy({ upstreams: [], zzz: 1 } as never)),
    'Invalid option "zzz": expected one of the known options (...), received 1.',
  );
});

test('a duration given with a unit, as nginx writes one, is refused saying it is milliseconds', () => {
  // `--drain-timeout 30s` takes units; the options and the config file's keys take milliseconds.
  assert.throws(() => new TcpProxy({ upstreams: [], healthCheck: { interval: '5s' } } as never), {
    name: 'InvalidOptionError',
    message:
      'Invalid option "healthCheck.interval": expected milliseconds, an integer from 1 to 2147483647, received "5s".',
  });
  assert.throws(() => new UdpProxy({ upstreams: [], idleTimeout: '30s' } as never), {
    message:
      'Invalid option "idleTimeout": expected milliseconds, an integer from 0 to 2147483647, received "30s".',
  });
});
