import { X509Certificate } from 'node:crypto';
import type { SecureContext } from 'node:tls';
import { describeCertificate } from './certificateInfo.js';
import type { TlsCertificateInfo } from './certificateInfo.js';
import type { PemInput } from './pem.js';
import { setRecent } from '../internal/recentMap.js';

/** Server names whose `sniCallback` certificate is remembered; the least recently served go first. */
export const SNI_SERVED_NAMES = 100;

/** What the callback answered for one name: its certificate (or context), and that described. */
interface Served {
  /** The `cert` (or the SecureContext) answered: the same one again is not described again. */
  readonly answer: unknown;
  readonly info: TlsCertificateInfo | undefined;
}

/**
 * The certificates an `sniCallback` served, by the server name it served each for, as
 * `certificates()` lists them (`source: "<option>.sniCallback"`). Recorded when the callback
 * answers (nothing for a proxy without one); bounded to {@link SNI_SERVED_NAMES} names, so a
 * callback minting a certificate per name cannot grow memory. A renewed certificate for a name
 * replaces the one served before, and a name answered with the default forgets it.
 */
export class SniServedCertificates {
  private readonly byName = new Map<string, Served>();

  constructor(private readonly source: string) {}

  /** Records what the callback answered for `serverName` (`cert` or a context; undefined: the default). */
  record(serverName: string, cert: PemInput | undefined, context: SecureContext | undefined): void {
    const name = serverName.toLowerCase();
    const answer = cert ?? context;
    if (answer === undefined) {
      this.byName.delete(name);
      return;
    }
    const known = this.byName.get(name);
    if (known?.answer === answer) {
      setRecent(this.byName, name, known, SNI_SERVED_NAMES);
      return;
    }
    const info =
      cert !== undefined
        ? describeCertificate(cert, 'server', this.source)
        : describeContext(context, this.source);
    setRecent(this.byName, name, { answer, info }, SNI_SERVED_NAMES);
  }

  /** Each distinct certificate served (by issuer and serial), with the names it was served for. */
  list(): TlsCertificateInfo[] {
    const distinct = new Map<string, { info: TlsCertificateInfo; names: string[] }>();
    for (const [name, { info }] of this.byName) {
      if (info === undefined) continue;
      const key = `${info.issuer}\n${info.serialNumber}`;
      const seen = distinct.get(key);
      if (seen === undefined) distinct.set(key, { info, names: [name] });
      else seen.names.push(name);
    }
    return [...distinct.values()].map(({ info, names }) => ({ ...info, serverNames: names }));
  }
}

/**
 * A SecureContext's certificate, described through the native context's `getCertificate()` (the
 * DER of the certificate it serves; not public API, so its absence describes nothing).
 */
function describeContext(
  context: SecureContext | undefined,
  source: string,
): TlsCertificateInfo | undefined {
  const native = (context as { context?: { getCertificate?: () => unknown } } | undefined)?.context;
  try {
    const der = native?.getCertificate?.();
    if (!Buffer.isBuffer(der)) return undefined;
    return describeCertificate(new X509Certificate(der).toString(), 'server', source);
  } catch {
    return undefined;
  }
}
