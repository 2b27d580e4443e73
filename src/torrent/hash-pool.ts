/**
 * Parallel piece hashing for large inputs. The data is cut into jobs of
 * whole pieces (about 16 MiB each) over the concatenation of all files; a
 * pool of worker threads takes jobs as they free up, so one slow read does
 * not stall the others. The result is identical to hashing in order.
 */
import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
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
