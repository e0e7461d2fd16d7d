import { findTool } from './tools.js';
import type { PeerProcess } from './peerProcess.js';
import { freePort, startPeer } from './peerProcess.js';

/** An nghttpx HTTP/2 forward proxy listening on 127.0.0.1:`port`. */
export interface Nghttpx extends PeerProcess {
  readonly port: number;
}

/**
 * Runs nghttpx in HTTP/2 proxy mode (`-s`): an HTTP/2 frontend on 127.0.0.1 (cleartext h2 with
 * prior knowledge, or TLS with `tls`) whose CONNECT streams go to `backendPort`, an HTTP/1.1
 * forward proxy (squid). No config file is read (`--conf=/dev/null`); `extraArgs` are added
 * (e.g. `--frontend-http2-max-concurrent-streams=1`).
 */
export async function startNghttpx(
  backendPort: number,
  tls?: { readonly key: string; readonly cert: string },
  extraArgs: readonly string[] = [],
): Promise<Nghttpx> {
  const nghttpx = findTool('nghttpx');
  if (nghttpx === undefined) throw new Error('nghttpx is not installed');
  const port = await freePort();
  const frontend = `127.0.0.1,${port}${tls === undefined ? ';no-tls' : ''}`;
  const peer = await startPeer(
    nghttpx,
    [
      '--conf=/dev/null',
      '-s',
      `--frontend=${frontend}`,
      `--backend=127.0.0.1,${backendPort}`,
      '--workers=1',
      '--log-level=WARN',
      '--errorlog-file=/dev/stderr',
      ...extraArgs,
      ...(tls === undefined ? [] : [tls.key, tls.cert]),
    ],
    port,
  );
  return { ...peer, port };
}
