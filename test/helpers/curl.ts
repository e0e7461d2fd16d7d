import { execFile } from 'node:child_process';
import { withTimeout } from './net.js';

/** What curl printed and its exit code (curl -f exits 22 on an HTTP error status). */
export interface CurlResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `curl args...` (a real, independent HTTP client), bounded in time (`maxSeconds`). */
export function curl(
  path: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv = {},
  maxSeconds = 5,
): Promise<CurlResult> {
  return withTimeout(
    new Promise<CurlResult>((resolve) => {
      execFile(
        path,
        ['--max-time', String(maxSeconds), ...args],
        { env: { ...process.env, ...env }, encoding: 'utf8' },
        (error, stdout, stderr) => {
          const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
          resolve({ code, stdout, stderr });
        },
      );
    }),
    (maxSeconds + 3) * 1_000,
    `curl ${args.join(' ')}`,
  );
}

/**
 * curl through an HTTP CONNECT proxy (`--proxytunnel`, HTTP/1.1) to `url`: stdout is the body, a
 * space and the CONNECT status.
 */
export function curlTunnel(
  path: string,
  proxy: string,
  url: string,
  extra: readonly string[] = [],
): Promise<CurlResult> {
  return curl(path, [
    '-s',
    '--proxytunnel',
    '--proxy',
    proxy,
    '-w',
    ' %{http_connect}',
    ...extra,
    url,
  ]);
}

/** Runs a shell command line (a documented curl example) with `env`, bounded in time. */
export function shell(line: string, env: NodeJS.ProcessEnv): Promise<CurlResult> {
  return withTimeout(
    new Promise<CurlResult>((resolve) => {
      execFile(
        'sh',
        ['-c', line],
        { env: { ...process.env, ...env }, encoding: 'utf8' },
        (error, stdout, stderr) => {
          const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
          resolve({ code, stdout, stderr });
        },
      );
    }),
    8_000,
    line,
  );
}

/**
 * Two HTTP/2 (prior knowledge) GETs of `url` by one curl, `rate` apart (`--rate`; 3 s by
 * default): its connection idles in between, and curl reads nothing from it meanwhile. stdout is
 * `<status>:<connects made>` per request, stderr curl's `-v` (where it logs a GOAWAY it
 * received). The gap leaves the server time to send a GOAWAY on a loaded machine: with 1 s, a
 * server process stalled that long had curl reuse the connection as the GOAWAY came, and the
 * second request failed.
 */
export function curlH2Twice(
  path: string,
  url: string,
  rate: '1/s' | '20/m' = '20/m',
): Promise<CurlResult> {
  return curl(
    path,
    [
      '-sv',
      '--http2-prior-knowledge',
      '--rate',
      rate,
      '-w',
      '%{http_code}:%{num_connects} ',
      '-o',
      '/dev/null',
      url,
      '-o',
      '/dev/null',
      url,
    ],
    {},
    15,
  );
}
