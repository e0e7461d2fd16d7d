import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { launchChromium } from '../helpers/chromium.js';
import type { Browser, Page } from '../helpers/chromium.js';
import { adminRequest } from '../helpers/adminClient.js';
import { findTool, requireTools } from '../helpers/tools.js';
import { startStatusScene } from './statusScene.js';
import type { StatusScene } from './statusScene.js';

const chromium = findTool('chromium') ?? findTool('chromium-browser');
const skip =
  chromium === undefined && !requireTools
    ? 'chromium is not installed (apt-get install chromium, or see .ci/run)'
    : false;

/** The state a row of the upstream table shows. */
function rowState(id: string): string {
  return `(document.querySelector('tr[data-upstream="${id}"]')?.dataset.state ?? '')`;
}

describe('status page in headless Chromium', { skip }, () => {
  let scene: StatusScene;
  let browser: Browser;
  let page: Page;

  before(async () => {
    if (chromium === undefined)
      throw new Error('L4PROXY_REQUIRE_TOOLS=1 but chromium is not installed');
    scene = await startStatusScene();
    browser = await launchChromium(chromium);
    page = await browser.open(
      `http://127.0.0.1:${scene.adminPort}/#token=${scene.token}`,
      1100,
      900,
    );
  });

  after(async () => {
    await browser.close();
    await scene.close();
  });

  test('shows every listener and upstream, all up, with no CDN or inline code (CSP)', async () => {
    await page.waitFor(
      `document.querySelectorAll('tr[data-upstream]').length === 4`,
      'four upstream rows',
    );
    for (const id of scene.upstreams) assert.equal(await page.evaluate(rowState(id)), 'up');
    assert.equal(await page.evaluate(rowState('resolver')), 'up');
    const listeners = await page.evaluate<string[]>(
      `[...document.querySelectorAll('section[data-listener]')].map((s) => s.dataset.listener)`,
    );
    assert.deepEqual(listeners, ['web', 'dns']);
    assert.equal(await page.evaluate(`document.querySelectorAll('svg polyline').length > 0`), true);
    // Only same-origin resources were loaded.
    const foreign = await page.evaluate<string[]>(
      `performance.getEntriesByType('resource').map((e) => e.name).filter((n) => !n.startsWith(location.origin))`,
    );
    assert.deepEqual(foreign, []);
    const page200 = await adminRequest(scene.adminPort, 'GET', '/');
    assert.match(String(page200.headers['content-security-policy']), /script-src 'self'/);
  });

  test('rates rise under load', async () => {
    const idle = await page.evaluate<string>(
      `document.querySelector('section[data-listener="web"] [data-rate="connections"]').textContent`,
    );
    assert.match(idle, /^0\.0 conn\/s$/);
    const loading = scene.load(3_000);
    const rate = await page.waitFor<number>(
      `(() => { const t = document.querySelector('section[data-listener="web"] [data-rate="connections"]').textContent; const v = parseFloat(t); return v > 0 ? v : 0; })()`,
      'a connection rate above 0',
    );
    assert.ok(rate > 0);
    const bytes = await page.waitFor<string>(
      `(() => { const t = document.querySelector('section[data-listener="web"] [data-rate="bytes"]').textContent; return /^0 B\\/s/.test(t) ? '' : t; })()`,
      'a byte rate above 0',
    );
    assert.match(bytes, /B\/s/);
    const exchanges = await loading;
    assert.ok(exchanges > 0);
    await page.waitFor(
      `parseFloat(document.querySelector('section[data-listener="dns"] [data-rate="connections"]').textContent) >= 0 && document.querySelector('section[data-listener="dns"] [data-field="active"]')?.textContent !== '0'`,
      'a UDP session on the resolver',
    );
  });

  test('an upstream turns red when its server is killed, and the event is listed', async () => {
    const victim = scene.upstreams[1] ?? '';
    await scene.kill(1);
    await page.waitFor(`${rowState(victim)} === 'down'`, `${victim} down`);
    for (const id of [scene.upstreams[0], scene.upstreams[2]])
      assert.equal(await page.evaluate(rowState(id ?? '')), 'up');
    const colour = await page.evaluate<string>(
      `getComputedStyle(document.querySelector('tr[data-upstream="${victim}"] .dot')).backgroundColor`,
    );
    assert.equal(
      colour,
      'rgb(214, 69, 69)',
      `the dot is red: ${await page.evaluate<string>(`document.querySelector('tr[data-upstream="${victim}"]').outerHTML`)}`,
    );
    await page.waitFor(
      `[...document.querySelectorAll('#events tr[data-kind="health"]')].some((r) => r.textContent.includes('${victim}'))`,
      'the health event in the recent events',
    );
  });

  test('the Drain button drains through the API and the page reports it', async () => {
    const id = scene.upstreams[0] ?? '';
    await page.evaluate(
      `document.querySelector('tr[data-upstream="${id}"] button[data-action="drain"]').click()`,
    );
    await page.waitFor(`${rowState(id)} === 'drain'`, `${id} draining`);
    const reply = await adminRequest(scene.adminPort, 'GET', '/upstreams', { token: scene.token });
    const web = (
      reply.json as { listeners: { web: { upstreams: { id: string; admin: string }[] } } }
    ).listeners.web;
    assert.equal(web.upstreams.find((u) => u.id === id)?.admin, 'drain');
    await page.waitFor(
      `[...document.querySelectorAll('#events tr[data-kind="admin"]')].some((r) => r.textContent.includes('drain'))`,
      'the admin action in the recent events',
    );
  });

  test('usable on a phone: no horizontal overflow at 390 px, a screenshot renders', async () => {
    const phone = await browser.open(
      `http://127.0.0.1:${scene.adminPort}/#token=${scene.token}`,
      390,
      844,
    );
    await phone.waitFor(
      `document.querySelectorAll('tr[data-upstream]').length === 4`,
      'rows on the phone',
    );
    const overflow = await phone.evaluate<number>(
      `document.documentElement.scrollWidth - window.innerWidth`,
    );
    assert.ok(overflow <= 0, `page wider than the phone by ${overflow}px`);
    const png = await phone.screenshot();
    assert.deepEqual([...png.subarray(1, 4)], [...Buffer.from('PNG')]);
    assert.equal(png.readUInt32BE(16), 390);
  });

  test('without the token the page asks for it and shows no data', async () => {
    const stranger = await browser.open(`http://127.0.0.1:${scene.adminPort}/`, 800, 600);
    await stranger.evaluate(`sessionStorage.clear()`);
    await stranger.evaluate(`location.reload()`);
    await stranger.waitFor(
      `document.getElementById('auth') && !document.getElementById('auth').hidden`,
      'the token form',
    );
    assert.equal(
      await stranger.evaluate(`document.querySelectorAll('tr[data-upstream]').length`),
      0,
    );
  });

  test('a wrong token: the page asks again and stops polling, so it cannot lock its address out', async () => {
    const limiter = scene.admin.authLimiter;
    assert.ok(limiter !== undefined);
    const before = limiter.failed;
    const wrong = await browser.open(`http://127.0.0.1:${scene.adminPort}/#token=wrong`, 800, 600);
    await wrong.waitFor(`!document.getElementById('auth').hidden`, 'the token form');
    // The first page keeps polling (once a second): two of its updates later, the refused page
    // sent nothing more. Before, it polled on with the wrong token, 3 failures a second: its
    // address (the operator's) was locked out within 4 s.
    const updates = `Number(document.body.getAttribute('data-updates'))`;
    const now = await page.evaluate<number>(updates);
    await page.waitFor(`${updates} >= ${now + 2}`, 'two more updates of the first page');
    assert.ok(limiter.failed - before <= 3, `${limiter.failed - before} wrong tokens`);
    // The right token: the page polls again.
    await wrong.evaluate(
      `document.getElementById('token').value = ${JSON.stringify(scene.token)};` +
        `document.getElementById('auth-form').requestSubmit(); true`,
    );
    await wrong.waitFor(`document.querySelectorAll('tr[data-upstream]').length === 4`, 'the rows');
    const rendered = await wrong.evaluate<number>(updates);
    await wrong.waitFor(`${updates} >= ${rendered + 1}`, 'polling again');
  });
});
