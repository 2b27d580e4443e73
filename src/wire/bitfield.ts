/**
 * A compact set of piece indices, one bit per piece, laid out exactly like the
 * BEP 3 `bitfield` message: the high bit of byte 0 is piece 0. Pure.
 */
import { BootTorrentError } from '../errors.js';

/** Set bits in each byte value, so count() costs one lookup per byte. */
const POPCOUNT = new Uint8Array(256);
for (let i = 1; i < 256; i++) POPCOUNT[i] = (i & 1) + POPCOUNT[i >> 1]!;

function popcount(bytes: Uint8Array): number {
  let n = 0;
  for (const b of bytes) n += POPCOUNT[b]!;
  return n;
}

export class Bitfield {
  /** Number of pieces the field describes. */
  readonly length: number;
  private readonly bytes: Uint8Array;
  private setCount: number;

  /** An empty field for `length` pieces. */
  constructor(length: number) {
    if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`invalid piece count ${length}`);
    this.length = length;
    this.bytes = new Uint8Array(Math.ceil(length / 8));
    this.setCount = 0;
  }

  /** A field with every piece set (a seeder's, or BEP 6 `have all`). */
  static full(length: number): Bitfield {
    const bf = new Bitfield(length);
    bf.bytes.fill(0xff);
    const spare = bf.bytes.length * 8 - length;
    // BEP 3: spare bits at the end are cleared.
    if (spare > 0) bf.bytes[bf.bytes.length - 1] = (0xff << spare) & 0xff;
    bf.setCount = length;
    return bf;
  }

  /**
   * Parses the payload of a BEP 3 `bitfield` message for a torrent of
   * `pieceCount` pieces. BEP 3 says a bitfield of the wrong length or with
   * spare bits set should drop the connection, hence the protocol error.
   */
  static fromBytes(bytes: Uint8Array, pieceCount: number): Bitfield {
    const bf = new Bitfield(pieceCount);
    if (bytes.length !== bf.bytes.length) {
      throw new BootTorrentError(
        'BT_ERR_WIRE_PROTOCOL',
        `bitfield of ${bytes.length} bytes, expected ${bf.bytes.length} for ${pieceCount} pieces`,
      );
    }
    const spare = bf.bytes.length * 8 - pieceCount;
    if (spare > 0 && (bytes[bytes.length - 1]! & ((1 << spare) - 1)) !== 0) {
      throw new BootTorrentError('BT_ERR_WIRE_PROTOCOL', 'bitfield has spare bits set past the last piece');
    }
    bf.bytes.set(bytes);
    bf.setCount = popcount(bf.bytes);
    return bf;
  }

  private check(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.length) {
      throw new RangeError(`piece index ${index} out of range 0..${this.length - 1}`);
    }
  }

  get(index: number): boolean {
    this.check(index);
    return (this.bytes[index >> 3]! & (0x80 >> (index & 7))) !== 0;
  }

  set(index: number, value = true): void {
    this.check(index);
    const mask = 0x80 >> (index & 7);
    const byte = this.bytes[index >> 3]!;
    const was = (byte & mask) !== 0;
    if (was === value) return;
    this.bytes[index >> 3] = value ? byte | mask : byte & ~mask;
    this.setCount += value ? 1 : -1;
  }

  /**
   * Sets every piece `other` has (same length) and returns the indices that
   * were not set before. Costs a byte compare per 8 pieces plus the new
   * ones, so a peer repeating a bitfield costs no bit-by-bit scan.
   */
  addFrom(other: Bitfield): number[] {
    if (other.length !== this.length)
      throw new RangeError(`bitfield of ${other.length} pieces, expected ${this.length}`);
    const added: number[] = [];
    for (let i = 0; i < this.bytes.length; i++) {
      const fresh = other.bytes[i]! & ~this.bytes[i]!;
      if (fresh === 0) continue;
      this.bytes[i] = this.bytes[i]! | fresh;
      for (let bit = 0; bit < 8; bit++) if (fresh & (0x80 >> bit)) added.push(i * 8 + bit);
    }
    this.setCount += added.length;
    return added;
  }

  /** Number of pieces set. O(1): kept up to date by set(). */
  count(): number {
    return this.setCount;
  }

  hasAll(): boolean {
    return this.setCount === this.length;
  }

  hasNone(): boolean {
    return this.setCount === 0;
  }

  /** The BEP 3 `bitfield` payload (a copy; spare bits are always zero). */
  toBytes(): Buffer {
    return Buffer.from(this.bytes);
  }

  /** Indices of the set pieces, ascending. */
  *indices(): IterableIterator<number> {
    for (let i = 0; i < this.bytes.length; i++) {
      const b = this.bytes[i]!;
      if (b === 0) continue;
      for (let j = 0; j < 8; j++) if (b & (0x80 >> j)) yield i * 8 + j;
    }
  }
}
