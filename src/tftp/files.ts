/**
 * What the TFTP server serves: a FileProvider opens a cleaned, root-relative
 * path for one client. The default serves a folder (RootFileProvider); a boot
 * policy can inject its own provider to serve generated files.
 *
 * Confinement is in two layers: `cleanRequestPath` refuses every path that
 * could climb (for any provider), and RootFileProvider refuses symlinks that
 * resolve outside its root (realpath check).
 */
import { open as openFile, realpath } from 'node:fs/promises';
import { join, sep } from 'node:path';
import { BootTorrentError } from '../errors.js';

export interface TftpClientAddress {
  address: string;
  port: number;
}

/** An open file: its size now, random-access reads, and close. */
export interface ServedFile {
  size: number;
  /** Up to `length` bytes at `offset`; fewer only at the end of the file. */
  read(offset: number, length: number): Promise<Buffer>;
  close(): void | Promise<void>;
}

/**
 * Opens files for the TFTP server. Resolve `undefined` for "not found" (TFTP
 * error 1); throw BootTorrentError('BT_ERR_TFTP_ACCESS') to refuse (error 2).
 * `path` is already cleaned by `cleanRequestPath`: relative, '/'-separated,
 * no '.', '..' or empty segments.
 */
export interface FileProvider {
  open(path: string, client: TftpClientAddress): Promise<ServedFile | undefined>;
}

function refuse(message: string): never {
  throw new BootTorrentError('BT_ERR_TFTP_ACCESS', message);
}

/**
 * Turns a requested filename into a root-relative path, or throws
 * BT_ERR_TFTP_ACCESS.
 *
 * Decisions (each one a reader might otherwise undo):
 * - A leading '/' is dropped: PXE ROMs, GRUB and iPXE configs often ask for
 *   "/undionly.kpxe" meaning "at the TFTP root", as tftpd-hpa --secure
 *   (chroot) serves it. There is no way to name a file outside the root.
 * - Any '..' segment is refused, even one that would stay inside the root
 *   ("a/../b"): no firmware needs it, and refusing is simpler to audit.
 * - A backslash is refused rather than mapped to '/': on Linux it is a legal
 *   file name byte, and guessing Windows paths ("..\\x") invites climbing.
 * - NUL and other control characters are refused.
 */
export function cleanRequestPath(filename: string): string {
  for (let i = 0; i < filename.length; i++) {
    const c = filename.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) refuse('file name contains a control character');
  }
  if (filename.includes('\\')) refuse('file name contains a backslash (Windows paths are not translated)');
  const parts: string[] = [];
  for (const seg of filename.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') refuse('file name contains ".." (paths may not climb)');
    parts.push(seg);
  }
  if (parts.length === 0) refuse('file name names the root folder itself');
  return parts.join('/');
}

const NOT_FOUND = new Set(['ENOENT', 'ENOTDIR', 'ELOOP', 'ENAMETOOLONG']);

/** Serves the regular files under `root`; symlinks are followed only while they stay under it. */
export class RootFileProvider implements FileProvider {
  private rootReal: Promise<string> | undefined;

  constructor(readonly root: string) {}

  async open(path: string): Promise<ServedFile | undefined> {
    // Cache the root's real path, but retry after a failure (root created later).
    this.rootReal ??= realpath(this.root).catch((err: unknown) => {
      this.rootReal = undefined;
      throw err;
    });
    const rootReal = await this.rootReal;
    let real: string;
    try {
      real = await realpath(join(rootReal, cleanRequestPath(path)));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? '';
      if (NOT_FOUND.has(code)) return undefined;
      if (code === 'EACCES') refuse(`permission denied on ${path}`);
      throw err;
    }
    if (real !== rootReal && !real.startsWith(rootReal + sep)) {
      refuse(`${path} resolves to ${real}, outside the TFTP root ${rootReal}`);
    }
    return openServed(real, path);
  }
}

/** Opens a regular file for serving; undefined if it does not exist. */
async function openServed(real: string, path: string): Promise<ServedFile | undefined> {
  let fh;
  try {
    fh = await openFile(real, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? '';
    if (NOT_FOUND.has(code)) return undefined;
    if (code === 'EACCES') refuse(`permission denied on ${path}`);
    throw err;
  }
  const st = await fh.stat();
  if (!st.isFile()) {
    await fh.close();
    refuse(`${path} is not a regular file`);
  }
  const handle = fh;
  return {
    size: st.size,
    async read(offset, length) {
      const buf = Buffer.allocUnsafe(length);
      let got = 0;
      while (got < length) {
        const { bytesRead } = await handle.read(buf, got, length - got, offset + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      return got === length ? buf : buf.subarray(0, got);
    },
    close: () => handle.close(),
  };
}

/**
 * Serves a fixed set of names, each mapped to a file the operator chose
 * (e.g. Debian's /usr/lib/ipxe/ipxe.efi, a symlink into /boot). Nothing
 * else is reachable, so following those links is safe.
 */
export class FixedFileProvider implements FileProvider {
  /** A name maps to a file's path, or to the bytes served under it (a generated file). */
  constructor(private readonly files: Readonly<Record<string, string | Buffer>>) {}

  async open(path: string): Promise<ServedFile | undefined> {
    const name = cleanRequestPath(path);
    const file = Object.hasOwn(this.files, name) ? this.files[name] : undefined;
    if (file === undefined) return undefined;
    if (Buffer.isBuffer(file))
      return {
        size: file.length,
        read: (offset, length) => Promise.resolve(file.subarray(offset, offset + length)),
        close: () => undefined,
      };
    try {
      return await openServed(await realpath(file), name);
    } catch (err) {
      if (NOT_FOUND.has((err as NodeJS.ErrnoException).code ?? '')) return undefined;
      throw err;
    }
  }
}
