/*
 * The state file (HAProxy's `server-state-file` with `load-server-state-from-file`): the
 * operator's overrides, saved after each admin action, reload and at exit, and read back at start,
 * so a restart does not put an upstream taken out for maintenance back into rotation. One JSON
 * object, versioned; written whole under a temporary name and renamed over the file, so a reader
 * (or a crash) never meets half of it.
 */
import { constants } from 'node:fs';
import { open, rename, unlink, writeFile } from 'node:fs/promises';
import { thrownMessage } from '../errors.js';
import { isRecord } from '../internal/validate.js';
import { validateSavedOverrides } from '../upstream/savedOverride.js';
import type { OverridesByListener } from './ListenerSet.js';

/** The format's version: a file of another one is refused (with a warning), not guessed at. */
export const STATE_FILE_VERSION = 1;

/**
 * Largest state file read: some 100 000 overrides. A bigger file is not one this process wrote;
 * reading it whole could exhaust the memory of a proxy that is starting.
 */
export const MAX_STATE_FILE_BYTES = 16 * 1024 * 1024;

/** What reading the state file found. */
export type StateFileRead =
  | { readonly kind: 'read'; readonly overrides: OverridesByListener }
  /** No file yet (the first start): nothing to restore, nothing to say but that. */
  | { readonly kind: 'missing' }
  /** Unreadable, not JSON, or not this format: the config's state is the start. */
  | { readonly kind: 'invalid'; readonly reason: string };

/** Reads and checks `path`; never throws. */
export async function readStateFile(path: string): Promise<StateFileRead> {
  let text: string;
  try {
    text = await readBounded(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'missing' };
    return { kind: 'invalid', reason: thrownMessage(err) };
  }
  try {
    return { kind: 'read', overrides: parseStateFile(text) };
  } catch (err) {
    return { kind: 'invalid', reason: thrownMessage(err) };
  }
}

/**
 * The text of a regular file of at most {@link MAX_STATE_FILE_BYTES}. Opened without blocking
 * and checked before reading: a FIFO put in its place would block the start until a writer came,
 * a device (`/dev/zero`) would be read forever.
 * @throws {Error} saying why not.
 */
async function readBounded(path: string): Promise<string> {
  const file = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const stat = await file.stat();
    if (!stat.isFile()) throw new Error(`${path}: not a regular file`);
    if (stat.size > MAX_STATE_FILE_BYTES)
      throw new Error(`${path}: ${stat.size} bytes, over ${MAX_STATE_FILE_BYTES}`);
    // Read to its end, not its stat size: a file growing meanwhile is still bounded.
    const chunks: Buffer[] = [];
    let length = 0;
    for (;;) {
      const { bytesRead, buffer } = await file.read(Buffer.alloc(64 * 1024), 0, 64 * 1024, null);
      if (bytesRead === 0) break;
      chunks.push(buffer.subarray(0, bytesRead));
      length += bytesRead;
      if (length > MAX_STATE_FILE_BYTES)
        throw new Error(`${path}: over ${MAX_STATE_FILE_BYTES} bytes`);
    }
    return Buffer.concat(chunks).toString('utf8');
  } finally {
    await file.close();
  }
}

/** @throws {Error} saying what is wrong with `text`. */
export function parseStateFile(text: string): OverridesByListener {
  const json = JSON.parse(text) as unknown;
  if (!isRecord(json)) throw new Error('not a JSON object');
  if (json.version !== STATE_FILE_VERSION)
    throw new Error(
      `version ${JSON.stringify(json.version)}: this l4proxy reads version ${STATE_FILE_VERSION}`,
    );
  return validateOverridesByListener(json.overrides, 'overrides');
}

/**
 * Checks overrides by listener name (a state file's `listeners`, an upgrade's message).
 * @throws {Error} naming the bad entry.
 */
export function validateOverridesByListener(value: unknown, name: string): OverridesByListener {
  if (!isRecord(value)) throw new Error(`${name}: expected an object`);
  // Own properties, each: a listener named "__proto__" (JSON.parse makes it an own key) must
  // not become the prototype of the result, as an assignment would make it.
  return Object.fromEntries(
    Object.entries(value).map(([listener, entries]) => [
      listener,
      validateSavedOverrides(entries, `${name}.${listener}`),
    ]),
  );
}

/** The file's text for `overrides`. */
export function formatStateFile(overrides: OverridesByListener, time = Date.now()): string {
  const state = {
    version: STATE_FILE_VERSION,
    savedAt: new Date(time).toISOString(),
    overrides,
  };
  return `${JSON.stringify(state, null, 2)}\n`;
}

/**
 * Saves the state to one file, one write at a time: a save asked for while one is under way is
 * done once after it, with the state as it is then (a burst of admin actions writes twice, not
 * once per action). Failures go to `failed`, never out.
 */
export class StateFileWriter {
  private writing: Promise<void> | undefined;
  /** Saves asked for, and the count the last write started at: more asked, write again. */
  private asked = 0;

  constructor(
    private readonly path: string,
    private readonly snapshot: () => OverridesByListener,
    private readonly failed: (reason: string) => void,
  ) {}

  /** Writes the current state soon; resolves once it (or a later save) is on disk. */
  save(): Promise<void> {
    this.asked++;
    if (this.writing !== undefined) return this.writing;
    const run = async (): Promise<void> => {
      let written = 0;
      while (written < this.asked) {
        written = this.asked;
        await this.writeOnce();
      }
      this.writing = undefined;
    };
    this.writing = run();
    return this.writing;
  }

  private async writeOnce(): Promise<void> {
    const temporary = `${this.path}.${process.pid}.tmp`;
    try {
      // A temporary file left by a crash (containers reuse PIDs) would keep its own mode (0644,
      // say) through the rename, and a symbolic link there would be followed: created anew, here.
      await unlink(temporary).catch(() => undefined);
      await writeFile(temporary, formatStateFile(this.snapshot()), { mode: 0o600, flag: 'wx' });
      await rename(temporary, this.path);
    } catch (err) {
      this.failed(thrownMessage(err));
      await unlink(temporary).catch(() => undefined);
    }
  }
}
