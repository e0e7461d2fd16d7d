import { readFileSync } from 'node:fs';

/**
 * The accept queue used where the kernel's cap cannot be read (not Linux, no /proc): Node's own
 * default for `listen()`.
 */
export const FALLBACK_BACKLOG = 511;

/** Where Linux keeps the cap it applies to every listen(2) backlog. */
const SOMAXCONN_PATH = '/proc/sys/net/core/somaxconn';

let somaxconn: number | null | undefined;

/**
 * `net.core.somaxconn`, read once per process (it rarely changes, and a listener is opened far
 * more often than an operator retunes the kernel); undefined where it cannot be read.
 */
export function kernelSomaxconn(): number | undefined {
  if (somaxconn === undefined) {
    try {
      const value = Number(readFileSync(SOMAXCONN_PATH, 'utf8').trim());
      somaxconn = Number.isSafeInteger(value) && value > 0 ? value : null;
    } catch {
      somaxconn = null;
    }
  }
  return somaxconn ?? undefined;
}

/**
 * The accept queue a listener gets when none is configured, sized the way HAProxy sizes its own
 * from `maxconn`: room for every connection the proxy would accept (`maxConnections`, when
 * finite), else as deep as the kernel allows (`somaxconn`), else Node's 511. Node's fixed 511
 * drops SYNs in a burst of a few thousand clients, who then wait the 1 s SYN retransmission.
 */
export function defaultBacklog(maxConnections: number): number {
  if (Number.isFinite(maxConnections) && maxConnections >= 1)
    return Math.min(Math.floor(maxConnections), 2_147_483_647);
  return kernelSomaxconn() ?? FALLBACK_BACKLOG;
}

/**
 * The queue length the kernel really applies for a requested backlog: Linux silently caps it at
 * `somaxconn` (for display in `--check` and logs; where the cap is unknown, the request).
 */
export function effectiveBacklog(requested: number): number {
  const cap = kernelSomaxconn();
  return cap === undefined ? requested : Math.min(requested, cap);
}
