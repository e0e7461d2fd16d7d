import net from 'node:net';
import type { AddressInfo } from 'node:net';

/** A TCP port free on 127.0.0.1 now (bound to 0, then released). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) =>
    server.close(() => {
      resolve();
    }),
  );
  return port;
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => {
      resolve(false);
    });
  });
}

/** Waits (bounded) until something accepts TCP connections on 127.0.0.1:port. */
export async function waitListening(port: number, alive: () => boolean): Promise<void> {
  for (let attempt = 0; attempt < 200 && alive(); attempt++) {
    if (await accepts(port)) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`nothing listens on 127.0.0.1:${port}`);
}
