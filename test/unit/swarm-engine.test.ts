// Our engine against itself: in memory, on loopback TCP with our tracker,
// with a peer serving corrupt data, and with a peer sending garbage.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { connect } from 'node:net';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { once } from 'node:events';
import { createTorrent } from '../../src/torrent/create.js';
import { TorrentSession } from '../../src/swarm/session.js';
import { BitTorrentClient, newPeerId } from '../../src/swarm/client.js';
import { TrackerServer } from '../../src/tracker/server.js';
import { encodeHandshake, reservedBytes } from '../../src/wire/codec.js';
import { PeerConnection } from '../../src/wire/connection.js';
import type { Metainfo } from '../../src/torrent/metainfo.js';
import { duplexPair } from '../helpers/duplex.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';
import { seedImage } from '../helpers/image.js';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

const withTimeout = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
  Promise.race([
    p,
    new Promise<T>((_, reject) =>
      setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms).unref(),
    ),
  ]);

test('two engines over an in-memory stream: the leecher ends with the seeder data', async (t) => {
  const dir = tempDir(t);
  const { seedDir, data, meta } = await seedImage(dir, 3 * 262144 + 1000, 262144);
  const seeder = new TorrentSession({ meta, dir: seedDir, mode: 'seed', peerId: newPeerId(), listenPort: 1 });
  const leecher = new TorrentSession({
    meta,
    dir: join(dir, 'leech'),
    mode: 'download',
    peerId: newPeerId(),
    listenPort: 2,
  });
  t.after(() => Promise.all([seeder.stop(), leecher.stop()]));
  await seeder.start();
  await leecher.start();
  const [a, b] = duplexPair();
  leecher.connectStream(a, 'seeder', true);
  seeder.connectStream(b, 'leecher', false);
  await withTimeout(leecher.whenComplete(), 30_000, 'download');
  assert.equal(sha256(readFileSync(join(dir, 'leech', 'image.bin'))), sha256(data));
  const s = leecher.stats();
  assert.equal(s.piecesHave, meta.pieceCount);
  assert.equal(s.downloaded, meta.length);
  assert.equal(seeder.stats().uploaded, meta.length);
});

async function startClient(
  t: TestContext,
  meta: Metainfo,
  dir: string,
  mode: 'seed' | 'download',
  extra = {},
) {
  const client = new BitTorrentClient({ host: '127.0.0.1', port: 0 });
  t.after(() => client.close());
  await client.listen();
  const session = await client.add({ meta, dir, mode, ...extra });
  return { client, session };
}

test('a spreading seed rejects a piece it already sent and suggests (BEP 6) one that never left it', async (t) => {
  const dir = tempDir(t);
  const { seedDir, meta } = await seedImage(dir, 4 * 65536, 65536);
  const seeder = new TorrentSession({ meta, dir: seedDir, mode: 'seed', peerId: newPeerId(), listenPort: 1 });
  t.after(() => seeder.stop());
  await seeder.start();
  // Two wire-level leechers, each with nothing, both asking for piece 0.
  const leecher = async (name: string) => {
    const [a, b] = duplexPair();
    seeder.connectStream(b, name, false);
    const conn = new PeerConnection(a, {
      peerId: newPeerId(),
      initiator: true,
      infoHash: meta.infoHash,
      pieceCount: meta.pieceCount,
    });
    t.after(() => conn.destroy());
    await withTimeout(once(conn, 'handshake'), 5000, `${name} handshake`);
    assert.equal(conn.fast, true);
    conn.haveNone();
    conn.interested();
    if (conn.peerChoking) await withTimeout(once(conn, 'unchoke'), 15_000, `${name} unchoked`);
    return conn;
  };
  const first = await leecher('first');
  first.request(0, 0, 16384);
  const [block] = (await withTimeout(once(first, 'piece'), 5000, 'piece 0 to the first')) as [
    { index: number },
  ];
  assert.equal(block.index, 0);
  const second = await leecher('second');
  const suggested = withTimeout(once(second, 'suggest'), 5000, 'a suggestion');
  const rejected = withTimeout(once(second, 'reject'), 5000, 'a reject');
  second.request(0, 0, 16384);
  const [rej] = (await rejected) as [{ index: number }];
  assert.equal(rej.index, 0, 'piece 0 already left the seed once');
  const [sug] = (await suggested) as [{ index: number }];
  assert.ok([1, 2, 3].includes(sug.index), `suggested piece ${sug.index} never left the seed`);
  // The suggested piece is served.
  second.request(sug.index, 0, 16384);
  const [got] = (await withTimeout(once(second, 'piece'), 5000, 'the suggested piece')) as [
    { index: number },
  ];
  assert.equal(got.index, sug.index);
});

test('loopback swarm: one seeder and 8 leechers through our tracker; leechers serve each other', async (t) => {
  const dir = tempDir(t);
  const tracker = new TrackerServer({ host: '127.0.0.1', port: 0, intervalSeconds: 5 });
  const { port } = await tracker.listen();
  t.after(() => tracker.close());
  const MiB = 1 << 20;
  const { seedDir, data, meta } = await seedImage(dir, 64 * MiB, 256 * 1024, [
    `http://127.0.0.1:${port}/announce`,
  ]);
  tracker.add(meta.infoHash);
  // The seeder's upload is capped so that, as on a real LAN, the swarm
  // outruns it and the leechers must trade pieces among themselves.
  const seed = await startClient(t, meta, seedDir, 'seed', { uploadLimit: 16 * MiB });
  const leechers = [];
  for (let i = 0; i < 8; i++) leechers.push(await startClient(t, meta, join(dir, `leech${i}`), 'download'));
  await withTimeout(Promise.all(leechers.map((l) => l.session.whenComplete())), 240_000, 'all downloads');
  const want = sha256(data);
  for (let i = 0; i < 8; i++)
    assert.equal(sha256(readFileSync(join(dir, `leech${i}`, 'image.bin'))), want, `leecher ${i}`);
  const seederSent = seed.session.stats().uploaded;
  const leechersSent = leechers.reduce((n, l) => n + l.session.stats().uploaded, 0);
  const copies = seederSent / meta.length;
  t.diagnostic(
    `seeder sent ${copies.toFixed(2)} copies; leechers sent each other ${(leechersSent / meta.length).toFixed(2)} copies`,
  );
  // The spread seed policy sends each piece once before any twice: about one copy.
  assert.ok(copies < 2, `seeder sent ${copies.toFixed(2)} copies; expected about 1, clearly less than 8`);
  assert.ok(leechersSent >= 4 * meta.length, 'leechers supplied at least half of the 8 copies');
  assert.ok(seederSent + leechersSent >= 8 * meta.length);
});

test('a peer serving corrupt data is detected and banned; the piece comes from elsewhere', async (t) => {
  const dir = tempDir(t);
  const { seedDir, data, meta } = await seedImage(dir, 2 * 1024 * 1024, 65536);
  // A "seeder" whose copy is corrupt in every piece, started without
  // checking its data: it will serve garbage for pieces it claims to have.
  const badDir = join(dir, 'bad');
  mkdirSync(badDir);
  const corrupt = Buffer.from(data);
  for (let off = 100; off < corrupt.length; off += 65536) corrupt[off]! ^= 0xff;
  writeFileSync(join(badDir, 'image.bin'), corrupt);
  const bad = await startClient(t, meta, badDir, 'seed', { verify: false });
  const good = await startClient(t, meta, seedDir, 'seed', { uploadLimit: 1 << 20 });
  const leech = await startClient(t, meta, join(dir, 'leech'), 'download', {
    peers: [`127.0.0.1:${bad.client.listenPort}`, `127.0.0.1:${good.client.listenPort}`],
  });
  const [banned] = (await withTimeout(once(leech.session, 'banned'), 60_000, 'ban')) as [
    { address: string; reason: string },
  ];
  assert.match(banned.reason, /corrupt data/);
  assert.equal(banned.address, `127.0.0.1:${bad.client.listenPort}`);
  await withTimeout(leech.session.whenComplete(), 120_000, 'download');
  assert.equal(sha256(readFileSync(join(dir, 'leech', 'image.bin'))), sha256(data));
  assert.ok(leech.session.stats().hashFailures >= 1);
  assert.ok(
    leech.session.stats().peers.every((p) => p.address !== banned.address),
    'banned peer disconnected',
  );
});

test('malformed wire messages close only that connection', async (t) => {
  const dir = tempDir(t);
  const { seedDir, data, meta } = await seedImage(dir, 4 * 1024 * 1024, 65536);
  const seed = await startClient(t, meta, seedDir, 'seed', { uploadLimit: 2 << 20 });
  const leech = await startClient(t, meta, join(dir, 'leech'), 'download', {
    peers: [`127.0.0.1:${seed.client.listenPort}`],
  });
  await once(leech.session, 'piece');
  // A raw peer: valid handshake, then a "have" message of the wrong size.
  const sock = connect({ host: '127.0.0.1', port: seed.client.listenPort });
  t.after(() => sock.destroy());
  sock.resume(); // read, so that the server's close reaches us
  await once(sock, 'connect');
  sock.write(
    encodeHandshake({
      reserved: reservedBytes({ fast: true, extended: true }),
      infoHash: meta.infoHash,
      peerId: newPeerId(),
    }),
  );
  sock.write(Buffer.from([0, 0, 0, 3, 4, 0, 0]));
  await withTimeout(once(sock, 'close'), 10_000, 'garbage connection closed');
  await withTimeout(leech.session.whenComplete(), 60_000, 'download');
  assert.equal(sha256(readFileSync(join(dir, 'leech', 'image.bin'))), sha256(data));
});

test('resume: data already on disk is checked and kept; only the missing pieces are fetched', async (t) => {
  const dir = tempDir(t);
  const { seedDir, data, meta } = await seedImage(dir, 1024 * 1024, 65536);
  // Half of the pieces are already right; one of those has a flipped byte.
  mkdirSync(join(dir, 'leech'));
  const partial = Buffer.alloc(data.length);
  data.copy(partial, 0, 0, data.length / 2);
  partial[70000]! ^= 1;
  writeFileSync(join(dir, 'leech', 'image.bin'), partial);
  const seeder = new TorrentSession({ meta, dir: seedDir, mode: 'seed', peerId: newPeerId(), listenPort: 1 });
  const leecher = new TorrentSession({
    meta,
    dir: join(dir, 'leech'),
    mode: 'download',
    peerId: newPeerId(),
    listenPort: 2,
  });
  t.after(() => Promise.all([seeder.stop(), leecher.stop()]));
  await seeder.start();
  await leecher.start();
  assert.equal(
    leecher.stats().piecesHave,
    meta.pieceCount / 2 - 1,
    'the intact half minus the damaged piece',
  );
  const [a, b] = duplexPair();
  leecher.connectStream(a, 'seeder', true);
  seeder.connectStream(b, 'leecher', false);
  await withTimeout(leecher.whenComplete(), 30_000, 'download');
  assert.equal(sha256(readFileSync(join(dir, 'leech', 'image.bin'))), sha256(data));
  assert.equal(leecher.stats().downloaded, (meta.pieceCount / 2 + 1) * 65536);
});

test('a finished download is read-only: a program in it runs (no ETXTBSY) while the session keeps serving', async (t) => {
  const dir = tempDir(t);
  const seedDir = join(dir, 'seed', 'tool');
  mkdirSync(seedDir, { recursive: true });
  writeFileSync(join(seedDir, 'run.sh'), '#!/bin/sh\necho ran-from-the-swarm\n', { mode: 0o755 });
  writeFileSync(join(seedDir, 'pad.bin'), pseudoRandomBytes(100_000, 5));
  const { meta } = await createTorrent(seedDir, { pieceLength: 16384 });
  const seeder = new TorrentSession({
    meta,
    dir: join(dir, 'seed'),
    mode: 'seed',
    peerId: newPeerId(),
    listenPort: 1,
  });
  const leecher = new TorrentSession({
    meta,
    dir: join(dir, 'leech'),
    mode: 'download',
    peerId: newPeerId(),
    listenPort: 2,
  });
  const third = new TorrentSession({
    meta,
    dir: join(dir, 'third'),
    mode: 'download',
    peerId: newPeerId(),
    listenPort: 3,
  });
  t.after(() => Promise.all([seeder.stop(), leecher.stop(), third.stop()]));
  await Promise.all([seeder.start(), leecher.start(), third.start()]);
  const [a, b] = duplexPair();
  leecher.connectStream(a, 'seeder', true);
  seeder.connectStream(b, 'leecher', false);
  await withTimeout(leecher.whenComplete(), 30_000, 'download');
  const script = join(dir, 'leech', 'tool', 'run.sh');
  // Written through a write handle; the mode comes from nowhere in BitTorrent, so set it as the agent does.
  chmodSync(script, 0o755);
  assert.equal(execFileSync(script, { encoding: 'utf8' }).trim(), 'ran-from-the-swarm');
  // And the finished session still serves: a third peer downloads from it alone.
  const [c, d] = duplexPair();
  third.connectStream(c, 'leecher', true);
  leecher.connectStream(d, 'third', false);
  await withTimeout(third.whenComplete(), 30_000, 'download from the finished leecher');
  assert.equal(readFileSync(join(dir, 'third', 'tool', 'run.sh'), 'utf8'), readFileSync(script, 'utf8'));
});
