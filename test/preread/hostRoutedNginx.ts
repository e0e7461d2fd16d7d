import type { TestContext } from 'node:test';
import { http1 } from '../../src/index.js';
import type { PrereadOptions } from '../../src/index.js';
import { startNginxHttp } from '../helpers/nginxHttp.js';
import { freePort } from '../helpers/peerProcess.js';
import { startProxy } from '../helpers/proxy.js';
import type { ProxyUnderTest } from '../helpers/proxy.js';

/**
 * Two nginx servers answering `web-a <Host>` and `web-b <Host>`, behind a proxy whose http1
 * inspector (with `preread`'s other settings) sends what it reads as host b.test to web-b and
 * the rest to web-a; all stopped after the test. Needs nginx (the caller checks).
 */
export async function hostRoutedNginx(
  t: TestContext,
  preread: Omit<PrereadOptions, 'inspectors'> = {},
): Promise<ProxyUnderTest> {
  const [webA, webB] = [await freePort(), await freePort()];
  const nginx = await startNginxHttp(
    [
      `server { listen 127.0.0.1:${webA}; return 200 "web-a $host\\n"; }`,
      `server { listen 127.0.0.1:${webB}; return 200 "web-b $host\\n"; }`,
    ].join('\n'),
  );
  t.after(() => nginx.stop());
  const proxied = await startProxy({
    upstreams: [
      { id: 'web-a', host: '127.0.0.1', port: webA },
      { id: 'web-b', host: '127.0.0.1', port: webB },
    ],
    preread: { ...preread, inspectors: { http: http1() } },
    selector: (ctx) => {
      const id = ctx.preread?.http?.hostname === 'b.test' ? 'web-b' : 'web-a';
      return ctx.candidates.find((candidate) => candidate.id === id);
    },
  });
  t.after(() => proxied.proxy.close({ drainTimeout: 0 }));
  return proxied;
}
