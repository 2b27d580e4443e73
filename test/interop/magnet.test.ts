// Magnet links (BEP 9 metadata exchange): our get from our seeder by x.pe,
// aria2c fetching the metadata from our seeder, and our get from an aria2c
// seeder, both through our tracker.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createTorrent } from '../../src/torrent/create.js';
import { toMagnet } from '../../src/torrent/magnet.js';
import { parseTorrent } from '../../src/torrent/metainfo.js';
import { BitTorrentClient } from '../../src/swarm/client.js';
import { TrackerServer } from '../../src/tracker/server.js';
import { runCli } from '../helpers/cli.js';
import { startAria2c } from '../helpers/aria2c.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function setup(t: TestContext) {
  const dir = tempDir(t);
  const tracker = new TrackerServer({ host: '127.0.0.1', port: 0, intervalSeconds: 2 });
  const { port } = await tracker.listen();
  t.after(() => tracker.close());
  mkdirSync(join(dir, 'seed', 'os'), { recursive: true });
  const files = {
    'os/vmlinuz': pseudoRandomBytes(300_000, 1),
    'os/initrd.img': pseudoRandomBytes(900_000, 2),
  };
  for (const [p, d] of Object.entries(files)) writeFileSync(join(dir, 'seed', p), d);
  const { meta, torrent } = await createTorrent(join(dir, 'seed', 'os'), {
    pieceLength: 32768,
    announce: [[`http://127.0.0.1:${port}/announce`]],
  });
  writeFileSync(join(dir, 'os.torrent'), torrent);
  tracker.add(meta.infoHash);
  return { dir, meta, files, torrentPath: join(dir, 'os.torrent') };
}

async function ourSeeder(t: TestContext, s: Awaited<ReturnType<typeof setup>>) {
  const client = new BitTorrentClient({ host: '127.0.0.1', port: 0 });
  t.after(() => client.close());
  await client.listen();
  await client.add({ meta: s.meta, dir: join(s.dir, 'seed'), mode: 'seed' });
  return client;
}

function checkFiles(s: Awaited<ReturnType<typeof setup>>, root: string) {
  for (const [p, d] of Object.entries(s.files))
    assert.equal(sha256(readFileSync(join(root, p))), sha256(d), p);
}

test('get with a magnet link fetches the metadata from our seeder (x.pe), then the data', async (t) => {
  const s = await setup(t);
  const seeder = await ourSeeder(t, s);
  // No tracker in this magnet: the peer address alone must do.
  const magnet = `magnet:?xt=urn:btih:${s.meta.infoHashHex}&x.pe=127.0.0.1:${seeder.listenPort}`;
  const r = await runCli(['get', magnet, '-o', join(s.dir, 'got'), '--host', '127.0.0.1', '--port', '0'], {
    timeoutMs: 60_000,
  });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /metadata: os, /);
  checkFiles(s, join(s.dir, 'got'));
});

test('aria2c gets the metadata from our seeder through a magnet link', async (t) => {
  const s = await setup(t);
  await ourSeeder(t, s);
  const out = join(s.dir, 'aria');
  mkdirSync(out);
  const a = startAria2c(t, toMagnet(s.meta), out, {
    extra: ['--bt-metadata-only=true', '--bt-save-metadata=true'],
  });
  const deadline = Date.now() + 60_000;
  let saved: string | undefined;
  while (!saved) {
    saved = readdirSync(out).find((f) => f.endsWith('.torrent'));
    if (Date.now() > deadline) throw new Error(`aria2c saved no metadata:\n${a.log()}`);
    await sleep(200);
  }
  await sleep(300);
  assert.deepEqual(parseTorrent(readFileSync(join(out, saved))).infoBuffer, s.meta.infoBuffer);
});

test('get with a magnet link fetches metadata and data from an aria2c seeder via our tracker', async (t) => {
  const s = await setup(t);
  startAria2c(t, s.torrentPath, join(s.dir, 'seed'), { seed: true });
  const r = await runCli(
    ['get', toMagnet(s.meta), '-o', join(s.dir, 'got'), '--host', '127.0.0.1', '--port', '0'],
    {
      timeoutMs: 90_000,
    },
  );
  assert.equal(r.code, 0, r.stdout + r.stderr);
  checkFiles(s, join(s.dir, 'got'));
});
