import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';

/**
 * The accept queue length the kernel applies to the listener on 127.0.0.1:`port`: `ss -ltn`
 * shows it as the Send-Q of a LISTEN socket.
 */
export function listenQueue(ss: string, port: number): number {
  const out = execFileSync(ss, ['-ltnH', `sport = :${port}`], { encoding: 'utf8' });
  const line = out.split('\n').find((row) => row.includes(`127.0.0.1:${port}`));
  assert.ok(line, `ss shows no listener on port ${port}: ${out}`);
  const [, , sendQ] = line.trim().split(/\s+/);
  return Number(sendQ);
}
