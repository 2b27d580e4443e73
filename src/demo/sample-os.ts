/**
 * The demo's sample OS: Debian's own kernel and a tiny initramfs whose init
 * prints a marker line (with the kernel command line) on the serial console
 * and the screen, then powers off. Small, real, and proof that the kernel a
 * client kexec'd is the one it downloaded.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { encodeCpio } from '../phase1/cpio.js';
import { BootTorrentError } from '../errors.js';

/** Debian's newest installed kernel image (package linux-image-amd64). */
export function hostKernel(): string {
  const k = readdirSync('/boot')
    .filter((n) => /^vmlinuz-.*-amd64$/.test(n))
    .sort()
    .at(-1);
  if (!k)
    throw new BootTorrentError(
      'BT_ERR_DEMO',
      'no /boot/vmlinuz-*-amd64: run `bash scripts/setup.sh` (or `apt-get install linux-image-amd64`)',
    );
  return `/boot/${k}`;
}

function busyboxPath(): string {
  try {
    return execFileSync('sh', ['-c', 'command -v busybox'], { encoding: 'utf8' }).trim();
  } catch {
    throw new BootTorrentError(
      'BT_ERR_DEMO',
      'busybox is not installed: run `bash scripts/setup.sh` (or `apt-get install busybox-static`)',
    );
  }
}

/**
 * A gzip'd initramfs whose /init prints `<marker> cmdline: <kernel command
 * line>` (and `<marker> hostname: <name>` when an overlay gave it
 * /etc/hostname) and powers off.
 */
export function markerInitramfs(marker: string): Buffer {
  const script = [
    '#!/bin/sh',
    '/bin/busybox mount -t proc proc /proc',
    `line="${marker} cmdline: $(/bin/busybox cat /proc/cmdline)"`,
    '/bin/busybox echo "$line" > /dev/ttyS0',
    '/bin/busybox echo "$line" > /dev/tty0',
    // A machine's overlay (issue #17) lands in this root beside the archive's own files.
    `[ -f /etc/hostname ] && /bin/busybox echo "${marker} hostname: $(/bin/busybox cat /etc/hostname)" > /dev/ttyS0`,
    '/bin/busybox sleep 1',
    '/bin/busybox sync',
    '/bin/busybox poweroff -f',
    '',
  ].join('\n');
  return gzipSync(
    encodeCpio([
      { type: 'dir', path: 'bin' },
      { type: 'file', path: 'bin/busybox', data: readFileSync(busyboxPath()), mode: 0o755 },
      { type: 'symlink', path: 'bin/sh', target: 'busybox' },
      { type: 'dir', path: 'dev' },
      { type: 'char', path: 'dev/console', major: 5, minor: 1 },
      { type: 'char', path: 'dev/ttyS0', major: 4, minor: 64 },
      { type: 'char', path: 'dev/tty0', major: 4, minor: 0 },
      { type: 'dir', path: 'proc' },
      { type: 'file', path: 'init', data: Buffer.from(script), mode: 0o755 },
    ]),
  );
}

/** Writes oss/<id>/ with vmlinuz, initrd.img and a v1 config.yaml for the kexec method. */
export function writeMarkerOs(ossDir: string, id: string, name: string, marker: string): string {
  const dir = join(ossDir, id);
  mkdirSync(dir, { recursive: true });
  copyFileSync(hostKernel(), join(dir, 'vmlinuz'));
  writeFileSync(join(dir, 'initrd.img'), markerInitramfs(marker));
  writeFileSync(
    join(dir, 'config.yaml'),
    [
      `name: ${JSON.stringify(name)}`,
      'method: kexec',
      'kernel: vmlinuz',
      'initrd: initrd.img',
      `cmdline: "console=tty0 console=ttyS0 quiet bt.os=${id}"`,
      '',
    ].join('\n'),
  );
  return dir;
}
