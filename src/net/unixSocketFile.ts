import { execFile } from 'node:child_process';
import { chmod, chown, link, lstat, mkdtemp, readFile, rm, unlink } from 'node:fs/promises';
import type { Server } from 'node:net';
import { dirname, join } from 'node:path';
import { InvalidOptionError } from '../errors.js';

/** Who may connect to a Unix socket listener: its file's mode, owner and group. */
export interface UnixSocketAccess {
  /** Permission bits (0 to 0o777). Default: what the process umask leaves of 0o777. */
  readonly mode?: number | undefined;
  /** Owner, a user name or a numeric uid. Default: the process's user. */
  readonly user?: string | number | undefined;
  /** Group, a group name or a numeric gid. Default: the process's group. */
  readonly group?: string | number | undefined;
}

/** A socket file made by {@link listenWithAccess}: its path, and removing it at close. */
export interface UnixSocketFile {
  readonly path: string;
  /** Removes the file if it is still this socket's (libuv removes only the private name). */
  remove(): Promise<void>;
}

/**
 * `mode` as permission bits: a number from 0 to 0o777, or an octal string (`"660"`, `"0660"`;
 * JSON has no octal literal). Undefined when not set.
 */
export function parseSocketMode(value: unknown, name: string): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'string' && /^0?[0-7]{3}$/.test(value)) return Number.parseInt(value, 8);
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= 0o777)
    return value;
  throw new InvalidOptionError(
    name,
    'permission bits: an octal string ("660", "0600") or a number from 0 to 0o777',
    value,
  );
}

/** A user or group as written: a non-empty name, or a numeric id. Undefined when not set. */
export function parseSocketOwner(value: unknown, name: string): string | number | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) return value;
  if (typeof value === 'string' && /^[^\s:/]+$/.test(value))
    return /^\d+$/.test(value) ? Number(value) : value;
  throw new InvalidOptionError(name, 'a name or a numeric id', value);
}

/** Whether `access` asks for anything (else the socket is made as Node makes it). */
export function restricts(access: UnixSocketAccess | undefined): access is UnixSocketAccess {
  return (
    access !== undefined &&
    (access.mode !== undefined || access.user !== undefined || access.group !== undefined)
  );
}

/**
 * The `mode`, `user` and `group` of a `listen()` call, validated (errors name the key); undefined
 * when none is set. They need a `path`.
 */
export function socketAccess(options: {
  readonly path?: string | undefined;
  readonly mode?: unknown;
  readonly user?: unknown;
  readonly group?: unknown;
}): UnixSocketAccess | undefined {
  const access = {
    mode: parseSocketMode(options.mode, 'mode'),
    user: parseSocketOwner(options.user, 'user'),
    group: parseSocketOwner(options.group, 'group'),
  };
  if (!restricts(access)) return undefined;
  if (options.path === undefined) {
    const name =
      options.mode !== undefined ? 'mode' : options.user !== undefined ? 'user' : 'group';
    throw new InvalidOptionError(name, 'a Unix socket path with it', options[name]);
  }
  return access;
}

/**
 * The numeric id of a user (`passwd`) or group name, as `getent` (NSS: LDAP, sssd) or else
 * /etc/passwd or /etc/group tells; a name that does not exist is an InvalidOptionError naming
 * `name`.
 */
export async function resolveId(
  value: string | number,
  database: 'passwd' | 'group',
  name: string,
): Promise<number> {
  if (typeof value === 'number') return value;
  const line = (await getent(database, value)) ?? (await fileEntry(database, value));
  const id = Number(line?.split(':')[2]);
  if (line === undefined || !Number.isSafeInteger(id)) {
    const what = database === 'passwd' ? 'user' : 'group';
    throw new InvalidOptionError(name, `an existing ${what} (none is named ${value})`, value);
  }
  return id;
}

/**
 * `getent database key`'s line; undefined when it says none, getent is missing, or running it is
 * refused (Node's permission model without `--allow-child-process`).
 */
function getent(database: string, key: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    try {
      execFile('getent', [database, key], { timeout: 5_000 }, (error, stdout) => {
        resolve(error === null ? stdout.split('\n')[0] : undefined);
      });
    } catch {
      resolve(undefined);
    }
  });
}

async function fileEntry(database: string, key: string): Promise<string | undefined> {
  const text = await readFile(`/etc/${database}`, 'utf8').catch(() => '');
  return text.split('\n').find((line) => line.startsWith(`${key}:`));
}

/**
 * Listens on the Unix socket `path` with its file's mode and owner set before anyone else can
 * reach it. Node binds and listens in one call, and chmod after listen() leaves a moment in which
 * the umask decides (`readableAll`/`writableAll` only widen, and after listening too). So, as
 * HAProxy binds a temporary name and renames it into place: the socket is bound in a fresh
 * directory beside `path` that only this user can enter (mkdtemp, 0700), given its owner and
 * mode there, then hard-linked to `path` (link(2), unlike rename(2), refuses a path that exists:
 * EADDRINUSE as bind would report), and the private name and directory removed.
 */
export async function listenWithAccess(
  server: Server,
  path: string,
  backlog: number | undefined,
  access: UnixSocketAccess,
  names: { readonly user: string; readonly group: string } = { user: 'user', group: 'group' },
): Promise<UnixSocketFile> {
  const uid = access.user === undefined ? -1 : await resolveId(access.user, 'passwd', names.user);
  const gid = access.group === undefined ? -1 : await resolveId(access.group, 'group', names.group);
  // Short: the private name must fit a socket address (107 bytes) wherever `path` itself fits
  // with a basename of 12 bytes or more.
  const dir = await mkdtemp(join(dirname(path), '.l4-'));
  try {
    const privateName = join(dir, 's');
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ path: privateName, ...(backlog !== undefined && { backlog }) }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    try {
      if (uid !== -1 || gid !== -1) await chown(privateName, uid, gid);
      if (access.mode !== undefined) await chmod(privateName, access.mode);
      await link(privateName, path).catch((err: unknown) => {
        const code = (err as NodeJS.ErrnoException).code;
        throw code === 'EEXIST' ? inUse(path, err as Error) : err;
      });
      // Inside the try: a failure here must not leave the server listening on the private name.
      const { ino, dev } = await lstat(path);
      return { path, remove: () => removeIfSame(path, ino, dev) };
    } catch (err) {
      server.close();
      throw err;
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function inUse(path: string, cause: Error): Error {
  return Object.assign(new Error(`listen EADDRINUSE: address already in use ${path}`, { cause }), {
    code: 'EADDRINUSE',
  });
}

/** Unlinks `path` if it is still the inode made here (not a file another process put there). */
async function removeIfSame(path: string, ino: number, dev: number): Promise<void> {
  const now = await lstat(path).catch(() => undefined);
  if (now?.ino === ino && now.dev === dev) await unlink(path).catch(() => undefined);
}
