/**
 * Runs `run`, handing `keep` the promise of its outcome before `run` starts. A `close()` keeps its
 * promise so that every later call gets the same one; kept only once `run()` returned, a listener
 * of an event that `run`'s synchronous part emits (a rejection, a session's end) calling
 * `close()` again would not see it and start a second shutdown.
 */
export function promiseBeforeRun(
  keep: (promise: Promise<void>) => void,
  run: () => Promise<void>,
): Promise<void> {
  let settle: ((outcome: Promise<void>) => void) | undefined;
  const promise = new Promise<void>((resolve) => {
    settle = resolve;
  });
  keep(promise);
  settle?.(run());
  return promise;
}
