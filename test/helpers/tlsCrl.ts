import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { IssuedCert, TestCa } from './tlsCa.js';

function run(openssl: string, args: readonly string[], cwd: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(openssl, [...args], { cwd, timeout: 20_000 }, (error, _stdout, stderr) => {
      if (error) reject(new Error(`openssl ${args[0] ?? ''} failed: ${stderr}`, { cause: error }));
      else resolve();
    });
  });
}

/** How a revocation list is made. */
export interface CrlOptions {
  /** Its nextUpdate in the past (2020): OpenSSL then fails every certificate of the CA. */
  readonly expired?: boolean;
}

/**
 * A CRL (PEM) signed by `ca` that revokes `revoked` (none: an empty list), made with
 * `openssl ca -revoke` and `openssl ca -gencrl` on a fresh database in the CA's dir.
 */
export async function revocationList(
  openssl: string,
  ca: TestCa,
  revoked: readonly IssuedCert[],
  options: CrlOptions = {},
): Promise<string> {
  const dir = mkdtempSync(join(ca.dir, 'crl-'));
  writeFileSync(join(dir, 'index.txt'), '');
  writeFileSync(join(dir, 'crlnumber'), '01\n');
  const config = join(dir, 'ca.cnf');
  writeFileSync(
    config,
    [
      '[ca]',
      'default_ca = test',
      '[test]',
      `database = ${join(dir, 'index.txt')}`,
      `crlnumber = ${join(dir, 'crlnumber')}`,
      'default_md = sha256',
      'default_crl_days = 1',
      '',
    ].join('\n'),
  );
  const signer = ['-config', config, '-keyfile', ca.keyFile, '-cert', ca.certFile];
  for (const cert of revoked) await run(openssl, ['ca', ...signer, '-revoke', cert.certFile], dir);
  const out = join(dir, 'crl.pem');
  const dates = options.expired
    ? ['-crl_lastupdate', '20200101000000Z', '-crl_nextupdate', '20200102000000Z']
    : [];
  await run(openssl, ['ca', ...signer, '-gencrl', ...dates, '-out', out], dir);
  return readFileSync(out, 'utf8');
}
