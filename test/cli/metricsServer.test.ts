import assert from 'node:assert/strict';
import { once } from 'node:events';
import { constants } from 'node:os';
import { test } from 'node:test';
import { startMetricsServer } from '../../src/cli/metricsServer.js';
import type { MetricsCollector } from '../../src/cli/metricsServer.js';
import { failAccept } from '../helpers/acceptError.js';
import { adminRequest } from '../helpers/adminClient.js';
import { httpGet } from '../helpers/httpGet.js';

/** Serves metrics on 127.0.0.1 with `collect`; closed when the test ends. */
async function serve(
  t: { after(fn: () => unknown): void },
  collect: MetricsCollector,
): Promise<number> {
  const { server, address } = await startMetricsServer({ host: '127.0.0.1', port: 0 }, collect);
  t.after(async () => {
    server.closeAllConnections();
    server.close();
    await once(server, 'close');
  });
  return Number(address.slice(address.lastIndexOf(':') + 1));
}

const nothing: MetricsCollector = () => Promise.resolve([]);

test('--metrics answers a method other than GET or HEAD on /metrics with 405 and Allow', async (t) => {
  const port = await serve(t, nothing);
  for (const method of ['POST', 'PUT', 'DELETE']) {
    const reply = await adminRequest(port, method, '/metrics');
    assert.equal(reply.status, 405, method);
    assert.equal(reply.headers.allow, 'GET, HEAD', method);
  }
  assert.equal((await adminRequest(port, 'GET', '/metrics')).status, 200);
  assert.equal((await adminRequest(port, 'HEAD', '/metrics')).status, 200);
  assert.equal((await adminRequest(port, 'GET', '/other')).status, 404);
  assert.equal((await adminRequest(port, 'POST', '/other')).status, 404);
});

test('--metrics answers 500 when collecting throws a value String() cannot convert', async (t) => {
  // Object.create(null) has no toString: String() of it throws.
  const port = await serve(t, () => Promise.reject(Object.create(null) as Error));
  const reply = await adminRequest(port, 'GET', '/metrics');
  assert.equal(reply.status, 500);
  assert.match(reply.text, /an object/);
});

test('--metrics answers 500 when the collector throws at once', async (t) => {
  const port = await serve(t, () => {
    throw new Error('no stats now');
  });
  const reply = await adminRequest(port, 'GET', '/metrics');
  assert.equal(reply.status, 500);
  assert.match(reply.text, /no stats now/);
});

test('an accept error (EMFILE, ENOBUFS) neither crashes nor stops the metrics server', async (t) => {
  const { server, address } = await startMetricsServer({ host: '127.0.0.1', port: 0 }, nothing);
  t.after(() => {
    server.close();
  });
  // Before: no 'error' listener after listen(), so the emit threw out of the accept callback
  // (an uncaught exception ending the l4proxy process).
  assert.doesNotThrow(() => {
    failAccept(server, constants.errno.EMFILE);
    failAccept(server, constants.errno.ENOBUFS);
  });
  assert.equal(server.listening, true);
  const reply = await httpGet(`http://${address}/metrics`);
  assert.equal(reply.status, 200);
});

test('--metrics on a loopback address refuses a Host DNS rebinding could forge (403)', async (t) => {
  const port = await serve(t, nothing);
  const rebound = await adminRequest(port, 'GET', '/metrics', {
    headers: { host: `evil.example:${port}` },
  });
  assert.equal(rebound.status, 403);
  for (const host of [`127.0.0.1:${port}`, `localhost:${port}`]) {
    const reply = await adminRequest(port, 'GET', '/metrics', { headers: { host } });
    assert.equal(reply.status, 200, host);
  }
});
