import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createTorrent } from '../../src/torrent/create.js';
import { pseudoRandomBytes } from './tmp.js';

/** A single-file torrent `seed/image.bin` of `bytes` made-up bytes under `dir`, for swarm tests. */
export async function seedImage(dir: string, bytes: number, pieceLength: number, announce: string[] = []) {
  const seedDir = join(dir, 'seed');
  mkdirSync(seedDir, { recursive: true });
  const data = pseudoRandomBytes(bytes, 77);
  writeFileSync(join(seedDir, 'image.bin'), data);
  const { meta } = await createTorrent(join(seedDir, 'image.bin'), {
    pieceLength,
    announce: announce.map((u) => [u]),
  });
  return { seedDir, data, meta };
}
