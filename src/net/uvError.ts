import { getSystemErrorName } from 'node:util';

/** A system error as Node builds it (`connect ECONNREFUSED 127.0.0.1:9`, `code`, `errno`). */
export function uvError(errno: number, syscall: string, host?: string, port?: number): Error {
  let code: string;
  try {
    code = getSystemErrorName(errno);
  } catch {
    code = `E${String(-errno)}`;
  }
  const where = host === undefined ? '' : ` ${host}:${String(port)}`;
  const error = new Error(`${syscall} ${code}${where}`) as NodeJS.ErrnoException & {
    address?: string;
    port?: number;
  };
  error.errno = errno;
  error.code = code;
  error.syscall = syscall;
  if (host !== undefined) {
    error.address = host;
    if (port !== undefined) error.port = port;
  }
  return error;
}
