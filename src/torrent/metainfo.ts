/**
 * Torrent metainfo (BEP 3 single- and multi-file, BEP 12 announce-list,
 * BEP 19 url-list, BEP 27 private flag): parse, validate and encode. Pure.
 *
 * Parsing is strict about everything that could hurt a client that trusts
 * the result: piece hashes must match the total length, and no file path may
 * leave the download folder (no "..", no separators inside a component, no
 * empty or absolute components). The infohash is the SHA-1 of the exact
 * bytes of `info` as they appear in the input.
 */
import { createHash } from 'node:crypto';
import { RawBencode, decodeWithSpans, encode, isBytes, isDict, isInt, isList } from '../bencode/index.js';
import type { BDict, BValue } from '../bencode/index.js';
import { BootTorrentError, isBootTorrentError } from '../errors.js';

export interface TorrentFile {
  /** Path components below the torrent's root folder (single-file: `[name]`). */
  readonly path: readonly string[];
  readonly length: number;
  /** Byte offset of this file in the torrent's concatenated data. */
  readonly offset: number;
}

export interface Metainfo {
  readonly infoHash: Buffer;
  readonly infoHashHex: string;
  readonly name: string;
  readonly pieceLength: number;
  /** Concatenated 20-byte SHA-1 hashes, one per piece. */
  readonly pieces: Buffer;
  readonly pieceCount: number;
  readonly length: number;
  /** True when `info` has `length` rather than `files`. */
  readonly singleFile: boolean;
  readonly files: readonly TorrentFile[];
  readonly private: boolean;
  /** Tracker tiers (BEP 12); `announce` alone becomes one tier of one. */
  readonly announce: readonly (readonly string[])[];
  readonly urlList: readonly string[];
  readonly comment?: string;
  readonly createdBy?: string;
  readonly creationDate?: number;
  /** The bencoded `info` dictionary, exactly as hashed. */
  readonly infoBuffer: Buffer;
}

function bad(source: string, field: string, problem: string): never {
  throw new BootTorrentError('BT_ERR_METAINFO', `${source}: ${field} ${problem}`);
}

function text(v: BValue | undefined, source: string, field: string): string {
  if (!isBytes(v)) bad(source, field, 'must be a string');
  return v.toString('utf8');
}

/**
 * A path component that is safe to join below a folder: not empty, not "."
 * or "..", and with no separator or NUL that would let it climb out.
 */
export function checkPathComponent(c: string, source: string, field: string): string {
  if (c === '' || c === '.' || c === '..' || /[/\\\0]/.test(c)) {
    bad(source, field, `has an unsafe path component ${JSON.stringify(c)}`);
  }
  return c;
}

/** SHA-1 of piece `index`'s expected hash, as a 20-byte view. */
export function pieceHash(meta: Metainfo, index: number): Buffer {
  return meta.pieces.subarray(index * 20, index * 20 + 20);
}

/** Length of piece `index`; the last piece may be shorter. */
export function pieceSize(meta: Metainfo, index: number): number {
  return index === meta.pieceCount - 1 ? meta.length - index * meta.pieceLength : meta.pieceLength;
}

function parseTiers(root: BDict, source: string): string[][] {
  const tiers: string[][] = [];
  const list = root.get('announce-list');
  if (list !== undefined) {
    if (!isList(list)) bad(source, 'announce-list', 'must be a list of lists of URLs');
    for (const [i, tier] of list.entries()) {
      if (!isList(tier)) bad(source, `announce-list[${i}]`, 'must be a list of URLs');
      const urls = tier.map((u, j) => text(u, source, `announce-list[${i}][${j}]`)).filter((u) => u !== '');
      if (urls.length > 0) tiers.push(urls);
    }
  }
  const announce = root.get('announce');
  if (announce !== undefined) {
    const url = text(announce, source, 'announce');
    // BEP 12: when announce-list is present, clients use it and ignore announce.
    if (tiers.length === 0 && url !== '') tiers.push([url]);
  }
  return tiers;
}

function parseUrlList(root: BDict, source: string): string[] {
  const v = root.get('url-list');
  if (v === undefined) return [];
  // BEP 19 allows a single string as well as a list.
  if (isBytes(v)) return v.length > 0 ? [v.toString('utf8')] : [];
  if (!isList(v)) bad(source, 'url-list', 'must be a URL or a list of URLs');
  return v.map((u, i) => text(u, source, `url-list[${i}]`));
}

/**
 * Parses and validates a .torrent file. `source` names the file in errors.
 * Throws BT_ERR_METAINFO (or BT_ERR_BENCODE wrapped into it) with the field.
 */
export function parseTorrent(input: Uint8Array, source = 'torrent'): Metainfo {
  let decoded;
  try {
    // Real-world torrents sometimes have unsorted keys; the infohash comes
    // from the raw bytes, so that is harmless.
    decoded = decodeWithSpans(input, { strictKeyOrder: false });
  } catch (err) {
    if (isBootTorrentError(err)) {
      throw new BootTorrentError('BT_ERR_METAINFO', `${source}: not a torrent file (${err.message})`, {
        cause: err,
      });
    }
    throw err;
  }
  const root = decoded.value;
  if (!isDict(root)) bad(source, 'top level', 'must be a dictionary');
  const info = root.get('info');
  const span = decoded.spans.get('info');
  if (!isDict(info) || span === undefined) bad(source, 'info', 'is missing or not a dictionary');
  const buf = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  const infoBuffer = Buffer.from(buf.subarray(span[0], span[1]));
  const infoHash = createHash('sha1').update(infoBuffer).digest();

  const name = checkPathComponent(text(info.get('name'), source, 'info.name'), source, 'info.name');
  const pieceLength = info.get('piece length');
  if (!isInt(pieceLength) || pieceLength <= 0) bad(source, 'info.piece length', 'must be a positive integer');
  const pieces = info.get('pieces');
  if (!isBytes(pieces) || pieces.length % 20 !== 0) {
    bad(source, 'info.pieces', 'must be a string of 20-byte SHA-1 hashes');
  }

  const files: TorrentFile[] = [];
  let length = 0;
  const single = info.get('length');
  const multi = info.get('files');
  if (single !== undefined && multi !== undefined) bad(source, 'info', 'has both length and files');
  if (single !== undefined) {
    if (!isInt(single) || single < 0) bad(source, 'info.length', 'must be a non-negative integer');
    files.push({ path: [name], length: single, offset: 0 });
    length = single;
  } else {
    if (!isList(multi) || multi.length === 0) bad(source, 'info', 'needs length or a non-empty files list');
    const seen = new Set<string>();
    for (const [i, f] of multi.entries()) {
      const field = `info.files[${i}]`;
      if (!isDict(f)) bad(source, field, 'must be a dictionary');
      const len = f.get('length');
      if (!isInt(len) || len < 0) bad(source, `${field}.length`, 'must be a non-negative integer');
      const p = f.get('path');
      if (!isList(p) || p.length === 0) bad(source, `${field}.path`, 'must be a non-empty list');
      const path = p.map((c, j) =>
        checkPathComponent(text(c, source, `${field}.path[${j}]`), source, `${field}.path`),
      );
      const key = path.join('/');
      if (seen.has(key)) bad(source, `${field}.path`, `repeats the file ${JSON.stringify(key)}`);
      seen.add(key);
      files.push({ path, length: len, offset: length });
      length += len;
      if (!Number.isSafeInteger(length)) bad(source, 'info.files', 'total length is too large');
    }
  }
  const pieceCount = pieces.length / 20;
  const expected = Math.ceil(length / pieceLength);
  if (pieceCount !== expected) {
    bad(source, 'info.pieces', `holds ${pieceCount} hashes but ${length} bytes need ${expected}`);
  }
  const priv = info.get('private');
  const date = root.get('creation date');
  return {
    infoHash,
    infoHashHex: infoHash.toString('hex'),
    name,
    pieceLength,
    pieces: Buffer.from(pieces),
    pieceCount,
    length,
    singleFile: single !== undefined,
    files,
    private: priv === 1,
    announce: parseTiers(root, source),
    urlList: parseUrlList(root, source),
    ...(root.has('comment') ? { comment: text(root.get('comment'), source, 'comment') } : {}),
    ...(root.has('created by') ? { createdBy: text(root.get('created by'), source, 'created by') } : {}),
    ...(isInt(date) ? { creationDate: date } : {}),
    infoBuffer,
  };
}

export interface TorrentFields {
  announce?: readonly (readonly string[])[];
  urlList?: readonly string[];
  comment?: string;
  createdBy?: string;
  creationDate?: number;
}

/**
 * Bencodes a complete .torrent around an already-encoded `info` dictionary,
 * so the infohash never changes through a rewrite.
 */
export function encodeTorrent(infoBuffer: Buffer, fields: TorrentFields): Buffer {
  const tiers = (fields.announce ?? []).filter((t) => t.length > 0);
  return encode({
    announce: tiers[0]?.[0],
    // announce-list only when there is more than one URL, as mktorrent does.
    'announce-list': tiers.flat().length > 1 ? tiers.map((t) => [...t]) : undefined,
    comment: fields.comment,
    'created by': fields.createdBy,
    'creation date': fields.creationDate,
    info: new RawBencode(infoBuffer),
    'url-list': fields.urlList && fields.urlList.length > 0 ? [...fields.urlList] : undefined,
  });
}
