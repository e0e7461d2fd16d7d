/**
 * One of Node's own bindings (`tcp_wrap`, `stream_wrap`, `udp_wrap`, `uv`), as `net` and `dgram`
 * use them, through `process.binding`; null where that is refused (the permission model) or
 * missing. Callers check what they need of it and fall back to the public API.
 */
export function nodeBinding(name: string): Record<string, unknown> | null {
  try {
    const binding = (process as unknown as { binding?: (name: string) => unknown }).binding;
    if (typeof binding !== 'function') return null;
    const value = binding.call(process, name);
    return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

/** Whether every one of `methods` is a function on `constructor`'s prototype. */
export function hasMethods(constructor: unknown, methods: readonly string[]): boolean {
  if (typeof constructor !== 'function') return false;
  const prototype = constructor.prototype as Record<string, unknown>;
  return methods.every((method) => typeof prototype[method] === 'function');
}

/** `load()` run on the first call only; later calls return what it returned. */
export function loadOnce<T>(load: () => T): () => T {
  let loaded = false;
  let value: T;
  return () => {
    if (!loaded) {
      value = load();
      loaded = true;
    }
    return value;
  };
}
