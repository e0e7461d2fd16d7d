import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findTool } from './tools.js';
import type { PeerProcess } from './peerProcess.js';
import { startPeerIn } from './peerProcess.js';

/**
 * Runs dnsdist (PowerDNS's DNS load balancer) in the foreground with the Lua `config`, listening
 * (UDP and TCP) on 127.0.0.1:`port` only; resolves once it accepts TCP there. Security polling is
 * off (no traffic leaves loopback).
 */
export async function startDnsdist(port: number, config: string): Promise<PeerProcess> {
  const dnsdist = findTool('dnsdist');
  if (dnsdist === undefined) throw new Error('dnsdist is not installed');
  const dir = mkdtempSync(join(tmpdir(), 'l4proxy-dnsdist-'));
  const file = join(dir, 'dnsdist.conf');
  writeFileSync(
    file,
    [`setLocal('127.0.0.1:${port}')`, "setSecurityPollSuffix('')", config, ''].join('\n'),
  );
  return startPeerIn(dir, dnsdist, ['--supervised', '--disable-syslog', '-C', file], port);
}
