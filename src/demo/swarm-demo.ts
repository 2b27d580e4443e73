/**
 * The interim demo: a BitTorrent swarm on loopback that shows the pieces
 * this version has (torrent creation, our tracker) working with real
 * clients. One aria2c seeder with a capped upload and N aria2c leechers
 * fetch a random image through our tracker; each copy is checked by SHA-256
 * and the tracker's counters show how much the leechers served each other.
 * PXE-booting virtual machines replace the aria2c clients in a later version.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { createTorrent } from '../torrent/create.js';
import { aria2cSwarmArgs } from './aria2c.js';
import { TrackerServer } from '../tracker/server.js';
import type { SwarmState } from '../tracker/server.js';
import { BootTorrentError, abortError } from '../errors.js';

export interface SwarmDemoOptions {
  clients: number;
  imageBytes: number;
  /** The seeder's upload cap in bytes/s, so that leechers must share. */
  seederUploadLimit: number;
  aria2c: string;
  /** Give up after this long (ms). */
  timeoutMs: number;
}

export interface SwarmDemoServices {
  signal?: AbortSignal;
  log: (line: string) => void;
  /** Called about once a second with the tracker's view of the swarm. */
  onTick?: (swarm: SwarmState | undefined, elapsedMs: number) => void;
}

export interface SwarmDemoResult {
  readonly verified: number;
  readonly clients: number;
  readonly imageBytes: number;
  readonly seconds: number;
  /** Bytes uploaded as last reported to the tracker, by the seeder and by all leechers. */
  readonly seederUploaded: number;
  readonly leechersUploaded: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function writeRandomFile(path: string, bytes: number): Promise<Buffer> {
  const fh = await open(path, 'w');
  const hash = createHash('sha256');
  try {
    for (let left = bytes; left > 0;) {
      const chunk = randomBytes(Math.min(left, 4 << 20));
      hash.update(chunk);
      await fh.write(chunk);
      left -= chunk.length;
    }
  } finally {
    await fh.close();
  }
  return hash.digest();
}

/** Runs the loopback swarm demo; everything it starts is stopped and removed before it returns. */
export async function runSwarmDemo(
  opts: SwarmDemoOptions,
  services: SwarmDemoServices,
): Promise<SwarmDemoResult> {
  const { log, signal } = services;
  const work = await mkdtemp(join(tmpdir(), 'boottorrent-demo-'));
  const children: ChildProcess[] = [];
  const tracker = new TrackerServer({ host: '127.0.0.1', port: 0, intervalSeconds: 2 });
  // aria2c's last announce (the `stopped` one at exit) carries its final count.
  const uploadedBy = new Map<string, number>();
  // The seeder is the peer that had nothing left from its first announce.
  const seeders = new Set<string>();
  tracker.on('announce', ({ peer }) => {
    if (!uploadedBy.has(peer.peerId) && peer.left === 0) seeders.add(peer.peerId);
    uploadedBy.set(peer.peerId, peer.uploaded);
  });
  try {
    const { port } = await tracker.listen();
    const seedDir = join(work, 'server');
    await mkdir(seedDir);
    log(`writing a ${(opts.imageBytes / 2 ** 20).toFixed(0)} MiB random image`);
    const expected = await writeRandomFile(join(seedDir, 'image.bin'), opts.imageBytes);
    const { torrent, meta } = await createTorrent(join(seedDir, 'image.bin'), {
      announce: [[`http://127.0.0.1:${port}/announce`]],
    });
    const torrentPath = join(work, 'image.torrent');
    await writeFile(torrentPath, torrent);
    tracker.add(meta.infoHash);
    log(`torrent ${meta.infoHashHex}: ${meta.pieceCount} pieces of ${meta.pieceLength / 1024} KiB`);
    log(`tracker on http://127.0.0.1:${port}/announce`);

    const start = (name: string, dir: string, extra: string[]): ChildProcess => {
      const child = spawn(
        opts.aria2c,
        [
          ...aria2cSwarmArgs({
            dir,
            listenPort: 20000 + Math.floor(Math.random() * 20000),
            stopWithPid: process.pid,
            logLevel: 'error',
          }),
          ...extra,
          torrentPath,
        ],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      child.stderr?.on('data', (d: Buffer) => log(`${name}: ${d.toString().trim()}`));
      children.push(child);
      return child;
    };
    start('seeder', seedDir, [
      '--check-integrity=true',
      `--max-overall-upload-limit=${opts.seederUploadLimit}`,
    ]);
    log(`seeder: aria2c, upload capped at ${(opts.seederUploadLimit / 2 ** 20).toFixed(1)} MiB/s`);
    const clientDirs: string[] = [];
    for (let i = 1; i <= opts.clients; i++) {
      const dir = join(work, `client${i}`);
      await mkdir(dir);
      clientDirs.push(dir);
      start(`client${i}`, dir, []);
    }
    log(`${opts.clients} aria2c clients started`);

    const t0 = Date.now();
    for (;;) {
      if (signal?.aborted) throw abortError(signal);
      for (const c of children) {
        if (c.exitCode !== null) {
          throw new BootTorrentError('BT_ERR_DEMO', `aria2c exited early with code ${c.exitCode}`);
        }
      }
      const swarm = tracker.swarms().find((s) => s.infoHash === meta.infoHashHex);
      services.onTick?.(swarm, Date.now() - t0);
      // Done when every client (not the seeder) reports nothing left.
      if (swarm && swarm.peers.length === opts.clients + 1 && swarm.peers.every((p) => p.left === 0)) break;
      if (Date.now() - t0 > opts.timeoutMs) {
        throw new BootTorrentError(
          'BT_ERR_DEMO',
          `the swarm did not finish within ${opts.timeoutMs / 1000} s`,
        );
      }
      await sleep(1000);
    }
    const seconds = (Date.now() - t0) / 1000;

    let verified = 0;
    for (const [i, dir] of clientDirs.entries()) {
      const got = createHash('sha256')
        .update(await readFile(join(dir, 'image.bin')))
        .digest();
      if (got.equals(expected)) verified++;
      else log(`client${i + 1}: SHA-256 MISMATCH`);
    }
    // Stop the clients politely so each sends its final `stopped` announce.
    await stopAll(children);
    let seederUploaded = 0;
    let leechersUploaded = 0;
    for (const [id, up] of uploadedBy) {
      if (seeders.has(id)) seederUploaded += up;
      else leechersUploaded += up;
    }
    return {
      verified,
      clients: opts.clients,
      imageBytes: opts.imageBytes,
      seconds,
      seederUploaded,
      leechersUploaded,
    };
  } finally {
    await stopAll(children);
    await tracker.close();
    await rm(work, { recursive: true, force: true });
  }
}

/** SIGTERM each child we started (by PID), then SIGKILL any that linger. */
async function stopAll(children: ChildProcess[]): Promise<void> {
  const alive = children.filter((c) => c.exitCode === null && c.signalCode === null);
  for (const c of alive) c.kill('SIGTERM');
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline && alive.some((c) => c.exitCode === null && c.signalCode === null))
    await sleep(100);
  for (const c of alive) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}
