import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { OsCatalog } from '../../src/server/catalog.js';
import { ClientStore } from '../../src/server/state.js';
import { memoryLogger } from '../../src/util/logger.js';
import type { OsEntry } from '../../src/env/types.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';

function os(dir: string, id: string): OsEntry {
  return {
    id,
    dir: join(dir, id),
    name: id.toUpperCase(),
    configFile: join(dir, id, 'config.yaml'),
    sourceVersion: 1,
    webSeeds: [],
    method: 'bin',
    bin: 'run.sh',
    args: [],
  };
}

test('catalog: hashes each OS folder once, re-hashes only the one that changed, reuses its disk cache', async (t) => {
  const dir = tempDir(t);
  for (const [id, seed] of [
    ['a', 1],
    ['b', 2],
  ] as const) {
    mkdirSync(join(dir, id));
    writeFileSync(join(dir, id, 'run.sh'), pseudoRandomBytes(100_000, seed));
    mkdirSync(join(dir, id, 'sub'));
    writeFileSync(join(dir, id, 'sub', 'data'), pseudoRandomBytes(70_000, seed + 10));
  }
  const cacheDir = join(dir, 'cache');
  const oss = [os(dir, 'a'), os(dir, 'b')];
  const log = memoryLogger();
  const hashed = () => log.lines.filter((l) => /hashing OS folder/.test(l.msg)).length;
  const cat = new OsCatalog({ cacheDir, announce: 'http://10.0.0.1/announce' }, { logger: log });
  const first = await cat.update(oss);
  assert.equal(first.added.length, 2);
  assert.equal(hashed(), 2);
  const a = cat.get('a')!;
  assert.deepEqual(
    a.files.map((f) => f.path),
    ['run.sh', 'sub/data'],
  );
  const sha = createHash('sha256')
    .update(readFileSync(join(dir, 'a', 'sub', 'data')))
    .digest('hex');
  assert.equal(a.files[1]!.sha256, sha);
  assert.equal(a.meta.name, 'a');

  // Nothing changed: nothing hashed, nothing added.
  const again = await cat.update(oss);
  assert.equal(again.added.length + again.removed.length, 0);
  assert.equal(hashed(), 2);

  // One file of b changes: only b is hashed again, and the old b is reported removed.
  writeFileSync(join(dir, 'b', 'sub', 'data'), pseudoRandomBytes(70_000, 99));
  utimesSync(join(dir, 'b', 'sub', 'data'), new Date(), new Date(Date.now() + 5000));
  const oldB = cat.get('b')!.meta.infoHashHex;
  const changed = await cat.update(oss);
  assert.deepEqual(
    changed.added.map((e) => e.os.id),
    ['b'],
  );
  assert.deepEqual(
    changed.removed.map((e) => e.meta.infoHashHex),
    [oldB],
  );
  assert.equal(hashed(), 3);

  // A new catalog (a restart) reads both back from the disk cache without hashing.
  const log2 = memoryLogger();
  const cat2 = new OsCatalog({ cacheDir, announce: 'http://10.0.0.1/announce' }, { logger: log2 });
  await cat2.update(oss);
  assert.equal(log2.lines.filter((l) => /hashing OS folder/.test(l.msg)).length, 0);
  assert.equal(cat2.get('b')!.meta.infoHashHex, cat.get('b')!.meta.infoHashHex);

  // Removing an OS drops it.
  const gone = await cat.update([oss[0]!]);
  assert.deepEqual(
    gone.removed.map((e) => e.os.id),
    ['b'],
  );
  assert.equal(cat.get('b'), undefined);
});

test('client store: stages from DHCP to boot, boot time, concurrency, a new boot after the last', () => {
  let now = 1000;
  const store = new ClientStore(
    (id) => (id === 'linux' ? 1000 : undefined),
    () => now,
  );
  const stages: string[] = [];
  store.on('stage', (c) => stages.push(`${c.mac.slice(-2)}:${c.stage}`));
  store.dhcp('52:54:00:00:00:01', { ip: '10.0.0.100', firmware: 'bios' });
  store.dhcp('52:54:00:00:00:02', { firmware: 'uefi-x64' });
  now += 1000;
  store.ipxe('52:54:00:00:00:01', '10.0.0.100');
  store.phase1('52:54:00:00:00:01');
  // phase 1's own DHCP is not a new boot
  store.dhcp('52:54:00:00:00:01', { ip: '10.0.0.100' });
  store.report('52:54:00:00:00:01', '10.0.0.100', {
    stage: 'downloading',
    os: 'linux',
    progress: 0.5,
    uploaded: 500,
  });
  now += 9000;
  store.report('52:54:00:00:00:01', '10.0.0.100', {
    stage: 'booting',
    os: 'linux',
    progress: 1,
    uploaded: 1500,
  });
  const c1 = store.get('52:54:00:00:00:01')!;
  assert.equal(c1.stage, 'booting');
  assert.equal(c1.firmware, 'bios');
  assert.equal(c1.bootSeconds, 10);
  assert.equal(c1.seedRatio, 1.5);
  assert.equal(c1.concurrent, 1);
  assert.equal(store.get('52:54:00:00:00:02')!.concurrent, 2);
  assert.deepEqual(stages, ['01:dhcp', '02:dhcp', '01:ipxe', '01:phase1', '01:downloading', '01:booting']);
  // The same machine PXE-boots again: a fresh row, same MAC.
  store.dhcp('52:54:00:00:00:01', { firmware: 'bios' });
  const again = store.get('52:54:00:00:00:01')!;
  assert.equal(again.stage, 'dhcp');
  assert.equal(again.concurrent, 2, '02 still in progress, and this new boot');
  assert.equal(again.bootSeconds, null);
  assert.equal(again.ip, '10.0.0.100');
  store.report('52:54:00:00:00:02', '10.0.0.101', { stage: 'failed', error: 'sha256 mismatch' });
  assert.equal(store.get('52:54:00:00:00:02')!.error, 'sha256 mismatch');
  assert.equal(store.list().length, 2);
});

test('client store: at most maxClients kept, the least recently heard-from forgotten; concurrency stays right', () => {
  let now = 0;
  const store = new ClientStore(undefined, () => ++now, 3);
  const mac = (i: number) => `02:00:00:00:00:0${i}`;
  store.dhcp(mac(1), {});
  store.dhcp(mac(2), {});
  store.dhcp(mac(3), {});
  store.ipxe(mac(1), '10.0.0.1'); // 1 heard from again: 2 is now the oldest
  store.dhcp(mac(4), {});
  assert.equal(store.size, 3);
  assert.equal(store.get(mac(2)), undefined);
  assert.deepEqual(
    store
      .list()
      .map((c) => c.mac)
      .sort(),
    [mac(1), mac(3), mac(4)],
  );
  assert.equal(store.get(mac(4))!.concurrent, 3);
  // Forgetting a client still in progress lowers the count too.
  store.report(mac(1), '10.0.0.1', { stage: 'failed', error: 'x' });
  store.dhcp(mac(5), {});
  assert.equal(store.get(mac(3)), undefined);
  assert.equal(store.get(mac(5))!.concurrent, 2, '4 and 5 in progress; 1 failed, 3 forgotten');
  // A flood of new MACs stays bounded.
  for (let i = 0; i < 10_000; i++) store.dhcp(`02:00:00:${(i >> 16) & 255}:${(i >> 8) & 255}:${i & 255}`, {});
  assert.equal(store.size, 3);
  assert.equal(store.get(mac(1))?.stage, 'failed', '1 is kept: its agent reported, the flood did not');
  assert.equal(store.list().at(-1)!.concurrent, 2, 'the count of clients in progress stays within the cap');
  // A failed client that reports again (the user pressed r) is in progress again.
  store.report('02:00:00:00:39:0f', '10.0.0.9', { stage: 'failed', error: 'x' });
  store.report('02:00:00:00:39:0f', '10.0.0.9', { stage: 'downloading' });
  store.dhcp('02:00:00:ff:ff:ff', {});
  assert.equal(store.get('02:00:00:ff:ff:ff')!.concurrent, 2, 'itself and the one downloading; 1 is done');
});

// The hostile soak: 12,000 DISCOVERs from made-up MACs pushed a booted
// client's row off status and the dashboard (the store forgot the least
// recently heard-from, and a seeding client is quiet). Anyone can send DHCP
// or ask /boot.ipxe for any MAC; only a client's own agent can report.
test('client store: a flood of made-up MACs does not forget clients whose agent reported', () => {
  let now = 0;
  const store = new ClientStore(undefined, () => ++now, 4);
  const real = ['02:00:00:00:01:01', '02:00:00:00:01:02'];
  for (const m of real) {
    store.dhcp(m, {});
    store.report(m, '10.0.0.9', { stage: 'seeding', os: 'debian' });
  }
  for (let i = 0; i < 5000; i++) {
    const fake = `02:ff:00:${(i >> 16) & 255}:${(i >> 8) & 255}:${i & 255}`;
    if (i % 2) store.dhcp(fake, {});
    else store.ipxe(fake, '10.0.0.66');
  }
  assert.equal(store.size, 4);
  for (const m of real) assert.equal(store.get(m)?.stage, 'seeding', `${m} kept`);
  // With only reported clients left, the least recently heard-from still goes.
  const more = ['02:00:00:00:01:03', '02:00:00:00:01:04', '02:00:00:00:01:05'];
  for (const m of more) store.report(m, '10.0.0.9', { stage: 'seeding' });
  assert.equal(store.size, 4);
  assert.equal(
    store.get(real[0]!),
    undefined,
    'the oldest reported client goes once no unreported one is left',
  );
});

test('catalog: an OS with web_seeds gets them as the url-list of its torrent (same infohash); a changed list makes a new .torrent', async (t) => {
  const dir = tempDir(t);
  mkdirSync(join(dir, 'a'));
  writeFileSync(join(dir, 'a', 'run.sh'), pseudoRandomBytes(50_000, 3));
  const cat = new OsCatalog({ cacheDir: join(dir, 'cache') }, { logger: memoryLogger() });
  await cat.update([os(dir, 'a')]);
  const plain = cat.get('a')!;
  assert.deepEqual(plain.meta.urlList, []);
  const seeded = { ...os(dir, 'a'), webSeeds: ['http://mirror.test/bt/', 'https://s3.test/bucket/'] };
  const changed = await cat.update([seeded]);
  const withSeeds = cat.get('a')!;
  assert.deepEqual(withSeeds.meta.urlList, ['http://mirror.test/bt/', 'https://s3.test/bucket/']);
  assert.equal(withSeeds.meta.infoHashHex, plain.meta.infoHashHex, 'the url-list is outside info');
  assert.notDeepEqual(withSeeds.torrent, plain.torrent, 'the .torrent clients get carries the list');
  assert.equal(changed.added.length, 0, 'the same torrent: not re-added to the swarm');
  // Read back from the disk cache by a new catalog: still the list.
  const again = new OsCatalog({ cacheDir: join(dir, 'cache') }, { logger: memoryLogger() });
  await again.update([seeded]);
  assert.deepEqual(again.get('a')!.meta.urlList, seeded.webSeeds);
});
