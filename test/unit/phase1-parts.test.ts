// The pure parts of the phase-1 builder: module resolution over modules.dep,
// the generated /init, and ldd output parsing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { moduleName, parseModulesDep, resolveModules, trimModulesDep } from '../../src/phase1/modules.js';
import { generateInitScript } from '../../src/phase1/init-script.js';
import { parseLdd } from '../../src/phase1/libs.js';
import { isBootTorrentError } from '../../src/errors.js';
import { requireProgram } from '../helpers/programs.js';
import { tempDir } from '../helpers/tmp.js';
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
  const insmods = [...script.matchAll(/^insmod (.*) 2>\/dev\/null/gm)].map((m) => m[1]);
  assert.deepEqual(insmods, [`'${modules[0]}'`, `'/lib/modules/6.1/odd'\\''name.ko'`]);
  const order = [
    'mount -t devtmpfs',
    'insmod ',
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
