import { fileURLToPath } from 'node:url';

/** The repository root (this file runs from build/bench/lib/). */
export const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));

/** A compiled benchmark script under build/bench/, by its path relative to that folder. */
export function benchScript(relative: string): string {
  return fileURLToPath(new URL(`../${relative}`, import.meta.url));
}
