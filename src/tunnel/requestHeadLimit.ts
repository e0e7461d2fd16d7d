/**
 * The largest request head a TunnelServer reads, the same on both protocols: Node's HTTP/1.1
 * parser answers 431 beyond it (`maxHeaderSize`, counted on the head's bytes), and an HTTP/2
 * request whose header list is larger is answered 431 too (nghttpx answers its HTTP/2 clients so).
 * Without the check a stream carried about 60 KB of headers (up to nghttp2's 64 KiB HPACK field
 * bound) where HTTP/1.1 stopped at 16 KiB. It is not advertised as `SETTINGS_MAX_HEADER_LIST_SIZE`:
 * with that setting Node resets an HPACK bomb's streams one by one instead of ending its session
 * (`h2_session_errors_total`, test/tunnel/h2ProtocolFloods); nghttpx and Envoy do not advertise it
 * either (the setting is advisory). A session's 10th request over it closes the session
 * (`h2_header_floods_total`).
 */
export const MAX_REQUEST_HEAD = 16_384;

/**
 * RFC 9113 §6.5.2's size of a header list: each field's name and value octets plus 32. `raw` is
 * Node's flat `[name, value, ...]` list (pseudo-headers and repeated fields included), where the
 * headers object folds repeated fields.
 */
export function headerListSize(raw: readonly unknown[]): number {
  let size = 0;
  for (const item of raw) if (typeof item === 'string') size += Buffer.byteLength(item);
  return size + 16 * raw.length;
}
