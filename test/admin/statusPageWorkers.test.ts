import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { launchChromium } from '../helpers/chromium.js';
import { connect, waitFor } from '../helpers/net.js';
import { testServer } from '../helpers/testServer.js';
import { startAdminCli } from '../helpers/adminCli.js';
import { findTool, requireTools } from '../helpers/tools.js';

const chromium = findTool('chromium') ?? findTool('chromium-browser');
const skip =
  chromium === undefined && !requireTools
    ? 'chromium is not installed (apt-get install chromium, or see .ci/run)'
    : false;

const TOKEN = 'workers-page-token';

function rowState(id: string): string {
  return `(document.querySelector('tr[data-upstream="${id}"]')?.dataset.state ?? '')`;
}

/** An echo upstream that the test's `after` closes. */
function echo(t: TestContext): Promise<number> {
  return testServer(t, (socket) => socket.pipe(socket));
}

test(
  'status page of a 2-worker CLI in headless Chromium: merged rows, rates, Drain on every worker',
  { skip },
  async (t) => {
    if (chromium === undefined)
      throw new Error('L4PROXY_REQUIRE_TOOLS=1 but chromium is not installed');
    const { cli, admin, port } = await startAdminCli(t, {
      token: TOKEN,
      upstreams: { a: await echo(t), b: await echo(t) },
      workers: 2,
    });
    const browser = await launchChromium(chromium);
    t.after(() => browser.close());
    const page = await browser.open(`http://${admin}/#token=${TOKEN}`, 1100, 900);
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
