import type { TestContext } from 'node:test';

/** A TCP handle as the write hooks see it (`this` of libuv's `writeBuffer`/`writev`). */
export interface WrittenHandle {
  getpeername(out: { port?: number }): number;
  getsockname(out: { port?: number }): number;
}

/** One write call a TCP handle of this process made: its chunks, in order. */
export interface HandleWrite {
  readonly handle: WrittenHandle;
  /** The socket object that owns the handle (a `net.Socket`, or the relay's own). */
  readonly owner: { readonly writableLength: number } | undefined;
  /** The owner's `writableLength` when the write was made (what it held besides this write). */
  readonly heldBefore: number;
  readonly chunks: readonly Uint8Array[];
}

interface HandlePrototype {
  writeBuffer: (this: WrittenHandle, request: unknown, chunk: Uint8Array) => number;
  writev: (this: WrittenHandle, request: unknown, chunks: unknown[], allBuffers: boolean) => number;
}

/** The port at the other end (`'remote'`) or this end (`'local'`) of a handle. */
export function handlePort(handle: WrittenHandle, end: 'remote' | 'local'): number | undefined {
  const out: { port?: number } = {};
  const err = end === 'remote' ? handle.getpeername(out) : handle.getsockname(out);
  return err === 0 ? out.port : undefined;
}

function ownerOf(handle: WrittenHandle): HandleWrite['owner'] {
  const fields = handle as unknown as Record<symbol, HandleWrite['owner'] | null>;
  const symbols = Object.getOwnPropertySymbols(handle);
  const owners = ['l4proxy.handleOwner', 'owner_symbol'].map((name) => {
    const symbol = symbols.find((s) => s.description === name);
    return symbol === undefined ? undefined : fields[symbol];
  });
  return owners.find((owner) => owner !== undefined && owner !== null) ?? undefined;
}

function recorded(handle: WrittenHandle, chunks: Uint8Array[]): HandleWrite {
  const owner = ownerOf(handle);
  return { handle, owner, heldBefore: owner?.writableLength ?? 0, chunks };
}

/**
 * Records every write the TCP handles of this process make that `matches` picks, whichever
 * socket drives them (`net.Socket` or the relay's handle sockets): wraps `writeBuffer` and
 * `writev` on libuv's TCP handle prototype, restored by the test's `after`.
 */
export function recordHandleWrites(
  t: TestContext,
  matches: (handle: WrittenHandle) => boolean,
): HandleWrite[] {
  const binding = (
    process as unknown as { binding(name: string): Record<string, unknown> }
  ).binding('tcp_wrap');
  const proto = (binding.TCP as { prototype: HandlePrototype }).prototype;
  const { writeBuffer, writev } = proto;
  const writes: HandleWrite[] = [];
  proto.writeBuffer = function (this: WrittenHandle, request, chunk) {
    if (matches(this)) writes.push(recorded(this, [chunk]));
    return writeBuffer.call(this, request, chunk);
  };
  proto.writev = function (this: WrittenHandle, request, chunks, allBuffers) {
    if (matches(this)) {
      const buffers = (allBuffers ? chunks : chunks.filter((_, i) => i % 2 === 0)) as Uint8Array[];
      writes.push(recorded(this, buffers));
    }
    return writev.call(this, request, chunks, allBuffers);
  };
  t.after(() => {
    proto.writeBuffer = writeBuffer;
    proto.writev = writev;
  });
  return writes;
}
