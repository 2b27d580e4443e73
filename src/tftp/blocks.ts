/**
 * Block sources: the bytes of a served file cut into TFTP blocks, produced in
 * order. The transfer keeps the blocks of the unacknowledged window itself,
 * so a source never has to go back.
 */
import type { ServedFile } from './files.js';

export interface BlockSource {
  /** The next block; shorter than the block size (maybe empty) means it is the last. */
  next(): Promise<Buffer>;
  /** The next block if it is already read ahead (no I/O, no promise), else undefined. */
  nextReady?(): Buffer | undefined;
}

/** Octet mode: the file's bytes as they are, read ahead in chunks so small blocks do not mean small reads. */
export function octetBlocks(file: ServedFile, blockSize: number, readAhead: number): BlockSource {
  const chunk = Math.max(blockSize, readAhead);
  let offset = 0;
  let buf: Buffer = Buffer.alloc(0);
  let bufStart = 0;
  let eof = false;
  const take = (want: number): Buffer => {
    const start = offset - bufStart;
    const block = buf.subarray(start, Math.min(start + want, buf.length));
    offset += block.length;
    // After a short (final) block, later calls must not return data.
    if (block.length < blockSize) offset = Number.MAX_SAFE_INTEGER;
    return block;
  };
  return {
    nextReady() {
      const want = Math.max(0, Math.min(blockSize, file.size - offset));
      return offset + want <= bufStart + buf.length ? take(want) : undefined;
    },
    async next() {
      const want = Math.max(0, Math.min(blockSize, file.size - offset));
      if (offset + want > bufStart + buf.length && !eof) {
        // Keep the unread tail, append a fresh chunk.
        const tail = buf.subarray(offset - bufStart);
        const fresh = await file.read(
          offset + tail.length,
          Math.min(chunk, file.size - offset - tail.length),
        );
        // A short read means the file shrank after open: end the transfer there.
        if (fresh.length < Math.min(chunk, file.size - offset - tail.length)) eof = true;
        buf = tail.length > 0 ? Buffer.concat([tail, fresh]) : fresh;
        bufStart = offset;
      }
      return take(want);
    },
  };
}

/**
 * RFC 1350 netascii as RFC 764 defines it (and tftpd-hpa does): LF becomes
 * CR LF, a bare CR becomes CR NUL. Byte by byte, so chunk edges do not matter.
 */
export function toNetascii(data: Buffer): Buffer {
  let extra = 0;
  for (const b of data) if (b === 0x0a || b === 0x0d) extra++;
  if (extra === 0) return data;
  const out = Buffer.allocUnsafe(data.length + extra);
  let j = 0;
  for (const b of data) {
    if (b === 0x0a) {
      out[j++] = 0x0d;
      out[j++] = 0x0a;
    } else if (b === 0x0d) {
      out[j++] = 0x0d;
      out[j++] = 0x00;
    } else {
      out[j++] = b;
    }
  }
  return out;
}

/** Netascii mode: the converted stream cut into blocks; its length is unknown until the end. */
export function netasciiBlocks(file: ServedFile, blockSize: number, readAhead: number): BlockSource {
  const chunk = Math.max(blockSize, readAhead);
  let offset = 0;
  let pending: Buffer = Buffer.alloc(0);
  let eof = false;
  let ended = false;
  return {
    async next() {
      if (ended) return Buffer.alloc(0);
      while (pending.length < blockSize && !eof) {
        const n = Math.min(chunk, file.size - offset);
        const raw = n > 0 ? await file.read(offset, n) : Buffer.alloc(0);
        if (raw.length < n || n === 0) eof = true;
        offset += raw.length;
        pending = Buffer.concat([pending, toNetascii(raw)]);
      }
      const block = pending.subarray(0, blockSize);
      pending = pending.subarray(block.length);
      if (block.length < blockSize) ended = true;
      return block;
    },
  };
}
