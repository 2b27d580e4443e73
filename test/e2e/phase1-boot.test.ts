// Phase 1 for real: `boottorrent build-phase1` (the pinned registry Node,
// xz) builds a kernel + initramfs, a second run reuses it by input hash, and
// QEMU boots it straight from -kernel/-initrd: the serial console must show
// the agent's line with the server and MAC from the kernel command line,
// which proves that Node and the bundled agent ran inside phase 1.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { requireProgram } from '../helpers/programs.js';
import { tempDir } from '../helpers/tmp.js';
import { defaultCacheDir, type Phase1Manifest } from '../../src/phase1/build.js';

test('build-phase1 base: built, reused by hash, and boots to the agent in QEMU', async (t) => {
  const qemu = requireProgram('qemu-system-x86_64', 'qemu-system-x86');
  requireProgram('kexec', 'kexec-tools');
  requireProgram('xz', 'xz-utils');
  requireProgram('busybox', 'busybox-static');
  const dir = tempDir(t, 'bt-phase1-');
  const out = join(dir, 'out');
  // The runtime download is cached across runs; the image itself is per test.
  const args = ['build-phase1', '--flavor', 'base', '--out', out, '--cache', defaultCacheDir()];

  const first = await runCli(args, { timeoutMs: 300_000 });
  assert.equal(first.code, 0, first.stderr);
  assert.match(first.stdout, /^Built phase 1 \(base, xz/m);
  for (const part of ['kernel', 'modules', 'busybox', 'kexec', 'node', 'agent', 'initrd.img']) {
    assert.match(first.stdout, new RegExp(`^  ${part}.*\\d+(\\.\\d+)? (B|KiB|MiB)`, 'm'));
  }
  const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as Phase1Manifest;
  assert.equal(manifest.sizes.initrd, readFileSync(join(out, 'initrd.img')).length);
  assert.ok(manifest.modules.loaded.includes('virtio_net.ko'));
  assert.ok(manifest.files.some((f) => f.path === '/usr/bin/node' && f.part === 'node'));
  // xz magic: the kernel must recognise the compression.
  assert.deepEqual(
    [...readFileSync(join(out, 'initrd.img')).subarray(0, 6)],
    [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00],
  );

  const second = await runCli(args, { timeoutMs: 300_000 });
  assert.equal(second.code, 0, second.stderr);
  assert.match(second.stdout, /^Reused phase 1/m);
  assert.match(second.stderr, /inputs unchanged/);
  assert.match(second.stdout, new RegExp(`input hash ${manifest.inputHash}`));

  const log = join(dir, 'serial.log');
  const vm = spawn(
    qemu,
    [
      ...['-accel', 'tcg', '-m', '512', '-kernel', join(out, 'vmlinuz'), '-initrd', join(out, 'initrd.img')],
      ...['-append', 'console=ttyS0 boottorrent.server=http://10.0.0.1 boottorrent.mac=52:54:00:00:00:01'],
      ...['-display', 'none', '-serial', `file:${log}`, '-no-reboot', '-monitor', 'none', '-nic', 'none'],
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  t.after(() => {
    if (vm.exitCode === null && vm.signalCode === null) vm.kill('SIGKILL');
  });
  let stderr = '';
  vm.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  // The placeholder agent exits 0 and /init powers the machine off, which ends QEMU (-no-reboot).
  const code = await new Promise<number | null>((resolve, reject) => {
    const timer = setTimeout(() => {
      vm.kill('SIGKILL');
      reject(
        new Error(`QEMU did not power off; serial log:\n${existsSync(log) ? readFileSync(log, 'utf8') : ''}`),
      );
    }, 150_000);
    vm.on('exit', (c) => {
      clearTimeout(timer);
      resolve(c);
    });
  });
  const serial = readFileSync(log, 'utf8');
  assert.equal(code, 0, `qemu: ${stderr}\n${serial}`);
  assert.match(
    serial,
    /BootTorrent agent: phase 1 is up \(agent not implemented yet\) boottorrent\.server=http:\/\/10\.0\.0\.1 boottorrent\.mac=52:54:00:00:00:01 node=v\d+/,
    serial,
  );
  assert.match(serial, new RegExp(`node=${manifest.node.version.replace(/\./g, '\\.')}`));
  assert.match(serial, /agent finished; powering off/);
});
