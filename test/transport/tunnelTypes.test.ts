/**
 * Type-level tests of the tunnel options (tsc checks this file): each `@ts-expect-error` covers
 * one case on an otherwise valid literal.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { expectTypeOf } from 'expect-type';
import { leastConnections, TunnelServer } from '../../src/index.js';
import type {
  AdmissionHook,
  HttpTunnel,
  TunnelAdmissionContext,
  TunnelPeer,
  TunnelListenOptions,
  TunnelServerOptions,
  Upstream,
} from '../../src/index.js';

test('tunnel option types', () => {
  const fixed: Upstream = { host: 'proxy', port: 3128, tunnel: { target: 'db:5432' } };
  const computed: Upstream = {
    host: 'proxy',
    port: 3128,
    tunnel: { protocol: 'h2', target: (peer) => `${peer.serverName ?? 'default'}:443` },
  };
  expectTypeOf<HttpTunnel['protocol']>().toEqualTypeOf<'http/1.1' | 'h2' | undefined>();
  expectTypeOf<
    Parameters<Extract<HttpTunnel['target'], (peer: TunnelPeer) => string>>[0]
  >().toEqualTypeOf<TunnelPeer>();
  // @ts-expect-error only HTTP/1.1 and HTTP/2 tunnels exist
  const h3: HttpTunnel = { protocol: 'h3', target: 'db:5432' };
  // @ts-expect-error the target function returns an authority string
  const numeric: HttpTunnel = { target: () => 5432 };
  // @ts-expect-error authorize answers true, false or a status number
  const server: TunnelServerOptions = { authorize: () => 'yes' };
  assert.ok(fixed.tunnel !== undefined && computed.tunnel !== undefined);
  assert.equal([h3, numeric, server].length, 3);
});

test('TunnelServer admission and routing types', () => {
  // A TcpProxy admission hook fits TunnelServer `admit` as it is.
  const tcpHook: AdmissionHook = (ctx) => ctx.clientAddress.startsWith('127.');
  const reuse: TunnelServerOptions = { admit: tcpHook, selector: leastConnections() };
  const withStatus: TunnelServerOptions = {
    admit: (ctx) =>
      ctx.request.headers['proxy-authorization'] !== undefined || { reject: 'auth', status: 407 },
  };
  expectTypeOf<TunnelAdmissionContext['request']['authority']>().toEqualTypeOf<string>();
  // @ts-expect-error route is 'match', 'any', 'direct' or a function
  const unknownRoute: TunnelServerOptions = { route: 'everywhere' };
  // @ts-expect-error a status needs a reject reason too
  const bare: TunnelServerOptions = { admit: () => ({ status: 407 }) };
  const post: HttpTunnel = { protocol: 'h2', target: 'db:5432', usePost: true, postPath: '/t' };
  assert.equal([reuse, withStatus, unknownRoute, bare, post].length, 5);
});

test('TunnelServer.listen() takes net.Server.listen() options but signal, which it refuses', () => {
  const ok: TunnelListenOptions = { port: 0, host: '127.0.0.1', backlog: 128 };
  // @ts-expect-error close() stops the server: a signal would close the listener behind its back
  const withSignal: TunnelListenOptions = { port: 0, signal: AbortSignal.abort() };
  // The last overload (the others narrow the result by `path`).
  expectTypeOf<Parameters<TunnelServer['listen']>[0]>().toEqualTypeOf<TunnelListenOptions>();
  assert.equal([ok, withSignal].length, 2);
});
