import dgram from 'node:dgram';
import net from 'node:net';
import { startEchoInProcess } from './backends.js';
import type { BaseBuild } from './base.js';
import { BaseCheckoutError } from './base.js';
import { startCli } from './cliContender.js';
import type { Contender, Protocol, Running } from './contenders.js';
import { forkScript } from './contenders.js';

/**
 * `l4proxy@base` and `l4proxy-cli@base`: the base checkout's library contender
 * (`bench/servers/l4proxy.js`) and command, started exactly as `l4proxy` and `l4proxy-cli` are,
 * by the same Node, with the same arguments.
 */
export function baseContenders(base: BaseBuild): Contender[] {
  return [
    {
      name: 'l4proxy@base',
      description: `\`l4proxy\` from the base checkout ${base.dir} at ${base.commit}`,
      protocols: ['tcp', 'udp'],
      start: (setup) =>
        forkScript(
          base.server,
          [setup.protocol, String(setup.upstreamPort), String(setup.responses)],
          setup.profileDir,
        ),
    },
    {
      name: 'l4proxy-cli@base',
      description: `\`l4proxy-cli\` from the base checkout ${base.dir} at ${base.commit}`,
      protocols: ['tcp', 'udp'],
      start: (setup) => startCli(setup, 1, base.cli),
    },
  ];
}

/** Sends 32 bytes through the proxy and resolves once they came back (bounded). */
function roundTrip(protocol: Protocol, port: number, ms = 10_000): Promise<void> {
  const message = Buffer.alloc(32, 5);
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      done(new Error(`no echo through it within ${ms} ms`));
    }, ms);
    const client = protocol === 'tcp' ? net.connect(port, '127.0.0.1') : dgram.createSocket('udp4');
    let got = 0;
    function done(error?: Error): void {
      clearTimeout(timer);
      if (client instanceof net.Socket) client.destroy();
      else client.close();
      if (error === undefined) resolve();
      else reject(error);
    }
    client.on('error', (error: Error) => {
      done(error);
    });
    if (client instanceof net.Socket) {
      client.on('connect', () => client.write(message));
      client.on('data', (data: Buffer) => {
        got += data.length;
        if (got >= message.length) done();
      });
      client.on('end', () => {
        done(new Error(`it closed after ${got} of ${message.length} bytes`));
      });
    } else {
      client.on('message', () => {
        done();
      });
      client.send(message, port, '127.0.0.1');
    }
  });
}

/**
 * Starts each base contender once per protocol and relays one exchange through it, before any
 * measurement: a base whose command refuses this harness's flags, or whose build does not load,
 * stops the run here with its reason instead of leaving a column of failures.
 */
export async function preflightBase(base: BaseBuild, contenders: readonly Contender[]) {
  for (const contender of contenders)
    for (const protocol of contender.protocols) {
      const backend = await startEchoInProcess(protocol);
      let running: Running | undefined;
      try {
        running = await contender.start(
          { protocol, upstreamPort: backend.port, responses: 0 },
          new Map(),
        );
        await roundTrip(protocol, running.port);
      } catch (error) {
        const reason = error instanceof Error ? error.message : String(error);
        throw new BaseCheckoutError(
          base.dir,
          `${contender.name} (commit ${base.commit}) does not proxy ${protocol} as this harness runs it: ${reason}`,
        );
      } finally {
        await running?.stop();
        backend.close();
      }
    }
}
