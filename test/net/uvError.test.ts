import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { constants } from 'node:os';
import { uvError } from '../../src/net/uvError.js';

const ECONNRESET = -constants.errno.ECONNRESET;
const ECONNREFUSED = -constants.errno.ECONNREFUSED;

describe('uvError: system errors from libuv callbacks', () => {
  test('carries what Node puts on its own: message, code, errno, syscall, address, port', () => {
    const error = uvError(ECONNREFUSED, 'connect', '127.0.0.1', 9) as NodeJS.ErrnoException & {
      address?: string;
      port?: number;
    };
    assert.equal(error.message, 'connect ECONNREFUSED 127.0.0.1:9');
    assert.equal(error.code, 'ECONNREFUSED');
    assert.equal(error.errno, ECONNREFUSED);
    assert.equal(error.syscall, 'connect');
    assert.equal(error.address, '127.0.0.1');
    assert.equal(error.port, 9);
    assert.equal(uvError(ECONNRESET, 'read').message, 'read ECONNRESET');
  });

  test('captures no stack (only the relay frames would be in it) and leaves stackTraceLimit as it was', () => {
    const before = Error.stackTraceLimit;
    const error = uvError(ECONNRESET, 'read');
    assert.equal(Error.stackTraceLimit, before);
    assert.doesNotMatch(error.stack ?? '', /\n\s+at /);
    assert.match(error.stack ?? '', /read ECONNRESET/);
  });

  test('with a frozen stackTraceLimit it still builds the error (with a stack)', () => {
    const descriptor = Object.getOwnPropertyDescriptor(Error, 'stackTraceLimit');
    assert.ok(descriptor !== undefined);
    Object.defineProperty(Error, 'stackTraceLimit', { ...descriptor, writable: false });
    try {
      const error = uvError(ECONNRESET, 'read');
      assert.equal(error.message, 'read ECONNRESET');
      assert.match(error.stack ?? '', /\n\s+at /);
    } finally {
      Object.defineProperty(Error, 'stackTraceLimit', descriptor);
    }
  });
});
