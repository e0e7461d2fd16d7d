/**
 * The 'error' listener of a socket whose errors are reported elsewhere or carry nothing worth
 * reporting: a socket being handed over, one under a TLS socket (its failures surface there), a
 * refused client's. Node throws an 'error' nobody listens to, so such a socket must keep one.
 */
export function ignoreError(): void {
  // Deliberately empty: where the error matters, another listener reports it.
}
