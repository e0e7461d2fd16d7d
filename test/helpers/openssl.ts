import { execFile } from 'node:child_process';
import { freePort, startPeer } from './peerProcess.js';
import type { PeerProcess } from './peerProcess.js';
import type { IssuedCert } from './tlsCa.js';

/** An `openssl s_server -rev` a test started on 127.0.0.1:`port`. */
export interface OpensslServer extends PeerProcess {
  readonly port: number;
}

/** How the s_server checks its clients. */
export interface OpensslServerOptions {
  /** `-CAfile`: the CA the server trusts for client certificates. */
  readonly caFile?: string;
  /** `-Verify 1`: the server requires a client certificate (signed by `caFile`). */
  readonly verify?: boolean;
  /** Only this TLS version (`-tls1_2`, `-tls1_3`). Default: what OpenSSL offers. */
  readonly version?: '-tls1_2' | '-tls1_3';
  /** `-groups`: the key-exchange groups the server accepts. */
  readonly groups?: string;
}

/**
 * Starts `openssl s_server -rev` with `cert` on a free port: each line a client sends comes back
 * reversed, so a reply proves the bytes crossed the server's TLS. Stop it with `stop()`.
 */
export async function startOpensslServer(
  openssl: string,
  cert: IssuedCert,
  options: OpensslServerOptions = {},
): Promise<OpensslServer> {
  const port = await freePort();
  const args = ['s_server', '-accept', `127.0.0.1:${port}`, '-cert', cert.certFile];
  args.push('-key', cert.keyFile);
  if (options.caFile !== undefined) args.push('-CAfile', options.caFile);
  if (options.verify === true) args.push('-Verify', '1');
  if (options.version !== undefined) args.push(options.version);
  if (options.groups !== undefined) args.push('-groups', options.groups);
  args.push('-rev');
  const peer = await startPeer(openssl, args, port);
  return { ...peer, port };
}

/**
 * Runs `openssl s_client args` (bounded 20 s) with `input` as its stdin, then end of input;
 * resolves with all it printed, stdout then stderr, whatever its exit code.
 */
export function opensslClient(
  openssl: string,
  args: readonly string[],
  input = '',
): Promise<string> {
  return new Promise((resolve) => {
    const child = execFile(
      openssl,
      ['s_client', ...args],
      { timeout: 20_000 },
      (_error, stdout, stderr) => {
        resolve(stdout + stderr);
      },
    );
    child.stdin?.end(input);
  });
}

/**
 * `s_client` arguments for a client of a proxy on 127.0.0.1:`port` serving `localhost`: it
 * trusts `caFile`, and presents `client`'s certificate when given.
 */
export function clientArgs(port: number, caFile: string, client?: IssuedCert): string[] {
  return [
    '-connect',
    `127.0.0.1:${port}`,
    '-servername',
    'localhost',
    '-CAfile',
    caFile,
    ...(client === undefined ? [] : ['-cert', client.certFile, '-key', client.keyFile]),
  ];
}
