import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';
import { createAdminServer, TcpProxy } from '../../src/index.js';
import type { AdminControlEntry, AdminServer, UpstreamReport } from '../../src/index.js';
import { adminRequest } from '../helpers/adminClient.js';
import { launchChromium } from '../helpers/chromium.js';
import { echoServer, listen } from '../helpers/net.js';
import type { TestServer } from '../helpers/net.js';
import { findTool, requireTools } from '../helpers/tools.js';

const chromium = findTool('chromium') ?? findTool('chromium-browser');
const skipBrowser =
  chromium === undefined && !requireTools
    ? 'chromium is not installed (apt-get install chromium, or see .ci/run)'
    : false;

function adminStates(json: unknown): Record<string, string> {
  const upstreams = (json as { listeners: { web: { upstreams: UpstreamReport[] } } }).listeners.web
    .upstreams;
  return Object.fromEntries(upstreams.map((u) => [u.id, u.admin]));
}

// The admin server with no token, on 127.0.0.1: allowed, and the page the operator has open in
// another tab must not be able to steer it (CSRF) or read it (DNS rebinding).
describe('admin server without a token, against pages of other sites', () => {
  let upstream: TestServer;
  let proxy: TcpProxy;
  let admin: AdminServer;
  let port: number;
  let id: string;
  const controls: AdminControlEntry[] = [];

  before(async () => {
    upstream = await echoServer();
    id = `127.0.0.1:${upstream.port}`;
    proxy = new TcpProxy({ upstreams: [{ host: '127.0.0.1', port: upstream.port }] });
    await proxy.listen({ port: 0, host: '127.0.0.1' });
    admin = createAdminServer({ proxies: { web: proxy } });
    admin.on('control', (entry) => controls.push(entry));
    port = (await admin.listen({ port: 0 })).port;
  });

  after(async () => {
    await admin.close();
    await proxy.close({ drainTimeout: 0 });
    await upstream.close();
  });

  test(
    'a form POST or a no-cors fetch from another origin in Chromium changes nothing',
    {
      skip: skipBrowser,
    },
    async () => {
      if (chromium === undefined)
        throw new Error('L4PROXY_REQUIRE_TOOLS=1 but chromium is not installed');
      // The attacker's page: another origin on this machine (http://localhost:<port>).
      const site = http.createServer((_req, res) => {
        res.writeHead(200, { 'content-type': 'text/html' }).end('<!doctype html><p>hello</p>');
      });
      const sitePort = await listen(site);
      const browser = await launchChromium(chromium);
      try {
        const page = await browser.open(`http://localhost:${sitePort}/`);
        await page.waitFor(`document.querySelector('p')?.textContent === 'hello'`, 'the page');
        const base = `http://127.0.0.1:${port}/upstreams/web/${id}`;
        // A "simple" request: no preflight, the browser sends it and hides only the answer.
        const fetched = await page.evaluate<string>(
          `fetch('${base}/disable', { method: 'POST', mode: 'no-cors', body: '{}' }).then(() => 'sent', (e) => String(e))`,
        );
        assert.equal(fetched, 'sent');
        // A form POST (text/plain, as a JSON-looking body), into a frame so the page stays.
        const submitted = await page.evaluate<string>(`new Promise((resolve) => {
        const frame = document.createElement('iframe');
        frame.name = 'sink';
        document.body.append(frame);
        const form = document.createElement('form');
        Object.assign(form, { method: 'POST', action: '${base}/drain', target: 'sink', enctype: 'text/plain' });
        form.innerHTML = '<input name="x" value="y">';
        document.body.append(form);
        frame.addEventListener('load', () => resolve('loaded'));
        setTimeout(() => resolve('timeout'), 5000);
        form.submit();
      })`);
        assert.equal(submitted, 'loaded');
        const reply = await adminRequest(port, 'GET', '/upstreams');
        assert.equal(reply.status, 200);
        assert.deepEqual(adminStates(reply.json), { [id]: 'ready' });
        assert.equal(controls.length, 0);
      } finally {
        await browser.close();
        site.close();
      }
    },
  );

  test('a POST naming another origin (Origin, Sec-Fetch-Site) is refused with 403', async () => {
    const path = `/upstreams/web/${id}/drain`;
    for (const headers of [
      { origin: 'http://localhost:8080' },
      { origin: 'null' },
      { 'sec-fetch-site': 'cross-site' },
      { 'sec-fetch-site': 'same-site', origin: `http://127.0.0.1:${port}` },
    ]) {
      const reply = await adminRequest(port, 'POST', path, { headers });
      assert.equal(reply.status, 403, JSON.stringify(headers));
      assert.equal((reply.json as { field: string }).field, 'origin');
    }
    assert.equal(controls.length, 0);
    // The status page's own requests (same origin), and clients that are not browsers, pass.
    const same = await adminRequest(port, 'POST', path, {
      headers: { origin: `http://127.0.0.1:${port}`, 'sec-fetch-site': 'same-origin' },
    });
    assert.equal(same.status, 200);
    const enable = await adminRequest(port, 'POST', `/upstreams/web/${id}/enable`);
    assert.equal(enable.status, 200);
    assert.deepEqual(
      controls.map((c) => c.action),
      ['drain', 'enable'],
    );
  });

  test('a Host that DNS rebinding could forge is refused on every route; IPs and localhost pass', async () => {
    for (const host of [`evil.example:${port}`, 'evil.example', `127.0.0.1.nip.io:${port}`]) {
      for (const path of ['/config', '/stats', '/metrics', '/', '/live']) {
        const reply = await adminRequest(port, 'GET', path, { headers: { host } });
        assert.equal(reply.status, 403, `${host} ${path}`);
        assert.doesNotMatch(reply.text, /upstreams|listener/, `${host} ${path}: nothing leaks`);
      }
    }
    for (const host of [
      `127.0.0.1:${port}`,
      `localhost:${port}`,
      `[::1]:${port}`,
      'app.localhost',
    ]) {
      const reply = await adminRequest(port, 'GET', '/config', { headers: { host } });
      assert.equal(reply.status, 200, host);
    }
  });
});

test('with a token, a foreign Host is accepted (the token is the credential) but CSRF still is not', async (t) => {
  const upstream = await echoServer();
  const proxy = new TcpProxy({ upstreams: [{ host: '127.0.0.1', port: upstream.port }] });
  const admin = createAdminServer({ proxies: { web: proxy }, token: 'token-0123456789' });
  t.after(async () => {
    await admin.close();
    await proxy.close({ drainTimeout: 0 });
    await upstream.close();
  });
  const { port } = await admin.listen({ port: 0 });
  const named = await adminRequest(port, 'GET', '/config', {
    token: 'token-0123456789',
    headers: { host: 'admin.internal.example' },
  });
  assert.equal(named.status, 200);
  const forged = await adminRequest(
    port,
    'POST',
    `/upstreams/web/127.0.0.1:${upstream.port}/drain`,
    {
      token: 'token-0123456789',
      headers: { origin: 'https://evil.example' },
    },
  );
  assert.equal(forged.status, 403);
});
