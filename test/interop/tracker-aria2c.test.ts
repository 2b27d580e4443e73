// A real aria2c seeds a small torrent whose only tracker is ours, once over
// HTTP and once over UDP (BEP 15), and our TrackerServer must list it as a
// seeder. aria2c is confined to loopback: DHT is off (on for UDP, see below,
// with an empty routing table), LPD and PEX are off, and the torrent names no
// other tracker.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { encode } from '../../src/bencode/index.js';
import { TrackerServer } from '../../src/tracker/server.js';
import type { PeerState } from '../../src/tracker/server.js';
import { requireProgram } from '../helpers/programs.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';

const PIECE_LENGTH = 16384;

/** A port number free for both TCP and UDP on 127.0.0.1 right now. */
async function freeTcpUdpPort(): Promise<number> {
  for (;;) {
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const addr = srv.address();
    const port = typeof addr === 'object' && addr ? addr.port : 0;
    const udp = createSocket('udp4');
    const ok = await new Promise<boolean>((resolve) => {
      udp.once('error', () => resolve(false));
      udp.bind(port, '127.0.0.1', () => resolve(true));
    });
    udp.close();
    await new Promise<void>((r) => srv.close(() => r()));
    if (ok) return port;
  }
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  const done = once(child, 'exit').then(() => undefined);
  child.kill('SIGTERM');
  // aria2c's graceful stop waits for its "stopped" announce; do not wait long.
  const hard = setTimeout(() => child.kill('SIGKILL'), 3000);
  return done.finally(() => clearTimeout(hard));
}

/** Writes a single-file torrent for `data` announcing to `announceUrl`; returns its infohash. */
function makeTorrent(
  dir: string,
  name: string,
  data: Buffer,
  announceUrl: string,
): { torrent: string; infoHash: Buffer } {
  const pieces: Buffer[] = [];
  for (let o = 0; o < data.length; o += PIECE_LENGTH) {
    pieces.push(
      createHash('sha1')
        .update(data.subarray(o, o + PIECE_LENGTH))
        .digest(),
    );
  }
  const info = { length: data.length, name, 'piece length': PIECE_LENGTH, pieces: Buffer.concat(pieces) };
  const infoHash = createHash('sha1').update(encode(info)).digest();
  const torrent = join(dir, `${name}.torrent`);
  writeFileSync(torrent, encode({ announce: announceUrl, info }));
  return { torrent, infoHash };
}

async function aria2cSeedsVia(t: TestContext, proto: 'http' | 'udp'): Promise<void> {
  const aria2c = requireProgram('aria2c', 'aria2');
  const dir = tempDir(t, `bt-aria2c-${proto}-`);
  const dataDir = join(dir, 'data');
  mkdirSync(dataDir);
  const name = `payload-${proto}.bin`;
  const data = pseudoRandomBytes(5 * PIECE_LENGTH + 1234, proto === 'http' ? 7 : 8);
  writeFileSync(join(dataDir, name), data);

  const server = new TrackerServer({ host: '127.0.0.1', port: 0, intervalSeconds: 60 });
  const { port } = await server.listen();
  t.after(() => server.close());
  const announceUrl =
    proto === 'http' ? `http://127.0.0.1:${port}/announce` : `udp://127.0.0.1:${port}/announce`;
  const { torrent, infoHash } = makeTorrent(dir, name, data, announceUrl);
  server.add(infoHash);

  // aria2c's default --peer-id-prefix is "A2-<major>-<minor>-<patch>-" (1.36: "A2-1-36-0-").
  const isAria2Seeder = (p: PeerState): boolean => /^A2-\d+-\d+-\d+-/.test(p.peerIdText) && p.left === 0;
  const seen = new Promise<PeerState>((resolve) => {
    server.on('announce', (e) => {
      if (e.infoHash === infoHash.toString('hex') && isAria2Seeder(e.peer)) resolve(e.peer);
    });
  });

  const [listenPort, dhtPort] = [await freeTcpUdpPort(), await freeTcpUdpPort()];
  const args = [
    '--no-conf',
    `--dir=${dataDir}`,
    '--check-integrity=true',
    '--seed-ratio=0.0', // seed until killed
    `--listen-port=${listenPort}`,
    // aria2c 1.36 sends UDP tracker traffic through its DHT socket ("udp is
    // not supported yet" without DHT), so the UDP run keeps DHT on, with a
    // fresh, empty routing table and no entry point: it has no one to talk to.
    `--enable-dht=${proto === 'udp'}`,
    `--dht-listen-port=${dhtPort}`,
    `--dht-file-path=${join(dir, 'dht.dat')}`,
    '--enable-dht6=false',
    '--disable-ipv6=true',
    '--bt-enable-lpd=false',
    '--enable-peer-exchange=false',
    '--bt-tracker-connect-timeout=10',
    '--summary-interval=0',
    '--console-log-level=notice',
    torrent,
  ];
  const child = spawn(aria2c, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  t.after(() => stopChild(child));

  const exited = once(child, 'exit').then(([code]) => {
    throw new Error(`aria2c exited (${String(code)}) before announcing to us over ${proto}:\n${output}`);
  });
  const timer = new Promise<never>((_, reject) => {
    const h = setTimeout(
      () => reject(new Error(`aria2c never announced as a seeder over ${proto}; its output:\n${output}`)),
      30_000,
    );
    t.after(() => clearTimeout(h));
  });
  // The exit we cause at the end must not become an unhandled rejection.
  exited.catch(() => {});
  const peer = await Promise.race([seen, exited, timer]);

  assert.equal(peer.ip, '127.0.0.1');
  assert.equal(peer.port, listenPort);
  assert.equal(peer.transport, proto);
  const swarm = server.swarms().find((s) => s.infoHash === infoHash.toString('hex'));
  assert.ok(swarm);
  assert.equal(swarm.seeders, 1);
  assert.ok(swarm.peers.some(isAria2Seeder));
  await stopChild(child);
}

test('aria2c announces to our tracker over HTTP and is listed as a seeder', (t) => aria2cSeedsVia(t, 'http'));

test('aria2c announces to our tracker over UDP (BEP 15) and is listed as a seeder', (t) =>
  aria2cSeedsVia(t, 'udp'));
