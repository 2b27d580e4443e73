/**
 * Writes verified pieces to their files from one worker thread, in 16 KiB
 * system calls, so the event loop never waits on the disk.
 *
 * Why 16 KiB calls and not one per piece (bench/results/swarm-throughput.md,
 * issue #20): Linux allocates page-cache folios as large as each write, and
 * on this project's test machines (virtual machines that hand freed memory
 * back to their host) a large folio is mostly fresh memory that faults on
 * first touch. dd of 1 GiB there took 1.25-1.49 s of system time in
 * 512 KiB blocks and 0.30-0.94 s in 16 KiB blocks; aria2c writes each
 * 16 KiB block as it comes. One pwritev of 16 KiB parts is one large write
 * to the kernel and costs what a single call does. The price is 65,536
 * calls per GiB instead of 2,048.
 *
 * Why one thread: libuv's threads writing one file at once queue on its
 * inode lock, and Linux spins there while the holder copies, burning CPU
 * for no gain. One writer copies over 1 GB/s, ahead of any link.
 *
 * The worker is shared by every download in the process and does not keep
 * the process alive while it has nothing to write.
 */
import { writeSync } from 'node:fs';
import { Worker } from 'node:worker_threads';

/** Bytes per write system call (see above). */
export const WRITE_CHUNK = 16 * 1024;

/** A stretch of the buffer to write at `position` of the open file `fd`. */
export interface WriteSegment {
  readonly fd: number;
  /** Where in the buffer it starts. */
  readonly offset: number;
  readonly length: number;
  readonly position: number;
}

interface WriteJob {
  readonly id: number;
  readonly bytes: Uint8Array;
  readonly segments: readonly WriteSegment[];
  /** The buffer was moved to the thread: it comes back in the reply. */
  readonly moved: boolean;
}

interface WriteReply {
  readonly id: number;
  readonly buffer?: ArrayBuffer;
  /** The segment that failed, and why. */
  readonly failed?: number;
  readonly error?: string;
  readonly code?: string;
}

/**
 * The worker's code: a module given as a data: URL, so it runs the same
 * from dist/ and from the agent's bundle, whatever the process's flags
 * (a worker evaluated from a string takes `--input-type=module` from its
 * process, and `require` is then undefined).
 */
const WORKER_SOURCE = `
import { parentPort } from 'node:worker_threads';
import { writeSync } from 'node:fs';
const CHUNK = ${WRITE_CHUNK};
parentPort.on('message', (job) => {
  const reply = { id: job.id };
  let i = 0;
  try {
    for (; i < job.segments.length; i++) {
      const s = job.segments[i];
      let done = 0;
      while (done < s.length)
        done += writeSync(s.fd, job.bytes, s.offset + done, Math.min(CHUNK, s.length - done), s.position + done);
    }
  } catch (err) {
    reply.failed = i;
    reply.error = String(err && err.message);
    reply.code = err && err.code;
  }
  if (job.moved) {
    reply.buffer = job.bytes.buffer;
    parentPort.postMessage(reply, [job.bytes.buffer]);
  } else parentPort.postMessage(reply);
});
`;

/** An error from a write in the worker: which segment, and the system's code (ENOSPC, EIO, ...) where there was one. */
export class DiskWriteError extends Error {
  readonly code: string | undefined;
  readonly segment: number | undefined;
  constructor(message: string, code?: string, segment?: number) {
    super(message);
    this.code = code;
    this.segment = segment;
  }
}

class DiskWriter {
  private worker: Worker | undefined;
  private nextId = 1;
  private readonly pending = new Map<
    number,
    { resolve: (back: Buffer | undefined) => void; reject: (err: Error) => void }
  >();

  write(data: Buffer, segments: readonly WriteSegment[], move: boolean): Promise<Buffer | undefined> {
    const w = this.start();
    const id = this.nextId++;
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.length);
    const job: WriteJob = { id, bytes, segments, moved: move };
    return new Promise<Buffer | undefined>((resolve, reject) => {
      try {
        // Moved: no copy, and `data` is empty here until it comes back. Otherwise copied into the message.
        if (move) w.postMessage(job, [data.buffer as ArrayBuffer]);
        else w.postMessage(job);
      } catch (err) {
        // Not sent (a buffer that cannot be moved): nothing waits for a reply.
        reject(err instanceof Error ? err : new DiskWriteError(String(err)));
        return;
      }
      this.pending.set(id, { resolve, reject });
      if (this.pending.size === 1) w.ref();
    });
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(new URL(`data:text/javascript,${encodeURIComponent(WORKER_SOURCE)}`));
    w.unref();
    w.on('message', (r: WriteReply) => {
      const p = this.pending.get(r.id);
      if (!p) return;
      this.pending.delete(r.id);
      if (this.pending.size === 0) w.unref();
      const back = r.buffer ? Buffer.from(r.buffer) : undefined;
      if (r.error !== undefined) p.reject(new DiskWriteError(r.error, r.code, r.failed));
      else p.resolve(back);
    });
    const failAll = (err: Error) => {
      const waiting = [...this.pending.values()];
      this.pending.clear();
      w.unref();
      for (const p of waiting) p.reject(err);
    };
    const gone = (err: Error) => {
      if (this.worker !== w) return;
      this.worker = undefined;
      failAll(err);
    };
    w.on('error', gone);
    // A reply that could not be read: which write it answered is unknown, so every waiting one fails.
    w.on('messageerror', failAll);
    w.on('exit', (code) => gone(new DiskWriteError(`the disk writer thread stopped (exit code ${code})`)));
    this.worker = w;
    return w;
  }
}

/**
 * Writes `segments` of `data` on the calling thread, each in one call
 * (for files in memory: no disk to wait on, and tmpfs does not size its
 * pages by the write). Throws a DiskWriteError naming the segment.
 */
export function writeHere(data: Buffer, segments: readonly WriteSegment[]): void {
  segments.forEach((s, i) => {
    try {
      for (let done = 0; done < s.length;)
        done += writeSync(s.fd, data, s.offset + done, s.length - done, s.position + done);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new DiskWriteError(e.message, e.code, i);
    }
  });
}

let shared: DiskWriter | undefined;

/**
 * Writes `segments` of `data` from the shared writer thread. With `move`,
 * the buffer under `data` (which must own it: no pooled or shared buffer)
 * goes to the thread without a copy and comes back as the result, a
 * Buffer over all of it (not on a failure); `data` itself is left empty.
 */
export function writeFromWorker(
  data: Buffer,
  segments: readonly WriteSegment[],
  move = false,
): Promise<Buffer | undefined> {
  shared ??= new DiskWriter();
  return shared.write(data, segments, move);
}
