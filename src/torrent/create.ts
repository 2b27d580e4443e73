/**
 * Creating v1 torrents from a file or a folder.
 *
 * For the same input and piece length the info dictionary, and so the
 * infohash, is the one mktorrent produces: files in byte order of their
 * relative path, hidden and empty files included, symlinks followed.
 */
import { readdir, stat } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { encode } from '../bencode/index.js';
import { BootTorrentError } from '../errors.js';
import { hashPieces } from './hash-pool.js';
import { checkPathComponent, encodeTorrent, parseTorrent, type Metainfo } from './metainfo.js';

export const MIN_PIECE_LENGTH = 16 * 1024;
export const MAX_PIECE_LENGTH = 64 * 1024 * 1024;
/** Aim for at most this many pieces when the piece length is automatic. */
const TARGET_PIECES = 2048;

export interface CreateOptions {
  /** Bytes, a power of two from 16 KiB to 64 MiB; automatic when absent. */
  pieceLength?: number;
  /** Tracker tiers; each inner list is one tier (BEP 12). */
  announce?: readonly (readonly string[])[];
  /** Web seeds (BEP 19). */
  urlList?: readonly string[];
  private?: boolean;
  /** Torrent name; defaults to the basename of the input. */
  name?: string;
  comment?: string;
  createdBy?: string;
  /** Unix seconds; null leaves the field out (reproducible output). */
  creationDate?: number | null;
  /**
   * Worker threads for hashing; 0 hashes on the calling thread. Default:
   * one per core for inputs of 64 MiB or more, else 0 (a worker's start-up
   * costs more than it saves on small inputs).
   */
  hashWorkers?: number;
}

export interface CreateProgress {
  readonly hashedBytes: number;
  readonly totalBytes: number;
}

export interface CreateServices {
  signal?: AbortSignal;
  onProgress?: (p: CreateProgress) => void;
}

export interface CreatedTorrent {
  readonly torrent: Buffer;
  readonly meta: Metainfo;
}

interface InputFile {
  readonly abs: string;
  readonly path: string[];
  readonly length: number;
}

/**
 * The automatic piece length: the smallest power of two that keeps the
 * torrent at or under ~2048 pieces, within 16 KiB..16 MiB. Fewer, larger
 * pieces mean less hashing overhead and smaller bitfields; on a LAN the cost
 * of a larger piece (more data lost to one corrupt block) is small.
 */
export function autoPieceLength(totalBytes: number): number {
  let len = MIN_PIECE_LENGTH;
  while (len < 16 * 1024 * 1024 && totalBytes / len > TARGET_PIECES) len *= 2;
  return len;
}

function createError(message: string, cause?: unknown): BootTorrentError {
  return new BootTorrentError('BT_ERR_TORRENT_CREATE', message, cause === undefined ? undefined : { cause });
}

async function listFiles(root: string): Promise<InputFile[]> {
  const out: InputFile[] = [];
  // dev:ino of the folders on the current path, so a symlink loop ends.
  const walk = async (dir: string, rel: string[], ancestors: Set<string>): Promise<void> => {
    const entries = await readdir(dir);
    for (const name of entries) {
      const abs = join(dir, name);
      let st;
      try {
        st = await stat(abs);
      } catch (err) {
        throw createError(`cannot read ${abs} (a broken symlink?): ${(err as Error).message}`, err);
      }
      const path = [...rel, name];
      if (st.isDirectory()) {
        const id = `${st.dev}:${st.ino}`;
        if (ancestors.has(id)) throw createError(`${abs} is a symlink loop`);
        await walk(abs, path, new Set([...ancestors, id]));
      } else if (st.isFile()) {
        out.push({ abs, path, length: st.size });
      } else {
        throw createError(`${abs} is neither a file nor a folder; remove it or share a folder without it`);
      }
    }
  };
  const st = await stat(root);
  await walk(root, [], new Set([`${st.dev}:${st.ino}`]));
  // mktorrent's order: the relative path compared byte by byte as one string.
  const key = (f: InputFile) => Buffer.from(f.path.join('/'), 'utf8');
  out.sort((a, b) => Buffer.compare(key(a), key(b)));
  return out;
}

/** Hashes a file or folder and returns the bencoded torrent and its parsed form. */
export async function createTorrent(
  inputPath: string,
  options: CreateOptions = {},
  services: CreateServices = {},
): Promise<CreatedTorrent> {
  const { signal, onProgress } = services;
  const root = resolve(inputPath);
  let st;
  try {
    st = await stat(root);
  } catch (err) {
    throw createError(`cannot read ${inputPath}: no such file or folder`, err);
  }
  const name = options.name ?? basename(root);
  checkPathComponent(name, 'torrent create', 'name');
  const single = st.isFile();
  if (!single && !st.isDirectory()) throw createError(`${inputPath} is neither a file nor a folder`);
  const files: InputFile[] = single ? [{ abs: root, path: [name], length: st.size }] : await listFiles(root);
  const total = files.reduce((n, f) => n + f.length, 0);
  if (total === 0)
    throw createError(`${inputPath} holds no data: a torrent needs at least one non-empty file`);

  const pieceLength = options.pieceLength ?? autoPieceLength(total);
  if (
    !Number.isInteger(pieceLength) ||
    pieceLength < MIN_PIECE_LENGTH ||
    pieceLength > MAX_PIECE_LENGTH ||
    (pieceLength & (pieceLength - 1)) !== 0
  ) {
    throw createError(
      `piece length ${pieceLength} is not a power of two from ${MIN_PIECE_LENGTH} to ${MAX_PIECE_LENGTH} bytes`,
    );
  }

  const pieces = await hashPieces(files, pieceLength, {
    ...(options.hashWorkers !== undefined ? { workers: options.hashWorkers } : {}),
    onProgress: (hashedBytes) => onProgress?.({ hashedBytes, totalBytes: total }),
    ...(signal ? { signal } : {}),
  });

  // Key order and content as mktorrent writes them; encode() sorts keys.
  const info = encode({
    files: single ? undefined : files.map((f) => ({ length: f.length, path: f.path })),
    length: single ? total : undefined,
    name,
    'piece length': pieceLength,
    pieces,
    private: options.private ? 1 : undefined,
  });
  const torrent = encodeTorrent(info, {
    announce: options.announce ?? [],
    urlList: options.urlList ?? [],
    ...(options.comment !== undefined ? { comment: options.comment } : {}),
    createdBy: options.createdBy ?? 'BootTorrent',
    ...(options.creationDate === null
      ? {}
      : { creationDate: options.creationDate ?? Math.floor(Date.now() / 1000) }),
  });
  return { torrent, meta: parseTorrent(torrent, name) };
}
