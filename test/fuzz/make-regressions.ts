/**
 * Builds the inputs of the parser bugs found by fuzzing (issue #8), shared
 * by their regression tests (test/unit/fuzz-regressions.test.ts) and written
 * into the corpus (test/fuzz/corpus/<target>/regress-*.bin) by
 * `node dist/test/fuzz/make-regressions.js`, so the fuzzer mutates them too.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { encode as bencodeEncode } from '../../src/bencode/index.js';
import { encode } from '../../src/dhcp/codec.js';
import { CORPUS_DIR } from './harness.js';

/** A DHCPDISCOVER whose option 60 is split into `n` one-byte instances (RFC 3396) filling a datagram. */
export function dhcpSplitOption(n = 21_000): Buffer {
  const head = encode({
    op: 1,
    xid: 1,
    chaddr: Buffer.alloc(16),
    options: new Map([[53, Buffer.from([1])]]),
  });
  const parts = [head.subarray(0, 240), Buffer.from([53, 1, 1])];
  for (let i = 0; i < n; i++) parts.push(Buffer.from([60, 1, 0x41]));
  parts.push(Buffer.from([255]));
  return Buffer.concat(parts);
}

/**
 * A tracker's announce reply whose compact peer list fills the HTTP client's
 * 1 MiB body limit, behind the 'A' that selects the reply side of the
 * http-tracker target. Spread into push() it threw RangeError.
 */
export function httpManyPeers(peers = 174_000, peers6 = 0): Buffer {
  const body = bencodeEncode({
    interval: 60,
    peers: Buffer.alloc(6 * peers, 1),
    peers6: Buffer.alloc(18 * peers6, 2),
  });
  return Buffer.concat([Buffer.from('A'), body]);
}

export const REGRESSIONS: Record<string, () => Buffer> = {
  'dhcp/regress-split-option-quadratic.bin': () => dhcpSplitOption(),
  'http-tracker/regress-174000-compact-peers.bin': () => httpManyPeers(),
};

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  for (const [rel, make] of Object.entries(REGRESSIONS)) {
    mkdirSync(join(CORPUS_DIR, rel, '..'), { recursive: true });
    writeFileSync(join(CORPUS_DIR, rel), make());
    console.log(`wrote ${rel}`);
  }
}
