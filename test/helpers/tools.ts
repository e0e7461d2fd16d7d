import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { TestContext } from 'node:test';

/**
 * Outside programs (nginx, haproxy, dnsmasq, dig, iperf3, openssl) are optional on a developer's
 * machine: a test that needs one skips with a visible reason. CI sets L4PROXY_REQUIRE_TOOLS=1,
 * which turns such a skip into a failure.
 */
export const requireTools = process.env.L4PROXY_REQUIRE_TOOLS === '1';

const SEARCH = ['/usr/sbin', '/usr/bin', '/usr/local/sbin', '/usr/local/bin', '/sbin', '/bin'];

/** Absolute path of a program, or undefined. */
export function findTool(name: string): string | undefined {
  for (const dir of SEARCH) {
    const path = `${dir}/${name}`;
    if (existsSync(path)) return path;
  }
  try {
    const out = execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim();
    return out === '' ? undefined : out;
  } catch {
    return undefined;
  }
}

/**
 * Returns the program's path, or skips the test (fails it under L4PROXY_REQUIRE_TOOLS=1).
 * Use as: `const dig = tool(t, 'dig'); if (!dig) return;`
 */
export function tool(t: TestContext, name: string): string | undefined {
  const path = findTool(name);
  if (path !== undefined) return path;
  const reason = `${name} is not installed (apt-get install it, or see .ci/run)`;
  if (requireTools) throw new Error(`L4PROXY_REQUIRE_TOOLS=1 but ${reason}`);
  t.skip(reason);
  return undefined;
}
