import { startHaproxy } from './haproxy.js';
import { echoServer } from './net.js';
import { startNginx } from './nginx.js';
import { freePort } from './peerProcess.js';
import type { PeerProcess } from './peerProcess.js';

/** A real PROXY protocol receiver listening on 127.0.0.1:`port`. */
export interface ProxyProtocolReceiver extends PeerProcess {
  readonly port: number;
}

/**
 * nginx `listen ... proxy_protocol` that answers each connection with the client the PROXY header
 * named, `address:port\n` (`$proxy_protocol_addr:$proxy_protocol_port`), and closes.
 */
export async function nginxReportingClient(): Promise<ProxyProtocolReceiver> {
  const port = await freePort();
  const nginx = await startNginx(
    `server { listen 127.0.0.1:${port} proxy_protocol; return "$proxy_protocol_addr:$proxy_protocol_port\\n"; }`,
  );
  return { ...nginx, port };
}

/**
 * haproxy `bind ... accept-proxy` relaying to an echo server, logging each connection with
 * `logFormat` (read it with `waitForOutput`) when given. `stop()` stops both.
 */
export async function haproxyAcceptingProxy(logFormat?: string): Promise<ProxyProtocolReceiver> {
  const echo = await echoServer();
  try {
    const port = await freePort();
    const haproxy = await startHaproxy(
      [
        'listen in',
        `  bind 127.0.0.1:${port} accept-proxy`,
        ...(logFormat === undefined ? [] : [`  log-format "${logFormat}"`]),
        `  server s1 127.0.0.1:${echo.port}`,
      ].join('\n'),
    );
    return {
      ...haproxy,
      port,
      async stop() {
        await haproxy.stop();
        await echo.close();
      },
    };
  } catch (error) {
    await echo.close();
    throw error;
  }
}
