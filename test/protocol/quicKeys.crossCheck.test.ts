import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import {
  clientInitialSecret,
  deriveClientInitialKeys,
  headerProtectionMask,
  quicVersionProfile,
  QUIC_V1,
  QUIC_V2,
} from '../../src/protocol/quicKeys.js';
import { withTimeout } from '../helpers/net.js';
import { tool } from '../helpers/tools.js';

/*
 * The QUIC Initial keys cross-checked against OpenSSL's own KDFs, run as the `openssl kdf` and
 * `openssl enc` commands: HKDF (RFC 5869) for the Initial secret, TLS13-KDF (OpenSSL's TLS 1.3
 * HKDF-Expand-Label) for the client secret, key, IV and header protection key, AES-128-ECB for the
 * header protection mask. The RFC 9001/9369 sample DCID is tested elsewhere; here DCIDs of every
 * length a client may choose (and the 0-20 bytes a Retry may give).
 */

function run(openssl: string, args: readonly string[], input?: Buffer): Promise<Buffer> {
  return withTimeout(
    new Promise<Buffer>((resolve, reject) => {
      const child = execFile(
        openssl,
        [...args],
        { encoding: 'buffer', timeout: 10_000 },
        (error, stdout) => {
          if (error) reject(new Error(`openssl ${args.join(' ')} failed`, { cause: error }));
          else resolve(stdout);
        },
      );
      child.stdin?.end(input);
    }),
    12_000,
    `openssl ${args[0] ?? ''}`,
  );
}

/** `openssl kdf` prints the key as colon-separated hex. */
async function kdf(openssl: string, length: number, options: readonly string[], name: string) {
  const out = await run(openssl, [
    'kdf',
    '-keylen',
    String(length),
    '-kdfopt',
    'digest:SHA256',
    ...options.flatMap((o) => ['-kdfopt', o]),
    name,
  ]);
  return Buffer.from(out.toString('latin1').trim().replace(/:/g, ''), 'hex');
}

function expandLabel(openssl: string, secret: Buffer, label: string, length: number) {
  return kdf(
    openssl,
    length,
    ['mode:EXPAND_ONLY', `hexkey:${secret.toString('hex')}`, 'prefix:tls13 ', `label:${label}`],
    'TLS13-KDF',
  );
}

test('Initial secrets, keys, IVs and header protection match OpenSSL for DCIDs of 0 to 20 bytes, v1 and v2', async (t) => {
  const openssl = tool(t, 'openssl');
  if (openssl === undefined) return;
  const dcids = [0, 1, 4, 8, 8, 12, 16, 20, 20].map((length) => randomBytes(length));
  const cases: [number, string][] = [
    [QUIC_V1, 'quic'],
    [QUIC_V2, 'quicv2'],
  ];
  let checked = 0;
  for (const dcid of dcids)
    for (const [version, prefix] of cases) {
      const profile = quicVersionProfile(version);
      assert.ok(profile !== undefined);
      const what = `v${version === QUIC_V1 ? 1 : 2} DCID ${dcid.toString('hex') || '(empty)'}`;
      const initial = await kdf(
        openssl,
        32,
        [
          'mode:EXTRACT_ONLY',
          `hexkey:${dcid.toString('hex')}`,
          `hexsalt:${profile.salt.toString('hex')}`,
        ],
        'HKDF',
      );
      const secret = await expandLabel(openssl, initial, 'client in', 32);
      assert.deepEqual(clientInitialSecret(profile, dcid), secret, `${what}: client secret`);
      const keys = deriveClientInitialKeys(profile, dcid);
      assert.deepEqual(
        keys.key,
        await expandLabel(openssl, secret, `${prefix} key`, 16),
        `${what}: key`,
      );
      assert.deepEqual(
        keys.iv,
        await expandLabel(openssl, secret, `${prefix} iv`, 12),
        `${what}: iv`,
      );
      assert.deepEqual(
        keys.hp,
        await expandLabel(openssl, secret, `${prefix} hp`, 16),
        `${what}: hp`,
      );
      const sample = randomBytes(16);
      const ecb = await run(
        openssl,
        ['enc', '-aes-128-ecb', '-nopad', '-K', keys.hp.toString('hex')],
        sample,
      );
      assert.deepEqual(headerProtectionMask(keys.hp, sample), ecb.subarray(0, 5), `${what}: mask`);
      checked++;
    }
  assert.equal(checked, dcids.length * cases.length);
});
