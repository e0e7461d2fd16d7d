import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InvalidOptionError, TcpProxy } from '../../src/index.js';

test('tunnel.tls.servername that is an IP address fails at construction (it was sent as SNI, against RFC 6066, with a DeprecationWarning in the host process)', () => {
  for (const servername of ['::1', '127.0.0.1', '2001:db8::7']) {
    assert.throws(
      () =>
        new TcpProxy({
          upstreams: [
            {
              host: '::1',
              port: 3128,
              tunnel: { target: 'db.internal:5432', tls: { servername } },
            },
          ],
        }),
      (err: unknown) =>
        err instanceof InvalidOptionError &&
        err.option === 'upstreams[0].tunnel.tls.servername' &&
        /not an IP address/.test(err.message),
      servername,
    );
  }
  // A name stays valid, and an IP proxy without servername too.
  for (const tls of [{ servername: 'proxy.internal' }, {}])
    void new TcpProxy({
      upstreams: [{ host: '::1', port: 3128, tunnel: { target: 'db.internal:5432', tls } }],
    })
      .close()
      .catch(() => undefined);
});
