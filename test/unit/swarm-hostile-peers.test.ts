// Issue #14, items 1 and 4: peers that send what a session does not expect.
// Each test is named after what broke; each failed on the code before its fix.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { join } from 'node:path';
import { TorrentSession, type SessionOptions } from '../../src/swarm/session.js';
import { BitTorrentClient, newPeerId } from '../../src/swarm/client.js';
import { fetchMetadata } from '../../src/swarm/metadata-fetch.js';
import type { TrackerClient } from '../../src/tracker/client.js';
import type { AnnounceResponse } from '../../src/tracker/types.js';
import { PeerConnection } from '../../src/wire/connection.js';
import type { PexPeer } from '../../src/wire/codec.js';
import type { Metainfo } from '../../src/torrent/metainfo.js';
import { duplexPair } from '../helpers/duplex.js';
import { tempDir } from '../helpers/tmp.js';
import { seedImage } from '../helpers/image.js';
import { waitUntil } from '../helpers/wait.js';

/**
 * A test-driven peer on an in-memory pipe to `session`; `label` is its IP
 * as the session sees it (an IP, since the session sends it on in PEX).
 */
async function rawPeer(
  t: TestContext,
  session: TorrentSession,
  meta: Metainfo,
  label: string,
  highWaterMark?: number,
) {
  const [a, b] = duplexPair(highWaterMark);
  const sessionSide = session.connectStream(b, label, false);
  const peer = new PeerConnection(a, { peerId: newPeerId(), initiator: true, infoHash: meta.infoHash });
  peer.on('error', () => {});
  t.after(() => peer.destroy());
  const theirs = once(peer, 'extended-handshake');
  await once(peer, 'handshake');
  await theirs;
  /** Extension messages the session sent this peer (its handshakes aside). */
  const extensionMessages: number[] = [];
  peer.on('extended', ({ id }) => {
    if (id !== 0) extensionMessages.push(id);
  });
  return { peer, sessionSide, extensionMessages };
}

async function session(
  t: TestContext,
  opts: Partial<SessionOptions> & Pick<SessionOptions, 'meta' | 'dir' | 'mode'>,
) {
  const s = new TorrentSession({ peerId: newPeerId(), listenPort: 1, pexIntervalMs: 25, ...opts });
  t.after(() => s.stop());
  const failures: Error[] = [];
  s.on('failed', (err) => failures.push(err));
  await s.start();
  return { s, failures };
}

test('a peer whose extended handshake says ut_pex 0 is sent no PEX, and the PEX tick does not crash the seeder', async (t) => {
  const { seedDir, meta } = await seedImage(tempDir(t), 2 * 16384 + 100, 16384);
  const { s: seeder, failures } = await session(t, { meta, dir: seedDir, mode: 'seed' });
  // A disables ut_pex (BEP 10: id 0); B takes PEX, so it sees the ticks run.
  const a = await rawPeer(t, seeder, meta, '10.0.0.1');
  a.peer.sendExtendedHandshake({ m: new Map([['ut_pex', 0]]), p: 7001 });
  const b = await rawPeer(t, seeder, meta, '10.0.0.2');
  const gotPex = once(b.peer, 'pex');
  b.peer.sendExtendedHandshake({ m: new Map([['ut_pex', 1]]), p: 7002 });
  // The tick that tells B of A also considers A (the first peer): before the
  // fix it threw there, in a timer, and the process exited.
  const [pex] = (await gotPex) as [{ added: PexPeer[] }];
  assert.deepEqual(
    pex.added.map((p) => `${p.host}:${p.port}`),
    ['10.0.0.1:7001'],
  );
  // A few more ticks (25 ms each) with both peers connected.
  await new Promise((r) => setTimeout(r, 150));
  assert.deepEqual(a.extensionMessages, []);
  assert.ok(a.sessionSide.isOpen, 'the peer that disabled PEX stays connected');
  assert.deepEqual(failures, []);
});

test('a peer that turns ut_pex off with a later extended handshake is sent no PEX, and the seeder stays up', async (t) => {
  const { seedDir, meta } = await seedImage(tempDir(t), 2 * 16384 + 100, 16384);
  const { s: seeder, failures } = await session(t, { meta, dir: seedDir, mode: 'seed' });
  const a = await rawPeer(t, seeder, meta, '10.0.0.1');
  a.peer.sendExtendedHandshake({ m: new Map([['ut_pex', 1]]), p: 7001 });
  // BEP 10: a later handshake changes only what it names; 0 disables.
  a.peer.sendExtendedHandshake({ m: new Map([['ut_pex', 0]]) });
  await waitUntil(
    () => a.sessionSide.remoteExtensions?.m.size === 0,
    20_000,
    'the session to see both handshakes',
    undefined,
    10,
  );
  assert.equal(a.sessionSide.remoteExtensions?.p, undefined);
  const b = await rawPeer(t, seeder, meta, '10.0.0.2');
  const gotPex = once(b.peer, 'pex');
  b.peer.sendExtendedHandshake({ m: new Map([['ut_pex', 1]]), p: 7002 });
  await gotPex;
  assert.deepEqual(a.extensionMessages, []);
  assert.equal(a.sessionSide.sendPex({ added: [], dropped: [] }), false);
  assert.ok(a.sessionSide.isOpen);
  assert.deepEqual(failures, []);
});

/** `n` distinct made-up loopback addresses (port 1: refused at once), from `start`. */
function madeUp(start: number, n: number): PexPeer[] {
  const out: PexPeer[] = [];
  for (let i = start; i < start + n; i++) {
    out.push({ host: `127.${1 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`, port: 1 });
  }
  return out;
}

test('a PEX flood of 20,000 made-up peers stays within the candidate caps and the dial limits', async (t) => {
  const dir = tempDir(t);
  const { meta } = await seedImage(dir, 2 * 16384 + 100, 16384);
  const limits = {
    maxCandidates: 100,
    maxCandidatesPerPeer: 60,
    maxConcurrentDials: 4,
    maxDialsPerSecond: 5,
  };
  const began = Date.now();
  const { s: leecher, failures } = await session(t, {
    meta,
    dir: join(dir, 'leech'),
    mode: 'download',
    pexIntervalMs: 60_000,
    limits,
  });
  let maxDialing = 0;
  const flooders = await Promise.all(
    ['10.0.0.1', '10.0.0.2'].map(async (ip, n) => {
      const f = await rawPeer(t, leecher, meta, ip);
      f.peer.sendExtendedHandshake({ m: new Map([['ut_pex', 1]]), p: 7001 + n });
      let handled = 0;
      f.sessionSide.on('pex', () => {
        handled++;
        maxDialing = Math.max(maxDialing, leecher.dialingCount);
      });
      return { ...f, handled: () => handled };
    }),
  );
  const [f1, f2] = flooders as [(typeof flooders)[0], (typeof flooders)[0]];
  // One message with all 20,000 (BEP 11 allows 50): the rest are dropped.
  f1.peer.sendPex({ added: madeUp(0, 20_000), dropped: [] });
  await waitUntil(() => f1.handled() === 1, 20_000, 'the big message', undefined, 10);
  assert.equal(leecher.candidateCount, 50);
  assert.ok(leecher.droppedInput >= 1);
  // Then 400 lawful messages of 50 each, from each of two peers.
  for (let m = 0; m < 400; m++) {
    f1.peer.sendPex({ added: madeUp(100_000 + m * 50, 50), dropped: [] });
    f2.peer.sendPex({ added: madeUp(200_000 + m * 50, 50), dropped: [] });
  }
  await waitUntil(
    () => f1.handled() === 401 && f2.handled() === 400,
    20_000,
    'all PEX messages',
    undefined,
    10,
  );
  assert.ok(leecher.candidateCount <= limits.maxCandidates, `${leecher.candidateCount} candidates`);
  // Every address past the caps was counted as a drop, none was kept.
  assert.ok(leecher.droppedInput >= 40_050 - limits.maxCandidates - leecher.dialsStarted);
  assert.ok(maxDialing <= limits.maxConcurrentDials, `${maxDialing} dials at once`);
  assert.ok(leecher.dialingCount <= limits.maxConcurrentDials);
  const seconds = (Date.now() - began) / 1000;
  assert.ok(
    leecher.dialsStarted <= limits.maxDialsPerSecond * (1 + seconds) + 1,
    `${leecher.dialsStarted} dials in ${seconds} s`,
  );
  assert.ok(f1.sessionSide.isOpen && f2.sessionSide.isOpen);
  assert.deepEqual(failures, []);
});

test('a magnet whose x.pe peer has an out-of-range port still gets the metadata from the good peers (connect() threw and get failed)', async (t) => {
  const { seedDir, meta } = await seedImage(tempDir(t), 2 * 16384 + 100, 16384);
  const client = new BitTorrentClient({ host: '127.0.0.1', port: 0 });
  t.after(() => client.close());
  const port = await client.listen();
  await client.add({ meta, dir: seedDir, mode: 'seed' });
  const answer: AnnounceResponse = {
    interval: 60,
    complete: 1,
    incomplete: 0,
    peers: [
      { ip: '127.0.0.1', port: 0 },
      { ip: '127.0.0.1', port },
    ],
  };
  const trackerClient = {
    announce: () => Promise.resolve(answer),
    close: () => {},
  } as unknown as TrackerClient;
  const got = await fetchMetadata(
    {
      magnet: {
        infoHash: meta.infoHash,
        infoHashHex: meta.infoHashHex,
        trackers: ['http://127.0.0.1:9/announce'],
        webSeeds: [],
        peers: ['127.0.0.1:0', '127.0.0.1:99999'],
      },
      peerId: newPeerId(),
      listenPort: 1,
      timeoutMs: 30_000,
    },
    { trackerClient },
  );
  assert.equal(got.infoHashHex, meta.infoHashHex);
});

test('a throw while handling one peer in a timer closes that peer only; the session and the other peers go on', async (t) => {
  const dir = tempDir(t);
  const { meta } = await seedImage(dir, 2 * 16384 + 100, 16384);
  const { s: leecher, failures } = await session(t, { meta, dir: join(dir, 'leech'), mode: 'download' });
  const a = await rawPeer(t, leecher, meta, '10.0.0.1');
  const b = await rawPeer(t, leecher, meta, '10.0.0.2');
  // Stands in for any fault reached from one peer's state (the old PEX
  // throw was one): the per-peer work of the 1 s tick throws for A.
  const internals = (
    leecher as unknown as { run: { downloader: { fill: (p: { conn: PeerConnection }) => void } } }
  ).run.downloader;
  const fill = internals.fill.bind(internals);
  internals.fill = (p) => {
    if (p.conn === a.sessionSide) throw new Error('injected fault');
    fill(p);
  };
  const closed = once(a.sessionSide, 'close');
  await closed;
  assert.ok(b.sessionSide.isOpen);
  assert.deepEqual(failures, []);
});

test('a throw in a session timer ends that session (whenComplete rejects), not the process', async (t) => {
  const dir = tempDir(t);
  const { meta } = await seedImage(dir, 2 * 16384 + 100, 16384);
  const { s: leecher, failures } = await session(t, { meta, dir: join(dir, 'leech'), mode: 'download' });
  const a = await rawPeer(t, leecher, meta, '10.0.0.1');
  const internals = (leecher as unknown as { pool: { connectMore: () => void } }).pool;
  internals.connectMore = () => {
    throw new Error('injected fault');
  };
  await assert.rejects(leecher.whenComplete(), /torrent session failed in tick: injected fault/);
  assert.equal(failures.length, 1);
  await waitUntil(() => !a.sessionSide.isOpen, 20_000, 'the session to close its peers', undefined, 10);
});

test('a peer that sends requests and never reads is closed at the write backlog limit, not buffered without end', async (t) => {
  const { seedDir, meta } = await seedImage(tempDir(t), 2 * 16384 + 100, 16384);
  const maxWriteBacklogBytes = 64 * 1024;
  const { s: seeder, failures } = await session(t, {
    meta,
    dir: seedDir,
    mode: 'seed',
    limits: { maxWriteBacklogBytes },
  });
  const a = await rawPeer(t, seeder, meta, '10.0.0.1', 16 * 1024);
  const b = await rawPeer(t, seeder, meta, '10.0.0.2');
  let most = 0;
  // Not events.once: that rejects on the `error` the close comes with.
  const closed = new Promise<void>((resolve) => a.sessionSide.once('close', resolve));
  // A stops reading; while it is choked, each request earns a reject (BEP 6).
  a.peer.pause();
  for (let i = 0; i < 20_000 && !a.sessionSide.destroyed; i++) {
    a.peer.request(0, 0, 16384);
    if (i % 1000 === 999) {
      await new Promise((r) => setImmediate(r));
      most = Math.max(most, a.sessionSide.bufferedAmount);
    }
  }
  await Promise.race([
    closed,
    new Promise((_, reject) =>
      setTimeout(() => reject(new Error('the peer was not closed')), 10_000).unref(),
    ),
  ]);
  assert.ok(most <= maxWriteBacklogBytes, `${most} bytes queued`);
  assert.ok(b.sessionSide.isOpen);
  assert.deepEqual(failures, []);
});

test('a peer that resends have-none in a loop is closed at maxPieceSetMessages (each cost a scan of every piece)', async (t) => {
  const { seedDir, meta } = await seedImage(tempDir(t), 2 * 16384 + 100, 16384);
  const { s: seeder, failures } = await session(t, { meta, dir: seedDir, mode: 'seed' });
  const a = await rawPeer(t, seeder, meta, '10.0.0.1');
  const b = await rawPeer(t, seeder, meta, '10.0.0.2');
  let taken = 0;
  a.sessionSide.on('have-none', () => taken++);
  const closed = new Promise<void>((resolve) => a.sessionSide.once('close', resolve));
  for (let i = 0; i < 1000; i++) a.peer.haveNone();
  await Promise.race([
    closed,
    new Promise((_, reject) =>
      setTimeout(() => reject(new Error('the peer was not closed')), 10_000).unref(),
    ),
  ]);
  assert.equal(taken, 17, 'the 16 allowed and the one that closed it');
  assert.ok(b.sessionSide.isOpen);
  assert.deepEqual(failures, []);
});

test('a peer flipping interested 500 times in one burst gets one unchoke, not a choke or unchoke per flip', async (t) => {
  const { seedDir, meta } = await seedImage(tempDir(t), 2 * 16384 + 100, 16384);
  const { s: seeder, failures } = await session(t, { meta, dir: seedDir, mode: 'seed' });
  const a = await rawPeer(t, seeder, meta, '10.0.0.1');
  let chokes = 0;
  let unchokes = 0;
  a.peer.on('choke', () => chokes++);
  a.peer.on('unchoke', () => unchokes++);
  const unchoked = once(a.peer, 'unchoke');
  // One write (the connection corks a tick's messages), so one read.
  for (let i = 0; i < 500; i++) {
    a.peer.interested();
    a.peer.notInterested();
  }
  a.peer.interested();
  await unchoked;
  // A few more turns of the event loop for any late choke messages.
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(unchokes, 1);
  assert.equal(chokes, 0);
  assert.deepEqual(failures, []);
});

test('cancels for requests we do not hold do not scan the upload queue (a cancel flood cost O(queue) each)', async (t) => {
  const { seedDir, meta } = await seedImage(tempDir(t), 2 * 16384 + 100, 16384);
  const { s: seeder, failures } = await session(t, { meta, dir: seedDir, mode: 'seed' });
  const a = await rawPeer(t, seeder, meta, '10.0.0.1');
  // Counts scans of this peer's upload queue (a count, not a time): the
  // array inside its UploadQueue (src/swarm/seed-policy.ts).
  const peers = (seeder as unknown as { peers: Map<PeerConnection, { uploads: { items: unknown[] } }> })
    .peers;
  const uploads = peers.get(a.sessionSide)!.uploads.items;
  let scans = 0;
  const findIndex = uploads.findIndex.bind(uploads);
  uploads.findIndex = (...args: Parameters<typeof findIndex>) => {
    scans++;
    return findIndex(...args);
  };
  let seen = 0;
  a.sessionSide.on('cancel', () => seen++);
  for (let i = 0; i < 10_000; i++) a.peer.cancel(0, (i % 2) * 16384, 16384);
  await waitUntil(() => seen === 10_000, 20_000, 'all cancels', undefined, 10);
  assert.equal(scans, 0);
  assert.ok(a.sessionSide.isOpen);
  assert.deepEqual(failures, []);
});

test('PEX messages repeating known addresses do not each rescan the candidates (a pass per address made floods quadratic)', async (t) => {
  const dir = tempDir(t);
  const { meta } = await seedImage(dir, 2 * 16384 + 100, 16384);
  const { s: leecher, failures } = await session(t, {
    meta,
    dir: join(dir, 'leech'),
    mode: 'download',
    pexIntervalMs: 60_000,
    limits: { maxDialsPerSecond: 1 },
  });
  // Counts passes over the candidate table (a count, not a time).
  const dialer = (leecher as unknown as { pool: { dialer: { next: (...a: unknown[]) => unknown[] } } }).pool
    .dialer;
  const next = dialer.next.bind(dialer);
  let passes = 0;
  dialer.next = (...args: unknown[]) => {
    passes++;
    return next(...args);
  };
  const f = await rawPeer(t, leecher, meta, '10.0.0.1');
  f.peer.sendExtendedHandshake({ m: new Map([['ut_pex', 1]]), p: 7001 });
  let handled = 0;
  f.sessionSide.on('pex', () => handled++);
  const same = madeUp(0, 50);
  for (let m = 0; m < 400; m++) f.peer.sendPex({ added: same, dropped: [] });
  await waitUntil(() => handled === 400, 20_000, 'all PEX messages', undefined, 10);
  await new Promise((r) => setImmediate(r));
  // One pass per burst of messages and one per 1 s tick, never one per address.
  assert.ok(passes < 100, `${passes} passes for 20,000 addresses`);
  assert.equal(leecher.candidateCount, 50);
  assert.deepEqual(failures, []);
});
