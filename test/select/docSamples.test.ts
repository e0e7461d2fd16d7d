/**
 * Runs the selector samples of README.md and docs/*.md as written: every fenced block marked
 * `<!-- sample: selector ... -->` is transpiled (types erased, nothing else changed), imports
 * `l4proxy` from a shim, and runs once with each shipped selector in place of whichever shipped
 * selector it calls. Every TcpProxy it creates then proxies one loopback client, which must reach
 * an upstream. The marker's words: `given=a,b` names what the sample expects from its
 * surroundings (`upstreams`, `lookupZone`, ...), `use=x,y` names selectors it defines but does not
 * put in a proxy, `sni=name` makes the client send a TLS ClientHello for that name.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import tls from 'node:tls';
import { fileURLToPath, pathToFileURL } from 'node:url';
import ts from 'typescript';
import { consistentHash, failover, leastConnections, random, roundRobin } from '../../src/index.js';
import type {
  TcpConnectionSummary,
  TcpProxy,
  Upstream,
  UpstreamSelector,
} from '../../src/index.js';
import { connect, echoServer, readAll, withTimeout } from '../helpers/net.js';

const ROOT = new URL('../../../', import.meta.url);
const INDEX = new URL('build/src/index.js', ROOT).href;

const shipped: Record<string, () => UpstreamSelector> = {
  roundRobin: () => roundRobin(),
  random: () => random(),
  leastConnections: () => leastConnections(),
  consistentHash: () => consistentHash(),
  'consistentHash ring': () => consistentHash({ algorithm: 'ring' }),
  failover: () => failover(),
};

interface Sample {
  readonly where: string;
  readonly code: string;
  readonly given: readonly string[];
  readonly use: readonly string[];
  readonly sni: string | undefined;
}

/** The marked blocks of README.md and docs/*.md. */
function samples(): Sample[] {
  const files = [
    'README.md',
    ...readdirSync(new URL('docs/', ROOT))
      .filter((f) => f.endsWith('.md'))
      .map((f) => `docs/${f}`),
  ];
  return files.flatMap((file) => {
    const text = readFileSync(new URL(file, ROOT), 'utf8');
    const pattern = /<!-- sample: selector([^>]*)-->\s*```(?:ts|js)\n([\s\S]*?)```/g;
    return [...text.matchAll(pattern)].map(([, words = '', code = ''], index) => {
      const options = new Map(
        words
          .trim()
          .split(/\s+/)
          .filter(Boolean)
          .map((word) => word.split('=') as [string, string]),
      );
      const list = (key: string): string[] => options.get(key)?.split(',') ?? [];
      return {
        where: `${file} #${String(index + 1)}`,
        code,
        given: list('given'),
        use: list('use'),
        sni: options.get('sni'),
      };
    });
  });
}

/** What the shim and the sample prelude read: set before each run. */
interface Harness {
  selector: () => UpstreamSelector;
  upstreams: readonly Upstream[];
  given: Record<string, unknown>;
  created: TcpProxy[];
  sni: string | undefined;
}

declare global {
  var l4SampleHarness: Harness | undefined;
}

const SELECTOR_FACTORIES = [
  'roundRobin',
  'random',
  'leastConnections',
  'consistentHash',
  'failover',
];

/** `l4proxy` as the samples see it: the real exports, shipped selectors swapped, proxies recorded, upstreams on loopback. */
const SHIM = `
import * as real from '${INDEX}';
export * from '${INDEX}';
const harness = () => globalThis.l4SampleHarness;
export class TcpProxy extends real.TcpProxy {
  constructor(options = {}) {
    const loopback = harness().upstreams;
    const upstreams = (options.upstreams ?? loopback).map((upstream, i) => ({
      ...upstream,
      host: '127.0.0.1',
      port: loopback[i % loopback.length].port,
    }));
    super({ ...options, upstreams });
    harness().created.push(this);
  }
}
${SELECTOR_FACTORIES.map((name) => `export const ${name} = () => harness().selector();`).join('\n')}
`;

/** The sample as a module: types erased, `l4proxy` from the shim, its surroundings and uses added. */
function moduleOf(sample: Sample, shim: string): string {
  const { outputText } = ts.transpileModule(sample.code, {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
  });
  const fromShim = sample.given.filter((name) => name === 'TcpProxy');
  const fromHarness = sample.given.filter((name) => name !== 'TcpProxy');
  const prelude = [
    ...(fromShim.length > 0 ? [`import { ${fromShim.join(', ')} } from '${shim}';`] : []),
    ...(fromHarness.length > 0
      ? [`const { ${fromHarness.join(', ')} } = globalThis.l4SampleHarness.given;`]
      : []),
  ];
  const uses = sample.use.map(
    (name) =>
      `new (await import('${shim}')).TcpProxy({ selector: ${name}${sample.sni === undefined ? '' : ', sni: true'} });`,
  );
  return [...prelude, outputText.replaceAll(`from 'l4proxy'`, `from '${shim}'`), ...uses].join(
    '\n',
  );
}

/** One client through `proxy`: its close summary, and what a plain client got back. */
async function oneClient(
  proxy: TcpProxy,
  sni: string | undefined,
): Promise<{ summary: TcpConnectionSummary; echoed: string | undefined }> {
  const closed = new Promise<TcpConnectionSummary>((resolve) =>
    proxy.once('connectionClose', resolve),
  );
  const { port } = await proxy.listen({ port: 0, host: '127.0.0.1' });
  let echoed: string | undefined = undefined;
  if (sni === undefined) {
    const client = await connect(port);
    const reply = readAll(client).catch(() => Buffer.alloc(0));
    client.end('ping');
    echoed = (await reply).toString();
  } else {
    // The echo upstream returns the ClientHello, which the client refuses: enough to route on.
    const client = tls.connect({
      host: '127.0.0.1',
      port,
      servername: sni,
      rejectUnauthorized: false,
    });
    client.on('error', () => undefined);
    await withTimeout(
      new Promise((resolve) => client.once('close', resolve)),
      10_000,
      'TLS client close',
    );
  }
  return { summary: await withTimeout(closed, 10_000, 'connectionClose'), echoed };
}

test('the selector samples of README.md and docs/*.md run with every shipped selector', async (t) => {
  const found = samples();
  assert.ok(found.length >= 6, `marked samples: ${String(found.length)}`);
  const servers = [await echoServer(), await echoServer()];
  const dir = mkdtempSync(join(tmpdir(), 'l4-samples-'));
  t.after(async () => {
    globalThis.l4SampleHarness = undefined;
    rmSync(dir, { recursive: true, force: true });
    await Promise.all(servers.map((server) => server.close()));
  });
  const shim = pathToFileURL(join(dir, 'l4proxy.mjs')).href;
  writeFileSync(fileURLToPath(shim), SHIM);
  const upstreams: Upstream[] = servers.map((server, i) => ({
    host: '127.0.0.1',
    port: server.port,
    metadata:
      i === 0
        ? { zone: 'a', host: 'a.example', group: 'public' }
        : { zone: 'b', host: 'b.example', group: 'api' },
  }));
  let run = 0;
  for (const sample of found) {
    const file = join(dir, `sample${String(++run)}.mjs`);
    writeFileSync(file, moduleOf(sample, shim));
    for (const [name, selector] of Object.entries(shipped)) {
      const created: TcpProxy[] = [];
      globalThis.l4SampleHarness = {
        selector,
        upstreams,
        created,
        sni: sample.sni,
        given: { upstreams, lookupZone: () => Promise.resolve('a'), zoneOf: () => 'a' },
      };
      // A fresh module instance per run: the sample builds its selectors anew.
      await import(`${pathToFileURL(file).href}?selector=${encodeURIComponent(name)}`);
      try {
        assert.ok(created.length > 0, `${sample.where} creates a TcpProxy`);
        for (const proxy of created) {
          const { summary, echoed } = await oneClient(proxy, sample.sni);
          const what = `${sample.where} with ${name}: ${summary.reason}`;
          assert.equal(summary.upstreamConnected, true, what);
          if (sample.sni === undefined) assert.equal(echoed, 'ping', what);
        }
      } finally {
        await Promise.all(created.map((proxy) => proxy.close({ drainTimeout: 0 })));
      }
    }
  }
});
