/*
 * QUIC-LB plaintext connection IDs (draft-ietf-quic-load-balancers, "Unencrypted CIDs"): the
 * first octet carries 3 config rotation bits and, when the server self-encodes it, the length of
 * the rest of the CID in its low 5 bits; the server ID follows in clear.
 */

/** Config rotation 0b111 marks a CID a load balancer cannot route (draft section 2.3). */
export const QUIC_LB_UNROUTABLE = 7;

/** What the first octet and the following bytes of a plaintext QUIC-LB CID say. */
export interface QuicLbCid {
  readonly configRotation: number;
  /** CID length from the low 5 bits plus one (meaningful when the server self-encodes it). */
  readonly encodedLength: number;
  readonly serverId: Buffer;
}

/** Decodes a connection ID that starts at `at`; undefined when it is too short. */
export function decodeQuicLbCid(
  bytes: Buffer,
  at: number,
  serverIdLength: number,
): QuicLbCid | undefined {
  if (at + 1 + serverIdLength > bytes.length) return undefined;
  const first = bytes[at] ?? 0;
  return {
    configRotation: first >> 5,
    encodedLength: (first & 0x1f) + 1,
    serverId: bytes.subarray(at + 1, at + 1 + serverIdLength),
  };
}
