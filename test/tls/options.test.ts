import { test } from 'node:test';
import assert from 'node:assert/strict';
import { expectTypeOf } from 'expect-type';
import { TcpProxy } from '../../src/index.js';
import type {
  DownstreamTlsInfo,
  SelectionContext,
  TcpProxyOptions,
  UpstreamTlsOptions,
} from '../../src/index.js';

const upstreams = [{ host: '127.0.0.1', port: 1 }];
/** Looks like PEM, is not a certificate OpenSSL can load. */
const PEM = '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n';

function refused(options: unknown, option: string): void {
  assert.throws(
    () => new TcpProxy(options as TcpProxyOptions),
    (err: Error & { code?: string; option?: string }) =>
      err.code === 'ERR_L4_INVALID_OPTION' && err.option === option,
    option,
  );
}

test('invalid tls options fail at construction, naming the option', () => {
  refused({ upstreams, tls: 'yes' }, 'tls');
  refused({ upstreams, tls: { verify: true } }, 'tls.verify');
  refused({ upstreams, tls: { ca: 42 } }, 'tls.ca');
  refused({ upstreams, tls: { cert: PEM } }, 'tls.key');
  refused({ upstreams, tls: { servername: '10.0.0.1' } }, 'tls.servername');
  refused({ upstreams, tls: { alpn: [] } }, 'tls.alpn');
  refused({ upstreams, tls: { minVersion: 'TLSv1' } }, 'tls.minVersion');
  refused({ upstreams, tls: { rejectUnauthorized: 0 } }, 'tls.rejectUnauthorized');
  refused({ upstreams, tls: { handshakeTimeout: 0 } }, 'tls.handshakeTimeout');
  refused({ upstreams, tls: { groups: 'X25519:no-such-group' } }, 'tls.groups');
  refused({ upstreams, tls: { groups: '' } }, 'tls.groups');
  refused({ upstreams, tls: { ca: 'not a PEM certificate' } }, 'tls.ca');
  refused(
    { upstreams, tls: { ca: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n' } },
    'tls.ca',
  );
  refused({ upstreams: [{ host: 'a', port: 1, tls: 'on' }] }, 'upstreams[0].tls');
  // A null entry reaches the upstream validation, not a TypeError in the TLS preparation.
  refused({ upstreams: [null] }, 'upstreams[0]');
  refused({ upstreams: [upstreams[0], null], tls: {} }, 'upstreams[1]');
  refused({ upstreams: [{ host: 'a', port: 1, tls: { ca: 'junk' } }] }, 'upstreams[0].tls.ca');
});

test('a maxVersion below minVersion fails at construction, not at every handshake', () => {
  // OpenSSL takes such a context without a word; every handshake would then fail.
  refused({ upstreams, tls: { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.2' } }, 'tls.maxVersion');
  refused(
    {
      upstreams: [{ host: '127.0.0.1', port: 1, tls: { maxVersion: 'TLSv1.2' } }],
      tls: { minVersion: 'TLSv1.3' },
    },
    'upstreams[0].tls.maxVersion',
  );
  refused(
    {
      upstreams,
      terminateTls: { sniCallback: () => undefined, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.2' },
    },
    'terminateTls.maxVersion',
  );
  const terminating = new TcpProxy({ upstreams, terminateTls: { sniCallback: () => undefined } });
  assert.throws(
    () => {
      terminating.setTerminateTls({
        sniCallback: () => undefined,
        minVersion: 'TLSv1.3',
        maxVersion: 'TLSv1.2',
      });
    },
    (err: Error & { option?: string }) => err.option === 'terminateTls.maxVersion',
  );
  // Equal or ordered versions are fine.
  new TcpProxy({ upstreams, tls: { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' } });
  new TcpProxy({ upstreams, tls: { maxVersion: 'TLSv1.2' } });
});

test('a cipher list OpenSSL matches nothing of is named as ciphers, not as the certificate', () => {
  refused({ upstreams, tls: { ciphers: 'NO-SUCH-CIPHER' } }, 'tls.ciphers');
  refused(
    { upstreams: [{ host: '127.0.0.1', port: 1, tls: { ciphers: 'NO-SUCH-CIPHER' } }] },
    'upstreams[0].tls.ciphers',
  );
  refused(
    { upstreams, terminateTls: { sniCallback: () => undefined, ciphers: 'NO-SUCH-CIPHER' } },
    'terminateTls.ciphers',
  );
  assert.throws(
    () =>
      new TcpProxy({
        upstreams,
        terminateTls: { sniCallback: () => undefined, ciphers: 'NO-SUCH-CIPHER' },
      }),
    (err: Error) => !/certificate/.test(err.message),
  );
});

test('invalid terminateTls options fail at construction, naming the option', () => {
  refused({ upstreams, terminateTls: {} }, 'terminateTls');
  refused({ upstreams, terminateTls: { cert: 'x' } }, 'terminateTls.cert');
  refused({ upstreams, terminateTls: { sniCallback: 1 } }, 'terminateTls.sniCallback');
  refused(
    { upstreams, terminateTls: { sniCallback: () => undefined, groups: 42 } },
    'terminateTls.groups',
  );
  refused(
    { upstreams, terminateTls: { certificates: [{ serverNames: [], cert: PEM, key: PEM }] } },
    'terminateTls.certificates[0].serverNames',
  );
  refused(
    { upstreams, terminateTls: { sniCallback: () => undefined, clientCertificate: 'required' } },
    'terminateTls.ca',
  );
  refused(
    { upstreams, terminateTls: { sniCallback: () => undefined, clientCertificate: 'maybe' } },
    'terminateTls.clientCertificate',
  );
  refused({ upstreams, terminateTls: { cert: PEM, key: PEM } }, 'terminateTls');
  refused({ upstreams, sni: true, terminateTls: { sniCallback: () => undefined } }, 'sni');
  refused({ upstreams, proxyProtocol: { version: 'v1', ssl: true } }, 'proxyProtocol.version');
  const plain = new TcpProxy({ upstreams });
  assert.throws(
    () => {
      plain.setTerminateTls({ sniCallback: () => undefined });
    },
    { option: 'terminateTls' },
  );
  void plain.close();
});

test('TLS option types', () => {
  const ok: TcpProxyOptions = {
    upstreams: [{ host: 'db', port: 5432, tls: false }],
    tls: { ca: ['a', Buffer.from('b')], alpn: ['postgresql'], minVersion: 'TLSv1.3' },
    terminateTls: {
      sniCallback: async () => Promise.resolve(undefined),
      clientCertificate: 'optional',
    },
  };
  // @ts-expect-error TLS 1.0 is not offered
  const old: UpstreamTlsOptions = { minVersion: 'TLSv1' };
  // @ts-expect-error clientCertificate is a closed set
  const wrong: TcpProxyOptions = { terminateTls: { clientCertificate: 'sometimes' } };
  // @ts-expect-error groups is one OpenSSL list string, not an array
  const listed: UpstreamTlsOptions = { groups: ['X25519'] };
  expectTypeOf<UpstreamTlsOptions['groups']>().toEqualTypeOf<string | undefined>();
  expectTypeOf<SelectionContext['tls']>().toEqualTypeOf<DownstreamTlsInfo | undefined>();
  expectTypeOf<DownstreamTlsInfo['peer']>().exclude<undefined>().toHaveProperty('fingerprint256');
  assert.deepEqual(
    [ok.tls?.minVersion, old.minVersion, wrong.terminateTls?.clientCertificate, listed.groups],
    ['TLSv1.3', 'TLSv1', 'sometimes', ['X25519']],
  );
});
