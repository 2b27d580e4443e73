/**
 * Bencode (BEP 3), strict and bounded. Pure: bytes in, values out.
 *
 * Decoded byte strings are Buffers that share memory with the input (no copy);
 * dictionaries are Maps keyed by the raw key bytes read as latin1, so a decode
 * and re-encode round-trips byte for byte. Integers are JavaScript numbers and
 * must be safe integers: every integer in metainfo and tracker replies (sizes,
 * counts, dates) fits, and a larger one is a sign of a hostile input.
 */
import { BootTorrentError } from '../errors.js';

export type BValue = Buffer | number | BValue[] | BDict;
export type BDict = Map<string, BValue>;

/**
 * Already-bencoded bytes to embed verbatim, e.g. a torrent's `info`
 * dictionary, whose exact bytes define the infohash.
 */
export class RawBencode {
  constructor(readonly bytes: Uint8Array) {}
}

/** What encode() accepts: decoded values plus convenient JS forms. */
export type BEncodable =
  | RawBencode
  | Uint8Array
  | string
  | number
  | bigint
  | readonly BEncodable[]
  | ReadonlyMap<string, BEncodable>
  | { readonly [key: string]: BEncodable | undefined };

export interface DecodeOptions {
  /** Deepest nesting of lists and dicts accepted (default 64). */
  maxDepth?: number;
  /**
   * Refuse dictionaries whose keys are not sorted (default true). Duplicate
   * keys, leading zeros, `-0` and trailing bytes are refused in any mode.
   */
  strictKeyOrder?: boolean;
}

const DEFAULT_MAX_DEPTH = 64;
const C_i = 0x69;
const C_l = 0x6c;
const C_d = 0x64;
const C_e = 0x65;
const C_colon = 0x3a;
const C_minus = 0x2d;
const C_0 = 0x30;
const C_9 = 0x39;

function fail(pos: number, what: string): never {
  throw new BootTorrentError('BT_ERR_BENCODE', `invalid bencode at byte ${pos}: ${what}`);
}

class Parser {
  pos = 0;
  /** Byte ranges of the values of the top-level dictionary, by key. */
  readonly topSpans = new Map<string, [number, number]>();

  constructor(
    private readonly buf: Buffer,
    private readonly maxDepth: number,
    private readonly strictKeyOrder: boolean,
  ) {}

  value(depth: number): BValue {
    const buf = this.buf;
    if (this.pos >= buf.length) fail(this.pos, 'unexpected end of input');
    const c = buf[this.pos]!;
    if (c === C_i) return this.integer();
    if (c >= C_0 && c <= C_9) return this.bytes();
    if (c === C_l || c === C_d) {
      if (depth >= this.maxDepth) fail(this.pos, `nesting deeper than ${this.maxDepth}`);
      return c === C_l ? this.list(depth + 1) : this.dict(depth + 1);
    }
    fail(this.pos, `unexpected byte 0x${c.toString(16).padStart(2, '0')}`);
  }

  /** Reads decimal digits up to `end`, refusing leading zeros and empties. */
  private digits(start: number, end: number, what: string): number {
    if (end === start) fail(start, `empty ${what}`);
    if (this.buf[start] === C_0 && end - start > 1) fail(start, `leading zero in ${what}`);
    if (end - start > 16) fail(start, `${what} too large`);
    let n = 0;
    for (let i = start; i < end; i++) {
      const d = this.buf[i]!;
      if (d < C_0 || d > C_9) fail(i, `non-digit in ${what}`);
      n = n * 10 + (d - C_0);
    }
    if (!Number.isSafeInteger(n)) fail(start, `${what} too large`);
    return n;
  }

  private integer(): number {
    const start = this.pos + 1;
    const end = this.buf.indexOf(C_e, start);
    if (end < 0) fail(this.pos, 'unterminated integer');
    let n: number;
    if (this.buf[start] === C_minus) {
      n = -this.digits(start + 1, end, 'integer');
      if (n === 0) fail(start, 'negative zero');
    } else {
      n = this.digits(start, end, 'integer');
    }
    this.pos = end + 1;
    return n;
  }

  private bytes(): Buffer {
    const colon = this.buf.indexOf(C_colon, this.pos);
    if (colon < 0 || colon - this.pos > 16) fail(this.pos, 'malformed string length');
    const len = this.digits(this.pos, colon, 'string length');
    const start = colon + 1;
    // Checked before slicing: a huge declared length must not allocate.
    if (len > this.buf.length - start) fail(this.pos, `string of ${len} bytes runs past the end of input`);
    this.pos = start + len;
    return this.buf.subarray(start, start + len);
  }

  private list(depth: number): BValue[] {
    this.pos++;
    const out: BValue[] = [];
    for (;;) {
      if (this.pos >= this.buf.length) fail(this.pos, 'unterminated list');
      if (this.buf[this.pos] === C_e) break;
      out.push(this.value(depth));
    }
    this.pos++;
    return out;
  }

  private dict(depth: number): BDict {
    const top = depth === 1;
    this.pos++;
    const out: BDict = new Map();
    let prev: Buffer | undefined;
    for (;;) {
      if (this.pos >= this.buf.length) fail(this.pos, 'unterminated dictionary');
      if (this.buf[this.pos] === C_e) break;
      const c = this.buf[this.pos]!;
      if (c < C_0 || c > C_9) fail(this.pos, 'dictionary key is not a string');
      const keyPos = this.pos;
      const keyBytes = this.bytes();
      const key = keyBytes.toString('latin1');
      if (out.has(key)) fail(keyPos, `duplicate dictionary key "${key}"`);
      if (this.strictKeyOrder && prev !== undefined && Buffer.compare(prev, keyBytes) > 0) {
        fail(keyPos, `dictionary key "${key}" out of order`);
      }
      prev = keyBytes;
      const valueStart = this.pos;
      out.set(key, this.value(depth));
      if (top) this.topSpans.set(key, [valueStart, this.pos]);
    }
    this.pos++;
    return out;
  }
}

function toBuffer(input: Uint8Array): Buffer {
  return Buffer.isBuffer(input) ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
}

/** Decodes exactly one bencoded value; anything malformed throws BT_ERR_BENCODE. */
export function decode(input: Uint8Array, options: DecodeOptions = {}): BValue {
  return decodeWithSpans(input, options).value;
}

/**
 * Decodes one value and also returns, when it is a dictionary, the byte range
 * of each top-level value. The infohash is the SHA-1 of the `info` value's
 * exact bytes, so it must come from the input, not from a re-encoding.
 */
export function decodeWithSpans(
  input: Uint8Array,
  options: DecodeOptions = {},
): { value: BValue; spans: ReadonlyMap<string, readonly [number, number]> } {
  const buf = toBuffer(input);
  const p = new Parser(buf, options.maxDepth ?? DEFAULT_MAX_DEPTH, options.strictKeyOrder ?? true);
  const value = p.value(0);
  if (p.pos !== buf.length) fail(p.pos, `${buf.length - p.pos} trailing bytes after the value`);
  return { value, spans: p.topSpans };
}

/**
 * Decodes one value at the start of `input` and says how many bytes it
 * took; what follows is left to the caller (BEP 9 data messages carry raw
 * bytes after a bencoded dictionary).
 */
export function decodePrefix(
  input: Uint8Array,
  options: DecodeOptions = {},
): { value: BValue; length: number } {
  const buf = toBuffer(input);
  const p = new Parser(buf, options.maxDepth ?? DEFAULT_MAX_DEPTH, options.strictKeyOrder ?? true);
  const value = p.value(0);
  return { value, length: p.pos };
}

class Encoder {
  private readonly chunks: Buffer[] = [];

  value(v: BEncodable, depth: number): void {
    if (depth > DEFAULT_MAX_DEPTH) throw new TypeError('bencode: value nested too deeply (cycle?)');
    if (typeof v === 'number' || typeof v === 'bigint') {
      if (typeof v === 'number' && !Number.isSafeInteger(v)) {
        throw new TypeError(`bencode: ${v} is not a safe integer`);
      }
      this.chunks.push(Buffer.from(`i${v}e`, 'latin1'));
    } else if (v instanceof RawBencode) {
      this.chunks.push(toBuffer(v.bytes));
    } else if (typeof v === 'string') {
      const b = Buffer.from(v, 'utf8');
      this.chunks.push(Buffer.from(`${b.length}:`, 'latin1'), b);
    } else if (v instanceof Uint8Array) {
      this.chunks.push(Buffer.from(`${v.length}:`, 'latin1'), toBuffer(v));
    } else if (Array.isArray(v)) {
      this.chunks.push(Buffer.from('l'));
      for (const item of v as readonly BEncodable[]) this.value(item, depth + 1);
      this.chunks.push(Buffer.from('e'));
    } else {
      const entries: [string, BEncodable][] = [];
      if (v instanceof Map) {
        for (const [k, item] of v as ReadonlyMap<string, BEncodable>) entries.push([k, item]);
      } else {
        for (const [k, item] of Object.entries(v as { readonly [key: string]: BEncodable | undefined })) {
          if (item !== undefined) entries.push([k, item]);
        }
      }
      // Keys sort as raw byte strings (BEP 3); Map keys are latin1 already,
      // object keys are text and become UTF-8.
      const keyed = entries.map(([k, item]): [Buffer, BEncodable] => [
        Buffer.from(k, v instanceof Map ? 'latin1' : 'utf8'),
        item,
      ]);
      keyed.sort((a, b) => Buffer.compare(a[0], b[0]));
      this.chunks.push(Buffer.from('d'));
      for (const [k, item] of keyed) {
        this.chunks.push(Buffer.from(`${k.length}:`, 'latin1'), k);
        this.value(item, depth + 1);
      }
      this.chunks.push(Buffer.from('e'));
    }
  }

  result(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

/** Encodes a value; dictionary keys are sorted, strings become UTF-8. */
export function encode(value: BEncodable): Buffer {
  const e = new Encoder();
  e.value(value, 0);
  return e.result();
}

/** Type guards used by the readers of decoded structures. */
export function isDict(v: BValue | undefined): v is BDict {
  return v instanceof Map;
}
export function isBytes(v: BValue | undefined): v is Buffer {
  return Buffer.isBuffer(v);
}
export function isInt(v: BValue | undefined): v is number {
  return typeof v === 'number';
}
export function isList(v: BValue | undefined): v is BValue[] {
  return Array.isArray(v);
}
