import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InvalidOptionError, TcpProxy, UdpProxy } from '../../src/index.js';

const upstreams = [{ host: '127.0.0.1', port: 9 }];

/** Whether `build` throws an InvalidOptionError naming `option`, its message saying `expected`. */
function refuses(build: () => unknown, option: string, expected: RegExp): void {
  assert.throws(build, (err: unknown) => {
    assert.ok(err instanceof InvalidOptionError);
    assert.equal(err.option, option);
    assert.match(err.message, expected);
    return true;
  });
}

test('filters and sessionFilters: not an array, or an entry that is not a function, are refused by name', () => {
  const cases = [
    ['filters', (value: unknown) => new TcpProxy({ upstreams, filters: value as never })],
    [
      'sessionFilters',
      (value: unknown) => new UdpProxy({ upstreams, sessionFilters: value as never }),
    ],
  ] as const;
  for (const [option, build] of cases) {
    refuses(() => build('gzip'), option, /an array of filter factory functions/);
    refuses(() => build([() => undefined, 42]), `${option}[1]`, /a filter factory function/);
  }
});

test('filters and sessionFilters: an empty list is accepted', () => {
  assert.doesNotThrow(() => new TcpProxy({ upstreams, filters: [] }));
  assert.doesNotThrow(() => new UdpProxy({ upstreams, sessionFilters: [] }));
});
