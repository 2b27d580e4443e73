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

/**
 * A boot sector for a graphical guest: VGA mode 13h (320x200, 256 colours),
 * the whole screen in colour 4 (red), then it waits for a key (BIOS int 16h)
 * and paints the screen colour 1 (blue). A test that sees red, presses a key
 * on the client and then sees blue has shown a graphics mode on the client's
 * screen and its keyboard reaching the guest.
 *   mov ax,13h; int 10h; mov ax,0a000h; mov es,ax; xor di,di; mov al,4
 *   mov cx,0fa00h; rep stosb; sti; xor ax,ax; int 16h; xor di,di; mov al,1
 *   mov cx,0fa00h; rep stosb; cli; hlt; jmp $-1
 */
export function paintSector(): Buffer {
  const code = [
    0xb8, 0x13, 0x00, 0xcd, 0x10, 0xb8, 0x00, 0xa0, 0x8e, 0xc0, 0x31, 0xff, 0xb0, 0x04, 0xb9, 0x00, 0xfa,
    0xf3, 0xaa, 0xfb, 0x31, 0xc0, 0xcd, 0x16, 0x31, 0xff, 0xb0, 0x01, 0xb9, 0x00, 0xfa, 0xf3, 0xaa, 0xfa,
    0xf4, 0xeb, 0xfd,
  ];
  const sector = Buffer.alloc(512);
  Buffer.from(code).copy(sector);
  sector[510] = 0x55;
  sector[511] = 0xaa;
  return sector;
}

/** A binary PPM (P6, maxval 255), as QEMU's screendump writes it. */
export function readPpm(data: Buffer): { width: number; height: number; rgb: Buffer } {
  const header = /^P6\s+(\d+)\s+(\d+)\s+255\s/.exec(data.subarray(0, 64).toString('latin1'));
  if (!header) throw new Error('not a binary PPM with maxval 255');
  const width = Number(header[1]);
  const height = Number(header[2]);
  const rgb = data.subarray(header[0].length, header[0].length + width * height * 3);
  if (rgb.length !== width * height * 3)
    throw new Error(`PPM: ${rgb.length} bytes of pixels for ${width}x${height}`);
  return { width, height, rgb };
}

/** Pixels of a PPM's picture that `pick(r, g, b)` accepts. */
export function countPixels(
  ppm: { rgb: Buffer },
  pick: (r: number, g: number, b: number) => boolean,
): number {
  let n = 0;
  for (let i = 0; i + 2 < ppm.rgb.length; i += 3)
    if (pick(ppm.rgb[i]!, ppm.rgb[i + 1]!, ppm.rgb[i + 2]!)) n++;
  return n;
}

/** A terminal's output as text: ANSI/VT100 control sequences, charset shifts and carriage returns removed. */
export function screenText(raw: string): string {
  // eslint-disable-next-line no-control-regex -- control characters are what it removes
  return raw.replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9AB]|\x1b[=>78]|[\x0e\x0f\r]/g, '');
}
