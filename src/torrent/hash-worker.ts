/**
 * Worker thread of the parallel hasher (see hash-pool.ts): reads the byte
 * ranges of a job straight from the files and returns the SHA-1 of each
 * piece. Reading in the worker, not the main thread, lets every core read
 * and hash at once without copying data between threads.
 */
import { parentPort } from 'node:worker_threads';
import { closeSync, openSync, readSync } from 'node:fs';
import { createHash } from 'node:crypto';
import type { HashJob, HashResult } from './hash-pool.js';

let buf = Buffer.alloc(0);
const fds = new Map<string, number>();

function fdFor(path: string): number {
  let fd = fds.get(path);
  if (fd === undefined) {
    // Workers see few files at a time; keep a handful open across jobs.
    if (fds.size >= 16) {
      for (const f of fds.values()) closeSync(f);
      fds.clear();
    }
    fd = openSync(path, 'r');
    fds.set(path, fd);
  }
  return fd;
}

function runJob(job: HashJob): HashResult {
  if (buf.length < job.length) buf = Buffer.allocUnsafe(job.length);
  let at = 0;
  for (const seg of job.segments) {
    const fd = fdFor(seg.path);
    let done = 0;
    while (done < seg.length) {
      const n = readSync(fd, buf, at + done, seg.length - done, seg.offset + done);
      if (n === 0) return { id: job.id, error: `${seg.path} shrank while it was being hashed` };
      done += n;
    }
    at += seg.length;
  }
  const digests = Buffer.allocUnsafe(20 * Math.ceil(job.length / job.pieceLength));
  for (let off = 0, i = 0; off < job.length; off += job.pieceLength, i++) {
    const end = Math.min(off + job.pieceLength, job.length);
    createHash('sha1')
      .update(buf.subarray(off, end))
      .digest()
      .copy(digests, i * 20);
  }
  return { id: job.id, digests };
}

parentPort!.on('message', (job: HashJob | null) => {
  if (job === null) {
    for (const f of fds.values()) closeSync(f);
    fds.clear();
    parentPort!.close();
    return;
  }
  let result: HashResult;
  try {
    result = runJob(job);
  } catch (err) {
    result = { id: job.id, error: (err as Error).message };
  }
  parentPort!.postMessage(result);
});
