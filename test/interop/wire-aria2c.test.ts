/**
 * Interop: our PeerConnection downloads a small torrent from a real aria2c
 * seeder on 127.0.0.1 (handshake, bitfield or have-all, extended handshake,
 * interested/unchoke, requests, pieces checked against the SHA-1 in the
 * torrent), and a real aria2c downloads from our PeerConnection as seeder.
 * aria2c missing is a failure, not a skip.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { encode } from '../../src/bencode/index.js';
import { isBootTorrentError } from '../../src/errors.js';
import { PeerConnection } from '../../src/wire/connection.js';
import { Bitfield } from '../../src/wire/bitfield.js';
import type { DecodedExtendedHandshake } from '../../src/wire/codec.js';

const PIECE_LENGTH = 32 * 1024;
const BLOCK = 16 * 1024;
const sha1 = (b: Uint8Array) => createHash('sha1').update(b).digest();

async function freePort(): Promise<number> {
  const srv = net.createServer().listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address() as net.AddressInfo;
  srv.close();
  await once(srv, 'close');
  return port;
}

/** Connects once aria2c listens; fails as soon as aria2c has exited. */
async function connectWhenListening(
  port: number,
  child: ChildProcess,
  log: () => string,
): Promise<net.Socket> {
  for (let attempt = 0; ; attempt++) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`aria2c exited (${child.exitCode ?? child.signalCode}) before listening:\n${log()}`);
    }
    const sock = net.connect(port, '127.0.0.1');
    try {
      await once(sock, 'connect');
      return sock;
    } catch {
      sock.destroy();
      if (attempt > 200) throw new Error(`aria2c never listened on 127.0.0.1:${port}:\n${log()}`);
      await sleep(50);
    }
  }
}

test('download a torrent from a real aria2c seeder and verify every piece', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'bt-wire-aria2c-'));
  t.after(() => rm(dir, { recursive: true, force: true }));

  // Three full pieces and a short last one, so the last block is short too.
  const content = randomBytes(3 * PIECE_LENGTH + 5000);
  const name = 'payload.bin';
  await writeFile(join(dir, name), content);
  const pieceCount = Math.ceil(content.length / PIECE_LENGTH);
  const hashes: Buffer[] = [];
  for (let i = 0; i < pieceCount; i++)
    hashes.push(sha1(content.subarray(i * PIECE_LENGTH, (i + 1) * PIECE_LENGTH)));
  const info = encode({
    length: content.length,
    name,
    'piece length': PIECE_LENGTH,
    pieces: Buffer.concat(hashes),
  });
  const infoHash = sha1(info);
  const torrentPath = join(dir, 'payload.torrent');
  // The info dict is spliced in as encoded, so its bytes (and hash) are exactly ours.
  await writeFile(torrentPath, Buffer.concat([Buffer.from('d4:info'), info, Buffer.from('e')]));

  const port = await freePort();
  const child = spawn(
    'aria2c',
    [
      '--no-conf',
      '-V',
      '--seed-ratio=0',
      '--bt-seed-unverified',
      '--enable-dht=false',
      '--enable-dht6=false',
      '--bt-enable-lpd=false',
      '--enable-peer-exchange=false',
      `--listen-port=${port}`,
      `--stop-with-process=${process.pid}`,
      '--summary-interval=0',
      '--console-log-level=warn',
      `--dir=${dir}`,
      torrentPath,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const spawned = new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', reject); // ENOENT: aria2c is not installed -> the test fails
  });
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit');
      process.kill(child.pid!, 'SIGTERM');
      await exited;
    }
  });
  await spawned;

  const socket = await connectWhenListening(port, child, () => output);
  const conn = new PeerConnection(socket, {
    peerId: Buffer.concat([Buffer.from('-BT0001-'), randomBytes(12)]),
    initiator: true,
    infoHash,
    pieceCount,
  });
  t.after(() => conn.destroy());
  const failed = new Promise<never>((_, reject) => {
    conn.on('error', reject);
    conn.on('close', () => reject(new Error(`aria2c closed the connection:\n${output}`)));
    conn.on('reject', (m) => reject(new Error(`aria2c rejected request ${JSON.stringify(m)}`)));
  });
  failed.catch(() => {}); // raced below; avoid an unhandled rejection after success

  const seen: string[] = [];
  conn.on('message', (m) => seen.push(m.type === 'extended' ? `extended:${m.id}` : m.type));

  const handshake = once(conn, 'handshake');
  const extHandshake = once(conn, 'extended-handshake') as Promise<[DecodedExtendedHandshake]>;
  const pieces = new Promise<void>((resolve) => {
    const onSet = () => {
      if (conn.remoteBitfield?.hasAll()) resolve();
    };
    conn.on('bitfield', onSet);
    conn.on('have-all', onSet);
    conn.on('have', onSet);
  });
  const unchoked = once(conn, 'unchoke');

  await Promise.race([handshake, failed]);
  assert.equal(conn.isOpen, true);
  conn.sendExtendedHandshake({ m: new Map([['ut_pex', 1]]), v: 'BootTorrent test', reqq: 64 });
  const [ext] = await Promise.race([extHandshake, failed]);
  assert.match(ext.v ?? '', /aria2/i, 'the peer is aria2c');
  await Promise.race([pieces, failed]);
  assert.equal(conn.remoteBitfield?.count(), pieceCount);

  conn.interested();
  await Promise.race([unchoked, failed]);

  const received = new Map<number, Buffer>();
  const requested: string[] = [];
  for (let index = 0; index < pieceCount; index++) {
    const len = Math.min(PIECE_LENGTH, content.length - index * PIECE_LENGTH);
    received.set(index, Buffer.alloc(len));
    for (let begin = 0; begin < len; begin += BLOCK) {
      requested.push(`${index}:${begin}`);
      conn.request(index, begin, Math.min(BLOCK, len - begin));
    }
  }
  const done = new Promise<void>((resolve, reject) => {
    let outstanding = requested.length;
    conn.on('piece', (m) => {
      const key = `${m.index}:${m.begin}`;
      if (!requested.includes(key)) reject(new Error(`unrequested block ${key}`));
      m.block.copy(received.get(m.index)!, m.begin); // copy: blocks are views of socket chunks
      if (--outstanding === 0) resolve();
    });
  });
  await Promise.race([done, failed]);

  for (const [index, piece] of received) {
    assert.deepEqual(sha1(piece), hashes[index], `SHA-1 of piece ${index}`);
  }
  t.diagnostic(
    `aria2c: fast=${conn.fast} extended=${conn.extended} v=${ext.v} messages: ${seen.slice(0, 8).join(' ')}`,
  );
});

test('a real aria2c downloads a torrent from our PeerConnection seeder (responder side)', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'bt-wire-aria2c-get-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const content = randomBytes(2 * PIECE_LENGTH + 777);
  const name = 'served.bin';
  const pieceCount = Math.ceil(content.length / PIECE_LENGTH);
  const hashes: Buffer[] = [];
  for (let i = 0; i < pieceCount; i++)
    hashes.push(sha1(content.subarray(i * PIECE_LENGTH, (i + 1) * PIECE_LENGTH)));
  const info = encode({
    length: content.length,
    name,
    'piece length': PIECE_LENGTH,
    pieces: Buffer.concat(hashes),
  });
  const infoHash = sha1(info);

  // Our seeder: one listener, one PeerConnection per incoming socket.
  const conns: PeerConnection[] = [];
  const errors: unknown[] = [];
  const requests: string[] = [];
  const seeder = net.createServer((socket) => {
    const conn = new PeerConnection(socket, {
      peerId: Buffer.concat([Buffer.from('-BT0001-'), randomBytes(12)]),
      initiator: false,
      onInfoHash: (h) => h.equals(infoHash),
      pieceCount,
    });
    conns.push(conn);
    conn.on('error', (e) => errors.push(e));
    conn.on('handshake', () => conn.announcePieces(Bitfield.full(pieceCount)));
    conn.on('interested', () => conn.unchoke());
    conn.on('request', (m) => {
      requests.push(`${m.index}:${m.begin}:${m.length}`);
      const start = m.index * PIECE_LENGTH + m.begin;
      conn.piece(m.index, m.begin, content.subarray(start, start + m.length));
    });
  });
  seeder.listen(0, '127.0.0.1');
  await once(seeder, 'listening');
  t.after(() => {
    for (const c of conns) c.destroy();
    seeder.close();
  });
  const seederPort = (seeder.address() as net.AddressInfo).port;

  // A minimal HTTP tracker (BEP 3, compact BEP 23 reply) that names only our seeder.
  const compact = Buffer.alloc(6);
  Buffer.from([127, 0, 0, 1]).copy(compact);
  compact.writeUInt16BE(seederPort, 4);
  const tracker = http.createServer((_req, res) => {
    res.end(encode({ interval: 60, peers: compact }));
  });
  tracker.listen(0, '127.0.0.1');
  await once(tracker, 'listening');
  t.after(() => {
    tracker.closeAllConnections();
    tracker.close();
  });
  const announce = `http://127.0.0.1:${(tracker.address() as net.AddressInfo).port}/announce`;
  const torrentPath = join(dir, 'served.torrent');
  await writeFile(
    torrentPath,
    Buffer.concat([Buffer.from(`d8:announce${announce.length}:${announce}4:info`), info, Buffer.from('e')]),
  );

  const outDir = join(dir, 'out');
  const child = spawn(
    'aria2c',
    [
      '--no-conf',
      '--seed-time=0',
      '--enable-dht=false',
      '--enable-dht6=false',
      '--bt-enable-lpd=false',
      '--enable-peer-exchange=false',
      `--listen-port=${await freePort()}`,
      `--stop-with-process=${process.pid}`,
      '--summary-interval=0',
      '--console-log-level=warn',
      `--dir=${outDir}`,
      torrentPath,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const exited = new Promise<number | null>((resolve, reject) => {
    child.once('error', reject); // ENOENT: aria2c is not installed -> the test fails
    child.once('exit', (code) => resolve(code));
  });
  t.after(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      process.kill(child.pid!, 'SIGTERM');
      await exited.catch(() => {});
    }
  });

  const code = await exited;
  assert.equal(code, 0, `aria2c failed:\n${output}`);
  assert.deepEqual(await readFile(join(outDir, name)), content);
  // aria2c tries an encrypted (BEP 8 MSE) handshake first and falls back to a
  // plain one when we close it; those refusals are the only errors allowed.
  const unexpected = errors.filter(
    (e) => !isBootTorrentError(e, 'BT_ERR_WIRE_PROTOCOL') || !/MSE/.test(e.message),
  );
  assert.deepEqual(unexpected, []);
  assert.ok(conns.length >= 1 && requests.length >= pieceCount, `requests: ${requests.join(' ')}`);
  t.diagnostic(
    `aria2c fetched ${requests.length} blocks over ${conns.length} connection(s), ${errors.length} refused; fast=${conns.at(-1)?.fast}`,
  );
});
