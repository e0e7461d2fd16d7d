/** Fuzz inputs shared by the parser fuzz and the live-proxy fuzz. */
import fc from 'fast-check';
import { PROXY_V2_SIGNATURE } from '../../src/protocol/ProxyHeader.js';
import { encodeProxyHeader } from '../../src/protocol/encodeProxyHeader.js';
import { anyHeader } from '../protocol/proxyArbitraries.js';
import {
  alpnExtension,
  buildHandshake,
  extension,
  recordsOf,
  sniExtension,
} from '../protocol/tlsHelloFixtures.js';

export const cuts = fc.array(fc.nat(), { maxLength: 10 });
const mutation = fc.record({
  at: fc.nat(),
  byte: fc.nat(255),
  kind: fc.constantFrom('set', 'insert', 'delete', 'truncate'),
});
/** Half the time none: valid inputs (re-chunked) must keep decoding. */
const mutations = fc.oneof(fc.constant([]), fc.array(mutation, { minLength: 1, maxLength: 6 }));

/** Applies byte mutations (set, insert, delete, truncate at a point). */
export function mutate(
  input: Buffer,
  list: readonly { at: number; byte: number; kind: string }[],
): Buffer {
  let bytes = input;
  for (const { at, byte, kind } of list) {
    if (bytes.length === 0) break;
    const i = at % bytes.length;
    const head = bytes.subarray(0, i);
    if (kind === 'set') bytes = Buffer.concat([head, Buffer.from([byte]), bytes.subarray(i + 1)]);
    else if (kind === 'insert')
      bytes = Buffer.concat([head, Buffer.from([byte]), bytes.subarray(i)]);
    else if (kind === 'delete') bytes = Buffer.concat([head, bytes.subarray(i + 1)]);
    else bytes = head;
  }
  return bytes;
}

export const randomBytes = fc.uint8Array({ maxLength: 300 }).map((bytes) => Buffer.from(bytes));

/** PROXY inputs: random bytes, signature-led junk, and mutated valid v1/v2 headers. */
export const proxyInput = fc.oneof(
  randomBytes,
  randomBytes.map((tail) => Buffer.concat([PROXY_V2_SIGNATURE, tail])),
  randomBytes.map((tail) => Buffer.concat([Buffer.from('PROXY '), tail])),
  fc
    .tuple(anyHeader, mutations, fc.boolean())
    .map(([header, list, crc]) =>
      mutate(encodeProxyHeader(header, header.version === 2 && crc ? { crc32c: true } : {}), list),
    ),
);

const hostName = fc
  .array(fc.stringMatching(/^[a-z0-9-]{1,12}$/), { minLength: 1, maxLength: 4 })
  .map((labels) => labels.join('.'));
const recordSizes = fc.array(fc.integer({ min: 1, max: 400 }), { minLength: 1, maxLength: 4 });

/** ClientHello inputs: random bytes, record-led junk, and mutated valid hellos in many records. */
export const helloInput = fc.oneof(
  randomBytes,
  randomBytes.map((tail) => Buffer.concat([Buffer.from([0x16, 3, 1]), tail])),
  fc
    .tuple(
      fc.option(hostName),
      fc.option(fc.array(fc.stringMatching(/^[a-z0-9/.]{1,8}$/), { maxLength: 3 })),
      recordSizes,
      mutations,
    )
    .map(([name, alpn, sizes, list]) => {
      const exts = [
        ...(name === null ? [] : [sniExtension(name)]),
        ...(alpn === null ? [] : [alpnExtension(alpn)]),
        extension(0xff01, Buffer.from([0])),
      ];
      return mutate(recordsOf(buildHandshake(exts), sizes), list);
    }),
);

/** A valid PROXY v1 or v2 header, as a trusted load balancer sends it. */
export const validProxyHeader = anyHeader.map((header) => encodeProxyHeader(header));
