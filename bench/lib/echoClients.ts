import net from 'node:net';

/** Ends `socket` once the 32 bytes it sent have come back, and calls `done` at its close. */
export function endAfterEcho(socket: net.Socket, done: () => void): void {
  let received = 0;
  socket.on('data', (data: Buffer) => {
    received += data.length;
    if (received >= 32) socket.end();
  });
  socket.on('close', () => {
    done();
  });
}

/** New plain connections one after another: 32 bytes, their echo, close. */
export async function echoConnections(port: number, count: number): Promise<void> {
  for (let i = 0; i < count; i++)
    await new Promise<void>((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.on('error', reject);
      socket.on('connect', () => socket.write(Buffer.alloc(32, 2)));
      endAfterEcho(socket, resolve);
    });
}
