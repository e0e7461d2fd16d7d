/**
 * Sends `request` to the parent process over IPC, then hands each message (and handle) it sends
 * back to `read` until `read` says it has what it waited for, the channel closes, the send fails
 * or `timeoutMs` passes: resolves in every case (what `read` kept says what came). Resolves at
 * once when there is no connected channel. The upgrade's exchanges (old process to new, primary
 * to worker) all wait this way.
 */
export function askParent(
  request: object,
  read: (message: unknown, handle: unknown) => boolean,
  timeoutMs: number,
): Promise<void> {
  if (process.send === undefined || !process.connected) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      process.off('message', onMessage);
      process.off('disconnect', done);
      resolve();
    };
    const onMessage = (message: unknown, handle: unknown): void => {
      if (read(message, handle)) done();
    };
    const timer = setTimeout(done, timeoutMs);
    process.on('message', onMessage);
    process.on('disconnect', done);
    process.send?.(request, undefined, {}, (err: Error | null) => {
      if (err !== null) done();
    });
  });
}
