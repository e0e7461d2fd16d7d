import assert from 'node:assert/strict';
import net from 'node:net';
import type { Socket } from 'node:net';
import type { TestContext } from 'node:test';
import { describe, test } from 'node:test';
import { connect, echoServer, readAll, readUntil, waitFor } from '../helpers/net.js';
import { startTunnelCli } from './tunnelCli.js';
import type { TunnelCli } from './tunnelCli.js';

/** `l4proxy` with a tunnel listener to a local echo server, and one HTTP/1.1 tunnel open. */
async function cliWithLiveTunnel(
  t: TestContext,
  drainTimeout: string,
): Promise<{ tunnel: TunnelCli; live: Socket }> {
  const echo = await echoServer();
  t.after(() => echo.close());
  const tunnel = await startTunnelCli(
    t,
    { upstreams: [{ host: '127.0.0.1', port: echo.port }] },
    { args: ['--drain-timeout', drainTimeout] },
  );
  const authority = `127.0.0.1:${String(echo.port)}`;
  const live = await connect(tunnel.port);
  t.after(() => live.destroy());
  live.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  await readUntil(live, /^HTTP\/1\.1 200 /);
  return { tunnel, live };
}

/** Writes `text` through the tunnel and waits for its echo. */
async function roundTrip(live: Socket, text: string): Promise<void> {
  const back = readUntil(live, new RegExp(text));
  live.write(text);
  await back;
}

describe('CLI: SIGTERM drains tunnel listeners', () => {
  test('a live tunnel keeps flowing through the drain, new connections are refused, and the command exits 0 once it ends', async (t) => {
    const { tunnel, live } = await cliWithLiveTunnel(t, '20s');
    const { cli, port } = tunnel;
    process.kill(cli.pid, 'SIGTERM');
    const draining = await cli.waitLine('stderr', (l) => l.msg === 'draining');
    assert.equal(draining.drainTimeout, 20_000);
    const refused = net.connect({ port, host: '127.0.0.1' });
    const [error] = await waitFor<[NodeJS.ErrnoException]>(refused, 'error');
    assert.equal(error.code, 'ECONNREFUSED');
    await roundTrip(live, 'during-the-drain');
    const rest = readAll(live);
    live.end();
    await rest;
    assert.equal(await cli.exited(), 0);
    const line = await cli.waitLine('stdout', (l) => l.msg === 'tunnel closed');
    assert.equal(line.end, 'completed');
    assert.ok(cli.stderr.some((l) => l.msg === 'drained, exiting'));
  });

  test('a tunnel still open at the drain deadline is cut (proxy_closed), counted in the warn line, exit 1', async (t) => {
    const { tunnel } = await cliWithLiveTunnel(t, '300ms');
    const { cli } = tunnel;
    process.kill(cli.pid, 'SIGTERM');
    const cut = await cli.waitLine('stderr', (l) => l.msg.startsWith('drain deadline passed'));
    assert.equal(cut.level, 40, 'warn');
    assert.equal(cut.cut, 1);
    assert.equal(await cli.exited(), 1);
    const line = await cli.waitLine('stdout', (l) => l.msg === 'tunnel closed');
    assert.equal(line.end, 'proxy_closed');
  });

  test('a second SIGTERM cuts the draining tunnel now (proxy_closed) and exits 128 + 15', async (t) => {
    const { tunnel, live } = await cliWithLiveTunnel(t, '20s');
    const { cli } = tunnel;
    process.kill(cli.pid, 'SIGTERM');
    await cli.waitLine('stderr', (l) => l.msg === 'draining');
    await roundTrip(live, 'before-the-second-signal');
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(), 143);
    const line = await cli.waitLine('stdout', (l) => l.msg === 'tunnel closed');
    assert.equal(line.end, 'proxy_closed');
  });
});
