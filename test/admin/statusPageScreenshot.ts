/**
 * Regenerates docs/images/status-page.png: the status page in headless Chromium while traffic
 * flows, one upstream killed and one drained. Run: `npm run docs:screenshot`.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { launchChromium } from '../helpers/chromium.js';
import { findTool } from '../helpers/tools.js';
import { adminRequest } from '../helpers/adminClient.js';
import { startStatusScene } from './statusScene.js';

const target = fileURLToPath(new URL('../../../docs/images/status-page.png', import.meta.url));

async function main(): Promise<void> {
  const chromium = findTool('chromium') ?? findTool('chromium-browser');
  if (chromium === undefined) throw new Error('chromium is not installed');
  const scene = await startStatusScene();
  const browser = await launchChromium(chromium);
  try {
    const page = await browser.open(
      `http://127.0.0.1:${scene.adminPort}/#token=${scene.token}`,
      1200,
      1000,
    );
    await page.waitFor(`document.querySelectorAll('tr[data-upstream]').length === 4`, 'rows');
    // Long enough for the one-minute charts to show a shape.
    await scene.load(15_000);
    await scene.kill(1);
    await adminRequest(scene.adminPort, 'POST', '/upstreams/web/app-3/weight', {
      token: scene.token,
      body: { weight: 3 },
    });
    const loading = scene.load(10_000);
    await page.waitFor(
      `document.querySelector('tr[data-upstream="app-2"]')?.dataset.state === 'down'`,
      'app-2 down',
    );
    await adminRequest(scene.adminPort, 'POST', '/upstreams/web/app-1/drain', {
      token: scene.token,
    });
    await new Promise((resolve) => setTimeout(resolve, 8_000));
    const png = await page.screenshot();
    await loading;
    mkdirSync(new URL('.', `file://${target}`), { recursive: true });
    writeFileSync(target, png);
    process.stdout.write(`wrote ${target} (${png.length} bytes)\n`);
  } finally {
    await browser.close();
    await scene.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${String(err)}\n`);
  process.exit(1);
});
