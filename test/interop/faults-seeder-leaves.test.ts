/**
 * Fault: the only seeder leaves once one full copy exists across the
 * clients. `boottorrent tracker`, `boottorrent seed` (upload capped, so the
 * clients must share) and four `boottorrent get` clients, all on 127.0.0.1.
 * A silent watcher peer (our wire codec) connected to every client learns
 * each piece a client verifies (its HAVE messages, BEP 3). The rule, exact:
 * the seeder is SIGKILLed the moment every piece is held, verified, by at
 * least one client. The swarm must then complete on its own and every
 * client's copy must have the image's SHA-256.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createTorrent } from '../../src/torrent/create.js';
import { BIN } from '../helpers/cli.js';
import { PieceWatcher, freeTcpPort, startProc, until, type Proc } from '../helpers/faults-peers.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';

const HOST = '127.0.0.1';
const CLIENTS = 4;
const SIZE = 24 << 20;

test('faults: the seeder leaves once the clients together hold every piece; the swarm still completes', async (t) => {
  const dir = tempDir(t, 'bt-faults-seed-');
  const image = pseudoRandomBytes(SIZE, 81);
  const want = createHash('sha256').update(image).digest('hex');
  mkdirSync(join(dir, 'src'));
  writeFileSync(join(dir, 'src', 'os.img'), image);
  const { torrent, meta } = await createTorrent(join(dir, 'src', 'os.img'), { creationDate: null });
  const torrentFile = join(dir, 'os.torrent');
  writeFileSync(torrentFile, torrent);

  const node = (args: string[]): Proc => startProc((fn) => t.after(fn), process.execPath, [BIN, ...args]);
  const trackerPort = await freeTcpPort(HOST);
  const tracker = node(['tracker', '--host', HOST, '--port', String(trackerPort), '--torrent', torrentFile]);
  await until(
    () => /tracker on http/.test(tracker.output()),
    30_000,
    () => tracker.output(),
  );
  const announce = `http://${HOST}:${trackerPort}/announce`;
  const seeder = node([
    'seed',
    torrentFile,
    join(dir, 'src'),
    '--host',
    HOST,
    '--port',
    '0',
    '--tracker',
    announce,
    '--upload-limit',
    '2M',
  ]);
  await until(
    () => /seeding [0-9a-f]{40} on port \d+/.test(seeder.output()),
    60_000,
    () => seeder.output(),
  );

  const watcher = new PieceWatcher(meta.infoHash, meta.pieceCount);
  t.after(() => watcher.close());
  const clients: { proc: Proc; port: number; out: string }[] = [];
  for (let i = 0; i < CLIENTS; i++) {
    const port = await freeTcpPort(HOST);
    const out = join(dir, `c${i}`);
    const proc = node([
      'get',
      torrentFile,
      '-o',
      out,
      '--host',
      HOST,
      '--port',
      String(port),
      '--tracker',
      announce,
      // Long enough to serve the others; each is stopped once all are done.
      '--seed-time',
      '600',
    ]);
    clients.push({ proc, port, out });
    watcher.watch(HOST, port);
  }

  // The rule: every piece verified by some client. Checked on each HAVE, so
  // the seeder dies the moment it is true (the last piece at one client only).
  let held: number[] = [];
  watcher.onChange = () => {
    if (held.length > 0 || watcher.unionCount() < meta.pieceCount) return;
    seeder.child.kill('SIGKILL');
    held = clients.map((c) => watcher.pieces(`${HOST}:${c.port}`)?.count() ?? 0);
  };
  await until(
    () => held.length > 0,
    150_000,
    () => `union ${watcher.unionCount()} of ${meta.pieceCount}\n${seeder.output().slice(-2000)}`,
  );
  await seeder.exited;
  // The fault is real only if someone still needed pieces when the seeder left.
  assert.ok(
    held.some((n) => n < meta.pieceCount),
    `a client still lacked pieces when the seeder left: ${held.join(', ')} of ${meta.pieceCount}`,
  );

  for (const c of clients) {
    await until(
      () => /downloaded os\.img .*every piece verified/.test(c.proc.output()),
      120_000,
      () => `client on ${c.port}: ${c.proc.output().slice(-2000)}`,
    );
  }
  for (const c of clients) {
    c.proc.child.kill('SIGTERM');
    assert.equal((await c.proc.exited).code, 0, c.proc.output());
    const got = createHash('sha256')
      .update(readFileSync(join(c.out, 'os.img')))
      .digest('hex');
    assert.equal(got, want, `client on ${c.port}`);
  }
  t.diagnostic(`pieces held when the seeder left: ${held.join(', ')} of ${meta.pieceCount}`);
});
