// Our infohash must equal mktorrent's for the same input and piece length:
// then a torrent made by either tool describes the same swarm.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createTorrent } from '../../src/torrent/create.js';
import { parseTorrent } from '../../src/torrent/metainfo.js';
import { requireProgram } from '../helpers/programs.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';

const mktorrent = requireProgram('mktorrent', 'mktorrent');

function mk(input: string, out: string, args: string[]): ReturnType<typeof parseTorrent> {
  execFileSync(mktorrent, ['-d', '-a', 'http://127.0.0.1:6969/announce', '-o', out, ...args, input], {
    stdio: 'pipe',
  });
  return parseTorrent(readFileSync(out), out);
}

test('single file: same infohash as mktorrent at several piece lengths', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'disk.img');
  writeFileSync(file, pseudoRandomBytes(3 * 262144 + 12345, 3));
  for (const exp of [15, 18, 20]) {
    const theirs = mk(file, join(dir, `m${exp}.torrent`), ['-l', String(exp)]);
    const { meta } = await createTorrent(file, { pieceLength: 2 ** exp });
    assert.equal(meta.infoHashHex, theirs.infoHashHex, `piece length 2^${exp}`);
    assert.deepEqual(meta.infoBuffer, theirs.infoBuffer);
  }
});

test('nested folder: same infohash (order, hidden, empty, unicode, symlinked files)', async (t) => {
  const dir = tempDir(t);
  const root = join(dir, 'linuxos');
  mkdirSync(join(root, 'a', 'deep', 'er'), { recursive: true });
  mkdirSync(join(root, 'Boot'), { recursive: true });
  writeFileSync(join(root, 'vmlinuz'), pseudoRandomBytes(300_000, 11));
  writeFileSync(join(root, 'initrd.img'), pseudoRandomBytes(700_001, 12));
  writeFileSync(join(root, 'a.txt'), 'a dot txt sorts before a/ by byte order');
  writeFileSync(join(root, 'a', 'b'), pseudoRandomBytes(5000, 13));
  writeFileSync(join(root, 'a', 'deep', 'er', 'x'), pseudoRandomBytes(77, 14));
  writeFileSync(join(root, 'Boot', 'grub.cfg'), 'menuentry');
  writeFileSync(join(root, '.hidden'), 'dot file');
  writeFileSync(join(root, 'empty'), '');
  writeFileSync(join(root, 'café-ünïcode'), 'utf-8 name');
  symlinkSync('vmlinuz', join(root, 'link-to-kernel'));
  for (const exp of [15, 18]) {
    const theirs = mk(root, join(dir, `d${exp}.torrent`), ['-l', String(exp)]);
    const { meta } = await createTorrent(root, { pieceLength: 2 ** exp });
    assert.deepEqual(
      meta.files.map((f) => f.path.join('/')),
      theirs.files.map((f) => f.path.join('/')),
    );
    assert.equal(meta.infoHashHex, theirs.infoHashHex, `piece length 2^${exp}`);
  }
});

test('private flag and web seeds: same infohash and fields as mktorrent', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'os.iso');
  writeFileSync(file, pseudoRandomBytes(100_000, 5));
  const theirs = mk(file, join(dir, 'p.torrent'), ['-p', '-l', '16', '-w', 'http://127.0.0.1:8080/os.iso']);
  const { meta } = await createTorrent(file, {
    pieceLength: 65536,
    private: true,
    urlList: ['http://127.0.0.1:8080/os.iso'],
    announce: [['http://127.0.0.1:6969/announce']],
  });
  assert.equal(meta.infoHashHex, theirs.infoHashHex);
  assert.equal(theirs.private, true);
  assert.deepEqual(meta.urlList, theirs.urlList);
  assert.deepEqual(meta.announce, theirs.announce);
});
