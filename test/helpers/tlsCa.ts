import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { tool } from './tools.js';

/** A certificate signed by a test CA, with its key, as PEM text and as files in the CA's dir. */
export interface IssuedCert {
  readonly cert: string;
  readonly key: string;
  readonly certFile: string;
  readonly keyFile: string;
  /** cert then key in one file (HAProxy's `crt`). */
  readonly bundleFile: string;
  readonly fingerprint256: string;
}

/** A throwaway CA made with openssl in a temp dir (removed by `remove()`). */
export interface TestCa {
  readonly dir: string;
  readonly cert: string;
  readonly certFile: string;
  /** The CA's private key (to sign revocation lists). */
  readonly keyFile: string;
  /**
   * Issues a certificate for `cn` with DNS/IP subject alternative names (or any type, written
   * `URI:spiffe://...`, `email:...`), valid `days` (1).
   */
  issue(
    cn: string,
    names?: readonly string[],
    purpose?: 'server' | 'client',
    days?: number,
  ): Promise<IssuedCert>;
  remove(): void;
}

function run(openssl: string, args: readonly string[], cwd: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(openssl, [...args], { cwd, timeout: 20_000 }, (error, _stdout, stderr) => {
      if (error) reject(new Error(`openssl ${args[0] ?? ''} failed: ${stderr}`, { cause: error }));
      else resolve();
    });
  });
}

let serial = 0;

/** Makes a CA (P-256, one day) named `name`. */
export async function makeCa(openssl: string, name = 'l4proxy test CA'): Promise<TestCa> {
  const dir = mkdtempSync(join(tmpdir(), 'l4proxy-ca-'));
  const certFile = join(dir, 'ca.pem');
  const keyFile = join(dir, 'ca.key');
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await run(
    openssl,
    [
      'req',
      '-x509',
      ...ec,
      '-subj',
      `/CN=${name}`,
      '-keyout',
      keyFile,
      '-out',
      certFile,
      '-days',
      '1',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  );
  return {
    dir,
    cert: readFileSync(certFile, 'utf8'),
    certFile,
    keyFile,
    async issue(cn, names = [cn], purpose = 'server', days = 1) {
      const id = `${++serial}-${cn.replace(/[^A-Za-z0-9]/g, '_')}`;
      const key = join(dir, `${id}.key`);
      const csr = join(dir, `${id}.csr`);
      const cert = join(dir, `${id}.pem`);
      const ext = join(dir, `${id}.ext`);
      const san = names
        .map((n) => (/^(URI|email):/.test(n) ? n : /^[\d.]+$|:/.test(n) ? `IP:${n}` : `DNS:${n}`))
        .join(',');
      writeFileSync(
        ext,
        [
          `subjectAltName=${san}`,
          `extendedKeyUsage=${purpose === 'server' ? 'serverAuth' : 'clientAuth'}`,
          '',
        ].join('\n'),
      );
      await run(
        openssl,
        ['req', '-new', ...ec, '-subj', `/CN=${cn}`, '-keyout', key, '-out', csr],
        dir,
      );
      await run(
        openssl,
        [
          'x509',
          '-req',
          '-in',
          csr,
          '-CA',
          certFile,
          '-CAkey',
          keyFile,
          '-CAcreateserial',
          '-out',
          cert,
          '-days',
          String(days),
          '-extfile',
          ext,
        ],
        dir,
      );
      const certPem = readFileSync(cert, 'utf8');
      const keyPem = readFileSync(key, 'utf8');
      const bundleFile = join(dir, `${id}.bundle.pem`);
      writeFileSync(bundleFile, certPem + keyPem);
      return {
        cert: certPem,
        key: keyPem,
        certFile: cert,
        keyFile: key,
        bundleFile,
        fingerprint256: new X509Certificate(certPem).fingerprint256,
      };
    },
    remove() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A CA for one test: made with `makeCa`, removed by the test's `after`. */
export async function testCa(t: TestContext, openssl: string, name?: string): Promise<TestCa> {
  const ca = await makeCa(openssl, name);
  t.after(() => {
    ca.remove();
  });
  return ca;
}

/** The pair most TLS tests need: a server and a client certificate. */
export interface ServerAndClient {
  /** For `localhost` and `127.0.0.1`. */
  readonly server: IssuedCert;
  /** CN `proxy-client`, extended key usage clientAuth. */
  readonly client: IssuedCert;
}

/** Issues a server certificate for localhost/127.0.0.1 and a client certificate from `ca`. */
export async function issueServerAndClient(ca: TestCa): Promise<ServerAndClient> {
  return {
    server: await ca.issue('localhost', ['localhost', '127.0.0.1']),
    client: await ca.issue('proxy-client', ['proxy-client'], 'client'),
  };
}

/** A test file's PKI: its CA, the openssl that made it, and the certificates `issue` made. */
export type SharedPki<T> = T & { readonly openssl: string; readonly ca: TestCa };

/**
 * One CA per test file, made on first use (removed when the process exits), with the
 * certificates `issue` makes from it. The returned getter resolves to undefined (the test is
 * skipped with a visible reason) when openssl is missing.
 */
export function sharedPki<T>(
  issue: (ca: TestCa) => Promise<T>,
): (t: TestContext) => Promise<SharedPki<T> | undefined> {
  let pki: Promise<SharedPki<T>> | undefined;
  return (t) => {
    const openssl = tool(t, 'openssl');
    if (openssl === undefined) return Promise.resolve(undefined);
    pki ??= (async () => {
      const ca = await makeCa(openssl);
      process.once('exit', () => {
        ca.remove();
      });
      return { ...(await issue(ca)), openssl, ca };
    })();
    return pki;
  };
}
