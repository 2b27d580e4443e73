/**
 * Marker guests for the boot tests. The kernel and the marker initramfs are
 * the demo's own (src/demo/sample-os.ts), so the tests boot what users see.
 */
export { hostKernel as debianKernel, markerInitramfs as markerInitrd } from '../../src/demo/sample-os.js';

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

/**
 * A boot sector that prints `marker` on the guest's screen (VGA text mode,
 * through the BIOS teletype call) instead of its serial port: per character
 * `mov ah, 0x0e; mov al, c; int 0x10`, then `cli; hlt`. What the person at
 * the client sees, so a test of the guest's display reads it.
 */
export function markerScreenSector(marker: string): Buffer {
  const code: number[] = [];
  for (const c of Buffer.from(`${marker}\r\n`, 'latin1')) code.push(0xb4, 0x0e, 0xb0, c, 0xcd, 0x10);
  code.push(0xfa, 0xf4, 0xeb, 0xfd);
  if (code.length > 510) throw new Error('marker too long for one sector');
  const sector = Buffer.alloc(512);
  Buffer.from(code).copy(sector);
  sector[510] = 0x55;
  sector[511] = 0xaa;
  return sector;
}

/** A terminal's output as text: ANSI/VT100 control sequences, charset shifts and carriage returns removed. */
export function screenText(raw: string): string {
  // eslint-disable-next-line no-control-regex -- control characters are what it removes
  return raw.replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9AB]|\x1b[=>78]|[\x0e\x0f\r]/g, '');
}
