/**
 * BEP 9 ut_metadata messages (pure): peers send each other the torrent's
 * info dictionary in 16 KiB pieces, so a magnet link (infohash only) is
 * enough to join a swarm. A message is a bencoded dictionary; a `data`
 * message has the piece's raw bytes after it.
 */
import { BootTorrentError } from '../errors.js';
import { decodePrefix, encode, isDict, isInt } from '../bencode/index.js';

export const METADATA_PIECE_SIZE = 16 * 1024;
/** Largest info dictionary we fetch (BEP 9 sets no limit; a huge one is an attack). */
export const MAX_METADATA_SIZE = 8 * 1024 * 1024;

export type MetadataMessage =
  | { type: 'request'; piece: number }
  | { type: 'data'; piece: number; totalSize: number; data: Buffer }
  | { type: 'reject'; piece: number };

const TYPE_CODE = { request: 0, data: 1, reject: 2 } as const;

export function encodeMetadataMessage(m: MetadataMessage): Buffer {
  if (m.type === 'data') {
    return Buffer.concat([encode({ msg_type: 1, piece: m.piece, total_size: m.totalSize }), m.data]);
  }
  return encode({ msg_type: TYPE_CODE[m.type], piece: m.piece });
}

function bad(what: string): never {
  throw new BootTorrentError('BT_ERR_WIRE_PROTOCOL', `ut_metadata: ${what}`);
}

export function decodeMetadataMessage(payload: Uint8Array): MetadataMessage {
  let head;
  try {
    head = decodePrefix(payload, { maxDepth: 4, strictKeyOrder: false });
  } catch (err) {
    bad(`malformed message (${(err as Error).message})`);
  }
  const d = head.value;
  if (!isDict(d)) bad('message is not a dictionary');
  const type = d.get('msg_type');
  const piece = d.get('piece');
  if (!isInt(piece) || piece < 0 || piece > MAX_METADATA_SIZE / METADATA_PIECE_SIZE) bad('bad piece number');
  const rest = Buffer.from(
    payload.buffer,
    payload.byteOffset + head.length,
    payload.byteLength - head.length,
  );
  if (type === 0) return { type: 'request', piece };
  if (type === 2) return { type: 'reject', piece };
  if (type !== 1) bad(`unknown msg_type ${typeof type === 'number' ? type : typeof type}`);
  const total = d.get('total_size');
  if (!isInt(total) || total <= 0 || total > MAX_METADATA_SIZE) bad('bad total_size');
  if (rest.length > METADATA_PIECE_SIZE) bad('data piece larger than 16 KiB');
  return { type: 'data', piece, totalSize: total, data: rest };
}

/** Number of 16 KiB pieces of an info dictionary of `size` bytes. */
export function metadataPieces(size: number): number {
  return Math.ceil(size / METADATA_PIECE_SIZE);
}
