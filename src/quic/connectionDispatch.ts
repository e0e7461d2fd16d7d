import { isLongHeader, MAX_CID_LENGTH, readLongHeader } from '../protocol/quicHeader.js';
import type { LongHeader } from '../protocol/quicHeader.js';
import { quicVersionProfile } from '../protocol/quicKeys.js';
import type { QuicRouter } from './QuicRouter.js';
import type { QuicSession } from './QuicSession.js';

/** RFC 9000 7.2: a client's first Destination Connection ID is at least 8 bytes. */
const MIN_FIRST_DCID = 8;

/** What the dispatch needs of a UDP session of a client socket (internal seam). */
export interface ConnectionMember {
  readonly quic: QuicSession | undefined;
  /**
   * Every session of the client socket, one per QUIC connection, oldest first (the array is
   * shared by all of them); undefined while the socket has one session.
   */
  readonly connections: readonly ConnectionMember[] | undefined;
}

/**
 * The session of a client socket (address and port) that a datagram from it belongs to, with
 * `sessionPerConnection`: a long header goes to the session whose connection its DCID names; a
 * short header, when the socket runs several connections, to the session whose connection owns
 * the ID it starts with (the server's SCIDs, learnt from its long headers). Undefined for a new
 * connection: a v1/v2 Initial whose DCID no session of the socket knows. What cannot be told
 * (an unknown short-header ID, another packet type, another version) goes to `first`, the
 * socket's oldest session, where it went before sessions were split by connection.
 *
 * Costs one bit test per short-header datagram of a socket with one session; long headers (the
 * handshake) a header read and a comparison with the sessions' IDs.
 */
export function connectionSession<S extends ConnectionMember>(
  router: QuicRouter,
  first: S,
  msg: Buffer,
): S | undefined {
  const byte = msg[0];
  if (byte === undefined) return first;
  const members = first.connections as readonly S[] | undefined;
  if (!isLongHeader(byte)) {
    if (members === undefined) return first;
    const connection = router.lookup(msg);
    if (connection === undefined) return first;
    return members.find((member) => member.quic?.carries(connection) === true) ?? first;
  }
  const header = readLongHeader(msg, 0, msg.length);
  if (header === undefined) return first;
  const dcid = header.dcid;
  if (members === undefined) {
    if (first.quic?.knows(dcid) === true) return first;
  } else {
    const member = members.find((each) => each.quic?.knows(dcid) === true);
    if (member !== undefined) return member;
  }
  return opensConnection(header) ? undefined : first;
}

/**
 * Whether a long header is the Initial of a new connection: QUIC v1 or v2, Initial type, a DCID
 * a client may open with (8 to 20 bytes; a shorter one can only be an ID the server chose).
 */
function opensConnection(header: LongHeader): boolean {
  const length = header.dcid.length;
  if (length < MIN_FIRST_DCID || length > MAX_CID_LENGTH) return false;
  return quicVersionProfile(header.version)?.initialType === header.typeBits;
}
