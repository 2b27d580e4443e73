// What the server does with names, groups, next boots and overlays (issue
// #17 items 3 and 4): the boot config a machine gets, the overlay archive
// (rendered, checked, served only to its own MAC), next-boot.json across a
// restart, the room actions' refusals, and the agent's side (the archive
// appended to the OS's initramfs, or unpacked into a folder).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { parseBootConfig } from '../../src/boot-config.js';
import { overlayArchive, renderFile } from '../../src/boot/overlay.js';
import { loadEnvironment } from '../../src/env/load.js';
import type { Environment } from '../../src/env/types.js';
import { decodeCpio, encodeCpio } from '../../src/phase1/cpio.js';
import { ClientApi, NEXT_BOOT_TIMEOUT } from '../../src/server/client-api.js';
import type { CatalogEntry } from '../../src/server/catalog.js';
import { NextBootStore } from '../../src/server/next-boot.js';
import { roomActions } from '../../src/server/room-actions.js';
import { fetchOverlay, singleInitrd, unpackOverlay, withOverlay } from '../../src/agent/steps.js';
import { BASE_V1, v1Env } from '../helpers/env.js';
import { tempDir } from '../helpers/tmp.js';

const PC07 = '52:54:00:00:00:07';
const PC08 = '52:54:00:00:00:08';
const STRANGER = '52:54:00:00:00:99';

const ROOM_YAML = `${BASE_V1}hosts:
  '${PC07}': {name: pc-07, overlay: overlays/pc-07}
groups:
  room-b:
    macs: ['${PC07}', '${PC08}']
    oss: [exam, linux]
    default_os: linux
    timeout: -1
    seed_time: 5
    cmdline: exam.mode=1
    overlay: overlays/room-b
`;

async function roomEnv(t: TestContext): Promise<Environment> {
  const dir = v1Env(t, ROOM_YAML, {
    'oss/exam/config.yaml': 'name: Exam\nmethod: kexec\nkernel: vmlinuz\ncmdline: quiet\n',
    'oss/exam/vmlinuz': 'kernel',
    'oss/tool/config.yaml': 'name: Tool\nmethod: bin\nbin: run.sh\n',
    'oss/tool/run.sh': '#!/bin/sh\n',
    'overlays/room-b/etc/hostname': 'room-b-default\n',
    'overlays/room-b/etc/motd': 'Room {{group}}\n',
    'overlays/pc-07/etc/hostname': '{{name}}\n',
    'overlays/pc-07/etc/ssh/ssh_host_ed25519_key': 'KEY of {{mac}} at {{ip}}\n',
  });
  for (const f of ['room-b/etc/hostname', 'room-b/etc/motd', 'pc-07/etc/hostname'])
    chmodSync(join(dir, 'overlays', f), 0o644);
  chmodSync(join(dir, 'overlays/pc-07/etc/ssh/ssh_host_ed25519_key'), 0o600);
  return loadEnvironment(dir, { machineChecks: false });
}

function catalog(env: Environment): CatalogEntry[] {
  return env.oss.map((os, i) => ({
    os,
    torrent: Buffer.from('d4:infod4:name1:xee'),
    meta: { infoHashHex: String(i).repeat(40), length: 6 } as CatalogEntry['meta'],
    files: readdirSync(os.dir).map((f) => ({ path: f, length: 6, sha256: 'a'.repeat(64) })),
    fingerprint: '',
  }));
}

function api(env: Environment, nextBoot?: NextBootStore, tied = new Set([PC07])) {
  const entries = catalog(env);
  return new ClientApi(
    { bootUrl: 'http://127.0.0.1:8080', secret: Buffer.alloc(32, 1) },
    {
      environment: () => env,
      library: { entries: () => entries, get: (id) => entries.find((e) => e.os.id === id), seedPort: 6881 },
      requesters: {
        tie: (_ip: string, mac: string) => Promise.resolve(tied.has(mac) ? 'neighbour' : undefined),
      },
      store: { report: () => undefined },
      ...(nextBoot ? { nextBoot: (mac, groups) => nextBoot.forMachine(mac, groups) } : {}),
    },
  );
}

test('boot config: the group menu in its order, the host name, group seed_time and cmdline on kexec OSs', async (t) => {
  const env = await roomEnv(t);
  const c = await api(env).bootConfigFor(PC08, '10.0.0.8');
  assert.deepEqual(
    c.oss.map((o) => o.id),
    ['exam', 'linux'],
  );
  assert.equal(c.menu.default, 'linux');
  assert.equal(c.menu.timeout, -1);
  assert.equal(c.seedTime, 5);
  const linux = c.oss.find((o) => o.id === 'linux');
  assert.equal(linux?.method === 'kexec' ? linux.cmdline : '', 'quiet exam.mode=1');
  assert.equal(c.name, undefined, 'pc-08 has no name');
  const other = await api(env).bootConfigFor(STRANGER, '10.0.0.9');
  assert.deepEqual(
    other.oss.map((o) => o.id),
    ['exam', 'linux', 'tool'],
    'outside the group: every OS',
  );
  assert.equal(other.overlay, undefined);
  // The agent reads it back.
  const again = parseBootConfig(JSON.stringify(await api(env).bootConfigFor(PC07, '10.0.0.7')));
  assert.equal(again.name, 'pc-07');
  assert.equal(again.overlay?.url, `http://127.0.0.1:8080/api/v1/overlay/${PC07}`);
});

test('overlay: rendered for the machine, later folders win, modes kept, named by hash, only to its own MAC', async (t) => {
  const env = await roomEnv(t);
  const a = api(env, undefined, new Set([PC07]));
  const c = await a.bootConfigFor(PC07, '10.0.0.7');
  assert.ok(c.overlay, 'a tied requester is told of the overlay');
  const srv: Server = createServer((req, res) => {
    if (!a.route(req, res, req.url ?? '', '10.0.0.7')) res.writeHead(404).end();
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.after(() => srv.close());
  const base = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  const body = Buffer.from(await (await fetch(`${base}/api/v1/overlay/${PC07}`)).arrayBuffer());
  assert.equal(body.length, c.overlay.length);
  assert.equal(createHash('sha256').update(body).digest('hex'), c.overlay.sha256);
  const files = new Map(decodeCpio(body).map((e) => [e.path, e]));
  assert.equal(
    files.get('etc/hostname')?.data.toString(),
    'pc-07\n',
    "the host's folder wins over the group's",
  );
  assert.equal(files.get('etc/motd')?.data.toString(), 'Room room-b\n');
  assert.equal(files.get('etc/ssh/ssh_host_ed25519_key')?.data.toString(), `KEY of ${PC07} at 10.0.0.7\n`);
  assert.equal(files.get('etc/ssh/ssh_host_ed25519_key')?.mode, 0o600);
  assert.equal(files.get('etc/ssh')?.type, 'dir');

  // Another machine, or a requester the server cannot tie to the MAC, gets no overlay.
  const untied = await api(env, undefined, new Set()).bootConfigFor(PC07, '10.0.0.66');
  assert.equal(untied.overlay, undefined);
  assert.equal(untied.reportToken, '');
  assert.match(
    untied.overlayWithheld ?? '',
    /could not tie this request to the MAC/,
    'the agent is told why',
  );
  assert.equal(parseBootConfig(JSON.stringify(untied)).overlayWithheld, untied.overlayWithheld);
  assert.equal(
    (await api(env, undefined, new Set([PC08])).bootConfigFor(PC08, '10.0.0.8')).overlayWithheld,
    undefined,
    'pc-08 got its overlay',
  );
  const b = api(env, undefined, new Set());
  const srv2 = createServer((req, res) => {
    if (!b.route(req, res, req.url ?? '', '10.0.0.66')) res.writeHead(404).end();
  });
  await new Promise<void>((r) => srv2.listen(0, '127.0.0.1', r));
  t.after(() => srv2.close());
  const refused = await fetch(
    `http://127.0.0.1:${(srv2.address() as AddressInfo).port}/api/v1/overlay/${PC07}`,
  );
  assert.equal(refused.status, 403);
  assert.doesNotMatch(await refused.text(), /KEY/);

  // The agent's side: fetched and checked; a changed overlay is refused.
  const dir = tempDir(t);
  await fetchOverlay({ ...c.overlay, url: `${base}/api/v1/overlay/${PC07}` }, join(dir, 'o.cpio'));
  assert.deepEqual(readFileSync(join(dir, 'o.cpio')), body);
  await assert.rejects(
    fetchOverlay(
      { ...c.overlay, url: `${base}/api/v1/overlay/${PC07}`, sha256: 'f'.repeat(64) },
      join(dir, 'x'),
    ),
    /not the one the boot config names/,
  );
});

test('render: placeholders in text files only; an unknown one is left as written', () => {
  const facts = { name: null, mac: PC08, ip: '10.0.0.8', group: null };
  assert.equal(
    renderFile(Buffer.from('{{ name }} {{mac}} {{ip}} [{{group}}] {{other}}'), facts).toString(),
    `bt-525400000008 ${PC08} 10.0.0.8 [] {{other}}`,
  );
  const bin = Buffer.from([0, 123, 123, 110, 97, 109, 101, 125, 125]);
  assert.deepEqual(renderFile(bin, facts), bin);
});

test('overlay limits: a symbolic link in the folder refuses the archive, naming the file', async (t) => {
  const dir = tempDir(t);
  mkdirSync(join(dir, 'o'));
  writeFileSync(join(dir, 'o', 'a'), 'x');
  const { symlinkSync } = await import('node:fs');
  symlinkSync('/etc/shadow', join(dir, 'o', 'shadow'));
  assert.throws(
    () => overlayArchive([join(dir, 'o')], { name: 'x', mac: PC07, ip: '', group: null }),
    /shadow is a symbolic link/,
  );
});

test('cpio reader: refuses paths out of the folder, links, devices and truncation', () => {
  const ok = encodeCpio([
    { type: 'dir', path: 'etc' },
    { type: 'file', path: 'etc/x', data: Buffer.from('1'), mode: 0o600 },
  ]);
  assert.equal(decodeCpio(ok).length, 2);
  assert.throws(
    () => decodeCpio(encodeCpio([{ type: 'symlink', path: 'l', target: '/' }])),
    /only folders and plain files/,
  );
  assert.throws(
    () => decodeCpio(encodeCpio([{ type: 'char', path: 'c', major: 1, minor: 3 }])),
    /only folders and plain files/,
  );
  const evil = Buffer.from(ok.toString('latin1').replace('etc/x', '../xx'), 'latin1');
  assert.throws(() => decodeCpio(evil), /unsafe path/);
  assert.throws(() => decodeCpio(ok.subarray(0, 200)), /ends inside a header|out of bounds/);
});

test('agent: the overlay is appended to the OS initramfs at a 4-byte boundary, or unpacked into a folder', async (t) => {
  const dir = tempDir(t);
  const osDir = join(dir, 'os');
  mkdirSync(osDir);
  writeFileSync(join(osDir, 'initrd.img'), Buffer.from('12345')); // 5 bytes: padding needed
  const archive = encodeCpio([
    { type: 'dir', path: 'etc' },
    { type: 'file', path: 'etc/hostname', data: Buffer.from('pc-07\n'), mode: 0o644 },
  ]);
  writeFileSync(join(dir, 'o.cpio'), archive);
  const one = await singleInitrd(dir, 'os', osDir, ['initrd.img'], [join(dir, 'o.cpio')]);
  const joined = readFileSync(one!);
  assert.deepEqual(joined.subarray(0, 5), Buffer.from('12345'));
  assert.deepEqual(joined.subarray(5, 8), Buffer.alloc(3));
  assert.deepEqual(joined.subarray(8), archive);
  // No initramfs of its own: the overlay alone.
  assert.equal(await singleInitrd(dir, 'os', osDir, [], [join(dir, 'o.cpio')]), join(dir, 'o.cpio'));

  const folder = join(dir, 'overlay');
  mkdirSync(folder);
  writeFileSync(join(folder, 'stale'), 'from an earlier boot');
  await unpackOverlay(join(dir, 'o.cpio'), folder);
  assert.equal(readFileSync(join(folder, 'etc/hostname'), 'utf8'), 'pc-07\n');
  assert.throws(() => statSync(join(folder, 'stale')), /ENOENT/);
  assert.deepEqual(withOverlay(['-drive', 'file=fat:rw:{overlay}', 'x'], folder), [
    '-drive',
    `file=fat:rw:${folder}`,
    'x',
  ]);
  assert.deepEqual(withOverlay(['{overlay}'], undefined), ['{overlay}']);
});

test('next boot: a machine entry wins over its group; once ends at boot (group: once per machine); kept across a restart', async (t) => {
  const env = await roomEnv(t);
  const file = join(tempDir(t), 'next-boot.json');
  const store = new NextBootStore(file);
  await store.load();
  await store.set({ kind: 'group', key: 'room-b' }, 'exam', true);
  const a = api(env, store);
  let c = await a.bootConfigFor(PC08, '10.0.0.8');
  assert.equal(c.menu.default, 'exam');
  assert.equal(c.menu.timeout, NEXT_BOOT_TIMEOUT, 'a menu that waits forever counts down for a next boot');
  await store.set({ kind: 'mac', key: PC07 }, 'tool', false);
  c = await a.bootConfigFor(PC07, '10.0.0.7');
  assert.equal(c.menu.default, 'tool');
  assert.ok(
    c.oss.some((o) => o.id === 'tool'),
    'offered though the group menu does not list it',
  );
  assert.equal((await store.booted(PC08, ['room-b'], 'exam'))?.os, 'exam');
  assert.equal(
    (await a.bootConfigFor(PC08, '10.0.0.8')).menu.default,
    'linux',
    'used once: back to the default',
  );
  assert.equal(await store.booted(PC07, ['room-b'], 'tool'), undefined, 'not once: stays');

  const again = new NextBootStore(file);
  await again.load();
  assert.equal(again.forMachine(PC07, ['room-b'])?.os, 'tool');
  assert.equal(again.forMachine(PC08, ['room-b']), undefined, 'pc-08 used the group entry');
  assert.equal(
    again.forMachine(STRANGER, ['room-b'])?.os,
    'exam',
    'a machine that has not booted yet still gets it',
  );
  assert.equal(statSync(file).mode & 0o777, 0o600);

  writeFileSync(file, '{not json');
  const damaged = new NextBootStore(file);
  await damaged.load();
  assert.equal(damaged.forMachine(PC07, []), undefined);
});

test('room actions: names resolve, an unknown name or OS is a 400-class error naming it', async (t) => {
  const env = await roomEnv(t);
  const store = new NextBootStore(join(tempDir(t), 'nb.json'));
  const actions = roomActions({
    environment: () => env,
    nextBoot: store,
    osIds: () => env.oss.map((o) => o.id),
    knownMacs: () => [],
  });
  const r = (await actions['next-boot']!({ targets: ['PC-07', 'room-b'], os: 'exam', once: true })) as {
    set: { target: string; kind: string }[];
  };
  assert.deepEqual(
    r.set.map((s) => `${s.kind} ${s.target}`),
    ['host pc-07', 'group room-b'],
  );
  assert.equal(store.forMachine(PC07, [])?.os, 'exam');
  await assert.rejects(
    actions['next-boot']!({ targets: ['pc-7'], os: 'exam' }),
    (e: Error & { code?: string }) => {
      assert.equal(e.code, 'BT_ERR_USAGE');
      assert.match(e.message, /pc-7: not a MAC address, nor the name of a host or group.*pc-07, room-b/);
      return true;
    },
  );
  await assert.rejects(
    actions['next-boot']!({ targets: ['pc-07'], os: 'windows' }),
    /'windows' is not served here/,
  );
  await assert.rejects(actions['next-boot']!({ targets: 'pc-07', os: 'exam' }), /targets: expected a list/);
  await assert.rejects(
    actions['next-boot']!({ targets: ['pc-07'], os: 3 }),
    /os: expected an OS id, or null/,
  );
  await assert.rejects(actions.wake!({ targets: ['pc-07'], spread: -1 }), /spread: expected seconds/);
  await assert.rejects(
    actions.wake!({ targets: ['pc-07'], broadcasts: ['not-an-ip'] }),
    /not an IPv4 address/,
  );
  await actions['next-boot']!({ targets: ['pc-07'], os: null });
  assert.equal(store.forMachine(PC07, []), undefined, 'cleared');
});

test('review fixes: a lease ties only while the neighbour table agrees; loopback gets no overlay', async (t) => {
  const { RequesterCheck } = await import('../../src/server/requester.js');
  const arp = (mac: string) => () =>
    Promise.resolve(`IP address HW type Flags HW address Mask Device\n10.0.0.7 0x1 0x2 ${mac} * br0\n`);
  const lease = { leaseIp: (m: string) => (m === PC07 ? '10.0.0.7' : undefined) };
  assert.equal(await new RequesterCheck({}, { ...lease, readArp: arp(PC07) }).tie('10.0.0.7', PC07), 'lease');
  assert.equal(
    await new RequesterCheck({}, { ...lease, readArp: arp('52:54:00:00:00:66') }).tie('10.0.0.7', PC07),
    undefined,
    'a client that took the lease with the victim MAC but speaks with its own',
  );
  assert.equal(
    await new RequesterCheck({}, { ...lease, readArp: () => Promise.reject(new Error('no /proc')) }).tie(
      '10.0.0.7',
      PC07,
    ),
    'lease',
  );

  const env = await roomEnv(t);
  const entries = catalog(env);
  const a = new ClientApi(
    { bootUrl: 'http://127.0.0.1:8080', secret: Buffer.alloc(32, 1) },
    {
      environment: () => env,
      library: { entries: () => entries, get: (id) => entries.find((e) => e.os.id === id), seedPort: 6881 },
      requesters: new RequesterCheck({}, { readArp: () => Promise.resolve('') }),
      store: { report: () => undefined },
    },
  );
  const c = await a.bootConfigFor(PC07, '127.0.0.1');
  assert.notEqual(c.reportToken, '', 'local tools keep their report token');
  assert.equal(c.overlay, undefined, 'but no overlay');
  const srv = createServer((req, res) => {
    if (!a.route(req, res, req.url ?? '', '127.0.0.1')) res.writeHead(404).end();
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.after(() => srv.close());
  const r = await fetch(`http://127.0.0.1:${(srv.address() as AddressInfo).port}/api/v1/overlay/${PC07}`);
  assert.equal(r.status, 403);
});

test('review fixes: once is used only by a boot of that OS; wake refuses too many broadcasts; the entry of a removed group can be cleared', async (t) => {
  const env = await roomEnv(t);
  const store = new NextBootStore(join(tempDir(t), 'nb.json'));
  await store.set({ kind: 'mac', key: PC07 }, 'exam', true);
  assert.equal(await store.booted(PC07, ['room-b'], 'linux'), undefined, 'the user chose linux at the menu');
  assert.equal(store.forMachine(PC07, [])?.os, 'exam', 'kept for the next boot');
  assert.equal((await store.booted(PC07, ['room-b'], 'exam'))?.os, 'exam');
  const actions = roomActions({
    environment: () => env,
    nextBoot: store,
    osIds: () => env.oss.map((o) => o.id),
    knownMacs: () => [],
  });
  await assert.rejects(
    actions.wake!({ targets: ['pc-07'], broadcasts: Array.from({ length: 17 }, (_, i) => `10.0.${i}.255`) }),
    /broadcasts: at most 16/,
  );
  // A group whose entry outlived the group in the environment can still be cleared.
  await store.set({ kind: 'group', key: 'old-room' }, 'exam', false);
  await actions['next-boot']!({ targets: ['old-room'], os: null });
  assert.equal(store.hasGroup('old-room'), false);
  await assert.rejects(actions['next-boot']!({ targets: ['old-room'], os: 'exam' }), /old-room: not a MAC/);
});

test('review fixes: the wake pacing leaves no listener on a long-lived signal', async () => {
  const { wake } = await import('../../src/wol/wake.js');
  const ac = new AbortController();
  // Loopback only: the packets go to 127.255.255.255 from 127.0.0.1.
  await wake([{ mac: PC07 }, { mac: PC08 }], {
    source: '127.0.0.1',
    broadcasts: ['127.255.255.255'],
    spreadMs: 20,
    port: 9,
    signal: ac.signal,
  });
  const { EventEmitter } = await import('node:events');
  assert.equal(EventEmitter.getEventListeners(ac.signal, 'abort').length, 0);
});
