import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Writes the benchmarks' PKI into `dir` with `openssl` (P-256 keys, valid one day): `ca.pem` /
 * `ca.key`, `server.pem` / `server.key` for `localhost` and 127.0.0.1 signed by that CA, and with
 * `client`, `client.pem` / `client.key` (CN `bench client`) signed by it too.
 */
export function writeBenchCertificates(
  dir: string,
  options: { readonly openssl?: string; readonly client?: boolean } = {},
): void {
  const file = (name: string): string => join(dir, name);
  const openssl = (args: string[]): void => {
    execFileSync(options.openssl ?? 'openssl', args, { stdio: 'ignore' });
  };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(
    ['req', '-x509', ...ec, '-days', '1', '-subj', '/CN=bench CA']
      .concat(['-keyout', file('ca.key'), '-out', file('ca.pem')])
      .concat(['-addext', 'basicConstraints=critical,CA:TRUE']),
  );
  writeFileSync(file('ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  const issue = (name: string, subject: string, extensions: string[]): void => {
    openssl(
      ['req', '-new', ...ec, '-subj', subject, '-keyout', file(`${name}.key`)].concat([
        '-out',
        file(`${name}.csr`),
      ]),
    );
    openssl(
      ['x509', '-req', '-in', file(`${name}.csr`), '-CA', file('ca.pem')]
        .concat(['-CAkey', file('ca.key'), '-CAcreateserial', '-out', file(`${name}.pem`)])
        .concat(['-days', '1', ...extensions]),
    );
  };
  issue('server', '/CN=localhost', ['-extfile', file('ext')]);
  if (options.client === true) issue('client', '/CN=bench client', []);
}
