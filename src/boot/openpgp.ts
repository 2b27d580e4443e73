/**
 * OpenPGP (RFC 4880) as GRUB's `pgp` module reads it: an RSA public key
 * and detached binary signatures (SHA-256, PKCS#1 v1.5), written here from
 * a Node KeyObject so the server needs no gpg.
 *
 * Why: a GRUB built with `grub-mkimage --pubkey` runs with
 * `check_signatures=enforce` and refuses any file it opens over the network
 * without a valid `<file>.sig` by that key, checking the very bytes it then
 * loads. So a phase 1 that GRUB loads may come from a peer: a peer can
 * serve a wrong file, but GRUB will not run it. Debian's iPXE checks
 * nothing (bench/results/phase1-boot.md).
 *
 * What GRUB 2.06 needs (grub-core/commands/pgp.c): a v4 key packet (tag 6)
 * with algorithm 1 (RSA), whose SHA-1 fingerprint's last 8 bytes are the
 * key id; a v4 signature packet (tag 2) of type 0x00 (binary document),
 * whose *unhashed* subpackets carry the issuer key id (subpacket 16).
 * The key file also carries a user id and its self-signature so that gpg
 * imports it (the tests check every signature with gpg as well).
 */
import { createHash, createPublicKey, createSign, type KeyObject } from 'node:crypto';
import { createReadStream } from 'node:fs';

const TAG_SIGNATURE = 2;
const TAG_PUBLIC_KEY = 6;
const TAG_USER_ID = 13;
const ALGO_RSA = 1;
const HASH_SHA256 = 8;
const SIG_BINARY = 0x00;
const SIG_POSITIVE_CERTIFICATION = 0x13;
const SUB_CREATION_TIME = 2;
const SUB_KEY_FLAGS = 27;
const SUB_ISSUER = 16;
const SUB_ISSUER_FINGERPRINT = 33;

/** An RSA key ready to sign for GRUB. */
export interface PgpKey {
  readonly privateKey: KeyObject;
  /** Seconds since 1970: part of the key packet, hence of its fingerprint. */
  readonly created: number;
  /** The public key packet's body (version 4). */
  readonly keyBody: Buffer;
  /** SHA-1 fingerprint (20 bytes); the key id is its last 8. */
  readonly fingerprint: Buffer;
  readonly keyId: Buffer;
}

/** A packet with an old-format header: tag and length type in one byte, then a one-, two- or four-byte length. */
function packet(tag: number, body: Buffer): Buffer {
  // Old-format headers (RFC 4880 4.2.1), as gpg writes keys and
  // signatures: GRUB 2.06 reads a new-format two-octet length without its
  // +192 and refuses such a key as "bad signature".
  if (tag > 15) throw new Error(`OpenPGP packet tag ${tag} needs a new-format header`);
  const n = body.length;
  let head: Buffer;
  if (n < 0x100) head = Buffer.from([0x80 | (tag << 2), n]);
  else if (n < 0x10000) head = Buffer.from([0x80 | (tag << 2) | 1, n >> 8, n & 0xff]);
  else {
    head = Buffer.alloc(5);
    head[0] = 0x80 | (tag << 2) | 2;
    head.writeUInt32BE(n, 1);
  }
  return Buffer.concat([head, body]);
}

/** A multiprecision integer: its length in bits (2 bytes), then its bytes without leading zeros. */
function mpi(bytes: Buffer): Buffer {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  const v = bytes.subarray(i);
  const bits = v[0] === 0 ? 0 : (v.length - 1) * 8 + (32 - Math.clz32(v[0]!));
  const head = Buffer.alloc(2);
  head.writeUInt16BE(bits);
  return Buffer.concat([head, v]);
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

function subpacket(type: number, data: Buffer): Buffer {
  // Every subpacket here is short: a one-byte length (type included).
  return Buffer.concat([Buffer.from([data.length + 1, type]), data]);
}

/**
 * The key GRUB will trust: `privateKey` must be RSA (GRUB knows RSA and
 * DSA only), of at least 2048 bits. `created` (seconds) fixes the
 * fingerprint: keep it with the key.
 */
export function pgpKey(privateKey: KeyObject, created: number): PgpKey {
  if (privateKey.asymmetricKeyType !== 'rsa')
    throw new Error(
      `the phase-1 signing key must be RSA (GRUB knows no other); this one is ${privateKey.asymmetricKeyType}`,
    );
  const bits = privateKey.asymmetricKeyDetails?.modulusLength ?? 0;
  if (bits < 2048) throw new Error(`the phase-1 signing key has ${bits} bits; use at least 2048`);
  const jwk = createPublicKey(privateKey).export({ format: 'jwk' });
  const n = Buffer.from(jwk.n!, 'base64url');
  const e = Buffer.from(jwk.e!, 'base64url');
  const keyBody = Buffer.concat([Buffer.from([4]), u32(created), Buffer.from([ALGO_RSA]), mpi(n), mpi(e)]);
  const head = Buffer.alloc(3);
  head[0] = 0x99;
  head.writeUInt16BE(keyBody.length, 1);
  const fingerprint = createHash('sha1').update(head).update(keyBody).digest();
  return { privateKey, created, keyBody, fingerprint, keyId: fingerprint.subarray(12) };
}

/** What a signature is computed over, fed to the RSA signer and to SHA-256 (for its first two bytes) alike. */
class SignedData {
  readonly signer = createSign('sha256');
  readonly hash = createHash('sha256');
  update(b: Buffer): this {
    this.signer.update(b);
    this.hash.update(b);
    return this;
  }
}

/**
 * A v4 signature of `sigType` whose signed data is already in `data`; its
 * own fields (version to hashed subpackets, then the trailer) follow it.
 */
function signature(
  key: PgpKey,
  sigType: number,
  created: number,
  data: SignedData,
  extraHashed: Buffer[] = [],
): Buffer {
  const hashedSubs = Buffer.concat([
    subpacket(SUB_CREATION_TIME, u32(created)),
    subpacket(SUB_ISSUER_FINGERPRINT, Buffer.concat([Buffer.from([4]), key.fingerprint])),
    ...extraHashed,
  ]);
  const hashedLen = Buffer.alloc(2);
  hashedLen.writeUInt16BE(hashedSubs.length);
  const hashedPart = Buffer.concat([Buffer.from([4, sigType, ALGO_RSA, HASH_SHA256]), hashedLen, hashedSubs]);
  data.update(hashedPart).update(Buffer.concat([Buffer.from([4, 0xff]), u32(hashedPart.length)]));
  const value = data.signer.sign(key.privateKey); // RSASSA-PKCS1-v1_5 over SHA-256
  // GRUB looks for the issuer's key id among the unhashed subpackets only.
  const unhashed = subpacket(SUB_ISSUER, key.keyId);
  const unhashedLen = Buffer.alloc(2);
  unhashedLen.writeUInt16BE(unhashed.length);
  const body = Buffer.concat([
    hashedPart,
    unhashedLen,
    unhashed,
    data.hash.digest().subarray(0, 2),
    mpi(value),
  ]);
  return packet(TAG_SIGNATURE, body);
}

/**
 * The public key file for `grub-mkimage --pubkey` (and `gpg --import`):
 * the key, a user id naming it, and the key's signature over both.
 */
export function pgpPublicKeyFile(key: PgpKey, userId: string): Buffer {
  const uid = Buffer.from(userId, 'utf8');
  const keyHead = Buffer.alloc(3);
  keyHead[0] = 0x99;
  keyHead.writeUInt16BE(key.keyBody.length, 1);
  const signed = new SignedData()
    .update(keyHead)
    .update(key.keyBody)
    .update(Buffer.concat([Buffer.from([0xb4]), u32(uid.length)]))
    .update(uid);
  // Key flags: certify and sign.
  const self = signature(key, SIG_POSITIVE_CERTIFICATION, key.created, signed, [
    subpacket(SUB_KEY_FLAGS, Buffer.from([0x03])),
  ]);
  return Buffer.concat([packet(TAG_PUBLIC_KEY, key.keyBody), packet(TAG_USER_ID, uid), self]);
}

const now = () => Math.floor(Date.now() / 1000);

/** A detached signature (`<file>.sig`) of `data`. */
export function pgpSign(key: PgpKey, data: Buffer, created = now()): Buffer {
  return signature(key, SIG_BINARY, created, new SignedData().update(data));
}

/** A detached signature of the file at `path`, read as a stream (phase-1 files are tens of MB). */
export async function pgpSignFile(key: PgpKey, path: string, created = now()): Promise<Buffer> {
  const signed = new SignedData();
  for await (const chunk of createReadStream(path)) signed.update(chunk as Buffer);
  return signature(key, SIG_BINARY, created, signed);
}
