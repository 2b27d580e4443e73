/**
 * Parallel piece hashing for large inputs. The data is cut into jobs of
 * whole pieces (about 16 MiB each) over the concatenation of all files; a
 * pool of worker threads takes jobs as they free up, so one slow read does
 * not stall the others. The result is identical to hashing in order.
 */
import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { createHash, type Hash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { BootTorrentError, abortError } from '../errors.js';

export interface HashSegment {
  readonly path: string;
  readonly offset: number;
  readonly length: number;
}

export interface HashJob {
  readonly id: number;
  readonly pieceLength: number;
  /** Bytes in this job: whole pieces, except that the last job may end short. */
  readonly length: number;
  readonly segments: readonly HashSegment[];
}

export type HashResult = { id: number; digests: Uint8Array } | { id: number; error: string };

export interface HashInputFile {
  readonly abs: string;
  readonly length: number;
}

const JOB_BYTES = 16 * 1024 * 1024;
const READ_CHUNK = 4 * 1024 * 1024;
/** Below this, a worker's start-up costs more than it saves. */
const PARALLEL_MIN_BYTES = 64 * 1024 * 1024;

/** Splits the concatenated files into jobs of whole pieces. */
export function planJobs(files: readonly HashInputFile[], pieceLength: number): HashJob[] {
  const perJob = Math.max(1, Math.floor(JOB_BYTES / pieceLength)) * pieceLength;
  const jobs: HashJob[] = [];
  let segments: HashSegment[] = [];
  let inJob = 0;
  const flush = () => {
    if (inJob > 0) jobs.push({ id: jobs.length, pieceLength, length: inJob, segments });
    segments = [];
    inJob = 0;
  };
  for (const f of files) {
    let off = 0;
    while (off < f.length) {
      const n = Math.min(perJob - inJob, f.length - off);
      segments.push({ path: f.abs, offset: off, length: n });
      inJob += n;
      off += n;
      if (inJob === perJob) flush();
    }
  }
  flush();
  return jobs;
}

export interface PoolOptions {
  workers?: number;
  signal?: AbortSignal;
  onProgress?: (hashedBytes: number) => void;
}

/** Hashes every piece with a pool of worker threads; returns the concatenated digests. */
export async function hashInParallel(
  files: readonly HashInputFile[],
  pieceLength: number,
  options: PoolOptions = {},
): Promise<Buffer> {
  const { signal, onProgress } = options;
  if (signal?.aborted) throw abortError(signal);
  const jobs = planJobs(files, pieceLength);
  const results: Uint8Array[] = new Array<Uint8Array>(jobs.length);
  const count = Math.max(1, Math.min(options.workers ?? availableParallelism(), jobs.length));
  const workers: Worker[] = [];
  let next = 0;
  let hashed = 0;
  try {
    await new Promise<void>((resolve, reject) => {
      let finished = 0;
      const onAbort = () => reject(abortError(signal!));
      signal?.addEventListener('abort', onAbort, { once: true });
      const fail = (err: Error) => {
        signal?.removeEventListener('abort', onAbort);
        reject(err);
      };
      const feed = (w: Worker) => {
        const job = jobs[next++];
        if (job) w.postMessage(job);
      };
      for (let i = 0; i < count; i++) {
        const w = new Worker(new URL('./hash-worker.js', import.meta.url));
        workers.push(w);
        w.on('message', (r: HashResult) => {
          if ('error' in r) {
            fail(new BootTorrentError('BT_ERR_TORRENT_CREATE', r.error));
            return;
          }
          results[r.id] = r.digests;
          hashed += jobs[r.id]!.length;
          onProgress?.(hashed);
          if (++finished === jobs.length) {
            signal?.removeEventListener('abort', onAbort);
            resolve();
          } else {
            feed(w);
          }
        });
        w.on('error', (err) =>
          fail(
            new BootTorrentError('BT_ERR_TORRENT_CREATE', `hashing failed: ${err.message}`, { cause: err }),
          ),
        );
        feed(w);
      }
    });
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
  return Buffer.concat(results);
}

/** Feeds bytes in file order and cuts them into SHA-1'd pieces. */
class PieceHasher {
  private hash: Hash = createHash('sha1');
  private filled = 0;
  private readonly digests: Buffer[] = [];

  constructor(private readonly pieceLength: number) {}

  update(data: Buffer): void {
    let off = 0;
    while (off < data.length) {
      const n = Math.min(this.pieceLength - this.filled, data.length - off);
      this.hash.update(data.subarray(off, off + n));
      this.filled += n;
      off += n;
      if (this.filled === this.pieceLength) this.cut();
    }
  }

  private cut(): void {
    this.digests.push(this.hash.digest());
    this.hash = createHash('sha1');
    this.filled = 0;
  }

  finish(): Buffer {
    if (this.filled > 0) this.cut();
    return Buffer.concat(this.digests);
  }
}

async function hashInThread(
  files: readonly HashInputFile[],
  pieceLength: number,
  report: (hashedBytes: number) => void,
  signal: AbortSignal | undefined,
): Promise<Buffer> {
  const hasher = new PieceHasher(pieceLength);
  const buf = Buffer.allocUnsafe(Math.min(READ_CHUNK, Math.max(pieceLength, 64 * 1024)));
  let hashed = 0;
  for (const f of files) {
    const fh = await open(f.abs, 'r');
    try {
      let left = f.length;
      while (left > 0) {
        if (signal?.aborted) throw abortError(signal);
        const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, left), null);
        if (bytesRead === 0) {
          throw new BootTorrentError('BT_ERR_TORRENT_CREATE', `${f.abs} shrank while it was being hashed`);
        }
        hasher.update(buf.subarray(0, bytesRead));
        left -= bytesRead;
        hashed += bytesRead;
        report(hashed);
      }
    } finally {
      await fh.close();
    }
  }
  return hasher.finish();
}

/**
 * SHA-1 of every piece of the concatenated files, in order. `workers`: 0
 * hashes on the calling thread; default one worker per core for inputs of
 * 64 MiB or more, else 0.
 */
export async function hashPieces(
  files: readonly HashInputFile[],
  pieceLength: number,
  options: PoolOptions = {},
): Promise<Buffer> {
  const total = files.reduce((n, f) => n + f.length, 0);
  const workers = options.workers ?? (total >= PARALLEL_MIN_BYTES ? availableParallelism() : 0);
  const report = options.onProgress ?? (() => {});
  report(0);
  if (workers > 0) return hashInParallel(files, pieceLength, { ...options, workers });
  return hashInThread(files, pieceLength, report, options.signal);
}
