import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidOptionError } from '../../src/errors.js';
import { ProxySslClient, ProxyTlvType } from '../../src/protocol/proxyTlv.js';
import { proxyTlvs, readProxyTlvs } from '../../src/protocol/proxyTlvFields.js';
import type { ProxySslFields, ProxyTlvFields } from '../../src/protocol/proxyTlvFields.js';

describe('proxyTlvs / readProxyTlvs', () => {
  test('build the registered TLVs with the spec type codes, in a fixed order', () => {
    const tlvs = proxyTlvs({
      custom: [{ type: 0xe5, value: Buffer.from('c') }],
      netns: 'blue',
      alpn: 'h2',
      authority: 'example.com',
      uniqueId: Buffer.from('id'),
    });
    assert.deepEqual(
      tlvs.map((t) => t.type),
      [ProxyTlvType.ALPN, ProxyTlvType.AUTHORITY, ProxyTlvType.UNIQUE_ID, ProxyTlvType.NETNS, 0xe5],
    );
    assert.deepEqual(tlvs[1]?.value, Buffer.from('example.com'));
  });

  test('lay out the SSL TLV as client, verify, then sub-TLVs', () => {
    const [ssl] = proxyTlvs({
      ssl: {
        client: ProxySslClient.SSL | ProxySslClient.CERT_CONN,
        verify: 0,
        version: 'TLSv1.3',
        cn: 'alice',
      },
    });
    assert.equal(ssl?.type, ProxyTlvType.SSL);
    assert.deepEqual(
      ssl.value,
      Buffer.concat([
        Buffer.from('03 00000000 21 0007'.replace(/\s/g, ''), 'hex'),
        Buffer.from('TLSv1.3'),
        Buffer.from('220005', 'hex'),
        Buffer.from('alice'),
      ]),
    );
  });

  test('read back what they build', () => {
    const fields: ProxyTlvFields = {
      alpn: 'http/1.1',
      authority: 'bücher.example',
      uniqueId: Buffer.from([1, 2, 3]),
      ssl: {
        client: 7,
        verify: 1,
        version: 'TLSv1.2',
        cn: 'c',
        cipher: 'x',
        sigAlg: 'RSA-SHA256',
        keyAlg: 'RSA2048',
        group: 'secp256r1',
        sigScheme: 'rsa_pss_rsae_sha256',
        clientCert: Buffer.from([0x30]),
      },
      netns: 'ns1',
      custom: [{ type: 0xef, value: Buffer.from('z') }],
    };
    assert.deepEqual(readProxyTlvs(proxyTlvs(fields)), fields);
    assert.deepEqual(readProxyTlvs([]), {});
  });

  test('refuse fields of the wrong type, and unknown fields, with InvalidOptionError naming the field', () => {
    const cases: [unknown, string][] = [
      [null, 'fields'],
      [{ alpn: 2 }, 'alpn'],
      [{ authority: null }, 'authority'],
      [{ uniqueId: 'id' }, 'uniqueId'],
      [{ netns: ['ns'] }, 'netns'],
      [{ ssl: 1 }, 'ssl'],
      [{ ssl: { client: '1', verify: 0 } }, 'ssl.client'],
      [{ ssl: { client: 1 } }, 'ssl.verify'],
      [{ ssl: { client: 1, verify: 0, cn: 7 } }, 'ssl.cn'],
      [{ ssl: { client: 1, verify: 0, clientCert: 'der' } }, 'ssl.clientCert'],
      [{ custom: {} }, 'custom'],
      [{ custom: [null] }, 'custom[0]'],
      [{ custom: [{ type: 0xe0, value: 'x' }] }, 'custom[0].value'],
      // Misspelt fields: the header would go without them.
      [{ authorty: 'a.example' }, 'authorty'],
      [{ ssl: { client: 1, verify: 0, commonName: 'c' } }, 'ssl.commonName'],
    ];
    for (const [fields, option] of cases)
      assert.throws(
        () => proxyTlvs(fields as ProxyTlvFields),
        (e: unknown) => e instanceof InvalidOptionError && e.option === option,
        option,
      );
  });

  test('refuse fields their wire field cannot hold, with InvalidOptionError naming the field', () => {
    // A client byte of 300 went out as 44, a verify of 2^40 as 0 (verified), and a sub-TLV
    // over 65535 bytes threw a RangeError from Buffer.writeUInt16BE.
    const cases: [ProxySslFields, string][] = [
      [{ client: 0x100, verify: 0 }, 'ssl.client'],
      [{ client: -1, verify: 0 }, 'ssl.client'],
      [{ client: 1, verify: 2 ** 40 }, 'ssl.verify'],
      [{ client: 1, verify: -1 }, 'ssl.verify'],
      [{ client: 1, verify: 0, cn: 'x'.repeat(0x10000) }, 'ssl.cn'],
      [{ client: 1, verify: 0, clientCert: Buffer.alloc(0x10000) }, 'ssl.clientCert'],
    ];
    // One byte per character: U+0132 went out as '2', U+0129 as ')' (a valid netns).
    for (const [fields, option] of [
      [{ alpn: 'h\u0132' }, 'alpn'],
      [{ netns: 'n\u0129' }, 'netns'],
    ] as const)
      assert.throws(
        () => proxyTlvs(fields),
        (e: unknown) => e instanceof InvalidOptionError && e.option === option,
        option,
      );
    assert.equal(readProxyTlvs(proxyTlvs({ alpn: '\u00ff\u0000' })).alpn, '\u00ff\u0000');
    for (const [ssl, option] of cases)
      assert.throws(
        () => proxyTlvs({ ssl }),
        (e: unknown) => e instanceof InvalidOptionError && e.option === option,
        option,
      );
    const [max] = proxyTlvs({
      ssl: { client: 0xff, verify: 0xffffffff, clientCert: Buffer.alloc(0xffff) },
    });
    assert.equal(readProxyTlvs(max === undefined ? [] : [max]).ssl?.verify, 0xffffffff);
  });

  test('refuse a custom TLV outside 0xE0-0xEF', () => {
    assert.throws(
      () => proxyTlvs({ custom: [{ type: 0x10, value: Buffer.alloc(0) }] }),
      (e: unknown) => e instanceof InvalidOptionError && e.option === 'custom[0].type',
    );
  });
});
