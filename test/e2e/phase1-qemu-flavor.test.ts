// The qemu flavor of phase 1 carries qemu-system-x86_64 for machines that
// boot their OS in a VM. Checked without booting phase 1 itself: GNU cpio
// (an independent reader) lists the archive, which is then extracted and
// QEMU runs from it under chroot, so it can only use the image's loader,
// libraries and firmware: `--version`, its firmware search path, and a few
// seconds of a VM in which SeaBIOS (from the image) starts and runs the
// e1000 option ROM (from the image). The VM's NIC is QEMU's user network
// with restrict=on: nothing leaves the QEMU process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { requireProgram } from '../helpers/programs.js';
import { stopWithTest } from '../helpers/reaper.js';
import { tempDir } from '../helpers/tmp.js';
import { defaultCacheDir, type Phase1Manifest } from '../../src/phase1/build.js';

test('build-phase1 --flavor qemu: QEMU, its libraries and firmware are in the archive and run from it', async (t) => {
  requireProgram('qemu-system-x86_64', 'qemu-system-x86');
  const cpio = requireProgram('cpio', 'cpio');
  const gzip = requireProgram('gzip', 'gzip');
  const chroot = requireProgram('chroot', 'coreutils');
  assert.equal(process.getuid?.(), 0, 'this test extracts device nodes and uses chroot: run it as root');
  const dir = tempDir(t, 'bt-phase1-qemu-');
  const out = join(dir, 'out');
  // gzip: the files are the point here, and xz takes minutes on this much.
  const built = await runCli(
    ['build-phase1', '--flavor', 'qemu', '--compress', 'gzip', '--out', out, '--cache', defaultCacheDir()],
    { timeoutMs: 900_000 },
  );
  assert.equal(built.code, 0, built.stderr);
  assert.match(built.stdout, /^Built phase 1 \(qemu, gzip/m);
  assert.match(built.stdout, /^ {2}qemu .*(MiB|KiB)/m);
  const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as Phase1Manifest;
  assert.ok(manifest.sizes.parts.qemu > 0);
  for (const m of ['kvm.ko', 'tun.ko', 'bridge.ko']) assert.ok(manifest.modules.loaded.includes(m), m);

  const cpioBytes = execFileSync(gzip, ['-dc', join(out, 'initrd.img')], { maxBuffer: 1 << 30 });
  const listed = new Set(
    execFileSync(cpio, ['-it', '--quiet'], { input: cpioBytes, encoding: 'utf8', maxBuffer: 1 << 26 })
      .split('\n')
      .filter((l) => l !== ''),
  );
  const wanted = [
    'usr/bin/qemu-system-x86_64',
    'usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so',
    'usr/lib/x86_64-linux-gnu/qemu/ui-curses.so',
    'usr/share/seabios/bios-256k.bin',
    'usr/share/seabios/vgabios-stdvga.bin',
    'usr/lib/ipxe/qemu/efi-e1000.rom',
    'usr/lib/ipxe/qemu/efi-virtio.rom',
    'usr/share/qemu/kvmvapic.bin',
    'usr/share/qemu/linuxboot_dma.bin',
    'usr/share/qemu/multiboot_dma.bin',
    'lib/terminfo/l/linux',
    'lib/terminfo/v/vt100',
    'lib/terminfo/x/xterm',
    'usr/lib/x86_64-linux-gnu/gconv/IBM437.so',
    'lib64/ld-linux-x86-64.so.2',
    // A guest's screen on the framebuffer: the viewer and DirectFB's plugins.
    'usr/bin/directvnc',
    'usr/lib/x86_64-linux-gnu/directfb-1.7-7/systems/libdirectfb_fbdev.so',
    'usr/lib/x86_64-linux-gnu/directfb-1.7-7/inputdrivers/libdirectfb_linux_input.so',
    'usr/lib/x86_64-linux-gnu/directfb-1.7-7/wm/libdirectfbwm_default.so',
  ];
  for (const path of wanted) assert.ok(listed.has(path), `${path} is not in the archive`);
  // Every library ldd names for QEMU on this machine is in the archive too.
  const ldd = execFileSync('ldd', ['/usr/bin/qemu-system-x86_64'], { encoding: 'utf8' });
  for (const m of ldd.matchAll(/=> (\/\S+)/g)) assert.ok(listed.has(m[1]!.slice(1)), `${m[1]} missing`);
  const lddViewer = execFileSync('ldd', ['/usr/bin/directvnc'], { encoding: 'utf8' });
  for (const m of lddViewer.matchAll(/=> (\/\S+)/g)) assert.ok(listed.has(m[1]!.slice(1)), `${m[1]} missing`);
  // The display and input drivers, for a framebuffer where the firmware gives none.
  for (const mod of ['bochs.ko', 'virtio-gpu.ko', 'evdev.ko', 'psmouse.ko'])
    assert.ok(
      [...listed].some((p) => p.startsWith('lib/modules/') && new RegExp(`/${mod}(\\.(xz|zst))?$`).test(p)),
      `${mod} is not in the archive`,
    );

  const root = join(dir, 'root');
  mkdirSync(root);
  execFileSync(cpio, ['-idm', '--quiet', '--no-absolute-filenames'], { input: cpioBytes, cwd: root });
  const inRoot = (args: string[]) => execFileSync(chroot, [root, ...args], { encoding: 'utf8' });
  assert.match(inRoot(['/usr/bin/qemu-system-x86_64', '--version']), /^QEMU emulator version \d+\.\d+/);
  assert.match(inRoot(['/usr/bin/qemu-system-x86_64', '-L', 'help']), /share\/seabios/);
  // directvnc --version prints its version and exits 1; a missing library would print the loader's error.
  const viewer = spawnSync(chroot, [root, '/usr/bin/directvnc', '--version'], { encoding: 'utf8' });
  assert.match(`${viewer.stdout}${viewer.stderr}`, /version [\d.]+ of DirectVNC/);

  mkdirSync(join(root, 'tmp'), { recursive: true });
  const debugLog = join(root, 'tmp', 'seabios.log');
  const vm = spawn(
    chroot,
    [
      root,
      '/usr/bin/qemu-system-x86_64',
      ...['-accel', 'tcg', '-m', '64', '-display', 'none', '-nodefaults', '-no-reboot'],
      ...['-serial', 'none', '-monitor', 'none', '-debugcon', 'file:/tmp/seabios.log'],
      ...['-global', 'isa-debugcon.iobase=0x402', '-nic', 'user,restrict=on,model=e1000'],
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  stopWithTest(t, vm);
  let stderr = '';
  vm.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const seabios = () => (existsSync(debugLog) ? readFileSync(debugLog, 'utf8') : '');
  // SeaBIOS writes its log to I/O port 0x402; it reaches the option ROMs after a few seconds of TCG.
  const log = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      clearInterval(poll);
      reject(new Error(`SeaBIOS never ran the NIC's option ROM; its log:\n${seabios()}\n${stderr}`));
    }, 120_000);
    const poll = setInterval(() => {
      const text = seabios();
      if (/Running option rom/.test(text)) {
        clearTimeout(timer);
        clearInterval(poll);
        resolve(text);
      }
    }, 500);
    vm.on('exit', (c) => {
      clearTimeout(timer);
      clearInterval(poll);
      reject(new Error(`QEMU exited (${c}): ${stderr}\n${seabios()}`));
    });
  });
  vm.kill('SIGKILL');
  assert.match(log, /^SeaBIOS \(version /m);
});
