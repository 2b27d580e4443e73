import { readFileSync, readdirSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { encodeCpio } from '../../src/phase1/cpio.js';
import { requireProgram } from './programs.js';

/** Debian's kernel, installed by linux-image-amd64. */
export function debianKernel(): string {
  const k = readdirSync('/boot')
    .filter((n) => /^vmlinuz-.*-amd64$/.test(n))
    .sort()
    .at(-1);
  if (!k) throw new Error('no /boot/vmlinuz-*-amd64: run `apt-get install linux-image-amd64`');
  return `/boot/${k}`;
}

/**
 * A tiny initramfs whose init prints `marker` on the serial console and
 * powers off: proof that a kernel loaded over the network really ran.
 */
export function markerInitrd(marker: string): Buffer {
  const busybox = requireProgram('busybox', 'busybox-static');
  const script = [
    '#!/bin/sh',
    '/bin/busybox mount -t proc proc /proc',
    `/bin/busybox echo "${marker} cmdline: $(/bin/busybox cat /proc/cmdline)" > /dev/ttyS0`,
    '/bin/busybox sync',
    '/bin/busybox poweroff -f',
    '',
  ].join('\n');
  return gzipSync(
    encodeCpio([
      { type: 'dir', path: 'bin' },
      { type: 'file', path: 'bin/busybox', data: readFileSync(busybox), mode: 0o755 },
      { type: 'symlink', path: 'bin/sh', target: 'busybox' },
      { type: 'dir', path: 'dev' },
      { type: 'char', path: 'dev/console', major: 5, minor: 1 },
      { type: 'char', path: 'dev/ttyS0', major: 4, minor: 64 },
      { type: 'dir', path: 'proc' },
      { type: 'file', path: 'init', data: Buffer.from(script), mode: 0o755 },
    ]),
  );
}
