import { InvalidOptionError, ProxyProtocolError } from '../errors.js';
import type { ProxyHeader, ProxyInetEndpoint } from './ProxyHeader.js';
import { canonicalIPv6, isStrictIPv4, isStrictIPv6 } from './ipAddress.js';
import { checkPort } from './proxyEndpoint.js';

/**
 * PROXY protocol version 1: one US-ASCII line,
 * `PROXY TCP4 192.0.2.1 192.0.2.11 56324 443\r\n`, at most 107 bytes with the CRLF.
 */

const PREFIX = 'PROXY ';
const PROTOCOLS = ['TCP4', 'TCP6', 'UNKNOWN'] as const;
const PORT = /^(?:0|[1-9][0-9]{0,4})$/;
const PARTIAL_PORT = /^(?:0|[1-9][0-9]{0,4})?$/;
const PARTIAL_IPV4 = /^(?:(?:0|[1-9][0-9]{0,2})\.){0,3}(?:0|[1-9][0-9]{0,2})?$/;
const PARTIAL_IPV6 = /^[0-9A-Fa-f:.]{0,45}$/;

/** True when `text` starts the v1 prefix `PROXY ` (or is a prefix of it). */
export function startsV1(text: string): boolean {
  const n = Math.min(text.length, PREFIX.length);
  return text.slice(0, n) === PREFIX.slice(0, n);
}

/**
 * Checks a v1 line without its CRLF. With `complete` false the line is still arriving: every field
 * seen so far must be valid or a valid beginning (so garbage fails fast); returns undefined.
 * With `complete` true, returns the header. Throws {@link ProxyProtocolError}.
 */
export function parseV1Line(line: string, complete: boolean): ProxyHeader | undefined {
  if (!startsV1(line))
    throw new ProxyProtocolError('bad_signature', 'the line does not start with "PROXY "');
  if (line.length < PREFIX.length) {
    if (complete) throw new ProxyProtocolError('bad_v1_line', 'the line ends inside "PROXY "');
    return undefined;
  }
  const fields = line.slice(PREFIX.length).split(' ');
  const protocol = fields[0] ?? '';
  if (fields.length === 1 && !complete) {
    if (!PROTOCOLS.some((p) => p.startsWith(protocol))) throw badProtocol(protocol);
    return undefined;
  }
  if (protocol === 'UNKNOWN') {
    // The spec: "the receiver must ignore anything presented before the CRLF".
    return complete ? { version: 1, command: 'PROXY', protocol: 'UNKNOWN' } : undefined;
  }
  if (protocol !== 'TCP4' && protocol !== 'TCP6') throw badProtocol(protocol);
  // Defects are reported in the order the bytes show them (fields left to right, then the field
  // count), so the reason is the same whether the line arrives whole or byte by byte.
  const whole = Math.min(complete ? fields.length : fields.length - 1, 5);
  for (let i = 1; i < whole; i++) checkField(protocol, i, fields[i] ?? '');
  if (fields.length > 5) throw new ProxyProtocolError('bad_v1_line', 'more than 6 fields');
  if (!complete) {
    checkPartialField(protocol, fields.length - 1, fields[fields.length - 1] ?? '');
    return undefined;
  }
  if (fields.length !== 5)
    throw new ProxyProtocolError('bad_v1_line', `${fields.length + 1} fields instead of 6`);
  const [, src = '', dst = '', srcPort = '', dstPort = ''] = fields;
  // One address, one text: `0:0::1`, `::FFFF:1.2.3.4` and `::ffff:102:304` are written as the v2
  // decoder writes their bytes (RFC 5952, as HAProxy reports them), so an allow list, a per-client
  // limit or a log sees the same client however its sender spelled it.
  const address = protocol === 'TCP6' ? canonicalIPv6 : (text: string): string => text;
  return {
    version: 1,
    command: 'PROXY',
    protocol,
    source: { address: address(src), port: Number(srcPort) },
    destination: { address: address(dst), port: Number(dstPort) },
  };
}

function badProtocol(protocol: string): ProxyProtocolError {
  return new ProxyProtocolError(
    'bad_family',
    `protocol ${JSON.stringify(protocol.slice(0, 16))} is not TCP4, TCP6 or UNKNOWN`,
  );
}

function checkField(protocol: 'TCP4' | 'TCP6', index: number, field: string): void {
  if (field === '') throw new ProxyProtocolError('bad_v1_line', `field ${index + 1} is empty`);
  if (index <= 2) {
    const ok = protocol === 'TCP4' ? isStrictIPv4(field) : isStrictIPv6(field);
    if (!ok) throw badAddress(protocol, field);
  } else if (!PORT.test(field) || Number(field) > 0xffff) {
    throw badPort(field);
  }
}

function checkPartialField(protocol: 'TCP4' | 'TCP6', index: number, field: string): void {
  if (index <= 2) {
    const ok = (protocol === 'TCP4' ? PARTIAL_IPV4 : PARTIAL_IPV6).test(field);
    if (!ok) throw badAddress(protocol, field);
  } else if (!PARTIAL_PORT.test(field) || Number(field) > 0xffff) {
    throw badPort(field);
  }
}

function badAddress(protocol: string, field: string): ProxyProtocolError {
  return new ProxyProtocolError(
    'bad_address',
    `${JSON.stringify(field.slice(0, 48))} is not a ${protocol === 'TCP4' ? 'strict IPv4' : 'IPv6'} address`,
  );
}

function badPort(field: string): ProxyProtocolError {
  return new ProxyProtocolError(
    'bad_port',
    `${JSON.stringify(field.slice(0, 16))} is not a decimal port 0-65535 without leading zeros`,
  );
}

/** The v1 line of a header. Throws {@link InvalidOptionError} for what v1 cannot carry. */
export function encodeV1(header: ProxyHeader): Buffer {
  if (header.command !== 'PROXY')
    throw new InvalidOptionError('header.command', "'PROXY' (v1 has no LOCAL)", header.command);
  // An empty list is no TLV (a v2 header's list copied over); anything else is a mistake.
  const tlvs: unknown = header.tlvs;
  if (tlvs !== undefined && (!Array.isArray(tlvs) || tlvs.length > 0))
    throw new InvalidOptionError('header.tlvs', 'none (v1 carries no TLVs)', header.tlvs);
  if (header.protocol === 'UNKNOWN') {
    rejectAddresses(header);
    return Buffer.from('PROXY UNKNOWN\r\n', 'latin1');
  }
  if (header.protocol !== 'TCP4' && header.protocol !== 'TCP6')
    throw new InvalidOptionError(
      'header.protocol',
      "'TCP4', 'TCP6' or 'UNKNOWN' for v1",
      header.protocol,
    );
  const src = v1Endpoint(header.protocol, header.source, 'header.source');
  const dst = v1Endpoint(header.protocol, header.destination, 'header.destination');
  return Buffer.from(
    `PROXY ${header.protocol} ${src.address} ${dst.address} ${src.port} ${dst.port}\r\n`,
    'latin1',
  );
}

function rejectAddresses(header: object): void {
  for (const key of ['source', 'destination'] as const)
    if (key in header)
      throw new InvalidOptionError(`header.${key}`, 'absent for UNKNOWN', 'present');
}

function v1Endpoint(protocol: 'TCP4' | 'TCP6', endpoint: unknown, name: string): ProxyInetEndpoint {
  const { address, port } = (endpoint ?? {}) as Partial<ProxyInetEndpoint>;
  const ok =
    typeof address === 'string' &&
    (protocol === 'TCP4' ? isStrictIPv4(address) : isStrictIPv6(address));
  if (!ok)
    throw new InvalidOptionError(
      `${name}.address`,
      `an ${protocol === 'TCP4' ? 'IPv4' : 'IPv6'} address`,
      address,
    );
  return { address, port: checkPort(port, `${name}.port`) };
}
