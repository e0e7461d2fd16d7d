import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as l4proxy from '../src/index.js';

test('the package exports the public API and nothing else', () => {
  const exported = Object.keys(l4proxy).sort();
  const expected = [
    'CloseReason',
    'ConnectFailedError',
    'ConnectTimeoutError',
    'ErrorCode',
    'InvalidOptionError',
    'L4Error',
    'ListenError',
    'ModeUnsupportedError',
    'NoUpstreamError',
    'ProxyClosedError',
    'RejectReason',
    'SelectorError',
    'TcpProxy',
    'roundRobin',
  ];
  for (const name of expected) assert.ok(exported.includes(name), `${name} is exported`);
  for (const name of [
    'UpstreamSet',
    'UpstreamState',
    'TcpConnection',
    'emitSafely',
    'reportError',
  ]) {
    assert.ok(!exported.includes(name), `internal ${name} is not exported`);
  }
});

test('every error class carries its stable code and is an L4Error', () => {
  const errors = [
    new l4proxy.InvalidOptionError('x', 'a number', 'y'),
    new l4proxy.ModeUnsupportedError('transparent'),
    new l4proxy.NoUpstreamError(),
    new l4proxy.ConnectTimeoutError('h:1', 5),
    new l4proxy.ConnectFailedError('h:1', new Error('refused')),
    new l4proxy.SelectorError('bad'),
    new l4proxy.ProxyClosedError(),
    new l4proxy.ListenError('bad', new Error('x')),
  ];
  for (const error of errors) {
    assert.ok(error instanceof l4proxy.L4Error);
    assert.ok(Object.values(l4proxy.ErrorCode).includes(error.code));
    assert.equal(error.name, error.constructor.name);
  }
});
