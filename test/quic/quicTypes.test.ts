/**
 * Type-level tests of the QUIC surface (tsc checks them in the test build); each
 * `@ts-expect-error` sits on an object literal that is otherwise valid.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { expectTypeOf } from 'expect-type';
import { parseQuicInitial, UdpProxy } from '../../src/index.js';
import type {
  QuicInitialErrorReason,
  QuicInitialResult,
  SelectionContext,
  UdpProxyOptions,
  UdpQuicOptions,
  UdpQuicStats,
} from '../../src/index.js';

test('quic options, results and selection context are typed', () => {
  expectTypeOf<UdpProxyOptions['quic']>().toEqualTypeOf<UdpQuicOptions | boolean | undefined>();
  expectTypeOf<UdpQuicOptions['fallback']>().toEqualTypeOf<'route' | 'drop' | undefined>();
  expectTypeOf<SelectionContext['quicVersion']>().toEqualTypeOf<number | undefined>();
  expectTypeOf(parseQuicInitial).returns.toEqualTypeOf<QuicInitialResult | undefined>();
  expectTypeOf<ReturnType<UdpProxy['stats']>['quic']>().toEqualTypeOf<UdpQuicStats | undefined>();
  const ok: UdpProxyOptions = {
    quic: { fallback: 'drop', quicLb: { serverIdLength: 3, servers: {} } },
  };
  // @ts-expect-error fallback is 'route' or 'drop'
  const badFallback: UdpProxyOptions = { quic: { fallback: 'reset' } };
  // @ts-expect-error quicLb needs serverIdLength
  const noLength: UdpProxyOptions = { quic: { quicLb: { servers: {} } } };
  const narrowed = (r: QuicInitialResult): string | undefined =>
    r.kind === 'sni' ? r.serverName : r.kind === 'no_sni' ? r.initial.hello.alpn?.[0] : undefined;
  assert.ok(ok.quic);
  assert.ok(badFallback);
  assert.ok(noLength);
  assert.equal(typeof narrowed, 'function');
});

test('every QuicInitialError reason and quic stat is documented in docs/quic.md', () => {
  const doc = readFileSync(new URL('../../../docs/quic.md', import.meta.url), 'utf8');
  const reasons: Record<QuicInitialErrorReason, true> = {
    bad_header: true,
    decrypt_failed: true,
    bad_frame: true,
    connection_close: true,
    too_long: true,
    too_fragmented: true,
    too_many_packets: true,
    bad_client_hello: true,
  };
  const proxy = new UdpProxy({ quic: true });
  const stats = proxy.stats().quic;
  assert.ok(stats);
  for (const name of [...Object.keys(reasons), ...Object.keys(stats)])
    assert.ok(doc.includes(`| \`${name}\``), `${name} is documented`);
  return proxy.close();
});
