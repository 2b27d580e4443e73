// How verified pieces reach the files (src/swarm/disk-writer.ts, PieceStore):
// on a disk, the writer thread writes in 16 KiB calls and hands a moved
// buffer back whole; in memory (tmpfs) the calling thread writes; a full
// filesystem fails the piece naming the file; the thread does not keep a
// process alive; and a disk that stops (a frozen filesystem, as real as a
// stalled one) holds the download back instead of piling pieces up in
// memory. Real filesystems (ext4 on a loop device, tmpfs), so root.
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

/** A fresh filesystem of `size` (e.g. '16M'): ext4 on a loop device (a disk), or a tmpfs (memory). */
function disk(t: TestContext, kind: 'ext4' | 'tmpfs', size: string) {
  if (kind === 'tmpfs') return mounted(t, ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs']);
  const image = join(tempDir(t), 'disk.img');
  execFileSync('truncate', ['-s', size, image]);
  execFileSync('mkfs.ext4', ['-q', '-F', image]);
  return mounted(t, ['-o', 'loop', image]);
}

test('on a disk: a piece over two files is written by the thread in 16 KiB calls; a moved buffer comes back whole, a kept one unchanged', async (t) => {
  const dir = tempDir(t);
  const src = join(dir, 'src');
  mkdirSync(src);
  // The first piece spans both files: 300 KiB of one, 212 KiB of the next.
  const a = pseudoRandomBytes(300 * 1024, 1);
  const b = pseudoRandomBytes(600 * 1024, 2);
  writeFileSync(join(src, 'a.bin'), a);
  writeFileSync(join(src, 'b.bin'), b);
  const { meta } = await createTorrent(src, { pieceLength: PIECE });
  const out = disk(t, 'ext4', '16M');
  const store = await PieceStore.open(meta, out.dir, { mode: 'download' });
  out.uses(() => store.close());
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
  assert.ok(readFileSync(join(out.dir, 'src', 'a.bin')).equals(a));
  assert.ok(readFileSync(join(out.dir, 'src', 'b.bin')).equals(b));
});

test('in memory (tmpfs): a piece is written on the calling thread, its buffer not moved', async (t) => {
  const dir = tempDir(t);
  const data = pseudoRandomBytes(2 * PIECE, 4);
  writeFileSync(join(dir, 'image.bin'), data);
  const { meta } = await createTorrent(join(dir, 'image.bin'), { pieceLength: PIECE });
  const ram = disk(t, 'tmpfs', '4m');
  const store = await PieceStore.open(meta, ram.dir, { mode: 'download' });
  ram.uses(() => store.close());
  const piece = Buffer.from(new ArrayBuffer(PIECE));
  data.copy(piece, 0, PIECE);
  assert.equal(
    await store.writePiece(1, piece, { move: true }),
    undefined,
    'nothing came back: nothing left',
  );
  assert.ok(piece.equals(data.subarray(PIECE)), 'the buffer is as it was');
  assert.ok(readFileSync(join(ram.dir, 'image.bin')).subarray(PIECE).equals(data.subarray(PIECE)));
});

for (const kind of ['ext4', 'tmpfs'] as const) {
  test(`a full ${kind} fails the piece it refused, naming the piece and the file`, async (t) => {
    const dir = tempDir(t);
    const data = pseudoRandomBytes(8 * PIECE, 3);
    writeFileSync(join(dir, 'image.bin'), data);
    const { meta } = await createTorrent(join(dir, 'image.bin'), { pieceLength: PIECE });
    const small = disk(t, kind, '2M');
    const store = await PieceStore.open(meta, small.dir, { mode: 'download' });
    small.uses(() => store.close());
    await store.writePiece(0, Buffer.from(data.subarray(0, PIECE)));
    // 2 MB holds four pieces at most: of the other seven, some find no room.
    const rest = await Promise.allSettled(
      [1, 2, 3, 4, 5, 6, 7].map((i) =>
        store.writePiece(i, Buffer.from(data.subarray(i * PIECE, (i + 1) * PIECE))),
      ),
    );
    const failed = rest.flatMap((r, k) =>
      r.status === 'rejected' ? [{ index: k + 1, err: r.reason as Error }] : [],
    );
    assert.ok(failed.length >= 1, 'a write past the end of the disk failed');
    for (const f of failed) {
      assert.match(
        f.err.message,
        new RegExp(`^cannot write piece ${f.index} to ${join(small.dir, 'image.bin')}: ENOSPC`),
      );
    }
    assert.equal(store.writeBacklog, 0, 'nothing left queued');
    assert.ok(readFileSync(join(small.dir, 'image.bin')).subarray(0, PIECE).equals(data.subarray(0, PIECE)));
  });
}

test('an idle writer thread does not keep the process alive', async (t) => {
  const storage = fileURLToPath(new URL('../../src/swarm/storage.js', import.meta.url));
  const create = fileURLToPath(new URL('../../src/torrent/create.js', import.meta.url));
  // On a disk, so the thread writes (in memory the caller would).
  const out = disk(t, 'ext4', '16M');
  const script = `
    import { writeFileSync } from 'node:fs';
    import { join } from 'node:path';
    const { PieceStore } = await import(${JSON.stringify(storage)});
    const { createTorrent } = await import(${JSON.stringify(create)});
    const dir = ${JSON.stringify(out.dir)};
    writeFileSync(join(dir, 'x.bin'), Buffer.alloc(65536, 7));
    const { meta } = await createTorrent(join(dir, 'x.bin'), { pieceLength: 65536 });
    const store = await PieceStore.open(meta, join(dir, 'out'), { mode: 'download' });
    const data = Buffer.from(new ArrayBuffer(65536)).fill(7);
    const back = await store.writePiece(0, data, { move: true });
    console.log(back && data.length === 0 ? 'written by the thread' : 'not by the thread');
    // The store is left open: only the writer thread could hold the process now.
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let text = '';
  child.stdout.on('data', (d: Buffer) => (text += d.toString()));
  const killer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const [code, signal] = (await once(child, 'exit')) as [number | null, string | null];
  clearTimeout(killer);
  assert.equal(text.trim(), 'written by the thread');
  assert.equal(signal, null, 'it exited by itself (not killed after 30 s)');
  assert.equal(code, 0);
});

test('a disk that stops (frozen filesystem) holds the download back: no more asked past the backlog, all done once it thaws', async (t) => {
  const dir = tempDir(t);
  const { seedDir, data, meta } = await seedImage(dir, 96 * 1024 * 1024, 256 * 1024);
  // A real ext4 on a loop device, which fsfreeze can stop: every write waits until it thaws.
  const seeder = new TorrentSession({ meta, dir: seedDir, mode: 'seed', peerId: newPeerId(), listenPort: 1 });
  const { dir: frozen, uses } = disk(t, 'ext4', '160M');
  const leecher = new TorrentSession({
    meta,
    dir: frozen,
    mode: 'download',
    peerId: newPeerId(),
    listenPort: 2,
  });
  uses(() => Promise.all([seeder.stop(), leecher.stop()]));
  await seeder.start();
  await leecher.start();
  execFileSync('fsfreeze', ['--freeze', frozen]);
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

  execFileSync('fsfreeze', ['--unfreeze', frozen]);
  await leecher.whenComplete();
  assert.ok(readFileSync(join(frozen, 'image.bin')).equals(data));
});

test('close() waits for the piece at the writer thread (its file stays open until then); pieces still queued are refused', async (t) => {
  const dir = tempDir(t);
  const data = pseudoRandomBytes(2 * PIECE, 5);
  writeFileSync(join(dir, 'image.bin'), data);
  const { meta } = await createTorrent(join(dir, 'image.bin'), { pieceLength: PIECE });
  const { dir: frozen, uses } = disk(t, 'ext4', '16M');
  const store = await PieceStore.open(meta, frozen, { mode: 'download' });
  uses(() => store.close());
  execFileSync('fsfreeze', ['--freeze', frozen]);
  const first = store.writePiece(0, Buffer.from(data.subarray(0, PIECE)));
  const secondRefused = assert.rejects(
    store.writePiece(1, Buffer.from(data.subarray(PIECE))),
    /storage is closed/,
  );
  let closed = false;
  const closing = store.close().then(() => (closed = true));
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(closed, false, 'close() returned while the writer still held the file');
  execFileSync('fsfreeze', ['--unfreeze', frozen]);
  await closing;
  await first;
  await secondRefused;
  assert.ok(readFileSync(join(frozen, 'image.bin')).subarray(0, PIECE).equals(data.subarray(0, PIECE)));
});
