import dgram from 'node:dgram';
import type { RemoteInfo } from 'node:dgram';
import type { TestContext } from 'node:test';
import { withTimeout } from './net.js';

/** What a {@link GatedDns} does with a query: hold it, answer it, or answer SERVFAIL. */
export type GateMode = 'hold' | 'answer' | 'fail';

/** A DNS server on 127.0.0.1 that answers only when the test lets it. */
export interface GatedDns {
  /** `127.0.0.1:port`, for `servers`. */
  readonly server: string;
  /** The names queried so far, in order (one entry per query received). */
  readonly queried: readonly string[];
  /**
   * `'answer'` answers what is held and what comes next (every A query: 127.0.0.1, TTL 3600);
   * `'fail'` answers them SERVFAIL; `'hold'` keeps what comes next unanswered.
   */
  set(mode: GateMode): void;
  /** Resolves once `count` queries of `name` came in all, bounded in time. */
  waitQueries(name: string, count: number, ms?: number): Promise<void>;
}

/**
 * Starts a {@link GatedDns} holding queries (closed after the test): a resolver whose first answer
 * comes when the test says, what dnsmasq cannot do.
 */
export async function gatedDns(t: TestContext): Promise<GatedDns> {
  const socket = dgram.createSocket('udp4');
  socket.on('error', () => undefined);
  await new Promise<void>((resolve) => {
    socket.bind(0, '127.0.0.1', () => {
      resolve();
    });
  });
  t.after(
    () =>
      new Promise<void>((resolve) => {
        socket.close(() => {
          resolve();
        });
      }),
  );
  let mode: GateMode = 'hold';
  const held: [Buffer, RemoteInfo][] = [];
  const queried: string[] = [];
  const wakers = new Set<() => void>();
  const reply = (query: Buffer, from: RemoteInfo): void => {
    socket.send(answer(query, mode === 'fail'), from.port, from.address);
  };
  socket.on('message', (query, from) => {
    queried.push(questionName(query));
    for (const wake of wakers) wake();
    if (mode === 'hold') held.push([query, from]);
    else reply(query, from);
  });
  return {
    server: `127.0.0.1:${String(socket.address().port)}`,
    queried,
    set(next) {
      mode = next;
      if (next !== 'hold') for (const [query, from] of held.splice(0)) reply(query, from);
    },
    waitQueries(name, count, ms = 5_000) {
      return withTimeout(
        new Promise<void>((resolve) => {
          const check = (): void => {
            if (queried.filter((each) => each === name).length < count) return;
            wakers.delete(check);
            resolve();
          };
          wakers.add(check);
          check();
        }),
        ms,
        `${String(count)} DNS queries of ${name}; seen: ${queried.join(', ')}`,
      );
    },
  };
}

function questionEnd(query: Buffer): number {
  let end = 12;
  for (let labels = 0; labels < 128 && end < query.length && query[end] !== 0; labels++)
    end += (query[end] ?? 0) + 1;
  return end;
}

function questionName(query: Buffer): string {
  const labels: string[] = [];
  let at = 12;
  const end = questionEnd(query);
  while (at < end) {
    const length = query[at] ?? 0;
    labels.push(query.subarray(at + 1, at + 1 + length).toString('latin1'));
    at += length + 1;
  }
  return labels.join('.');
}

/** The answer to `query`: its A record 127.0.0.1 (TTL 3600), none for another type, or SERVFAIL. */
function answer(query: Buffer, fail: boolean): Buffer {
  const end = questionEnd(query);
  const question = query.subarray(12, end + 5);
  const type = query.readUInt16BE(end + 1);
  const header = Buffer.alloc(12);
  query.copy(header, 0, 0, 2);
  header.writeUInt16BE(1, 4);
  if (fail || type !== 1) {
    header.writeUInt16BE(fail ? 0x8182 : 0x8580, 2); // response, RD, RA (AA), SERVFAIL or no error
    return Buffer.concat([header, question]);
  }
  header.writeUInt16BE(0x8580, 2); // response, AA, RD, RA
  header.writeUInt16BE(1, 6);
  const record = Buffer.alloc(16);
  record.writeUInt16BE(0xc00c, 0);
  record.writeUInt16BE(1, 2);
  record.writeUInt16BE(1, 4);
  record.writeUInt32BE(3600, 6);
  record.writeUInt16BE(4, 10);
  Buffer.from([127, 0, 0, 1]).copy(record, 12);
  return Buffer.concat([header, question, record]);
}
