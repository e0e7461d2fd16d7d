import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { TcpProxy, UdpProxy } from '../../src/index.js';
import type { Upstream } from '../../src/index.js';

const plain: Upstream = { id: 'plain', host: '127.0.0.1', port: 9 };
const tunnelled: Upstream = {
  id: 'tunnelled',
  host: '127.0.0.1',
  port: 9,
  tunnel: { protocol: 'h2', target: '127.0.0.1:9' },
};

describe('tunnel counters of a proxy with tunnel upstreams', () => {
  for (const kind of ['tcp', 'udp'] as const)
    test(`exist at 0 before the first tunnel, so the first one counts in increase() (${kind})`, (t) => {
      const proxy =
        kind === 'tcp'
          ? new TcpProxy({ upstreams: [plain, tunnelled] })
          : new UdpProxy({ upstreams: [plain, tunnelled] });
      t.after(() => proxy.close());
      const tunnels = proxy.stats().tunnels;
      assert.ok(tunnels !== undefined, 'stats().tunnels before any tunnel');
      assert.equal(tunnels.tunnel_requests_total, 0);
      assert.equal(tunnels.tunnel_opened_total, 0);
      assert.equal(tunnels.tunnel_refused['4xx'], 0);
      assert.match(proxy.metrics(), new RegExp(`^l4proxy_${kind}_tunnel_requests_total 0$`, 'm'));
      assert.match(
        proxy.metrics(),
        new RegExp(`^l4proxy_${kind}_tunnel_refused_total\\{status="5xx"\\} 0$`, 'm'),
      );
    });

  for (const kind of ['tcp', 'udp'] as const)
    test(`are absent without tunnel upstreams, and appear when setUpstreams adds one (${kind})`, (t) => {
      const proxy =
        kind === 'tcp'
          ? new TcpProxy({ upstreams: [plain] })
          : new UdpProxy({ upstreams: [plain] });
      t.after(() => proxy.close());
      assert.equal(proxy.stats().tunnels, undefined);
      assert.doesNotMatch(proxy.metrics(), /tunnel_requests_total/);
      proxy.setUpstreams([plain, tunnelled]);
      assert.equal(proxy.stats().tunnels?.tunnel_requests_total, 0);
    });
});
