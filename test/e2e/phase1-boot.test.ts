// Phase 1 for real: `boottorrent build-phase1` (the pinned registry Node,
// xz) builds a kernel + initramfs, a second run reuses it by input hash, and
// QEMU boots it straight from -kernel/-initrd: the serial console must show
// /init's debug output (an e1000 interface from the image's driver), the
// agent's start line with the server and MAC from the kernel command line
// and its DHCP lease, which proves that the kernel unpacked the archive and
// that Node, the bundled agent, udhcpc and ip work inside phase 1.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { requireProgram } from '../helpers/programs.js';
import { stopWithTest } from '../helpers/reaper.js';
import { tempDir } from '../helpers/tmp.js';
import { defaultCacheDir, type Phase1Manifest } from '../../src/phase1/build.js';

test('build-phase1 base: built, reused by hash, boots in QEMU and the agent gets a DHCP lease', async (t) => {
  const qemu = requireProgram('qemu-system-x86_64', 'qemu-system-x86');
  requireProgram('kexec', 'kexec-tools');
  requireProgram('xz', 'xz-utils');
  requireProgram('busybox', 'busybox-static');
  const dir = tempDir(t, 'bt-phase1-');
  const out = join(dir, 'out');
  // The runtime download is cached across runs; the image itself is per test.
  const args = ['build-phase1', '--flavor', 'base', '--out', out, '--cache', defaultCacheDir()];

  const first = await runCli(args, { timeoutMs: 900_000 });
  assert.equal(first.code, 0, first.stderr);
  assert.match(first.stdout, /^Built phase 1 \(base, xz/m);
  for (const part of ['kernel', 'modules', 'busybox', 'kexec', 'node', 'agent', 'initrd.img']) {
    assert.match(first.stdout, new RegExp(`^  ${part}.*\\d+(\\.\\d+)? (B|KiB|MiB)`, 'm'));
  }
  const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as Phase1Manifest;
  assert.equal(manifest.sizes.initrd, readFileSync(join(out, 'initrd.img')).length);
  assert.ok(manifest.modules.loaded.includes('virtio_net.ko'));
  assert.ok(manifest.files.some((f) => f.path === '/usr/bin/node' && f.part === 'node'));
  assert.equal(manifest.node.icu.trimmed, true);
  for (const path of ['/etc/hosts', '/etc/resolv.conf', '/usr/share/udhcpc/default.script', '/sbin/kexec']) {
    assert.ok(
      manifest.files.some((f) => f.path === path),
      path,
    );
  }
  // The size target of phase 1 (issue 5): the base initramfs at most 25 MB.
  assert.ok(manifest.sizes.initrd <= 25_000_000, `initrd.img is ${manifest.sizes.initrd} bytes`);
  // xz magic: the kernel must recognise the compression.
  assert.deepEqual(
    [...readFileSync(join(out, 'initrd.img')).subarray(0, 6)],
    [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00],
  );

  const second = await runCli(args, { timeoutMs: 900_000 });
  assert.equal(second.code, 0, second.stderr);
  assert.match(second.stdout, /^Reused phase 1/m);
  assert.match(second.stderr, /inputs unchanged/);
  assert.match(second.stdout, new RegExp(`input hash ${manifest.inputHash}`));

  const log = join(dir, 'serial.log');
  // An e1000 on QEMU's user network with restrict=on: its built-in DHCP
  // server answers, and no packet leaves QEMU. The server URL is the
  // guest's own loopback, so the agent's first request fails at once.
  const vm = spawn(
    qemu,
    [
      ...['-accel', 'tcg', '-m', '512', '-kernel', join(out, 'vmlinuz'), '-initrd', join(out, 'initrd.img')],
      ...[
        '-append',
        'console=ttyS0 boottorrent.server=http://127.0.0.1:9 boottorrent.mac=52:54:00:12:34:56 boottorrent.debug=1',
      ],
      ...['-display', 'none', '-serial', `file:${log}`, '-no-reboot', '-monitor', 'none'],
      ...['-nic', 'user,restrict=on,model=e1000,mac=52:54:00:12:34:56'],
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  stopWithTest(t, vm);
  let stderr = '';
  vm.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const serialLog = () => (existsSync(log) ? readFileSync(log, 'utf8') : '');
  // The agent cannot reach the server, says so and waits on its failure
  // screen for a key; that line ends the test.
  const serial = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      clearInterval(poll);
      reject(new Error(`the agent never reported a failed stage; serial log:\n${serialLog()}`));
    }, 600_000);
    const poll = setInterval(() => {
      const text = serialLog();
      if (/boottorrent-agent: stage=failed/.test(text)) {
        clearTimeout(timer);
        clearInterval(poll);
        resolve(text);
      }
    }, 1000);
    vm.on('exit', (c) => {
      clearTimeout(timer);
      clearInterval(poll);
      reject(new Error(`QEMU exited (${c}) first: ${stderr}\n${serialLog()}`));
    });
  });
  vm.kill('SIGKILL');
  // /init in debug mode: the e1000 driver from the image made an interface.
  assert.match(serial, /BootTorrent phase 1: debug on;/, serial);
  assert.match(serial, /^\d+: eth0: .*link\/ether 52:54:00:12:34:56/m, serial);
  assert.match(serial, /BootTorrent phase 1: starting the agent/);
  // The agent ran under the image's Node, read the command line, and got a
  // lease through busybox udhcpc.
  assert.match(
    serial,
    /boottorrent-agent: starting; server http:\/\/127\.0\.0\.1:9, mac 52:54:00:12:34:56/,
    serial,
  );
  assert.match(serial, /boottorrent-agent: network up: eth0 10\.0\.2\.15/, serial);
});
