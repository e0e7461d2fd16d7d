/**
 * Type-level tests of the programmable data path (tsc checks them): each `@ts-expect-error` covers
 * one case on an otherwise valid value.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { expectTypeOf } from 'expect-type';
import type {
  AdmissionHook,
  DataFilterFactory,
  PrereadInspector,
  PrereadResults,
  ProxyTlv,
  SelectionContext,
  TcpProxyOptions,
  UdpSessionFilterFactory,
} from '../../src/index.js';

test('inspectors, filters and the admit hook are plain typed functions', () => {
  const inspector: PrereadInspector = (bytes) =>
    bytes.length > 0
      ? { action: 'match', metadata: { protocol: 'x', size: bytes.length } }
      : { action: 'more' };
  // @ts-expect-error a verdict needs a known action
  const unknownAction: PrereadInspector = () => ({ action: 'maybe' });
  // @ts-expect-error metadata values are strings, numbers, booleans or string arrays
  const badMetadata: PrereadInspector = () => ({ action: 'match', metadata: { at: new Date() } });
  const filter: DataFilterFactory = () => ({
    onClientData: (chunk) =>
      chunk.length > 10 ? { end: true, data: chunk.subarray(0, 10) } : undefined,
    onUpstreamData: () => null,
  });
  // @ts-expect-error a data filter returns bytes, null, undefined or { end: true }
  const badFilter: DataFilterFactory = () => ({ onClientData: () => 'text' });
  const admit: AdmissionHook = async (ctx) => {
    await Promise.resolve();
    return ctx.clientAddress === '127.0.0.1' || { reject: 'not local' };
  };
  // @ts-expect-error a rejection carries a reason string
  const badAdmit: AdmissionHook = () => ({ reject: 42 });
  const sessionFilter: UdpSessionFilterFactory = () => ({
    onClientDatagram: (d) => (d.length === 0 ? null : d),
  });
  const options: TcpProxyOptions = {
    preread: { inspectors: { inspector } },
    admit,
    filters: [filter],
  };
  // An in-band TLS request (PostgreSQL's SSLRequest) answered on a terminating listener.
  const starter: PrereadInspector = (bytes, ctx) =>
    ctx.canStartTls && ctx.tls === undefined
      ? { action: 'startTls', data: Buffer.from('S'), consume: 8 }
      : { action: 'reject', reason: 'no TLS here', error: new Error(String(bytes.length)) };
  // @ts-expect-error startTls answers bytes and says how many it consumed
  const badStarter: PrereadInspector = () => ({ action: 'startTls', data: 'S' });
  const terminating: TcpProxyOptions = {
    terminateTls: { cert: 'pem', key: 'pem' },
    preread: { inspectors: { starter }, plaintext: 'accept' },
  };
  // @ts-expect-error plaintext is 'refuse' or 'accept'
  const badPlaintext: TcpProxyOptions = { preread: { inspectors: {}, plaintext: 'allow' } };
  assert.equal([badStarter, terminating, badPlaintext].length, 3);
  expectTypeOf<SelectionContext['preread']>().toEqualTypeOf<PrereadResults | undefined>();
  expectTypeOf<SelectionContext['proxyTlvs']>().toEqualTypeOf<readonly ProxyTlv[] | undefined>();
  assert.equal([unknownAction, badMetadata, badFilter, badAdmit, sessionFilter, options].length, 6);
});
