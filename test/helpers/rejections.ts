/**
 * Collects the process's unhandled rejections while a test runs (an unhandled rejection ends a
 * host process by default). `settled()` lets pending promise jobs and the rejection check run.
 */
export function watchRejections(t: { after(fn: () => void): void }): {
  readonly seen: unknown[];
  settled(): Promise<void>;
} {
  const seen: unknown[] = [];
  const onRejection = (reason: unknown): void => {
    seen.push(reason);
  };
  process.on('unhandledRejection', onRejection);
  t.after(() => process.off('unhandledRejection', onRejection));
  return {
    seen,
    settled: () => new Promise((resolve) => setImmediate(() => setImmediate(resolve))),
  };
}
