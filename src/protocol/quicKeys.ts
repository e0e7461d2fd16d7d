import { createCipheriv, createDecipheriv, createHmac } from 'node:crypto';
import type { Cipher } from 'node:crypto';

/** QUIC version 1 (RFC 9000). */
export const QUIC_V1 = 0x00000001;
/** QUIC version 2 (RFC 9369). */
export const QUIC_V2 = 0x6b3343cf;

/** What differs between the QUIC versions whose Initial packets l4proxy can read. */
export interface QuicVersionProfile {
  readonly version: number;
  /** RFC 9001 5.2 / RFC 9369 3.3.1: the salt of HKDF-Extract over the client's DCID. */
  readonly salt: Buffer;
  /** HKDF labels of the packet protection key, IV and header protection key. */
  readonly keyLabel: string;
  readonly ivLabel: string;
  readonly hpLabel: string;
  /** Long-header packet type bits (RFC 9369 3.2 rotates them). */
  readonly initialType: number;
  readonly retryType: number;
}

const V1: QuicVersionProfile = {
  version: QUIC_V1,
  salt: Buffer.from('38762cf7f55934b34d179ae6a4c80cadccbb7f0a', 'hex'),
  keyLabel: 'quic key',
  ivLabel: 'quic iv',
  hpLabel: 'quic hp',
  initialType: 0,
  retryType: 3,
};

const V2: QuicVersionProfile = {
  version: QUIC_V2,
  salt: Buffer.from('0dede3def700a6db819381be6e269dcbf9bd2ed9', 'hex'),
  keyLabel: 'quicv2 key',
  ivLabel: 'quicv2 iv',
  hpLabel: 'quicv2 hp',
  initialType: 1,
  retryType: 0,
};

/** The profile of a version l4proxy can decrypt, or undefined (other versions pass unread). */
export function quicVersionProfile(version: number): QuicVersionProfile | undefined {
  if (version === QUIC_V1) return V1;
  if (version === QUIC_V2) return V2;
  return undefined;
}

/** The keys that protect a client's Initial packets (RFC 9001 5.2). */
export interface InitialKeys {
  readonly key: Buffer;
  readonly iv: Buffer;
  readonly hp: Buffer;
}

/**
 * HKDF-Expand-Label of TLS 1.3 (RFC 8446 7.1) with an empty context, for outputs of at most one
 * SHA-256 block (every QUIC Initial secret and key is): HMAC(secret, HkdfLabel || 0x01).
 */
export function hkdfExpandLabel(secret: Buffer, label: string, length: number): Buffer {
  const full = 'tls13 ' + label;
  const info = Buffer.alloc(2 + 1 + full.length + 1 + 1);
  info.writeUInt16BE(length, 0);
  info[2] = full.length;
  info.write(full, 3, 'latin1');
  info[3 + full.length] = 0; // empty context
  info[4 + full.length] = 1; // the HKDF-Expand block counter
  return createHmac('sha256', secret).update(info).digest().subarray(0, length);
}

/** HKDF-Extract (RFC 5869): HMAC(salt, ikm). */
export function hkdfExtract(salt: Buffer, ikm: Uint8Array): Buffer {
  return createHmac('sha256', salt).update(ikm).digest();
}

/** The client's Initial secret for a Destination Connection ID (RFC 9001 5.2). */
export function clientInitialSecret(profile: QuicVersionProfile, dcid: Uint8Array): Buffer {
  return hkdfExpandLabel(hkdfExtract(profile.salt, dcid), 'client in', 32);
}

/** Derives the client Initial key, IV and header protection key from a Destination Connection ID. */
export function deriveClientInitialKeys(
  profile: QuicVersionProfile,
  dcid: Uint8Array,
): InitialKeys {
  const secret = clientInitialSecret(profile, dcid);
  return {
    key: hkdfExpandLabel(secret, profile.keyLabel, 16),
    iv: hkdfExpandLabel(secret, profile.ivLabel, 12),
    hp: hkdfExpandLabel(secret, profile.hpLabel, 16),
  };
}

/** The 5-byte header protection mask: AES-128-ECB of the 16-byte sample (RFC 9001 5.4.3). */
export function headerProtectionMask(hp: Buffer, sample: Uint8Array): Buffer {
  const ecb: Cipher = createCipheriv('aes-128-ecb', hp, null);
  ecb.setAutoPadding(false);
  return ecb.update(sample).subarray(0, 5);
}

/** The AEAD nonce: the IV XOR the packet number, right-aligned (RFC 9001 5.3). */
export function packetNonce(iv: Buffer, packetNumber: number): Buffer {
  const nonce = Buffer.from(iv);
  let pn = packetNumber;
  for (let i = 11; i >= 4 && pn > 0; i--) {
    nonce[i] = (nonce[i] ?? 0) ^ (pn & 0xff);
    pn = Math.floor(pn / 256);
  }
  return nonce;
}

/**
 * Opens an AES-128-GCM payload; returns undefined when authentication fails (wrong keys, a
 * corrupted or forged packet).
 */
export function openPayload(
  keys: InitialKeys,
  packetNumber: number,
  aad: Uint8Array,
  sealed: Uint8Array,
): Buffer | undefined {
  if (sealed.length < 16) return undefined;
  const decipher = createDecipheriv('aes-128-gcm', keys.key, packetNonce(keys.iv, packetNumber));
  decipher.setAAD(aad);
  decipher.setAuthTag(sealed.subarray(sealed.length - 16));
  try {
    const head = decipher.update(sealed.subarray(0, sealed.length - 16));
    const tail = decipher.final();
    return tail.length === 0 ? head : Buffer.concat([head, tail]);
  } catch {
    return undefined;
  }
}

/** Seals a payload (used by tests and the benchmark to build Initial packets). */
export function sealPayload(
  keys: InitialKeys,
  packetNumber: number,
  aad: Uint8Array,
  plain: Uint8Array,
): Buffer {
  const cipher = createCipheriv('aes-128-gcm', keys.key, packetNonce(keys.iv, packetNumber));
  cipher.setAAD(aad);
  const body = Buffer.concat([cipher.update(plain), cipher.final()]);
  return Buffer.concat([body, cipher.getAuthTag()]);
}
