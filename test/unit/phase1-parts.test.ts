// The pure parts of the phase-1 builder: module resolution over modules.dep,
// the generated /init, and ldd output parsing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { moduleName, parseModulesDep, resolveModules, trimModulesDep } from '../../src/phase1/modules.js';
import { UDHCPC_SCRIPT, generateInitScript, phase1EtcFiles } from '../../src/phase1/init-script.js';
import { parseLdd } from '../../src/phase1/libs.js';
import { findIcuPackage, keepIcuItem, trimIcuPackage } from '../../src/phase1/icu.js';
import { isBootTorrentError } from '../../src/errors.js';
import { requireProgram } from '../helpers/programs.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';
import { runCli } from '../helpers/cli.js';

// Lines as depmod writes them (taken from Debian 12's 6.1 kernel), plus a
// hyphenated name and a compressed module.
const DEP = `kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/net/ethernet/realtek/r8169.ko: kernel/drivers/net/phy/mdio_devres.ko kernel/drivers/net/phy/libphy.ko
kernel/drivers/net/phy/mdio_devres.ko: kernel/drivers/net/phy/libphy.ko
kernel/drivers/net/phy/libphy.ko:
kernel/drivers/net/ethernet/8390/ne2k-pci.ko: kernel/drivers/net/ethernet/8390/8390.ko
kernel/drivers/net/ethernet/8390/8390.ko:
kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko.xz:
`;

test('modules.dep: every dependency is loaded before its users, each once', () => {
  const dep = parseModulesDep(DEP);
  assert.equal(dep.size, 14);
  const { paths, missing } = resolveModules(dep, ['virtio_pci', 'virtio_net', 'r8169', 'no_such_nic']);
  assert.deepEqual(missing, ['no_such_nic']);
  assert.equal(new Set(paths).size, paths.length);
  for (const [i, p] of paths.entries()) {
    for (const d of dep.get(p) ?? []) {
      const at = paths.indexOf(d);
      assert.ok(at >= 0 && at < i, `${d} must come before ${p}`);
    }
  }
  assert.deepEqual(paths.map(moduleName), [
    'virtio_pci_legacy_dev',
    'virtio_pci_modern_dev',
    'virtio_ring',
    'virtio',
    'virtio_pci',
    'failover',
    'net_failover',
    'virtio_net',
    'libphy',
    'mdio_devres',
    'r8169',
  ]);
});

test('modules.dep: hyphens match underscores and compressed modules resolve', () => {
  const dep = parseModulesDep(DEP);
  assert.equal(moduleName('kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko.xz'), 'e1000e');
  const { paths } = resolveModules(dep, ['ne2k_pci', 'e1000e']);
  assert.deepEqual(paths, [
    'kernel/drivers/net/ethernet/8390/8390.ko',
    'kernel/drivers/net/ethernet/8390/ne2k-pci.ko',
    'kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko.xz',
  ]);
});

test('modules.dep: the trimmed file keeps only chosen modules and reparses to the same graph', () => {
  const dep = parseModulesDep(DEP);
  const { paths } = resolveModules(dep, ['r8169']);
  const trimmed = parseModulesDep(trimModulesDep(dep, paths));
  assert.deepEqual([...trimmed.keys()], paths);
  for (const p of paths) assert.deepEqual(trimmed.get(p), dep.get(p));
});

test('modules.dep: a cycle is an error, not endless recursion', () => {
  const dep = parseModulesDep('a.ko: b.ko\nb.ko: a.ko\n');
  assert.throws(() => resolveModules(dep, ['a']), /cycle/);
});

test('/init: loads modules in the given order, runs the agent, shell on failure; busybox sh parses it', (t) => {
  const busybox = requireProgram('busybox', 'busybox-static');
  const modules = ['/lib/modules/6.1/kernel/virtio_ring.ko', "/lib/modules/6.1/odd'name.ko"];
  const script = generateInitScript({ modules, node: '/usr/bin/node', agent: '/opt/boottorrent/agent.mjs' });
  assert.ok(script.startsWith('#!/bin/busybox sh\n'));
  const loads = [...script.matchAll(/^load (.*)$/gm)].map((m) => m[1]);
  assert.deepEqual(loads, [`'${modules[0]}'`, `'/lib/modules/6.1/odd'\\''name.ko'`]);
  const order = [
    'mount -t devtmpfs',
    'mount -t tmpfs -o size=90%,mode=1777 tmpfs /tmp',
    'exec </dev/console >/dev/console 2>&1',
    'load ',
    'ip link set lo up',
    "'/usr/bin/node' '/opt/boottorrent/agent.mjs'",
  ];
  const at = order.map((s) => script.indexOf(s));
  assert.ok(
    at.every((v, i) => v > 0 && (i === 0 || v > at[i - 1]!)),
    `order ${JSON.stringify(at)}`,
  );
  assert.match(script, /rc=\$\?\n/);
  assert.match(script, /setsid cttyhack sh/);
  const file = join(tempDir(t), 'init');
  writeFileSync(file, script);
  execFileSync(busybox, ['sh', '-n', file]); // throws on a syntax error
});

test('/init: boottorrent.debug=1 on the kernel command line turns on the debug output', (t) => {
  const busybox = requireProgram('busybox', 'busybox-static');
  const script = generateInitScript({ modules: [], node: '/n', agent: '/a' });
  // Run the command-line scan alone, against a stand-in for /proc/cmdline.
  const scan = script.slice(script.indexOf('DEBUG=0'), script.indexOf('# Drivers whose hardware'));
  assert.ok(scan.includes('cat /proc/cmdline'));
  const dir = tempDir(t);
  const run = (cmdline: string) => {
    writeFileSync(join(dir, 'cmdline'), cmdline);
    const body = scan.replaceAll('/proc/cmdline', join(dir, 'cmdline'));
    return execFileSync(busybox, ['sh', '-c', `${body}\necho "DEBUG=$DEBUG env=$BOOTTORRENT_DEBUG"`], {
      encoding: 'utf8',
      env: {},
    });
  };
  assert.match(run('console=ttyS0 boottorrent.debug=1 quiet\n'), /debug on;.*\nDEBUG=1 env=1\n$/s);
  assert.equal(run('console=ttyS0 boottorrent.debug=0\n'), 'DEBUG=0 env=\n');
  assert.equal(run('console=ttyS0 xboottorrent.debug=1\n'), 'DEBUG=0 env=\n');
});

test('/etc beside /init: localhost, an empty resolv.conf, root, and a udhcpc script that busybox sh parses', (t) => {
  const busybox = requireProgram('busybox', 'busybox-static');
  const files = new Map(phase1EtcFiles().map((f) => [f.path, f]));
  assert.match(files.get('/etc/hosts')!.content, /^127\.0\.0\.1\tlocalhost$/m);
  assert.equal(files.get('/etc/resolv.conf')!.content, '');
  assert.match(files.get('/etc/passwd')!.content, /^root:x:0:0:/);
  const script = files.get(UDHCPC_SCRIPT)!;
  assert.equal(script.mode, 0o755);
  const file = join(tempDir(t), 'default.script');
  writeFileSync(file, script.content);
  execFileSync(busybox, ['sh', '-n', file]);
  for (const action of ['deconfig', 'bound', 'renew']) assert.ok(script.content.includes(`${action}`));
});

test('ldd output: libraries and the loader, no vDSO; a missing library is a typed error', () => {
  const out = `\tlinux-vdso.so.1 (0x00007ffd)
\tlibdl.so.2 => /lib/x86_64-linux-gnu/libdl.so.2 (0x00007f2b)
\tlibstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007f2c)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2d)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f2e)
`;
  assert.deepEqual(parseLdd(out), [
    '/lib/x86_64-linux-gnu/libdl.so.2',
    '/lib/x86_64-linux-gnu/libstdc++.so.6',
    '/lib/x86_64-linux-gnu/libc.so.6',
    '/lib64/ld-linux-x86-64.so.2',
  ]);
  assert.throws(
    () => parseLdd('\tlibxenctrl.so.4.17 => not found\n', '/sbin/kexec'),
    (err: unknown) => isBootTorrentError(err, 'BT_ERR_PHASE1') && /libxenctrl/.test(err.message),
  );
});

test('build-phase1 command line: help, and wrong choices are usage errors (exit 2) before any work', async () => {
  const help = await runCli(['build-phase1', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--flavor base\|qemu/);
  assert.match(help.stdout, /--node registry\|host/);
  for (const args of [['--flavor', 'tiny'], ['--node', 'nvm'], ['--compress', 'lz4'], ['extra']]) {
    const r = await runCli(['build-phase1', ...args]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /Usage: boottorrent build-phase1/);
  }
});

/** An ICU common data package as ICU's pkgdata writes it (common/ucmndata.h), little-endian. */
function icuPackage(items: readonly [string, Buffer][]): Buffer {
  const header = Buffer.alloc(32);
  header.writeUInt16LE(32, 0);
  header[2] = 0xda;
  header[3] = 0x27;
  header.writeUInt16LE(20, 4); // UDataInfo size
  header[10] = 2; // sizeof(UChar)
  header.write('CmnD', 12, 'latin1');
  header[16] = 1; // formatVersion 1.0.0.0
  const names = Buffer.concat(items.map(([n]) => Buffer.from(`${n}\0`, 'latin1')));
  const tocHead = 4 + 8 * items.length;
  let at = (tocHead + names.length + 15) & ~15;
  const offsets = items.map(([, d]) => {
    const o = at;
    at = (at + d.length + 15) & ~15;
    return o;
  });
  const toc = Buffer.alloc(at);
  toc.writeUInt32LE(items.length, 0);
  let nameAt = tocHead;
  items.forEach(([n, d], i) => {
    toc.writeUInt32LE(nameAt, 4 + 8 * i);
    toc.writeUInt32LE(offsets[i]!, 8 + 8 * i);
    nameAt += n.length + 1;
    d.copy(toc, offsets[i]);
  });
  names.copy(toc, tocHead);
  return Buffer.concat([header, toc]);
}

test('ICU data: which items phase 1 keeps', () => {
  const table: [string, boolean][] = [
    ['root.res', true],
    ['en.res', true],
    ['en_US_POSIX.res', true],
    ['de.res', false],
    ['sr_Latn_BA.res', false],
    ['es_419.res', false],
    ['ca_ES_VALENCIA.res', false],
    ['coll/root.res', true],
    ['coll/de.res', false],
    ['zone/en.res', true],
    ['zone/fr_CA.res', false],
    ['pool.res', true],
    ['res_index.res', true],
    ['zoneinfo64.res', true],
    ['supplementalData.res', true],
    ['plurals.res', true],
    ['uprops.icu', true],
    ['nfc.nrm', true],
    ['coll/ucadata.icu', true],
    ['brkitr/word.brk', true],
    ['brkitr/cjdict.dict', false],
    ['ibm-943_P15A-2003.cnv', false],
    ['translit/root.res', false],
  ];
  for (const [path, keep] of table) assert.equal(keepIcuItem(path), keep, path);
});

test('ICU data: found inside a binary, trimmed in place, kept items intact, dropped ones zeroed', () => {
  const items: [string, Buffer][] = [
    'coll/de.res',
    'coll/root.res',
    'de.res',
    'en.res',
    'ibm-943.cnv',
    'root.res',
    'zoneinfo64.res',
    'zu.res',
  ].map((n, i) => [`icudt99l/${n}`, pseudoRandomBytes(100 + 37 * i, i + 1)]);
  const pkg = icuPackage(items);
  const before = pseudoRandomBytes(4099, 77);
  // A stray "CmnD" before the real header must not confuse the search.
  before.write('CmnD', 1000, 'latin1');
  const bin = Buffer.concat([before, pkg, pseudoRandomBytes(500, 78)]);
  const found = findIcuPackage(bin);
  assert.ok(found);
  assert.equal(found.offset, before.length);
  assert.deepEqual(
    found.items.map((i) => i.name),
    items.map(([n]) => n),
  );
  const original = Buffer.from(bin);
  const r = trimIcuPackage(bin, found);
  assert.deepEqual(r, {
    kept: 4,
    dropped: 4,
    prefix: 'icudt99l',
    zeroed:
      found.items[1]!.dataOffset -
      found.items[0]!.dataOffset +
      (found.items[3]!.dataOffset - found.items[2]!.dataOffset) +
      (found.items[5]!.dataOffset - found.items[4]!.dataOffset),
  });
  const again = findIcuPackage(bin);
  assert.ok(again);
  const keptNames = ['coll/root.res', 'en.res', 'root.res', 'zoneinfo64.res'].map((n) => `icudt99l/${n}`);
  assert.deepEqual(
    again.items.map((i) => i.name),
    keptNames,
  );
  const toc = again.offset + again.tocOffset;
  for (const item of again.items) {
    const data = items.find(([n]) => n === item.name)![1];
    assert.deepEqual(bin.subarray(toc + item.dataOffset, toc + item.dataOffset + data.length), data);
  }
  for (const name of ['coll/de.res', 'de.res', 'ibm-943.cnv']) {
    const i = found.items.findIndex((x) => x.name === `icudt99l/${name}`);
    const span = bin.subarray(toc + found.items[i]!.dataOffset, toc + found.items[i + 1]!.dataOffset);
    assert.ok(
      span.every((b) => b === 0),
      name,
    );
  }
  // The last item has no known length (ICU reads -1): out of the table, its bytes untouched.
  const last = found.items.at(-1)!;
  assert.deepEqual(bin.subarray(toc + last.dataOffset), original.subarray(toc + last.dataOffset));
  assert.deepEqual(bin.subarray(0, before.length), original.subarray(0, before.length));
  assert.equal(findIcuPackage(pseudoRandomBytes(10000, 5)), undefined);
});

test('ICU data: an official Node binary still runs with root + English, and English formats are unchanged', (t) => {
  const bin = readFileSync(process.execPath);
  const pkg = findIcuPackage(bin);
  assert.ok(pkg, `${process.execPath} has no embedded ICU data (not an official Node build?)`);
  assert.match(pkg.items[0]!.name, /^icudt\d+l\//);
  const r = trimIcuPackage(bin, pkg);
  assert.ok(r.zeroed > 15_000_000, `zeroed only ${r.zeroed} bytes`);
  const node = join(tempDir(t), 'node');
  writeFileSync(node, bin, { mode: 0o755 });
  const probe = `
    const out = {
      icu: process.versions.icu,
      date: new Date(0).toString(),
      number: (1234.5).toLocaleString('en-US'),
      de: new Intl.DateTimeFormat('de', { month: 'long', timeZone: 'UTC' }).format(new Date(0)),
      compare: 'a'.localeCompare('b'),
      nfd: 'é'.normalize('NFD').length,
      words: [...new Intl.Segmenter('en', { granularity: 'word' }).segment('hi there')].length,
      latin1: new TextDecoder('latin1').decode(Buffer.from([0xe9])),
      prop: /\\p{Script=Greek}/u.test('α'),
      host: new URL('http://bücher.example/').host,
    };
    console.log(JSON.stringify(out));`;
  const got = JSON.parse(
    execFileSync(node, ['-e', probe], { encoding: 'utf8', env: { TZ: 'UTC' } }),
  ) as Record<string, unknown>;
  assert.deepEqual(got, {
    icu: process.versions.icu,
    date: 'Thu Jan 01 1970 00:00:00 GMT+0000 (Coordinated Universal Time)',
    number: '1,234.5',
    de: 'January', // German is gone: root/English data answers
    compare: -1,
    nfd: 2,
    words: 3,
    latin1: 'é',
    prop: true,
    host: 'xn--bcher-kva.example',
  });
});
