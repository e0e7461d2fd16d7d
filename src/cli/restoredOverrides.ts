import type { RecentEvents } from '../admin/RecentEvents.js';
import { thrownMessage } from '../errors.js';
import type { OverrideOrigin } from '../upstream/adminOverride.js';
import type { Logger } from './jsonLogger.js';
import type { ListenerSet, OverridesCarried } from './ListenerSet.js';
import { readStateFile, validateOverridesByListener } from './stateFile.js';
import { inheritedState } from './upgrade.js';

/** Where a process's overrides came from at start, for `/events` once the admin server is up. */
export interface RestoredAtStart {
  readonly origin: OverrideOrigin;
  readonly carried: OverridesCarried;
}

/** What {@link restoreAtStart} reads. */
export interface RestoreSources {
  /** Started by a binary upgrade: the old process's overrides come first. */
  readonly upgraded: boolean;
  /** `stateFile`, if set. */
  readonly stateFile: string | undefined;
  /** Whether this process logs what it restored (with `--workers`, worker 1 speaks). */
  readonly speaks: boolean;
}

/**
 * Puts back, before the listeners accept anything, the operator's overrides of the process this
 * one replaces: the old process's over the upgrade's IPC channel, else the state file's. A state
 * file that cannot be read or is not valid is a warning, and the start goes on with the config's
 * state; never throws.
 */
export async function restoreAtStart(
  running: ListenerSet,
  ops: Logger,
  sources: RestoreSources,
): Promise<RestoredAtStart | undefined> {
  const say = (level: 'info' | 'warn', msg: string, fields: Record<string, unknown>): void => {
    if (sources.speaks) ops[level](msg, fields);
  };
  if (sources.upgraded) {
    const state = await inheritedState();
    if (state !== undefined) {
      const carried = restore(running, state, 'upgrade', (reason) => {
        say('warn', 'upgrade: the old process sent overrides that are not valid', { reason });
      });
      if (carried !== undefined) {
        say('info', 'overrides restored', { from: 'upgrade', ...fieldsOf(carried) });
        return { origin: 'upgrade', carried };
      }
    }
  }
  const file = sources.stateFile;
  if (file === undefined) return undefined;
  const read = await readStateFile(file);
  if (read.kind === 'missing') {
    say('info', 'no state file yet: starting with the config as it is', { stateFile: file });
    return undefined;
  }
  if (read.kind === 'invalid') {
    say('warn', 'state file ignored: starting with the config as it is', {
      stateFile: file,
      reason: read.reason,
    });
    return undefined;
  }
  const carried = restore(running, read.overrides, 'stateFile', (reason) => {
    say('warn', 'state file ignored: starting with the config as it is', {
      stateFile: file,
      reason,
    });
  });
  if (carried === undefined) return undefined;
  say('info', 'overrides restored', { from: 'stateFile', stateFile: file, ...fieldsOf(carried) });
  return { origin: 'stateFile', carried };
}

/** The log line's fields for what was carried. */
export function fieldsOf(carried: OverridesCarried): { restored: number; dropped: string[] } {
  return { restored: carried.restored, dropped: [...carried.dropped] };
}

/** `/events` entries: each listener's overrides in force, and what `origin` could not carry. */
export function recordRestored(
  recent: RecentEvents,
  running: ListenerSet,
  origin: OverrideOrigin,
  carried: OverridesCarried,
): void {
  const time = Date.now();
  for (const [listener, entries] of Object.entries(running.overrides())) {
    const detail = entries
      .map((entry) =>
        [
          entry.id,
          entry.mode,
          ...(entry.weight === undefined ? [] : [`weight ${entry.weight}`]),
        ].join(' '),
      )
      .join(', ');
    recent.add({ time, listener, kind: 'admin', reason: `restored_from_${origin}`, detail });
  }
  for (const dropped of carried.dropped) {
    const [listener = '', why = dropped] = dropped.split('/', 2);
    recent.add({
      time,
      listener,
      kind: 'admin',
      reason: `not_restored_from_${origin}`,
      detail: why,
    });
  }
}

function restore(
  running: ListenerSet,
  state: unknown,
  origin: OverrideOrigin,
  invalid: (reason: string) => void,
): OverridesCarried | undefined {
  try {
    return running.restoreOverrides(validateOverridesByListener(state, 'overrides'), origin);
  } catch (err) {
    invalid(thrownMessage(err));
    return undefined;
  }
}
