// The writer thread that puts verified pieces on disk (src/swarm/disk-writer.ts):
// it writes in 16 KiB calls, hands a moved buffer back whole, names the file
// when the disk refuses, does not keep a process alive, and a disk that
// stops (a frozen filesystem, as real as a stalled one) holds the download
// back instead of piling pieces up in memory. The last two need root (mount).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { createTorrent } from '../../src/torrent/create.js';
import { PieceStore } from '../../src/swarm/storage.js';
import { WRITE_CHUNK } from '../../src/swarm/disk-writer.js';
import { TorrentSession } from '../../src/swarm/session.js';
import { newPeerId } from '../../src/swarm/client.js';
import { duplexPair } from '../helpers/duplex.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';
import { seedImage } from '../helpers/image.js';
import { onProcessEnd } from '../helpers/reaper.js';
import { until } from '../helpers/faults-peers.js';

const PIECE = 512 * 1024;

/** Write system calls this process made so far (all threads). */
const writeCalls = () => Number(/^syscw: (\d+)$/m.exec(readFileSync('/proc/self/io', 'utf8'))![1]);

/**
 * A new folder with `mount <args>` on it. When the test ends (pass or fail)
 * the disk is thawed if a test left it frozen, what `uses` names is closed,
 * then it is unmounted and its folder removed; also when the runner kills
 * the file. One hook, so the order holds.
 */
function mounted(
  t: TestContext,
  args: string[],
): { dir: string; uses: (close: () => Promise<unknown>) => void } {
  const users: (() => Promise<unknown>)[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'bt-test-mnt-'));
  const thaw = () => {
    try {
      execFileSync('fsfreeze', ['--unfreeze', dir], { stdio: 'ignore' });
    } catch {
      // not frozen: fine
    }
  };
  // Killed: thawed, then detached lazily (whatever still has files open there lets go at exit).
  const forget = onProcessEnd(() => {
    thaw();
    execFileSync('umount', ['-l', dir]);
    rmSync(dir, { recursive: true, force: true });
  });
  execFileSync('mount', [...args, dir]);
  t.after(async () => {
    thaw();
    await Promise.all(users.map((close) => close()));
    execFileSync('umount', [dir]);
    rmSync(dir, { recursive: true, force: true });
    forget();
  });
  return { dir, uses: (close) => users.push(close) };
}

test('a piece over two files is written in 16 KiB calls; a moved buffer comes back whole, a kept one unchanged', async (t) => {
  const dir = tempDir(t);
  const src = join(dir, 'src');
  mkdirSync(src);
  // The first piece spans both files: 300 KiB of one, 212 KiB of the next.
  const a = pseudoRandomBytes(300 * 1024, 1);
  const b = pseudoRandomBytes(600 * 1024, 2);
  writeFileSync(join(src, 'a.bin'), a);
  writeFileSync(join(src, 'b.bin'), b);
  const { meta } = await createTorrent(src, { pieceLength: PIECE });
  const store = await PieceStore.open(meta, join(dir, 'out'), { mode: 'download' });
  t.after(() => store.close());
  const whole = Buffer.concat([a, b]);

  const piece0 = Buffer.from(new ArrayBuffer(PIECE));
  whole.copy(piece0, 0, 0, PIECE);
  const before = writeCalls();
  const back = await store.writePiece(0, piece0, { move: true });
  assert.ok(writeCalls() - before >= PIECE / WRITE_CHUNK, 'one write call per 16 KiB at least');
  assert.equal(piece0.length, 0, 'the moved buffer left this thread');
  assert.ok(back, 'and came back');
  assert.equal(back.length, PIECE);
  assert.ok(back.equals(whole.subarray(0, PIECE)), 'with its bytes');

  // The last piece, short, from a buffer that is not moved (nothing comes back; it is left as it was).
  const last = Buffer.from(whole.subarray(PIECE));
  assert.equal(await store.writePiece(1, last), undefined);
  assert.ok(last.equals(whole.subarray(PIECE)));
  await store.sync();
  assert.ok(readFileSync(join(dir, 'out', 'src', 'a.bin')).equals(a));
  assert.ok(readFileSync(join(dir, 'out', 'src', 'b.bin')).equals(b));
});

test('a disk that refuses a write (full) fails that piece, naming the piece and the file', async (t) => {
  const dir = tempDir(t);
  const src = join(dir, 'src');
  mkdirSync(src);
  const data = pseudoRandomBytes(4 * PIECE, 3);
  writeFileSync(join(src, 'image.bin'), data);
  const { meta } = await createTorrent(join(src, 'image.bin'), { pieceLength: PIECE });
  const { dir: small, uses } = mounted(t, ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs']);
  const store = await PieceStore.open(meta, small, { mode: 'download' });
  uses(() => store.close());
  await store.writePiece(0, Buffer.from(data.subarray(0, PIECE)));
  // 1 MiB holds two pieces at most: of the other three, one at least finds no room.
  const rest = await Promise.allSettled(
    [1, 2, 3].map((i) => store.writePiece(i, Buffer.from(data.subarray(i * PIECE, (i + 1) * PIECE)))),
  );
  const failed = rest.flatMap((r, k) =>
    r.status === 'rejected' ? [{ index: k + 1, err: r.reason as Error }] : [],
  );
  assert.ok(failed.length >= 1, 'a write past the end of the disk failed');
  for (const f of failed) {
    assert.match(
      f.err.message,
      new RegExp(`^cannot write piece ${f.index} to ${join(small, 'image.bin')}: ENOSPC`),
    );
  }
  assert.equal(store.writeBacklog, 0, 'nothing left queued');
  assert.ok(readFileSync(join(small, 'image.bin')).subarray(0, PIECE).equals(data.subarray(0, PIECE)));
});

test('an idle writer thread does not keep the process alive', async () => {
  const storage = fileURLToPath(new URL('../../src/swarm/storage.js', import.meta.url));
  const create = fileURLToPath(new URL('../../src/torrent/create.js', import.meta.url));
  const script = `
    import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
    import { join } from 'node:path';
    import { tmpdir } from 'node:os';
    const { PieceStore } = await import(${JSON.stringify(storage)});
    const { createTorrent } = await import(${JSON.stringify(create)});
    const dir = mkdtempSync(join(tmpdir(), 'bt-writer-'));
    process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, 'x.bin'), Buffer.alloc(65536, 7));
    const { meta } = await createTorrent(join(dir, 'x.bin'), { pieceLength: 65536 });
    const store = await PieceStore.open(meta, join(dir, 'out'), { mode: 'download' });
    await store.writePiece(0, Buffer.alloc(65536, 7));
    console.log('written');
    // The store is left open: only the writer thread could hold the process now.
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const killer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
  clearTimeout(killer);
  assert.equal(out.trim(), 'written');
  assert.equal(signal, null, 'it exited by itself (not killed after 30 s)');
  assert.equal(code, 0);
});

test('a disk that stops (frozen filesystem) holds the download back: no more asked past the backlog, all done once it thaws', async (t) => {
  const dir = tempDir(t);
  const { seedDir, data, meta } = await seedImage(dir, 96 * 1024 * 1024, 256 * 1024);
  // A real ext4 on a loop device, which fsfreeze can stop: every write waits until it thaws.
  const image = join(dir, 'disk.img');
  execFileSync('truncate', ['-s', '160M', image]);
  execFileSync('mkfs.ext4', ['-q', '-F', image]);
  const seeder = new TorrentSession({ meta, dir: seedDir, mode: 'seed', peerId: newPeerId(), listenPort: 1 });
  const { dir: disk, uses } = mounted(t, ['-o', 'loop', image]);
  const leecher = new TorrentSession({
    meta,
    dir: disk,
    mode: 'download',
    peerId: newPeerId(),
    listenPort: 2,
  });
  uses(() => Promise.all([seeder.stop(), leecher.stop()]));
  await seeder.start();
  await leecher.start();
  execFileSync('fsfreeze', ['--freeze', disk]);
  const [x, y] = duplexPair();
  leecher.connectStream(x, 'seeder', true);
  seeder.connectStream(y, 'leecher', false);

  // It receives until the backlog (16 MiB waiting for the disk) is reached, then stops asking.
  let last = -1;
  let still = 0;
  await until(
    () => {
      const now = leecher.stats().downloaded;
      still = now === last ? still + 1 : 0;
      last = now;
      return now > 0 && still >= 10; // unchanged for 2 s
    },
    60_000,
    () => `downloaded ${leecher.stats().downloaded} B and still growing`,
  );
  const held = leecher.stats().downloaded;
  // 16 MiB queued, plus what was in flight when asking stopped (pipeline and pieces being assembled).
  assert.ok(held >= 16 * 1024 * 1024, `held at ${held} B: below the backlog`);
  assert.ok(held <= 32 * 1024 * 1024, `held at ${held} B of ${meta.length}: asked past the backlog`);
  assert.equal(leecher.stats().piecesHave, 0, 'nothing counts as had before it is on disk');

  execFileSync('fsfreeze', ['--unfreeze', disk]);
  await leecher.whenComplete();
  assert.ok(readFileSync(join(disk, 'image.bin')).equals(data));
});
