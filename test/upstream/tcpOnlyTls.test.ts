import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InvalidOptionError, TcpProxy, UdpProxy } from '../../src/index.js';
import type { UdpProxyOptions, Upstream, UpstreamSink } from '../../src/index.js';

const plain: Upstream = { host: '127.0.0.1', port: 5353 };
const withTls: Upstream = { host: '127.0.0.1', port: 5354, tls: { servername: 'dns.example' } };

/** The error a UdpProxy gives for TLS settings at `option`. */
function dtlsRefusal(option: string): (err: unknown) => boolean {
  return (err) =>
    err instanceof InvalidOptionError &&
    err.option === option &&
    /DTLS is not supported; TLS is TCP-only/.test(err.message);
}

test('a UdpProxy refuses an upstream with tls at construction, naming upstreams[i].tls', () => {
  assert.throws(
    () => new UdpProxy({ upstreams: [plain, withTls] }),
    dtlsRefusal('upstreams[1].tls'),
  );
  assert.throws(
    () => new UdpProxy({ upstreams: [{ ...plain, tls: {} }] }),
    dtlsRefusal('upstreams[0].tls'),
  );
  // A top-level tls is no UdpProxy option either: the same explanation.
  const topLevel = { upstreams: [plain], tls: {} } as unknown as UdpProxyOptions;
  assert.throws(() => new UdpProxy(topLevel), dtlsRefusal('tls'));
});

test('tls: false (plain) is accepted, so one upstream list can serve TCP and UDP', async () => {
  const list: Upstream[] = [{ ...plain, tls: false }];
  const udp = new UdpProxy({ upstreams: list });
  const tcp = new TcpProxy({ upstreams: list });
  assert.equal(udp.upstreams().length, 1);
  await Promise.all([udp.close(), tcp.close()]);
});

test('setUpstreams() and an upstream source are refused the same way; the old set stays', async () => {
  const sinks: UpstreamSink[] = [];
  const proxy = new UdpProxy({
    upstreams: [plain],
    upstreamSource: {
      start(given) {
        sinks.push(given);
      },
      stop() {
        // Nothing to release.
      },
    },
  });
  assert.throws(() => {
    proxy.setUpstreams([withTls]);
  }, dtlsRefusal('upstreams[0].tls'));
  assert.deepEqual(
    proxy.upstreams().map((u) => u.port),
    [5353],
  );
  const errors: Error[] = [];
  proxy.on('upstreamSourceError', (error) => errors.push(error));
  const [sink] = sinks;
  assert.ok(sink, 'the source started');
  sink.update([plain, withTls]);
  assert.equal(errors.length, 1);
  assert.ok(dtlsRefusal('upstreamSource[1].tls')(errors[0]), String(errors[0]));
  assert.deepEqual(
    proxy.upstreams().map((u) => u.port),
    [5353],
  );
  assert.equal(proxy.stats().upstream_source_errors, 1);
  await proxy.close();
});

test('a TcpProxy still accepts tls on an upstream', async () => {
  const proxy = new TcpProxy({ upstreams: [withTls] });
  assert.equal(proxy.upstreams()[0]?.upstream.tls !== undefined, true);
  await proxy.close();
});
