/**
 * A writer for the cpio "newc" format (the one the Linux kernel unpacks as
 * an initramfs; see the kernel's Documentation/driver-api/early-userspace/
 * buffer-format.rst). Pure: entries in, bytes out. Lets us build initramfs
 * images without root, without a cpio binary, and with device nodes.
 */
export type CpioEntry =
  | { type: 'dir'; path: string; mode?: number }
  | { type: 'file'; path: string; data: Uint8Array; mode?: number }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'char'; path: string; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

function hex8(n: number): string {
  return (n >>> 0).toString(16).padStart(8, '0');
}

const pad4 = (n: number) => (4 - (n % 4)) % 4;

function record(
  ino: number,
  mode: number,
  name: string,
  data: Uint8Array,
  rdev: [number, number] = [0, 0],
  mtime = 0,
): Buffer {
  const nameBytes = Buffer.from(`${name}\0`, 'utf8');
  const header =
    '070701' +
    [ino, mode, 0, 0, mode & S_IFDIR ? 2 : 1, mtime, data.length, 0, 0, rdev[0], rdev[1], nameBytes.length, 0]
      .map(hex8)
      .join('');
  const head = Buffer.from(header, 'latin1');
  return Buffer.concat([
    head,
    nameBytes,
    Buffer.alloc(pad4(head.length + nameBytes.length)),
    Buffer.from(data.buffer, data.byteOffset, data.byteLength),
    Buffer.alloc(pad4(data.length)),
  ]);
}

/** Encodes entries (parents before children) into a newc archive with its trailer. */
export function encodeCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  for (const e of entries) {
    const path = e.path.replace(/^\/+/, '');
    if (path === '' || path.split('/').includes('..'))
      throw new Error(`cpio: unsafe path ${JSON.stringify(e.path)}`);
    switch (e.type) {
      case 'dir':
        parts.push(record(ino++, S_IFDIR | (e.mode ?? 0o755), path, new Uint8Array(0)));
        break;
      case 'file':
        parts.push(record(ino++, S_IFREG | (e.mode ?? 0o644), path, e.data));
        break;
      case 'symlink':
        parts.push(record(ino++, S_IFLNK | 0o777, path, Buffer.from(e.target, 'utf8')));
        break;
      case 'char':
        parts.push(record(ino++, S_IFCHR | (e.mode ?? 0o600), path, new Uint8Array(0), [e.major, e.minor]));
        break;
    }
  }
  parts.push(record(0, 0, 'TRAILER!!!', new Uint8Array(0)));
  return Buffer.concat(parts);
}

/**
 * Reads a newc archive of directories and plain files (what overlayArchive
 * writes), for the agent to unpack an overlay into a folder. Anything else
 * (links, devices, an absolute or `..` path, a field out of bounds) is an
 * error naming the entry: the archive came over the network.
 */
export function decodeCpio(
  buf: Buffer,
): { type: 'dir' | 'file'; path: string; mode: number; data: Buffer }[] {
  const out: { type: 'dir' | 'file'; path: string; mode: number; data: Buffer }[] = [];
  let pos = 0;
  for (;;) {
    if (pos + 110 > buf.length) throw new Error('cpio: archive ends inside a header');
    const head = buf.toString('latin1', pos, pos + 110);
    if (!head.startsWith('070701')) throw new Error(`cpio: no newc header at byte ${pos}`);
    const field = (i: number) => {
      const t = head.slice(6 + i * 8, 14 + i * 8);
      if (!/^[0-9a-fA-F]{8}$/.test(t)) throw new Error(`cpio: bad header field at byte ${pos}`);
      return parseInt(t, 16);
    };
    const mode = field(1);
    const size = field(6);
    const nameLen = field(11);
    const nameStart = pos + 110;
    if (nameLen < 1 || nameStart + nameLen > buf.length)
      throw new Error(`cpio: name out of bounds at byte ${pos}`);
    const name = buf.toString('utf8', nameStart, nameStart + nameLen - 1);
    const dataStart = nameStart + nameLen + pad4(110 + nameLen);
    if (dataStart + size > buf.length) throw new Error(`cpio: ${name}: data out of bounds`);
    if (name === 'TRAILER!!!') return out;
    const path = name.replace(/^\.\//, '');
    if (
      path === '' ||
      path.startsWith('/') ||
      path.split('/').some((p) => p === '..' || p === '' || p === '.')
    )
      throw new Error(`cpio: unsafe path ${JSON.stringify(name)}`);
    const type = (mode & 0o170000) === S_IFDIR ? 'dir' : (mode & 0o170000) === S_IFREG ? 'file' : undefined;
    if (!type) throw new Error(`cpio: ${name}: only folders and plain files are accepted`);
    out.push({ type, path, mode: mode & 0o777, data: buf.subarray(dataStart, dataStart + size) });
    pos = dataStart + size + pad4(size);
  }
}
