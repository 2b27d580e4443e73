/**
 * Issue #14 item 3 (peer part): no one host can hold the peer listener's
 * slots. Before the fix any byte restarted the handshake timer, so a peer
 * trickling one byte every few seconds held a half-open slot for good; one
 * address could take every half-open slot and every slot of a torrent; and
 * a peer that never moved a block held its torrent slot forever.
 *
 * Everything runs against the real listener on loopback. Sources are told
 * apart by binding to different addresses of 127.0.0.0/8. Deadlines are
 * injected small; each check waits for an event with a generous bound, and
 * the trickle case compares the deadline with the trickle's own length (in
 * one event loop, so a loaded machine slows both alike).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createTorrent } from '../../src/torrent/create.js';
import { BitTorrentClient, newPeerId, type ClientOptions } from '../../src/swarm/client.js';
import type { AddOptions } from '../../src/swarm/client.js';
import type { TorrentSession } from '../../src/swarm/session.js';
import { encodeHandshake, reservedBytes } from '../../src/wire/codec.js';
import { PeerConnection } from '../../src/wire/connection.js';
import type { Metainfo } from '../../src/torrent/metainfo.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';
import { waitUntil } from '../helpers/wait.js';

const HOST = '127.0.0.1';

const withTimeout = <T>(p: Promise<T>, ms: number, what: string): Promise<T> =>
  Promise.race([
    p,
    new Promise<T>((_, reject) =>
      setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms).unref(),
    ),
  ]);

/** A seeding client on loopback with one small torrent. */
async function seeder(
  t: TestContext,
  client: ClientOptions = {},
  add: Partial<AddOptions> = {},
): Promise<{ port: number; meta: Metainfo; session: TorrentSession }> {
  const dir = tempDir(t, 'bt-limits-');
  const seedDir = join(dir, 'seed');
  mkdirSync(seedDir);
  writeFileSync(join(seedDir, 'image.bin'), pseudoRandomBytes(64 * 1024, 5));
  const { meta } = await createTorrent(join(seedDir, 'image.bin'), { pieceLength: 16384 });
  const bt = new BitTorrentClient({ host: HOST, port: 0, ...client });
  t.after(() => bt.close());
  const port = await bt.listen();
  const session = await bt.add({ meta, dir: seedDir, mode: 'seed', ...add });
  return { port, meta, session };
}

interface RawPeer {
  readonly socket: Socket;
  readonly closed: Promise<void>;
  isClosed(): boolean;
  /** Bytes received so far. */
  received(): number;
}

/** A TCP connection to the listener from source address `from`, speaking nothing by itself. */
async function rawPeer(t: TestContext, port: number, from: string): Promise<RawPeer> {
  const socket = connect({ host: HOST, port, localAddress: from });
  t.after(() => socket.destroy());
  socket.on('error', () => {});
  let bytes = 0;
  let isClosed = false;
  socket.on('data', (b: Buffer) => (bytes += b.length));
  const closed = new Promise<void>((resolve) =>
    socket.once('close', () => {
      isClosed = true;
      resolve();
    }),
  );
  await withTimeout(once(socket, 'connect'), 5000, `connect from ${from}`);
  return { socket, closed, isClosed: () => isClosed, received: () => bytes };
}

function handshakeFor(meta: Metainfo): Buffer {
  return encodeHandshake({
    reserved: reservedBytes({ fast: true, extended: true }),
    infoHash: meta.infoHash,
    peerId: newPeerId(),
  });
}

/** A full peer-wire connection to the listener from `from`, resolved once the handshake completed. */
async function wirePeer(t: TestContext, port: number, from: string, meta: Metainfo): Promise<PeerConnection> {
  const socket = connect({ host: HOST, port, localAddress: from });
  await withTimeout(once(socket, 'connect'), 5000, `connect from ${from}`);
  const conn = new PeerConnection(socket, {
    peerId: newPeerId(),
    initiator: true,
    infoHash: meta.infoHash,
    pieceCount: meta.pieceCount,
  });
  conn.on('error', () => {});
  t.after(() => conn.destroy());
  await withTimeout(once(conn, 'handshake'), 5000, `handshake from ${from}`);
  return conn;
}

const peersFrom = (session: TorrentSession, ip: string) =>
  session.stats().peers.filter((p) => p.address.startsWith(`${ip}:`)).length;

test('a handshake trickled one byte at a time is closed at the deadline from accept, not kept open by each byte', async (t) => {
  const { port, meta } = await seeder(t, { handshakeTimeoutMs: 1000 });
  const peer = await rawPeer(t, port, '127.0.0.2');
  // The first 47 bytes of a handshake, one every 200 ms: 9.4 s of trickle,
  // each byte well inside the 1 s deadline.
  const bytes = handshakeFor(meta).subarray(0, 47);
  let sent = 0;
  while (sent < bytes.length && !peer.isClosed()) {
    peer.socket.write(bytes.subarray(sent, sent + 1));
    sent++;
    await Promise.race([sleep(200), peer.closed]);
  }
  await withTimeout(peer.closed, 10_000, 'close of the trickling peer');
  assert.ok(
    sent < bytes.length,
    `closed only after the whole ${bytes.length}-byte trickle: each byte extended the deadline`,
  );
  // Its half-open slot is free again: a real handshake from the same address completes.
  await wirePeer(t, port, '127.0.0.2', meta);
});

test('an address over its half-open cap is refused while another address still gets in', async (t) => {
  const { port, meta } = await seeder(t, { halfOpenPerIp: 2, handshakeTimeoutMs: 60_000 });
  const held = [await rawPeer(t, port, '127.0.0.2'), await rawPeer(t, port, '127.0.0.2')];
  const third = await rawPeer(t, port, '127.0.0.2');
  third.socket.write(handshakeFor(meta));
  await withTimeout(third.closed, 5000, 'refusal of the third half-open connection from one address');
  assert.equal(third.received(), 0, 'refused before any handshake was answered');
  // Another address is not affected.
  await wirePeer(t, port, '127.0.0.3', meta);
  assert.ok(
    held.every((p) => !p.isClosed()),
    'the first two of that address are still waiting',
  );
  // Once one of them leaves, that address may start another handshake (the
  // listener sees the close a moment later: retry until it is answered).
  held[0]!.socket.destroy();
  const end = Date.now() + 10_000;
  for (;;) {
    const p = await rawPeer(t, port, '127.0.0.2');
    p.socket.write(handshakeFor(meta));
    const answered = await Promise.race([
      once(p.socket, 'data').then(() => true),
      p.closed.then(() => false),
    ]);
    p.socket.destroy();
    if (answered) break;
    assert.ok(Date.now() < end, 'a freed half-open slot was never given back to its address');
    await sleep(50);
  }
});

test('an address over its established cap in a torrent is refused while another address still gets in', async (t) => {
  const { port, meta, session } = await seeder(t, {}, { establishedPerIp: 2 });
  await wirePeer(t, port, '127.0.0.2', meta);
  await wirePeer(t, port, '127.0.0.2', meta);
  await waitUntil(
    () => peersFrom(session, '127.0.0.2') === 2,
    5000,
    'two peers from 127.0.0.2 in the torrent',
    undefined,
    20,
  );
  const third = await wirePeer(t, port, '127.0.0.2', meta);
  await withTimeout(once(third, 'close'), 5000, 'refusal of the third connection from one address');
  const other = await wirePeer(t, port, '127.0.0.3', meta);
  await waitUntil(
    () => peersFrom(session, '127.0.0.3') === 1,
    5000,
    'the peer from 127.0.0.3 in the torrent',
    undefined,
    20,
  );
  assert.ok(other.isOpen);
  assert.equal(peersFrom(session, '127.0.0.2'), 2);
});

/** Fills every incoming slot of a torrent with maxPeers = 1 (1 + 10 slack) from distinct addresses. */
async function fillSlots(t: TestContext, port: number, meta: Metainfo, session: TorrentSession) {
  const peers: PeerConnection[] = [];
  for (let i = 0; i < 11; i++) peers.push(await wirePeer(t, port, `127.0.1.${i + 1}`, meta));
  await waitUntil(
    () => session.stats().peers.length === 11,
    5000,
    'eleven peers in the torrent',
    undefined,
    20,
  );
  return peers;
}

test('a full torrent gives the slot of the peer useless for longest to a newcomer, never that of a peer moving blocks', async (t) => {
  const { port, meta, session } = await seeder(t, {}, { maxPeers: 1, uselessPeerMs: 300 });
  const peers = await fillSlots(t, port, meta, session);
  // One of them downloads: blocks move, so its slot is not up for grabs.
  const useful = peers[5]!;
  useful.haveNone();
  useful.interested();
  if (useful.peerChoking) await withTimeout(once(useful, 'unchoke'), 15_000, 'unchoke');
  const fetch = async () => {
    const got = withTimeout(once(useful, 'piece'), 5000, 'a block');
    useful.request(0, 0, 16384);
    await got;
  };
  await fetch();
  await sleep(600);
  await fetch();
  const newcomer = await wirePeer(t, port, '127.0.2.1', meta);
  await waitUntil(
    () => peersFrom(session, '127.0.2.1') === 1,
    5000,
    'the newcomer in the torrent',
    undefined,
    20,
  );
  assert.ok(newcomer.isOpen);
  await waitUntil(
    () => peers.filter((p) => !p.isOpen).length === 1,
    5000,
    'one idle peer replaced',
    undefined,
    20,
  );
  assert.ok(useful.isOpen, 'the peer moving blocks keeps its slot');
  assert.equal(session.stats().peers.length, 11);
});

test('control: a full torrent whose peers were all useful lately refuses the newcomer', async (t) => {
  const { port, meta, session } = await seeder(t, {}, { maxPeers: 1, uselessPeerMs: 60_000 });
  const peers = await fillSlots(t, port, meta, session);
  const newcomer = await wirePeer(t, port, '127.0.2.1', meta);
  await withTimeout(once(newcomer, 'close'), 5000, 'refusal of the newcomer');
  assert.ok(peers.every((p) => p.isOpen));
});

test('a downloader whose slots are held by peers that move nothing still dials a new candidate and completes', async (t) => {
  const { port: seedPort, meta } = await seeder(t);
  const dir = tempDir(t, 'bt-limits-leech-');
  const bt = new BitTorrentClient({ host: HOST, port: 0 });
  t.after(() => bt.close());
  const port = await bt.listen();
  const leech = await bt.add({ meta, dir, mode: 'download', maxPeers: 1, uselessPeerMs: 300 });
  // An idle peer takes the only slot before the leecher knows of the seeder.
  const idle = await wirePeer(t, port, '127.0.0.2', meta);
  await waitUntil(
    () => peersFrom(leech, '127.0.0.2') === 1,
    5000,
    'the idle peer in the torrent',
    undefined,
    20,
  );
  leech.addPeerAddress(`${HOST}:${seedPort}`);
  await withTimeout(leech.whenComplete(), 30_000, 'the download');
  assert.equal(idle.isOpen, false, 'the idle peer gave its slot up');
});
