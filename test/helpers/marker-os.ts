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

/**
 * A tiny real guest for the qemu method: a 512-byte x86 boot sector,
 * assembled here by hand. Real-mode code at 0x7c00: `mov dx, 0x3f8` (COM1's
 * data port), then per character `mov al, c; out dx, al`, then `cli; hlt`
 * and a jump back to the hlt; padded to 510 bytes and the 0x55 0xAA boot
 * signature.
 */
export function markerBootSector(marker: string): Buffer {
  const code = [0xba, 0xf8, 0x03];
  for (const c of Buffer.from(`${marker}\r\n`, 'latin1')) code.push(0xb0, c, 0xee);
  code.push(0xfa, 0xf4, 0xeb, 0xfd);
  if (code.length > 510) throw new Error('marker too long for one sector');
  const sector = Buffer.alloc(512);
  Buffer.from(code).copy(sector);
  sector[510] = 0x55;
  sector[511] = 0xaa;
  return sector;
}
