import type { Socket } from 'node:net';
import { createAdminServer, TcpProxy, UdpProxy } from '../../src/index.js';
import type { AdminServer } from '../../src/index.js';
import { connect, echoServer, withTimeout } from '../helpers/net.js';
import { closeSocket, udpEcho, udpSocket } from '../udp/helpers.js';

/** What the status page shows in its tests and in the docs' screenshot: real traffic, real upstreams. */
export interface StatusScene {
  readonly admin: AdminServer;
  readonly adminPort: number;
  readonly token: string;
  /** Upstream ids of the TCP listener `web`, in order. */
  readonly upstreams: readonly string[];
  /** Closes the echo server behind `web`'s upstream `index` and ends its connections. */
  kill(index: number): Promise<void>;
  /** Client traffic through `web` (and a few datagrams through `dns`) for about `ms`. */
  load(ms: number): Promise<number>;
  close(): Promise<void>;
}

export const SCENE_TOKEN = 'status-page-token';

export async function startStatusScene(): Promise<StatusScene> {
  const echoes = [await echoServer(), await echoServer(), await echoServer()];
  const dnsEcho = await udpEcho();
  const web = new TcpProxy({
    upstreams: echoes.map((echo, i) => ({
      host: '127.0.0.1',
      port: echo.port,
      id: `app-${i + 1}`,
    })),
    healthCheck: { interval: 200, timeout: 200, unhealthyThreshold: 1, healthyThreshold: 1 },
  });
  const webPort = (await web.listen({ port: 0, host: '127.0.0.1' })).port;
  const dns = new UdpProxy({
    upstreams: [{ host: '127.0.0.1', port: dnsEcho.port, id: 'resolver' }],
  });
  const dnsPort = (await dns.bind({ port: 0, address: '127.0.0.1' })).port;
  const admin = createAdminServer({ proxies: { web, dns }, token: SCENE_TOKEN });
  const adminPort = (await admin.listen({ port: 0 })).port;
  const killed = new Set<number>();
  const payload = Buffer.alloc(32 * 1024, 'x');

  const exchange = async (): Promise<void> => {
    let socket: Socket | undefined;
    try {
      socket = await connect(webPort);
      const client = socket;
      await withTimeout(
        new Promise<void>((resolve) => {
          let received = 0;
          client.on('data', (chunk: Buffer) => {
            received += chunk.length;
            if (received >= payload.length) resolve();
          });
          client.once('close', () => {
            resolve();
          });
          client.write(payload);
        }),
        2_000,
        'an echo through the proxy',
      );
    } catch {
      // A killed upstream may end an exchange early; the load goes on.
    } finally {
      socket?.destroy();
    }
  };

  return {
    admin,
    adminPort,
    token: SCENE_TOKEN,
    upstreams: echoes.map((_, i) => `app-${i + 1}`),
    async kill(index) {
      const echo = echoes[index];
      if (echo === undefined || killed.has(index)) return;
      killed.add(index);
      await echo.close();
    },
    async load(ms) {
      const end = Date.now() + ms;
      let exchanges = 0;
      const client = await udpSocket();
      try {
        for (let round = 0; round < 10_000 && Date.now() < end; round++) {
          await Promise.all([exchange(), exchange(), exchange(), exchange()]);
          client.send('ping', dnsPort, '127.0.0.1');
          exchanges += 4;
        }
      } finally {
        await closeSocket(client);
      }
      return exchanges;
    },
    async close() {
      await admin.close();
      await web.close({ drainTimeout: 0 });
      await dns.close();
      await dnsEcho.close();
      for (const [index, echo] of echoes.entries()) if (!killed.has(index)) await echo.close();
    },
  };
}
