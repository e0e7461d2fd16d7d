import assert from 'node:assert/strict';
import net from 'node:net';
import type { Server, Socket } from 'node:net';
import { test } from 'node:test';
import { launchChromium } from '../helpers/chromium.js';
import { connect, listen, waitFor } from '../helpers/net.js';
import { findTool, requireTools } from '../helpers/tools.js';
import { configDir, listenPort, startCli } from '../cli/cli.js';

const chromium = findTool('chromium') ?? findTool('chromium-browser');
const skip =
  chromium === undefined && !requireTools
    ? 'chromium is not installed (apt-get install chromium, or see .ci/run)'
    : false;

const TOKEN = 'workers-page-token';

function rowState(id: string): string {
  return `(document.querySelector('tr[data-upstream="${id}"]')?.dataset.state ?? '')`;
}

async function echo(t: { after(fn: () => unknown): void }): Promise<number> {
  const sockets = new Set<Socket>();
  const server: Server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.pipe(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  const port = await listen(server);
  t.after(() => {
    for (const socket of sockets) socket.destroy();
    return new Promise((resolve) => server.close(resolve));
  });
  return port;
}

test(
  'status page of a 2-worker CLI in headless Chromium: merged rows, rates, Drain on every worker',
  { skip },
  async (t) => {
    if (chromium === undefined)
      throw new Error('L4PROXY_REQUIRE_TOOLS=1 but chromium is not installed');
    const [a, b] = [await echo(t), await echo(t)];
    const dir = configDir(t);
    const file = dir.write('l4proxy.json', {
      workers: 2,
      admin: { listen: '127.0.0.1:0', tokenFile: dir.write('token', TOKEN) },
      listeners: [
        {
          name: 'web',
          protocol: 'tcp',
          listen: '127.0.0.1:0',
          upstreams: [
            { host: '127.0.0.1', port: a, id: 'a' },
            { host: '127.0.0.1', port: b, id: 'b' },
          ],
        },
      ],
    });
    const cli = startCli(t, ['--config', file]);
    const at = String((await cli.waitLine('stderr', (l) => l.msg === 'admin listening')).address);
    await cli.waitLine('stderr', (l) => l.msg === 'ready', 15_000);
    const port = await listenPort(cli);
    const browser = await launchChromium(chromium);
    t.after(() => browser.close());
    const page = await browser.open(`http://${at}/#token=${TOKEN}`, 1100, 900);
    await page.waitFor(`${rowState('a')} === 'up' && ${rowState('b')} === 'up'`, 'both rows up');

    // Traffic through both workers (cluster round-robin) until the page shows a rate.
    const state = { running: true };
    const load = (async () => {
      let exchanges = 0;
      for (let i = 0; i < 2_000 && state.running; i++) {
        const socket = await connect(port);
        const reply = waitFor(socket, 'data');
        socket.write('ping');
        await reply;
        socket.destroy();
        exchanges++;
      }
      return exchanges;
    })();
    try {
      await page.waitFor(
        `parseFloat(document.querySelector('section[data-listener="web"] [data-rate="connections"]').textContent) > 0`,
        'a connection rate above 0',
      );
    } finally {
      state.running = false;
    }
    assert.ok((await load) > 0);

    await page.evaluate(
      `document.querySelector('tr[data-upstream="b"] button[data-action="drain"]').click()`,
    );
    await page.waitFor(`${rowState('b')} === 'drain'`, 'b draining');
    const actions = await cli.waitLines(
      'stderr',
      (l) => l.msg === 'admin action' && l.action === 'drain',
      2,
    );
    assert.deepEqual(actions.map((l) => l.worker).sort(), [1, 2]);
    await page.waitFor(
      `[...document.querySelectorAll('#events tr[data-kind="admin"]')].some((r) => r.textContent.includes('drain'))`,
      'the admin action in the recent events',
    );
    process.kill(cli.pid, 'SIGTERM');
    assert.equal(await cli.exited(15_000), 0);
  },
);
