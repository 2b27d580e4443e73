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
import type { Script } from './wire-session.js';

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

/**
 * Issue #14 item 1, as the stateful wire fuzzer (wire-session.ts) found it:
 * a peer whose BEP 10 handshake gives ut_pex the id 0 (disabled) while the
 * target knows another peer's listen port. A minute later the PEX timer
 * sent to it anyway; sendExtension threw inside setInterval and the
 * process exited. `target` picks the seeding or the downloading session.
 */
export function utPexZeroScript(target: 'seeder' | 'leecher' = 'seeder'): Buffer {
  const script: Script = {
    target,
    actions: [
      { op: 'open', c: 0, via: 'memory' },
      { op: 'hs', c: 0, fast: true, ext: true },
      { op: 'ext', c: 0, m: [['ut_pex', 0]], p: 'sink' },
      { op: 'open', c: 1, via: 'tcp' },
      { op: 'hs', c: 1, fast: true, ext: true },
      { op: 'ext', c: 1, m: [['ut_pex', 1]], p: 'sink' },
      { op: 'wait', ms: 61_000 },
    ],
  };
  return Buffer.from(JSON.stringify(script));
}

export const REGRESSIONS: Record<string, () => Buffer> = {
  'dhcp/regress-split-option-quadratic.bin': () => dhcpSplitOption(),
  'http-tracker/regress-174000-compact-peers.bin': () => httpManyPeers(),
  'wire-session/regress-ut-pex-id-0-pex-timer-seeder.json': () => utPexZeroScript('seeder'),
  'wire-session/regress-ut-pex-id-0-pex-timer-leecher.json': () => utPexZeroScript('leecher'),
};

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  // Scripts are written as prettier lays JSON out, so `npm run lint` accepts the corpus.
  const prettier = await import('prettier');
  for (const [rel, make] of Object.entries(REGRESSIONS)) {
    mkdirSync(join(CORPUS_DIR, rel, '..'), { recursive: true });
    const bytes = make();
    writeFileSync(
      join(CORPUS_DIR, rel),
      rel.endsWith('.json') ? await prettier.format(bytes.toString(), { parser: 'json' }) : bytes,
    );
    console.log(`wrote ${rel}`);
  }
}
