/**
 * Type-level tests of the admin API's public types: each `@ts-expect-error` covers one case on an
 * otherwise valid value.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { expectTypeOf } from 'expect-type';
import type {
  AdminControlEntry,
  AdminMode,
  AdminOverride,
  AdminServerOptions,
  TcpProxy,
} from '../../src/index.js';

test('admin modes, overrides and control entries are closed unions', () => {
  expectTypeOf<AdminMode>().toEqualTypeOf<'ready' | 'drain' | 'maint'>();
  expectTypeOf<AdminControlEntry['action']>().toEqualTypeOf<
    'drain' | 'disable' | 'enable' | 'weight' | 'close'
  >();
  expectTypeOf<TcpProxy['overrideUpstream']>()
    .parameter(1)
    .toEqualTypeOf<AdminOverride | undefined>();
  const drain: AdminOverride = { mode: 'drain', weight: undefined };
  // @ts-expect-error 'down' is not an admin mode (health is not the operator's to set)
  const down: AdminOverride = { mode: 'down', weight: undefined };
  const options: AdminServerOptions = { token: 'x', maxConnections: 4 };
  // @ts-expect-error the token is a string, not a number
  const numeric: AdminServerOptions = { token: 42 };
  assert.deepEqual(
    [drain.mode, down.mode, options.token, numeric.token],
    ['drain', 'down', 'x', 42],
  );
});

test('token takes process.env.ADMIN_TOKEN as documented: unset means no token', () => {
  // docs/operations.md and createAdminServer's example pass the variable as is; under
  // exactOptionalPropertyTypes that compiles only when the option admits undefined.
  const env: Record<string, string | undefined> = {};
  const options: AdminServerOptions = { token: env.ADMIN_TOKEN };
  expectTypeOf(options.token).toEqualTypeOf<string | undefined>();
  assert.equal(options.token, undefined);
});
