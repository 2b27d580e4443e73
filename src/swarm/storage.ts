/**
 * Piece storage on disk (or tmpfs in phase 1). The torrent's data is the
 * concatenation of its files; a piece may span several. Pieces are written
 * only after their SHA-1 matched, and blocks are read from disk to be
 * served, so the image itself never sits in the heap: only pieces in flight
 * and a small read cache do.
 *
 * Layout as every BitTorrent client has it: a single-file torrent is
 * `<dir>/<name>`, a multi-file one `<dir>/<name>/<path...>`.
 */
import { createHash } from 'node:crypto';
import { constants, createReadStream } from 'node:fs';
import { lstat, mkdir, open, realpath, stat, statfs, type FileHandle } from 'node:fs/promises';
import { dirname, join, relative, isAbsolute, sep } from 'node:path';
import { BootTorrentError } from '../errors.js';
import { hashPieces } from '../torrent/hash-pool.js';
import { pieceHash, pieceSize, type Metainfo } from '../torrent/metainfo.js';
import { Bitfield } from '../wire/bitfield.js';
import { DiskWriteError, writeFromWorker, writeHere, type WriteSegment } from './disk-writer.js';

export type StorageMode = 'seed' | 'download';

export interface StorageOptions {
  /** seed: files must exist whole, opened read-only; download: created (sparse) as needed. */
  mode: StorageMode;
  /** Bytes of recently read pieces kept to serve the next blocks (default 16 MiB). */
  readCacheBytes?: number;
}

interface StoredFile {
  readonly abs: string;
  readonly offset: number;
  readonly length: number;
}

/** A piece in the read cache; its buffer is reused once evicted and no block of it is still being sent. */
interface CachedPiece {
  readonly data: Promise<Buffer>;
  /** The pooled buffer behind `data` (undefined once handed out without a lease). */
  pooled: Buffer | undefined;
  /** Blocks of it leased and not yet released. */
  leases: number;
  evicted: boolean;
}

/** A block to send, and the call that says it has been sent (its buffer may then be reused). */
export interface BlockLease {
  readonly block: Buffer;
  readonly release: () => void;
}

function storageError(message: string, cause?: unknown): BootTorrentError {
  return new BootTorrentError('BT_ERR_STORAGE', message, cause === undefined ? undefined : { cause });
}

/** True if SHA-1 of `data` is piece `index`'s hash. */
export function pieceMatches(meta: Metainfo, index: number, data: Buffer): boolean {
  return createHash('sha1').update(data).digest().equals(pieceHash(meta, index));
}

/**
 * True if `dir` is on a filesystem in memory (tmpfs or ramfs), where a
 * write never waits on a disk. `seen` keeps the answers by folder.
 */
async function inMemory(dir: string, seen: Map<string, boolean>): Promise<boolean> {
  const TMPFS_MAGIC = 0x01021994;
  const RAMFS_MAGIC = 0x858458f6;
  let answer = seen.get(dir);
  if (answer === undefined) {
    try {
      const { type } = await statfs(dir);
      answer = type === TMPFS_MAGIC || type === RAMFS_MAGIC;
    } catch {
      answer = false;
    }
    seen.set(dir, answer);
  }
  return answer;
}

/** SHA-256 of a whole file, streamed (the agent checks each OS file against its boot config). */
export async function sha256File(path: string, signal?: AbortSignal): Promise<string> {
  const hash = createHash('sha256');
  const stream = createReadStream(path, { highWaterMark: 1 << 20, ...(signal ? { signal } : {}) });
  for await (const chunk of stream) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export class PieceStore {
  readonly meta: Metainfo;
  readonly root: string;
  private readonly files: StoredFile[];
  private mode: StorageMode;
  /** File reads and writes in progress, and write handles to close once none is. */
  private inflight = 0;
  private retired: Promise<FileHandle>[] = [];
  private readonly handles = new Map<string, Promise<FileHandle>>();
  private readonly cache = new Map<number, CachedPiece>();
  private readonly cacheLimit: number;
  /**
   * Piece-sized buffers from evicted cache entries. Reusing them keeps a
   * seeder's memory flat: freshly allocated 1 MiB buffers are freed only
   * when V8 gets round to collecting their wrappers, and at hundreds of
   * MB/s that lag alone is ~100 MB of RSS.
   */
  private readonly free: Buffer[] = [];
  /** Download files on a filesystem in memory (tmpfs, ramfs): written on this thread (see drainWrites). */
  private readonly inRam = new Set<string>();
  /** Files created empty by prepare(): nothing in them to check. */
  private readonly created = new Set<string>();
  private closed = false;
  /**
   * A download's files are opened with O_NOFOLLOW, for good (also once it
   * only reads, after finishWriting): a link put in the download folder must
   * not make us write to, or serve, the file it points to. A seed's folder
   * is the operator's own data and may be made of links.
   */
  private readonly noFollow: number;

  private constructor(meta: Metainfo, dir: string, options: StorageOptions) {
    this.meta = meta;
    this.mode = options.mode;
    this.root = meta.singleFile ? dir : join(dir, meta.name);
    this.files = meta.files.map((f) => ({
      abs: meta.singleFile ? join(dir, meta.name) : join(dir, meta.name, ...f.path),
      offset: f.offset,
      length: f.length,
    }));
    this.cacheLimit = Math.max(1, Math.floor((options.readCacheBytes ?? 16 << 20) / meta.pieceLength));
    this.noFollow = options.mode === 'download' ? constants.O_NOFOLLOW : 0;
  }

  /**
   * Opens (and in download mode creates) the torrent's files under `dir`.
   * Refuses a layout whose real path leaves `dir` (a symlinked folder); in
   * download mode refuses any symlink or hard-linked file on the torrent's
   * own paths under `dir` (see refuseLinks).
   */
  static async open(meta: Metainfo, dir: string, options: StorageOptions): Promise<PieceStore> {
    const store = new PieceStore(meta, dir, options);
    await store.prepare(dir);
    return store;
  }

  /** Where each file lives on disk. */
  get paths(): string[] {
    return this.files.map((f) => f.abs);
  }

  /**
   * Download mode: no component of `abs` below `dir` may be a symlink, and
   * the file itself may not have other hard links. Writing follows both: a
   * link left in the download folder (by another user of a shared folder,
   * or an earlier run) would have us truncate and overwrite the file it
   * points to, or create folders wherever it leads. `dir` itself may be a
   * link: the user chose it. Components that do not exist yet end the walk
   * (mkdir creates them as real folders; the file is then opened with
   * O_NOFOLLOW).
   */
  private async refuseLinks(dir: string, abs: string): Promise<void> {
    const fix = `remove it, or choose a download folder that only BootTorrent writes to`;
    let path = dir;
    for (const part of relative(dir, abs).split(sep)) {
      path = join(path, part);
      let st;
      try {
        st = await lstat(path);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw storageError(`cannot use ${path}: ${(err as Error).message}`, err);
      }
      if (st.isSymbolicLink()) {
        throw storageError(
          `${path} is a symbolic link; a download never writes through a link (it would overwrite what it points to): ${fix}`,
        );
      }
      if (path === abs && st.isFile() && st.nlink > 1) {
        throw storageError(
          `${path} has ${st.nlink} hard links; writing the download would change the other names too: ${fix}`,
        );
      }
    }
  }

  private async prepare(dir: string): Promise<void> {
    if (this.mode === 'download') await mkdir(dir, { recursive: true });
    let realDir: string;
    try {
      realDir = await realpath(dir);
    } catch (err) {
      throw storageError(`cannot use ${dir}: ${(err as Error).message}`, err);
    }
    // Folders already asked whether they are in memory (most files share one).
    const ramDirs = new Map<string, boolean>();
    for (const f of this.files) {
      if (this.mode === 'download') {
        await this.refuseLinks(dir, f.abs);
        await mkdir(dirname(f.abs), { recursive: true });
        if (await inMemory(dirname(f.abs), ramDirs)) this.inRam.add(f.abs);
      }
      let st;
      try {
        const real = await realpath(dirname(f.abs));
        const rel = relative(realDir, real);
        if (rel.startsWith('..') || isAbsolute(rel)) {
          throw storageError(`${f.abs} leads outside ${dir} through a symlink; remove the link`);
        }
        st = this.noFollow ? await lstat(f.abs) : await stat(f.abs);
      } catch (err) {
        if (err instanceof BootTorrentError) throw err;
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
          throw storageError(`cannot use ${f.abs}: ${(err as Error).message}`, err);
        }
        if (this.mode === 'seed') {
          throw storageError(`${f.abs} is missing: the data to seed must be at ${this.root}`);
        }
        // O_EXCL as well: whatever appeared here since the check (a link
        // included) is refused rather than opened.
        const fh = await this.openFile(f.abs, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL);
        await fh.truncate(f.length);
        await fh.close();
        this.created.add(f.abs);
        continue;
      }
      if (!st.isFile()) throw storageError(`${f.abs} is not a regular file`);
      if (st.size !== f.length) {
        if (this.mode === 'seed') {
          throw storageError(
            `${f.abs} has ${st.size} bytes but the torrent says ${f.length}: wrong data for this torrent`,
          );
        }
        const fh = await this.openFile(f.abs, constants.O_RDWR);
        await fh.truncate(f.length);
        await fh.close();
      }
    }
  }

  /** open(2) with O_NOFOLLOW for a download; a link found there is refused by name. */
  private async openFile(abs: string, flags: number): Promise<FileHandle> {
    try {
      return await open(abs, flags | this.noFollow, 0o644);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (this.noFollow && code === 'ELOOP') {
        throw storageError(
          `${abs} is a symbolic link; a download never writes through a link: remove it`,
          err,
        );
      }
      if (code === 'EEXIST') {
        throw storageError(
          `${abs} appeared while the download was being set up: does another program write there?`,
          err,
        );
      }
      throw storageError(`cannot open ${abs}: ${(err as Error).message}`, err);
    }
  }

  private handle(abs: string): Promise<FileHandle> {
    let h = this.handles.get(abs);
    if (!h) {
      h = this.openFile(abs, this.mode === 'seed' ? constants.O_RDONLY : constants.O_RDWR);
      this.handles.set(abs, h);
    }
    return h;
  }

  /** Calls fn for each file range that bytes [start, start+length) of the torrent cover. */
  private async spans(
    start: number,
    length: number,
    fn: (fh: FileHandle, fileOffset: number, bufOffset: number, n: number, abs: string) => Promise<void>,
  ): Promise<void> {
    const end = start + length;
    this.inflight++;
    try {
      for (const f of this.files) {
        const fEnd = f.offset + f.length;
        if (fEnd <= start || f.offset >= end || f.length === 0) continue;
        const from = Math.max(start, f.offset);
        const to = Math.min(end, fEnd);
        await fn(await this.handle(f.abs), from - f.offset, from - start, to - from, f.abs);
      }
    } finally {
      this.inflight--;
      if (this.retired.length > 0) this.closeRetired();
    }
  }

  /**
   * The download is complete: from now on the store only reads. Its files
   * are reopened read-only and the write handles closed (once no read
   * uses them), so a program among the files can be run: Linux refuses to
   * execute a file that is open for writing (ETXTBSY). Peers keep being
   * served throughout. Resolves once every write handle is closed: the
   * caller announces the download complete only then, or a program run at
   * once could still meet ETXTBSY.
   */
  finishWriting(): Promise<void> {
    if (this.mode === 'seed') return Promise.resolve();
    this.mode = 'seed';
    this.retired.push(...this.handles.values());
    this.handles.clear();
    const closed = new Promise<void>((resolve) => this.retiredClosed.push(resolve));
    this.closeRetired();
    return closed;
  }

  /** Waiting on finishWriting until the handles retired so far are closed. */
  private retiredClosed: (() => void)[] = [];

  private closeRetired(): void {
    if (this.inflight > 0) return;
    const closing = this.retired.splice(0).map((h) => h.then((fh) => fh.close()).catch(() => undefined));
    const waiters = this.retiredClosed.splice(0);
    void Promise.all(closing).then(() => {
      for (const w of waiters) w();
    });
  }

  /**
   * Checks the data already on disk against the piece hashes (resume, or
   * proof that a seed is whole). Returns the pieces that are good.
   */
  async verify(
    options: { signal?: AbortSignal; onProgress?: (bytes: number) => void } = {},
  ): Promise<Bitfield> {
    if (this.files.every((f) => this.created.has(f.abs))) return this.verifyCreated(options.onProgress);
    const digests = await hashPieces(
      this.files.map((f) => ({ abs: f.abs, length: f.length })),
      this.meta.pieceLength,
      options,
    );
    const have = new Bitfield(this.meta.pieceCount);
    for (let i = 0; i < this.meta.pieceCount; i++) {
      if (digests.subarray(i * 20, i * 20 + 20).equals(pieceHash(this.meta, i))) have.set(i);
    }
    return have;
  }

  /**
   * verify() for a fresh download: every file was just created, so all of
   * it reads as zeros and hashing a GiB of zeros (in worker threads, which
   * also cost ~50 MB of RSS) is wasted. A piece is had only if its hash is
   * that of zeros, as hashing would have found.
   */
  private verifyCreated(onProgress?: (bytes: number) => void): Bitfield {
    const have = new Bitfield(this.meta.pieceCount);
    const zeroHash = new Map<number, Buffer>();
    for (let i = 0; i < this.meta.pieceCount; i++) {
      const size = pieceSize(this.meta, i);
      let h = zeroHash.get(size);
      if (!h) {
        h = createHash('sha1').update(Buffer.alloc(size)).digest();
        zeroHash.set(size, h);
      }
      if (h.equals(pieceHash(this.meta, i))) have.set(i);
    }
    onProgress?.(this.meta.length);
    return have;
  }

  /** Reads a whole piece from disk (into `into` if given, which must be large enough). */
  async readPiece(index: number, into?: Buffer): Promise<Buffer> {
    this.assertOpen();
    const size = pieceSize(this.meta, index);
    const buf = into ? into.subarray(0, size) : Buffer.allocUnsafe(size);
    await this.spans(index * this.meta.pieceLength, size, async (fh, fileOffset, bufOffset, n) => {
      let done = 0;
      while (done < n) {
        const { bytesRead } = await fh.read(buf, bufOffset + done, n - done, fileOffset + done);
        if (bytesRead === 0) throw storageError(`short read in piece ${index}: a file shrank on disk`);
        done += bytesRead;
      }
    });
    return buf;
  }

  /** The cache entry for a piece, read from disk if not cached; most recently used last. */
  private cached(index: number): CachedPiece {
    let c = this.cache.get(index);
    if (c) {
      this.cache.delete(index);
    } else {
      const pooled = this.free.pop() ?? Buffer.allocUnsafe(this.meta.pieceLength);
      const entry: CachedPiece = { data: this.readPiece(index, pooled), pooled, leases: 0, evicted: false };
      entry.data.catch(() => {
        if (this.cache.get(index) === entry) this.cache.delete(index);
        entry.pooled = undefined;
      });
      c = entry;
    }
    this.cache.set(index, c);
    while (this.cache.size > this.cacheLimit) {
      const [oldIndex, old] = this.cache.entries().next().value!;
      this.cache.delete(oldIndex);
      old.evicted = true;
      this.recycle(old);
    }
    return c;
  }

  private recycle(c: CachedPiece): void {
    if (!c.evicted || c.leases > 0 || !c.pooled) return;
    if (this.free.length < this.cacheLimit) this.free.push(c.pooled);
    c.pooled = undefined;
  }

  /**
   * One block of a piece we have, for a peer, as a view that stays valid
   * for good (its piece buffer is never reused). Whole pieces are read and
   * kept in a small LRU cache, since peers ask for a piece's blocks in a row.
   */
  async readBlock(index: number, begin: number, length: number): Promise<Buffer> {
    const c = this.cached(index);
    c.pooled = undefined;
    const piece = await c.data;
    return piece.subarray(begin, begin + length);
  }

  /**
   * Like readBlock, without copying and without garbage: the view stays
   * valid until release(), after which its buffer may hold another piece.
   * Call release() once the block is written out (or dropped); a lease never
   * released only costs the pool that buffer.
   */
  async leaseBlock(index: number, begin: number, length: number): Promise<BlockLease> {
    const c = this.cached(index);
    c.leases++;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      c.leases--;
      this.recycle(c);
    };
    try {
      const piece = await c.data;
      return { block: piece.subarray(begin, begin + length), release };
    } catch (err) {
      release();
      throw err;
    }
  }

  /**
   * Writes a verified piece (the caller checked the hash: pieceMatches);
   * resolves once it is written. Pieces are written one at a time, in the
   * order they came, by the writer thread (disk-writer.ts says why), or on
   * this thread where the files are in memory (tmpfs: nothing to wait on);
   * `writeBacklog` lets the downloader stop asking for more while the disk
   * is behind. With `move`, `data`'s memory goes to the thread without a
   * copy (it must own its ArrayBuffer, as the assembler's buffers do) and
   * comes back as the result: a Buffer over all of that memory (lost on a
   * failure: the caller allocates anew). Written on this thread, `data`
   * stays as it was and the result is undefined.
   */
  writePiece(index: number, data: Buffer, opts: { move?: boolean } = {}): Promise<Buffer | undefined> {
    if (this.closed) return Promise.reject(storageError('storage is closed'));
    if (this.mode === 'seed')
      return Promise.reject(storageError('cannot write to a store opened for seeding'));
    return new Promise<Buffer | undefined>((resolve, reject) => {
      this.writeQueue.push({ index, data, move: opts.move ?? false, resolve, reject });
      this.queuedBytes += data.length;
      if (!this.writing) this.drained = this.drainWrites();
    });
  }

  /** Bytes of verified pieces waiting to be written (see writePiece). */
  get writeBacklog(): number {
    return this.queuedBytes;
  }

  private readonly writeQueue: {
    index: number;
    data: Buffer;
    move: boolean;
    resolve: (back: Buffer | undefined) => void;
    reject: (err: Error) => void;
  }[] = [];
  private queuedBytes = 0;
  private writing = false;
  /**
   * Settles when the queue is empty. close() waits for it: the writer
   * thread holds a piece's file descriptors by number, and one closed under
   * it could be reused by a file opened meanwhile and written into.
   */
  private drained: Promise<void> = Promise.resolve();

  private async drainWrites(): Promise<void> {
    this.writing = true;
    for (let w = this.writeQueue.shift(); w; w = this.writeQueue.shift()) {
      const { index, data } = w;
      const length = data.length;
      const segments: WriteSegment[] = [];
      const files: string[] = [];
      // The write handles stay open until the thread is done with them (see closeRetired).
      this.inflight++;
      try {
        // Closed meanwhile: nothing more is written (nor a handle opened again).
        this.assertOpen();
        await this.spans(index * this.meta.pieceLength, length, (fh, position, bufOffset, n, abs) => {
          segments.push({ fd: fh.fd, offset: bufOffset, length: n, position });
          files.push(abs);
          return Promise.resolve();
        });
        // In memory there is no disk to wait on, and the thread's messages
        // cost more than the copy (phase 1's agents download into a tmpfs).
        if (files.every((f) => this.inRam.has(f))) {
          writeHere(data, segments);
          w.resolve(undefined);
        } else w.resolve(await writeFromWorker(data, segments, w.move));
      } catch (err) {
        if (!(err instanceof DiskWriteError)) w.reject(err as Error);
        else {
          const file = files[err.segment ?? 0] ?? this.root;
          w.reject(storageError(`cannot write piece ${index} to ${file}: ${err.message}`, err));
        }
      } finally {
        this.queuedBytes -= length;
        this.inflight--;
        if (this.retired.length > 0) this.closeRetired();
      }
    }
    this.writing = false;
  }

  /** Flushes to disk (fsync) every file; the download is durable after this. */
  async sync(): Promise<void> {
    for (const h of this.handles.values()) await (await h).sync();
  }

  private assertOpen(): void {
    if (this.closed) throw storageError('storage is closed');
  }

  async close(): Promise<void> {
    this.closed = true;
    // Queued pieces are refused now (closed); the one at the writer finishes first.
    await this.drained;
    this.cache.clear();
    this.free.length = 0;
    const handles = [...this.handles.values(), ...this.retired.splice(0)];
    this.handles.clear();
    await Promise.all(handles.map(async (h) => (await h.catch(() => undefined))?.close()));
    for (const w of this.retiredClosed.splice(0)) w();
  }
}
