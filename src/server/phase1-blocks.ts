/**
 * The phase-1 payload's block list (#16): one SHA-256 per block, so a stage
 * 0 can check each block as it arrives and relay only checked blocks to the
 * clients behind it. The list's own SHA-256 goes on the kernel command line
 * (`boottorrent.blocks=`) from the server's boot script, as the payload's
 * does; the list itself is fetched from the server.
 *
 * Text, for a shell to read: a first line `boottorrent-blocks 1 <block
 * size> <total bytes> <blocks>`, then one lower-case hex SHA-256 per line.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

/** 1 MiB: 23 blocks for today's payload; one is checked in well under a second on a slow client. */
export const PAYLOAD_BLOCK_SIZE = 1 << 20;

export interface PayloadHashes {
  /** SHA-256 of the whole file. */
  readonly sha256: string;
  /** The block list's text and its SHA-256. */
  readonly blocks: string;
  readonly blocksSha256: string;
}

/** Hashes `file` once, whole and per block. */
export async function hashPayload(file: string, blockSize = PAYLOAD_BLOCK_SIZE): Promise<PayloadHashes> {
  const whole = createHash('sha256');
  const sums: string[] = [];
  let block = createHash('sha256');
  let inBlock = 0;
  let total = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 16 })) {
    const buf = chunk as Buffer;
    whole.update(buf);
    total += buf.length;
    for (let off = 0; off < buf.length;) {
      const n = Math.min(blockSize - inBlock, buf.length - off);
      block.update(buf.subarray(off, off + n));
      inBlock += n;
      off += n;
      if (inBlock === blockSize) {
        sums.push(block.digest('hex'));
        block = createHash('sha256');
        inBlock = 0;
      }
    }
  }
  if (inBlock > 0) sums.push(block.digest('hex'));
  const blocks = `boottorrent-blocks 1 ${blockSize} ${total} ${sums.length}\n${sums.join('\n')}\n`;
  return {
    sha256: whole.digest('hex'),
    blocks,
    blocksSha256: createHash('sha256').update(blocks).digest('hex'),
  };
}
