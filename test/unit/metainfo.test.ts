import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encode, RawBencode } from '../../src/bencode/index.js';
import { autoPieceLength, createTorrent } from '../../src/torrent/create.js';
import { encodeTorrent, parseTorrent, pieceHash, pieceSize } from '../../src/torrent/metainfo.js';
import { parseMagnet, toMagnet } from '../../src/torrent/magnet.js';
import { isBootTorrentError } from '../../src/errors.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';

const sha1 = (b: Buffer) => createHash('sha1').update(b).digest();

function rejects(torrent: Buffer, pattern: RegExp) {
  assert.throws(
    () => parseTorrent(torrent, 'x.torrent'),
    (err: unknown) => isBootTorrentError(err, 'BT_ERR_METAINFO') && pattern.test(err.message),
  );
}

const info = (extra: Record<string, unknown> = {}) =>
  ({ name: 'img', 'piece length': 16384, length: 20000, pieces: Buffer.alloc(40), ...extra }) as never;

test('parses a hand-built single-file torrent; infohash is SHA-1 of the info bytes', () => {
  const infoBytes = Buffer.from(
    'd6:lengthi20000e4:name3:img12:piece lengthi16384e6:pieces40:' + 'A'.repeat(40) + 'e',
  );
  const torrent = Buffer.concat([
    Buffer.from('d8:announce20:http://t.example/ann4:info'),
    infoBytes,
    Buffer.from('e'),
  ]);
  const m = parseTorrent(torrent);
  assert.equal(m.infoHashHex, sha1(infoBytes).toString('hex'));
  assert.equal(m.name, 'img');
  assert.equal(m.length, 20000);
  assert.equal(m.pieceCount, 2);
  assert.equal(pieceSize(m, 0), 16384);
  assert.equal(pieceSize(m, 1), 20000 - 16384);
  assert.deepEqual(pieceHash(m, 1), Buffer.from('A'.repeat(20)));
  assert.deepEqual(m.announce, [['http://t.example/ann']]);
  assert.deepEqual(m.files, [{ path: ['img'], length: 20000, offset: 0 }]);
  assert.equal(m.private, false);
});

test('infohash comes from the raw bytes even when keys are unsorted', () => {
  const infoBytes = Buffer.from(
    'd4:name1:x6:lengthi1e12:piece lengthi16384e6:pieces20:' + 'B'.repeat(20) + 'e',
  );
  const m = parseTorrent(Buffer.concat([Buffer.from('d4:info'), infoBytes, Buffer.from('e')]));
  assert.equal(m.infoHashHex, sha1(infoBytes).toString('hex'));
});

test('rejects broken and hostile metainfo, naming the field', () => {
  rejects(Buffer.from('garbage'), /not a torrent file/);
  rejects(encode([1]), /top level must be a dictionary/);
  rejects(encode({ announce: 'x' }), /info is missing/);
  rejects(encode({ info: info({ pieces: Buffer.alloc(39) }) }), /info.pieces must be/);
  rejects(encode({ info: info({ pieces: Buffer.alloc(20) }) }), /holds 1 hashes but 20000 bytes need 2/);
  rejects(encode({ info: info({ 'piece length': 0 }) }), /piece length must be a positive/);
  rejects(encode({ info: info({ name: '..' }) }), /info.name has an unsafe path component/);
  rejects(encode({ info: info({ name: 'a/b' }) }), /unsafe path component/);
  rejects(encode({ info: info({ files: [{ length: 1, path: ['a'] }] }) }), /both length and files/);
  rejects(encode({ info: info({ length: -1 }) }), /info.length must be a non-negative/);
  const multi = (files: unknown[]) =>
    encode({ info: { name: 'd', 'piece length': 16384, pieces: Buffer.alloc(20), files } as never });
  rejects(
    multi([{ length: 5, path: ['..', 'etc', 'passwd'] }]),
    /files\[0\].path has an unsafe path component ".."/,
  );
  rejects(multi([{ length: 5, path: ['a\\..\\b'] }]), /unsafe path component/);
  rejects(multi([{ length: 5, path: [] }]), /files\[0\].path must be a non-empty list/);
  rejects(multi([{ length: 5, path: [''] }]), /unsafe path component ""/);
  rejects(
    multi([
      { length: 5, path: ['a'] },
      { length: 5, path: ['a'] },
    ]),
    /files\[1\].path repeats the file "a"/,
  );
  rejects(multi([]), /non-empty files list/);
  rejects(multi([{ length: 'x', path: ['a'] }]), /files\[0\].length must be/);
});

test('announce-list wins over announce; url-list as string or list', () => {
  const m = parseTorrent(
    encode({
      announce: 'http://a/ann',
      'announce-list': [['http://b/ann', 'udp://c:1'], [], ['http://d/ann']],
      'url-list': 'http://ws/',
      info: info(),
    }),
  );
  assert.deepEqual(m.announce, [['http://b/ann', 'udp://c:1'], ['http://d/ann']]);
  assert.deepEqual(m.urlList, ['http://ws/']);
});

test('encodeTorrent keeps the info bytes, so the infohash never changes', () => {
  const infoBytes = encode(info({ pieces: Buffer.alloc(40, 7) }));
  const t = encodeTorrent(infoBytes, { announce: [['http://x/a'], ['http://y/a']], urlList: ['http://w/'] });
  const m = parseTorrent(t);
  assert.deepEqual(m.infoBuffer, infoBytes);
  assert.deepEqual(m.announce, [['http://x/a'], ['http://y/a']]);
  assert.deepEqual(encode({ a: new RawBencode(Buffer.from('i1e')) }), Buffer.from('d1:ai1ee'));
});

test('creates a single-file torrent whose pieces are the SHA-1 of each slice', async (t) => {
  const dir = tempDir(t);
  const data = pseudoRandomBytes(100_000, 7);
  writeFileSync(join(dir, 'image.bin'), data);
  const progress: number[] = [];
  const { torrent, meta } = await createTorrent(
    join(dir, 'image.bin'),
    { pieceLength: 32768, announce: [['http://127.0.0.1:6969/announce']], private: true, creationDate: null },
    { onProgress: (p) => progress.push(p.hashedBytes) },
  );
  assert.equal(meta.pieceCount, 4);
  for (let i = 0; i < 4; i++) {
    assert.deepEqual(pieceHash(meta, i), sha1(data.subarray(i * 32768, (i + 1) * 32768)));
  }
  assert.equal(meta.private, true);
  assert.equal(meta.singleFile, true);
  assert.equal(progress.at(-1), 100_000);
  assert.equal(parseTorrent(torrent).infoHashHex, meta.infoHashHex);
  assert.equal(meta.creationDate, undefined);
});

test('creates a multi-file torrent with pieces spanning files, in byte order of paths', async (t) => {
  const dir = tempDir(t);
  const root = join(dir, 'os');
  mkdirSync(join(root, 'a'), { recursive: true });
  const parts = {
    'a.txt': pseudoRandomBytes(20000, 1),
    'a/b': pseudoRandomBytes(30000, 2),
    Z: Buffer.alloc(0),
  };
  for (const [p, d] of Object.entries(parts)) writeFileSync(join(root, p), d);
  const { meta } = await createTorrent(root, { pieceLength: 16384 });
  assert.deepEqual(
    meta.files.map((f) => f.path.join('/')),
    ['Z', 'a.txt', 'a/b'],
  );
  const all = Buffer.concat([parts.Z, parts['a.txt'], parts['a/b']]);
  assert.equal(meta.length, all.length);
  for (let i = 0; i < meta.pieceCount; i++) {
    assert.deepEqual(pieceHash(meta, i), sha1(all.subarray(i * 16384, (i + 1) * 16384)));
  }
});

test('create refuses empty input, bad piece lengths and missing paths with clear errors', async (t) => {
  const dir = tempDir(t);
  mkdirSync(join(dir, 'empty'));
  writeFileSync(join(dir, 'f'), 'x');
  const fails = (p: Promise<unknown>, re: RegExp) =>
    assert.rejects(p, (e: unknown) => isBootTorrentError(e, 'BT_ERR_TORRENT_CREATE') && re.test(e.message));
  await fails(createTorrent(join(dir, 'empty')), /holds no data/);
  await fails(createTorrent(join(dir, 'nope')), /no such file or folder/);
  await fails(createTorrent(join(dir, 'f'), { pieceLength: 1000 }), /not a power of two/);
  await fails(createTorrent(join(dir, 'f'), { pieceLength: 8192 }), /not a power of two from 16384/);
  const ac = new AbortController();
  ac.abort();
  await assert.rejects(createTorrent(join(dir, 'f'), {}, { signal: ac.signal }), (e: unknown) =>
    isBootTorrentError(e, 'BT_ERR_ABORTED'),
  );
});

test('automatic piece length stays near 2048 pieces within bounds', () => {
  assert.equal(autoPieceLength(1), 16384);
  assert.equal(autoPieceLength(2048 * 16384), 16384);
  assert.equal(autoPieceLength(2048 * 16384 + 1), 32768);
  assert.equal(autoPieceLength(1024 ** 3), 512 * 1024);
  assert.equal(autoPieceLength(1024 ** 4), 16 * 1024 * 1024);
});

test('magnet links round-trip and accept base32 infohashes', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'my image.iso'), 'data');
  const { meta } = await createTorrent(join(dir, 'my image.iso'), {
    announce: [['http://10.0.0.1:6969/announce'], ['udp://10.0.0.1:6969']],
    urlList: ['http://10.0.0.1/oss/'],
  });
  const uri = toMagnet(meta);
  const m = parseMagnet(uri);
  assert.equal(m.infoHashHex, meta.infoHashHex);
  assert.equal(m.name, 'my image.iso');
  assert.deepEqual(m.trackers, ['http://10.0.0.1:6969/announce', 'udp://10.0.0.1:6969']);
  assert.deepEqual(m.webSeeds, ['http://10.0.0.1/oss/']);
  // RFC 4648 base32 of 20 bytes 0x00..0x13.
  const b32 = parseMagnet('magnet:?xt=urn:btih:AAAQEAYEAUDAOCAJBIFQYDIOB4IBCEQT&x.pe=10.0.0.2:6881');
  assert.equal(b32.infoHashHex, '000102030405060708090a0b0c0d0e0f10111213');
  assert.deepEqual(b32.peers, ['10.0.0.2:6881']);
  for (const [bad, re] of [
    ['http://x', /must start with "magnet:\?"/],
    ['magnet:?dn=x', /no xt=urn:btih/],
    ['magnet:?xt=urn:btih:1234', /neither 40 hex nor 32 base32/],
    ['magnet:?xt=urn:btih:' + '1'.repeat(32), /neither 40 hex/],
  ] as const) {
    assert.throws(
      () => parseMagnet(bad),
      (e: unknown) => isBootTorrentError(e, 'BT_ERR_MAGNET') && re.test(e.message),
    );
  }
});

test('worker-thread hashing gives the same pieces as hashing in order, across file boundaries', async (t) => {
  const dir = tempDir(t);
  const root = join(dir, 'os');
  mkdirSync(root);
  // Sizes chosen so jobs (16 MiB of whole pieces) and files cut pieces unevenly.
  writeFileSync(join(root, 'a'), pseudoRandomBytes(3 * 1024 * 1024 + 17, 21));
  writeFileSync(join(root, 'b'), pseudoRandomBytes(15 * 1024 * 1024 + 5, 22));
  writeFileSync(join(root, 'c'), pseudoRandomBytes(1000, 23));
  const inThread = await createTorrent(root, { pieceLength: 65536, hashWorkers: 0, creationDate: null });
  const pooled = await createTorrent(root, { pieceLength: 65536, hashWorkers: 2, creationDate: null });
  assert.equal(pooled.meta.infoHashHex, inThread.meta.infoHashHex);
  assert.deepEqual(pooled.torrent, inThread.torrent);
});
