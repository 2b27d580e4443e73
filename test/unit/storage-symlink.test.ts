/**
 * Issue #14 item 9: a link left in a download folder must not make the
 * engine write to what it points to. Before the fix, a symlink at a
 * download's own file path was followed: the engine truncated the victim
 * to the torrent's length and then wrote pieces into it. Each case starts a
 * real download (TorrentSession in download mode) and checks that the
 * victim outside the folder is untouched and that the error names the link.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import {
  existsSync,
  linkSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { createTorrent } from '../../src/torrent/create.js';
import { TorrentSession } from '../../src/swarm/session.js';
import { newPeerId } from '../../src/swarm/client.js';
import { BootTorrentError } from '../../src/errors.js';
import type { Metainfo } from '../../src/torrent/metainfo.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';

const VICTIM = 'victim: must stay exactly like this\n';

/** A torrent of `files` (relative paths) made in <dir>/made/<name>; and a victim file outside any download. */
async function setup(t: TestContext, files: string[] | null) {
  const dir = tempDir(t, 'bt-symlink-');
  const made = join(dir, 'made');
  mkdirSync(made);
  let meta: Metainfo;
  if (files === null) {
    writeFileSync(join(made, 'image.bin'), pseudoRandomBytes(40_000, 9));
    meta = (await createTorrent(join(made, 'image.bin'), { pieceLength: 16384 })).meta;
  } else {
    for (const [i, f] of files.entries()) {
      mkdirSync(join(made, 'tree', f, '..'), { recursive: true });
      writeFileSync(join(made, 'tree', f), pseudoRandomBytes(20_000 + i, 10 + i));
    }
    meta = (await createTorrent(join(made, 'tree'), { pieceLength: 16384 })).meta;
  }
  mkdirSync(join(dir, 'outside'));
  const victim = join(dir, 'outside', 'victim.txt');
  writeFileSync(victim, VICTIM);
  const download = join(dir, 'download');
  mkdirSync(download);
  return { dir, meta, victim, download };
}

async function startDownload(t: TestContext, meta: Metainfo, dir: string): Promise<unknown> {
  const session = new TorrentSession({ meta, dir, mode: 'download', peerId: newPeerId(), listenPort: 1 });
  t.after(() => session.stop());
  try {
    await session.start();
  } catch (err) {
    return err;
  }
  return undefined;
}

function assertRefused(err: unknown, path: string): void {
  assert.ok(err instanceof BootTorrentError, `expected a BootTorrentError, got ${String(err)}`);
  assert.equal(err.code, 'BT_ERR_STORAGE');
  assert.ok(err.message.includes(path), `the error names ${path}: ${err.message}`);
  assert.match(err.message, /link/);
}

test('a symlink at a single-file download path is refused, not followed to overwrite its target', async (t) => {
  const { meta, victim, download } = await setup(t, null);
  const link = join(download, meta.name);
  symlinkSync(victim, link);
  const err = await startDownload(t, meta, download);
  assertRefused(err, link);
  assert.equal(readFileSync(victim, 'utf8'), VICTIM);
});

test('a dangling symlink at a download path is refused, not followed to create its target', async (t) => {
  const { dir, meta, download } = await setup(t, null);
  const target = join(dir, 'outside', 'created-through-link');
  const link = join(download, meta.name);
  symlinkSync(target, link);
  const err = await startDownload(t, meta, download);
  assertRefused(err, link);
  assert.equal(existsSync(target), false, 'nothing created where the link points');
});

test('a symlink at a file path inside a multi-file download is refused, the file it points to untouched', async (t) => {
  const { meta, victim, download } = await setup(t, ['a.bin', 'sub/b.bin']);
  mkdirSync(join(download, meta.name, 'sub'), { recursive: true });
  const link = join(download, meta.name, 'sub', 'b.bin');
  symlinkSync(victim, link);
  const err = await startDownload(t, meta, download);
  assertRefused(err, link);
  assert.equal(readFileSync(victim, 'utf8'), VICTIM);
});

test('a symlinked folder inside a multi-file download is refused before any folder is made through it', async (t) => {
  const { dir, meta, download } = await setup(t, ['a.bin', 'sub/deep/b.bin']);
  mkdirSync(join(download, meta.name));
  const link = join(download, meta.name, 'sub');
  symlinkSync(join(dir, 'outside'), link);
  const err = await startDownload(t, meta, download);
  assertRefused(err, link);
  assert.deepEqual(readdirSync(join(dir, 'outside')), ['victim.txt'], 'nothing made outside');
  assert.equal(readFileSync(join(dir, 'outside', 'victim.txt'), 'utf8'), VICTIM);
});

test('a symlinked torrent folder (the name of a multi-file download) is refused', async (t) => {
  const { dir, meta, download } = await setup(t, ['a.bin', 'b.bin']);
  const link = join(download, meta.name);
  symlinkSync(join(dir, 'outside'), link);
  const err = await startDownload(t, meta, download);
  assertRefused(err, link);
  assert.deepEqual(readdirSync(join(dir, 'outside')), ['victim.txt']);
});

test('a hard link at a download path is refused, the other name untouched', async (t) => {
  const { meta, victim, download } = await setup(t, null);
  const path = join(download, meta.name);
  linkSync(victim, path);
  const err = await startDownload(t, meta, download);
  assert.ok(err instanceof BootTorrentError && err.code === 'BT_ERR_STORAGE', String(err));
  assert.ok(err.message.includes(path) && /hard link/.test(err.message), err.message);
  assert.equal(readFileSync(victim, 'utf8'), VICTIM);
});

test('control: a download folder that is itself a symlink is the user choice and works', async (t) => {
  const { dir, meta } = await setup(t, ['a.bin', 'sub/b.bin']);
  mkdirSync(join(dir, 'real-download'));
  symlinkSync(join(dir, 'real-download'), join(dir, 'linked-download'));
  const err = await startDownload(t, meta, join(dir, 'linked-download'));
  assert.equal(err, undefined);
  assert.ok(existsSync(join(dir, 'real-download', meta.name, 'sub', 'b.bin')));
});
