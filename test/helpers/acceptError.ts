import assert from 'node:assert/strict';

/**
 * Delivers an accept error to a listening `net.Server` the way libuv reports one: the listening
 * handle's `onconnection` with a negative errno (Node then emits 'error' on the server). libuv
 * hides accept EMFILE behind its reserved descriptor, but reports it once that reserve is gone,
 * and reports other accept errors (ENOBUFS, ENOMEM, EPERM) as they come.
 */
export function failAccept(server: object, errno: number): void {
  const handle = (server as { _handle?: { onconnection?: (status: number) => void } })._handle;
  assert.equal(typeof handle?.onconnection, 'function');
  handle!.onconnection!(-errno);
}
