// Our engine with real aria2c peers: each direction, and a mixed swarm in
// which ours must both download from and upload to aria2c.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createTorrent } from '../../src/torrent/create.js';
import { BitTorrentClient } from '../../src/swarm/client.js';
import type { AddOptions } from '../../src/swarm/client.js';
import { TrackerServer } from '../../src/tracker/server.js';
import { startAria2c } from '../helpers/aria2c.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const MiB = 1 << 20;

async function setup(t: TestContext, bytes: number) {
  const dir = tempDir(t);
  const tracker = new TrackerServer({ host: '127.0.0.1', port: 0, intervalSeconds: 2 });
  const { port } = await tracker.listen();
  t.after(() => tracker.close());
  const seedDir = join(dir, 'seed');
  mkdirSync(seedDir);
  const data = pseudoRandomBytes(bytes, 5);
  writeFileSync(join(seedDir, 'os.img'), data);
  const { meta, torrent } = await createTorrent(join(seedDir, 'os.img'), {
    pieceLength: 256 * 1024,
    announce: [[`http://127.0.0.1:${port}/announce`]],
  });
  const torrentPath = join(dir, 'os.torrent');
  writeFileSync(torrentPath, torrent);
  tracker.add(meta.infoHash);
  return { dir, seedDir, data, meta, torrentPath, tracker };
}

async function ours(t: TestContext, options: AddOptions) {
  const client = new BitTorrentClient({ host: '127.0.0.1', port: 0 });
  t.after(() => client.close());
  await client.listen();
  return client.add(options);
}

async function waitForFile(
  path: string,
  want: string,
  child: { exitCode: number | null },
  log: () => string,
  ms: number,
) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      if (sha256(readFileSync(path)) === want) return;
    } catch {
      // not there yet
    }
    if (child.exitCode !== null) throw new Error(`aria2c exited ${child.exitCode}:\n${log()}`);
    if (Date.now() > deadline) throw new Error(`aria2c did not finish within ${ms} ms:\n${log()}`);
    await sleep(250);
  }
}

test('our seeder to an aria2c leecher', async (t) => {
  const s = await setup(t, 20 * MiB);
  const seeder = await ours(t, { meta: s.meta, dir: s.seedDir, mode: 'seed' });
  const out = join(s.dir, 'aria');
  mkdirSync(out);
  const a = startAria2c(t, s.torrentPath, out);
  await waitForFile(join(out, 'os.img'), sha256(s.data), a.child, a.log, 120_000);
  assert.ok(seeder.stats().uploaded >= s.meta.length, 'every byte came from our seeder');
});

test('an aria2c seeder to our leecher', async (t) => {
  const s = await setup(t, 20 * MiB);
  startAria2c(t, s.torrentPath, s.seedDir, { seed: true });
  const leecher = await ours(t, { meta: s.meta, dir: join(s.dir, 'ours'), mode: 'download' });
  // Connections to seeds close once we are complete, and the tail of 20 MiB on
  // loopback can arrive between two samples: sample who we talk to, and how
  // much came from aria2c so far. aria2c is the only peer that has the data.
  let fromAria = 0;
  const others = new Set<string>();
  const deadline = Date.now() + 120_000;
  while (!leecher.complete) {
    const peers = leecher.stats().peers;
    for (const p of peers) if (!p.client.startsWith('A2-')) others.add(p.client);
    fromAria = Math.max(
      fromAria,
      peers.filter((p) => p.client.startsWith('A2-')).reduce((n, p) => n + p.downloaded, 0),
    );
    if (Date.now() > deadline) throw new Error('download from aria2c did not finish');
    await sleep(20);
  }
  assert.equal(sha256(readFileSync(join(s.dir, 'ours', 'os.img'))), sha256(s.data));
  assert.equal(leecher.stats().downloaded, s.meta.length);
  assert.deepEqual([...others], [], 'no peer but aria2c was connected');
  assert.ok(fromAria > 0, 'bytes came from aria2c');
});

test('mixed swarm: our seeder, two of ours and two aria2c leechers; ours trade with aria2c both ways', async (t) => {
  const s = await setup(t, 48 * MiB);
  // The seeder is slow, so the four leechers must feed each other.
  await ours(t, { meta: s.meta, dir: s.seedDir, mode: 'seed', uploadLimit: 6 * MiB });
  const mine = [
    await ours(t, { meta: s.meta, dir: join(s.dir, 'ours1'), mode: 'download' }),
    await ours(t, { meta: s.meta, dir: join(s.dir, 'ours2'), mode: 'download' }),
  ];
  const arias = [1, 2].map((i) => {
    const out = join(s.dir, `aria${i}`);
    mkdirSync(out);
    return { out, ...startAria2c(t, s.torrentPath, out) };
  });
  // Per-peer totals vanish when a connection closes, so sample them as we go.
  const fromAria = new Map<string, number>();
  const toAria = new Map<string, number>();
  const sample = () => {
    for (const [i, m] of mine.entries()) {
      for (const p of m.stats().peers) {
        if (!p.client.startsWith('A2-')) continue;
        const k = `${i}/${p.address}`;
        fromAria.set(k, Math.max(fromAria.get(k) ?? 0, p.downloaded));
        toAria.set(k, Math.max(toAria.get(k) ?? 0, p.uploaded));
      }
    }
  };
  const want = sha256(s.data);
  const deadline = Date.now() + 240_000;
  for (;;) {
    sample();
    const oursDone = mine.every((m) => m.complete);
    const ariaDone = arias.every((a) => {
      try {
        return sha256(readFileSync(join(a.out, 'os.img'))) === want;
      } catch {
        return false;
      }
    });
    if (oursDone && ariaDone) break;
    for (const a of arias) if (a.child.exitCode !== null) throw new Error(`aria2c exited: ${a.log()}`);
    if (Date.now() > deadline)
      throw new Error(`mixed swarm did not finish: ${JSON.stringify(mine.map((m) => m.stats().piecesHave))}`);
    await sleep(200);
  }
  for (const i of [1, 2]) assert.equal(sha256(readFileSync(join(s.dir, `ours${i}`, 'os.img'))), want);
  const down = [...fromAria.values()].reduce((a, b) => a + b, 0);
  const up = [...toAria.values()].reduce((a, b) => a + b, 0);
  t.diagnostic(
    `our leechers got ${(down / MiB).toFixed(1)} MiB from aria2c and sent it ${(up / MiB).toFixed(1)} MiB`,
  );
  assert.ok(down > 0, 'our leechers downloaded from aria2c');
  assert.ok(up > 0, 'our leechers uploaded to aria2c');
});
