// Issue #14 review: what a hostile peer could still do to a session after the
// first round of fixes. Each test is named after what broke; each failed on
// the code before its fix.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createTorrent } from '../../src/torrent/create.js';
import { TorrentSession, type SessionOptions } from '../../src/swarm/session.js';
import { BitTorrentClient, newPeerId } from '../../src/swarm/client.js';
import { fetchMetadata } from '../../src/swarm/metadata-fetch.js';
import type { TrackerClient } from '../../src/tracker/client.js';
import type { AnnounceResponse } from '../../src/tracker/types.js';
import { decodeMetadataMessage, encodeMetadataMessage } from '../../src/wire/metadata.js';
import { createServer, type AddressInfo } from 'node:net';
import { PeerConnection } from '../../src/wire/connection.js';
import { Bitfield } from '../../src/wire/bitfield.js';
import type { Metainfo } from '../../src/torrent/metainfo.js';
import { encodeHandshake, encodeMessage, reservedBytes } from '../../src/wire/codec.js';
import { PEER_LIMITS } from '../../src/limits.js';
import { duplexPair } from '../helpers/duplex.js';
import { tempDir } from '../helpers/tmp.js';
import { seedImage } from '../helpers/image.js';
import { waitUntil } from '../helpers/wait.js';

async function session(
  t: TestContext,
  opts: Partial<SessionOptions> & Pick<SessionOptions, 'meta' | 'dir' | 'mode'>,
) {
  const s = new TorrentSession({ peerId: newPeerId(), listenPort: 1, ...opts });
  t.after(() => s.stop());
  const failures: Error[] = [];
  s.on('failed', (err) => failures.push(err));
  await s.start();
  return { s, failures };
}

/** A test-driven peer on an in-memory pipe to `s`, seen by it as `label`. */
async function rawPeer(
  t: TestContext,
  s: TorrentSession,
  meta: Metainfo,
  label: string,
  peerId = newPeerId(),
) {
  const [a, b] = duplexPair();
  const sessionSide = s.connectStream(b, label, false);
  const peer = new PeerConnection(a, { peerId, initiator: true, infoHash: meta.infoHash });
  peer.on('error', () => {});
  t.after(() => peer.destroy());
  await once(peer, 'handshake');
  return { peer, sessionSide };
}

/** The session's own record of the peer on `conn` (white-box: memory held for it). */
function peerState(s: TorrentSession, conn: PeerConnection): { refused: Map<number, number> } {
  const peers = (s as unknown as { peers: Map<PeerConnection, { refused: Map<number, number> }> }).peers;
  return peers.get(conn)!;
}

/** Connects two sessions over an in-memory pipe, `a` dialing `b`; labels are how each sees the other. */
function link(a: TorrentSession, aLabel: string, b: TorrentSession, bLabel: string) {
  const [x, y] = duplexPair();
  const aSide = a.connectStream(x, bLabel, true);
  const bSide = b.connectStream(y, aLabel, false);
  return { aSide, bSide };
}

test('rejects for requests never made do not grow a per-peer map without bound', async (t) => {
  const dir = tempDir(t);
  const { meta } = await seedImage(dir, 2 * 16384 + 100, 16384);
  const { s: leecher, failures } = await session(t, { meta, dir: join(dir, 'leech'), mode: 'download' });
  const { peer, sessionSide } = await rawPeer(t, leecher, meta, '10.0.0.1');
  assert.ok(peer.fast, 'BEP 6 negotiated');
  // Unchoked, so the session takes rejects as saying something about a piece.
  peer.unchoke();
  await waitUntil(() => !sessionSide.peerChoking, 20_000, 'the unchoke to arrive', undefined, 10);
  // Every index a uint32 allows; a real peer rejects only what we asked.
  const N = 20_000;
  for (let i = 0; i < N; i++) peer.reject(1000 + i, 0, 16384);
  // Messages arrive in order: once this have is seen, so were the rejects.
  peer.have(0);
  await waitUntil(
    () => !sessionSide.isOpen || sessionSide.remoteBitfield?.get(0) === true,
    20_000,
    'the rejects to arrive',
    undefined,
    10,
  );
  if (sessionSide.isOpen) {
    const held = peerState(leecher, sessionSide).refused.size;
    assert.ok(
      held <= meta.pieceCount,
      `refused holds ${held} entries for a ${meta.pieceCount}-piece torrent`,
    );
  }
  assert.deepEqual(failures, []);
});

/**
 * A peer that claims `peerId` (learned from any handshake: peer ids are no
 * secret), says it has everything and answers each request with garbage.
 */
async function impostor(t: TestContext, s: TorrentSession, meta: Metainfo, label: string, peerId: Buffer) {
  const p = await rawPeer(t, s, meta, label, peerId);
  p.peer.on('request', (r) => p.peer.piece(r.index, r.begin, Buffer.alloc(r.length, 0xee)));
  p.peer.haveAll();
  p.peer.unchoke();
  return p;
}

test('a peer that sends corrupt data under the seeder peer id does not get the seeder banned', async (t) => {
  const dir = tempDir(t);
  const { seedDir, meta } = await seedImage(dir, 2 * 16384 + 100, 16384);
  const { s: seeder } = await session(t, { meta, dir: seedDir, mode: 'seed' });
  const { s: leecher, failures } = await session(t, { meta, dir: join(dir, 'leech'), mode: 'download' });
  const seederId = (seeder as unknown as { opts: SessionOptions }).opts.peerId;
  const banned = once(leecher, 'banned');
  await impostor(t, leecher, meta, '10.0.0.66', seederId);
  await banned;
  // The real seeder, from its own address, is still welcome.
  const { bSide } = link(seeder, '10.0.0.1', leecher, '10.0.0.2');
  // The leecher closes the seeder once complete (two seeds), or at once if it refused it.
  await Promise.race([once(leecher, 'complete'), once(bSide, 'close')]);
  assert.ok(leecher.stats().complete, 'the leecher took the real seeder and completed');
  assert.deepEqual(failures, []);
});

test('a peer that connects first under the seeder peer id does not keep the seeder out', async (t) => {
  const dir = tempDir(t);
  const { seedDir, meta } = await seedImage(dir, 2 * 16384 + 100, 16384);
  const { s: seeder } = await session(t, { meta, dir: seedDir, mode: 'seed' });
  const { s: leecher, failures } = await session(t, { meta, dir: join(dir, 'leech'), mode: 'download' });
  const seederId = (seeder as unknown as { opts: SessionOptions }).opts.peerId;
  // Holds the id and says nothing: keep-alives keep it connected.
  const squatter = await rawPeer(t, leecher, meta, '10.0.0.66', seederId);
  const { bSide } = link(seeder, '10.0.0.1', leecher, '10.0.0.2');
  // The leecher closes the seeder once complete (two seeds), or at once if it refused it.
  await Promise.race([once(leecher, 'complete'), once(bSide, 'close')]);
  assert.ok(leecher.stats().complete, 'the leecher took the real seeder and completed');
  assert.ok(squatter.sessionSide.isOpen, 'the squatter itself did nothing wrong');
  assert.deepEqual(failures, []);
});

test('a flood of have-all, have-none and repeated bitfields costs the session no scan of every piece per message', async (t) => {
  const dir = tempDir(t);
  const seedDir = join(dir, 'seed');
  mkdirSync(seedDir, { recursive: true });
  // 512 pieces: enough that a scan per 5-byte message shows, small to hash.
  const image = Buffer.alloc(512 * 16384);
  for (let i = 0; i < 512; i++) image[i * 16384] = 1 + (i % 255);
  writeFileSync(join(seedDir, 'image.bin'), image);
  const { meta } = await createTorrent(join(seedDir, 'image.bin'), { pieceLength: 16384 });
  const { s: leecher, failures } = await session(t, { meta, dir: join(dir, 'leech'), mode: 'download' });
  const { peer, sessionSide } = await rawPeer(t, leecher, meta, '10.0.0.1');
  const half = new Bitfield(meta.pieceCount);
  for (let i = 0; i < meta.pieceCount; i += 2) half.set(i);
  peer.bitfield(half);
  await waitUntil(
    () => sessionSide.remoteBitfield?.count() === half.count(),
    20_000,
    'the bitfield to arrive',
    undefined,
    10,
  );
  // Work counted in bit reads and writes, not time (the machine is shared).
  let ops = 0;
  const proto = Object.getOwnPropertyDescriptors(Bitfield.prototype);
  const get = proto.get.value as (this: Bitfield, i: number) => boolean;
  const set = proto.set.value as (this: Bitfield, i: number, v?: boolean) => void;
  Bitfield.prototype.get = function (this: Bitfield, i: number) {
    ops++;
    return get.call(this, i);
  };
  Bitfield.prototype.set = function (this: Bitfield, i: number, v?: boolean) {
    ops++;
    return set.call(this, i, v);
  };
  t.after(() => {
    Bitfield.prototype.get = get;
    Bitfield.prototype.set = set;
  });
  const N = 1000;
  for (let i = 0; i < N; i++) {
    peer.haveNone();
    peer.bitfield(half);
  }
  peer.have(1);
  await waitUntil(
    () => !sessionSide.isOpen || sessionSide.remoteBitfield?.get(1) === true,
    20_000,
    'the flood to arrive',
    undefined,
    10,
  );
  for (let i = 0; i < N; i++) {
    peer.haveAll();
    peer.haveNone();
  }
  peer.have(0);
  peer.have(3);
  await waitUntil(
    () => !sessionSide.isOpen || sessionSide.remoteBitfield?.get(3) === true,
    20_000,
    'the flood to arrive',
    undefined,
    10,
  );
  Bitfield.prototype.get = get;
  Bitfield.prototype.set = set;
  // Each message scanning every piece would be 4,000 x 512 and more.
  assert.ok(ops < 20 * meta.pieceCount, `${ops} bit operations for ${4 * N} messages`);
  // Pieces never go away (BEP 3 has no message for it): the peer is a seed now.
  if (sessionSide.isOpen) assert.equal(sessionSide.remoteBitfield?.hasAll(), true);
  assert.deepEqual(failures, []);
});

test('a peer that floods requests while choked and never reads cannot grow our send buffer without bound', async (t) => {
  const { seedDir, meta } = await seedImage(tempDir(t), 2 * 16384 + 100, 16384);
  const { s: seeder, failures } = await session(t, { meta, dir: seedDir, mode: 'seed' });
  const [a, b] = duplexPair();
  t.after(() => a.destroy());
  const sessionSide = seeder.connectStream(b, '10.0.0.1', false);
  // Raw bytes, and `a` is never read: every reject the seeder sends stays queued.
  a.write(
    encodeHandshake({
      reserved: reservedBytes({ fast: true, extended: true }),
      infoHash: meta.infoHash,
      peerId: newPeerId(),
    }),
  );
  await once(sessionSide, 'handshake');
  assert.ok(sessionSide.fast);
  // Each request while choked is answered with a BEP 6 reject: 17 bytes in, 17 out.
  const request = encodeMessage({ type: 'request', index: 0, begin: 0, length: 16384 });
  const burst = Buffer.concat(Array.from({ length: 10_000 }, () => request));
  let peak = 0;
  for (let i = 0; i < 40 && sessionSide.isOpen; i++) {
    // 40 x 170 KB: 6.8 MB of rejects if nothing stops them.
    a.write(burst);
    await new Promise((r) => setImmediate(r));
    peak = Math.max(peak, sessionSide.bufferedAmount);
  }
  await waitUntil(
    () => !sessionSide.isOpen || b.readableLength === 0,
    20_000,
    'the requests to be read',
    undefined,
    10,
  );
  peak = Math.max(peak, sessionSide.isOpen ? sessionSide.bufferedAmount : 0);
  assert.ok(
    peak <= PEER_LIMITS.maxWriteBacklogBytes + 64 * 1024,
    `${peak} bytes queued to a peer that never reads`,
  );
  assert.deepEqual(failures, []);
});

test('a peer toggling interested and not-interested does not cost a choke round per message', async (t) => {
  const { seedDir, meta } = await seedImage(tempDir(t), 2 * 16384 + 100, 16384);
  const { s: seeder, failures } = await session(t, { meta, dir: seedDir, mode: 'seed' });
  // Work counted in choke rounds, not time: each round sorts every peer.
  let rounds = 0;
  const inner = (seeder as unknown as { run: { uploader: { rechoke: (round: boolean) => void } } }).run
    .uploader;
  const rechoke = inner.rechoke.bind(inner);
  inner.rechoke = (round: boolean) => {
    rounds++;
    rechoke(round);
  };
  const honest = await rawPeer(t, seeder, meta, '10.0.0.2');
  honest.peer.interested();
  await once(honest.peer, 'unchoke');
  const { peer, sessionSide } = await rawPeer(t, seeder, meta, '10.0.0.1');
  const before = rounds;
  const N = 2000;
  for (let chunk = 0; chunk < 20; chunk++) {
    for (let i = 0; i < N / 20; i++) {
      peer.interested();
      peer.notInterested();
    }
    await new Promise((r) => setImmediate(r));
  }
  peer.have(1);
  await waitUntil(
    () => !sessionSide.isOpen || sessionSide.remoteBitfield?.get(1) === true,
    20_000,
    'the flood to arrive',
    undefined,
    10,
  );
  await new Promise((r) => setTimeout(r, 50));
  const spent = rounds - before;
  assert.ok(spent <= N / 10, `${spent} choke rounds for ${2 * N} messages`);
  // The honest peer was not choked by any of it.
  assert.equal(honest.sessionSide.amChoking, false);
  assert.deepEqual(failures, []);
});

/** A seeder on loopback of a torrent whose metadata spans two BEP 9 pieces (1,100 pieces, 20 bytes of hash each). */
async function bigSeeder(t: TestContext) {
  const seedDir = join(tempDir(t), 'seed');
  mkdirSync(seedDir, { recursive: true });
  const image = Buffer.alloc(1100 * 16384);
  for (let i = 0; i < 1100; i++) image.writeUInt32BE(i + 1, i * 16384);
  writeFileSync(join(seedDir, 'image.bin'), image);
  const { meta } = await createTorrent(join(seedDir, 'image.bin'), { pieceLength: 16384 });
  assert.ok(meta.infoBuffer.length > 16384);
  const client = new BitTorrentClient({ host: '127.0.0.1', port: 0 });
  t.after(() => client.close());
  const honestPort = await client.listen();
  await client.add({ meta, dir: seedDir, mode: 'seed' });
  return { meta, honestPort };
}

test('a magnet get of a torrent whose metadata spans two BEP 9 pieces completes (every() skipped the missing piece and the fetch threw)', async (t) => {
  const { meta, honestPort } = await bigSeeder(t);
  const got = await fetchMetadata({
    magnet: {
      infoHash: meta.infoHash,
      infoHashHex: meta.infoHashHex,
      trackers: [],
      webSeeds: [],
      peers: [`127.0.0.1:${honestPort}`],
    },
    peerId: newPeerId(),
    listenPort: 1,
    timeoutMs: 20_000,
  });
  assert.equal(got.infoHashHex, meta.infoHashHex);
});

/**
 * A loopback peer that answers BEP 9 for `meta`'s infohash with lies: it
 * claims metadata of `size` bytes and answers the request for its first
 * piece with garbage.
 * `ready` resolves once its extended handshake is sent.
 */
async function lyingMetadataPeer(t: TestContext, meta: Metainfo, size: number) {
  let sent!: () => void;
  const ready = new Promise<void>((r) => (sent = r));
  const server = createServer((socket) => {
    const conn = new PeerConnection(socket, {
      peerId: newPeerId(),
      initiator: false,
      infoHash: meta.infoHash,
    });
    conn.on('error', () => {});
    t.after(() => conn.destroy());
    conn.once('handshake', () => {
      conn.sendExtendedHandshake({ m: new Map([['ut_metadata', 3]]), metadataSize: size });
      sent();
    });
    conn.on('extended', ({ id, payload }) => {
      if (id !== 3) return;
      const m = decodeMetadataMessage(payload);
      // Only the first piece: first copies won, so the honest peer's was thrown away.
      if (m.type !== 'request' || m.piece !== 0) return;
      const len = Math.min(16384, size - m.piece * 16384);
      conn.sendExtension(
        'ut_metadata',
        encodeMetadataMessage({
          type: 'data',
          piece: m.piece,
          totalSize: size,
          data: Buffer.alloc(len, 0x65),
        }),
      );
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  return { port: (server.address() as AddressInfo).port, ready };
}

for (const [what, sizeOf] of [
  ['a wrong metadata size', (m: Metainfo) => m.infoBuffer.length + 1],
  ['garbage metadata of the right size', (m: Metainfo) => m.infoBuffer.length],
] as const) {
  test(`a magnet get still gets the metadata from an honest peer after the first peer sent ${what}`, async (t) => {
    const { meta, honestPort } = await bigSeeder(t);
    const liar = await lyingMetadataPeer(t, meta, sizeOf(meta));
    // The honest seeder becomes known only after the liar has spoken first.
    const trackerClient = {
      announce: async (): Promise<AnnounceResponse> => {
        await liar.ready;
        await new Promise((r) => setTimeout(r, 200));
        return { interval: 60, complete: 1, incomplete: 0, peers: [{ ip: '127.0.0.1', port: honestPort }] };
      },
      close: () => {},
    } as unknown as TrackerClient;
    const got = await fetchMetadata(
      {
        magnet: {
          infoHash: meta.infoHash,
          infoHashHex: meta.infoHashHex,
          trackers: ['http://127.0.0.1:9/announce'],
          webSeeds: [],
          peers: [`127.0.0.1:${liar.port}`],
        },
        peerId: newPeerId(),
        listenPort: 1,
        timeoutMs: 20_000,
      },
      { trackerClient },
    );
    assert.equal(got.infoHashHex, meta.infoHashHex);
  });
}

test('extended handshakes naming ever new extensions do not grow what a connection keeps of the peer', async (t) => {
  const { meta } = await seedImage(tempDir(t), 2 * 16384 + 100, 16384);
  const [a, b] = duplexPair();
  const ours = new PeerConnection(b, { peerId: newPeerId(), initiator: false, infoHash: meta.infoHash });
  const theirs = new PeerConnection(a, { peerId: newPeerId(), initiator: true, infoHash: meta.infoHash });
  for (const c of [ours, theirs]) c.on('error', () => {});
  t.after(() => {
    ours.destroy();
    theirs.destroy();
  });
  await once(ours, 'handshake');
  // BEP 10: a later handshake updates only the entries it names, so each adds.
  let seen = 0;
  ours.on('extended-handshake', () => seen++);
  for (let k = 0; k < 100; k++) {
    const m = new Map<string, number>([['ut_metadata', 3]]);
    for (let i = 0; i < 1000; i++) m.set(`x${k}_${i}`, 1 + (i % 200));
    theirs.sendExtendedHandshake({ m });
  }
  await waitUntil(() => seen === 100 || !ours.isOpen, 20_000, 'the handshakes to arrive', undefined, 10);
  if (ours.isOpen) {
    const kept = ours.remoteExtensions?.m.size ?? 0;
    assert.ok(kept <= 1000, `${kept} extension names kept for one peer`);
    assert.ok(ours.supportsExtension('ut_metadata'));
  }
});
