/**
 * Per-machine overlays (issue #17 item 4): folders of the environment
 * whose files are rendered with one machine's facts and handed to the OS
 * it boots, as a cpio "newc" archive. For a kexec OS the agent appends the
 * archive to the OS's initramfs (the kernel unpacks both into one root);
 * for qemu and bin it unpacks it into a folder.
 *
 * Rendering: in a text file (no NUL byte), `{{name}}`, `{{mac}}`, `{{ip}}`
 * and `{{group}}` become the machine's name (or bt-<12 hex digits> when it
 * has none), MAC, address and first group ('' for none). Binary files are
 * copied as they are. Each file keeps its permission bits (a 0600 key stays
 * 0600 in the booted OS); everything belongs to root. Symbolic links,
 * devices and anything above the limits below are refused, naming the file.
 */
import { createHash } from 'node:crypto';
import {
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  openSync,
  readFileSync,
  readdirSync,
  realpathSync,
} from 'node:fs';
import { join, relative, sep, isAbsolute } from 'node:path';
import { OVERLAY_MAX_BYTES } from '../boot-config.js';
import { encodeCpio, type CpioEntry } from '../phase1/cpio.js';

export const OVERLAY_MAX_FILES = 1000;
export const PLACEHOLDERS = ['name', 'mac', 'ip', 'group'] as const;
const PLACEHOLDER = /\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g;

export interface OverlayFacts {
  readonly name: string | null;
  readonly mac: string;
  readonly ip: string;
  readonly group: string | null;
}

export interface OverlayFile {
  /** '/'-separated, relative to the overlay folder. */
  readonly path: string;
  /** Permission bits (set-id bits dropped; a folder keeps its sticky bit). */
  readonly mode: number;
  readonly data: Buffer;
}

/**
 * Top-level folders that are links on a merged-/usr OS (Debian 12, Fedora,
 * ...): an overlay folder of that name replaces the link in the unpacked
 * root (the kernel's unpacker does so), and the OS loses /lib.
 */
export const MERGED_USR_LINKS = ['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32'];

export interface OverlayProblem {
  /** The file (or the folder) at fault, absolute. */
  readonly file: string;
  readonly message: string;
  readonly fix: string;
}

/** The name a machine without one gets in its overlay: a valid host name. */
export function fallbackName(mac: string): string {
  return `bt-${mac.replace(/:/g, '')}`;
}

/**
 * Every file of an overlay folder (sorted), and what is wrong with it:
 * links and special files are refused, as are more than OVERLAY_MAX_FILES
 * files or OVERLAY_MAX_BYTES in all. Never follows a link.
 */
export function readOverlay(dir: string): {
  files: OverlayFile[];
  dirs: OverlayFile[];
  problems: OverlayProblem[];
} {
  const files: OverlayFile[] = [];
  const dirs: OverlayFile[] = [];
  const problems: OverlayProblem[] = [];
  let bytes = 0;
  const walk = (abs: string, rel: string): void => {
    let names: string[];
    try {
      names = readdirSync(abs).sort();
    } catch (err) {
      problems.push({
        file: abs,
        message: `cannot read it: ${(err as Error).message}`,
        fix: 'make it a readable folder',
      });
      return;
    }
    for (const n of names) {
      const p = join(abs, n);
      const r = rel ? `${rel}/${n}` : n;
      const st = lstatSync(p);
      if (st.isDirectory()) {
        dirs.push({ path: r, mode: st.mode & 0o1777, data: Buffer.alloc(0) });
        walk(p, r);
      } else if (!st.isFile())
        problems.push({
          file: p,
          message: st.isSymbolicLink()
            ? 'is a symbolic link; overlays hold plain files'
            : 'is not a plain file',
          fix: 'put the file itself in the overlay folder',
        });
      else if (files.length >= OVERLAY_MAX_FILES) {
        problems.push({
          file: p,
          message: `more than ${OVERLAY_MAX_FILES} files in the overlay`,
          fix: 'keep an overlay to the files a machine needs',
        });
        return;
      } else {
        bytes += st.size;
        if (bytes > OVERLAY_MAX_BYTES) {
          problems.push({
            file: p,
            message: `the overlay is larger than ${OVERLAY_MAX_BYTES / 1024 / 1024} MiB`,
            fix: 'put large files in the OS folder instead',
          });
          return;
        }
        try {
          files.push({ path: r, mode: st.mode & 0o777, data: readPlainFile(p) });
        } catch (err) {
          problems.push({
            file: p,
            message: `cannot read it: ${(err as Error).message}`,
            fix: 'make it readable by the server (root)',
          });
        }
      }
    }
  };
  try {
    if (!lstatSync(dir).isDirectory())
      return {
        files,
        dirs,
        problems: [{ file: dir, message: 'is not a folder', fix: 'name a folder of the environment' }],
      };
  } catch {
    return {
      files,
      dirs,
      problems: [
        { file: dir, message: 'does not exist', fix: `create it (mkdir -p ${dir}) or correct the path` },
      ],
    };
  }
  walk(dir, '');
  return { files, dirs, problems };
}

/** A file's bytes, never through a link (swapped in after the folder was listed): O_NOFOLLOW, then a plain file. */
function readPlainFile(p: string): Buffer {
  const fd = openSync(p, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    if (!fstatSync(fd).isFile()) throw new Error('is not a plain file');
    return readFileSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** True when `dir` (links resolved) is inside `root` (links resolved). */
export function insideRoot(root: string, dir: string): boolean {
  try {
    const rel = relative(realpathSync(root), realpathSync(dir));
    return rel !== '' && rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel);
  } catch {
    return false;
  }
}

const isText = (b: Buffer) => !b.includes(0);

/** Placeholders a file uses that are not in PLACEHOLDERS. */
export function unknownPlaceholders(data: Buffer): string[] {
  if (!isText(data)) return [];
  const out = new Set<string>();
  for (const m of data.toString('utf8').matchAll(PLACEHOLDER))
    if (!(PLACEHOLDERS as readonly string[]).includes(m[1]!)) out.add(m[1]!);
  return [...out];
}

export function renderFile(data: Buffer, facts: OverlayFacts): Buffer {
  if (!isText(data)) return data;
  const values: Record<string, string> = {
    name: facts.name ?? fallbackName(facts.mac),
    mac: facts.mac,
    ip: facts.ip,
    group: facts.group ?? '',
  };
  return Buffer.from(
    data.toString('utf8').replace(PLACEHOLDER, (all, key: string) => values[key] ?? all),
    'utf8',
  );
}

/**
 * The archive for one machine: `dirs` in order (a later folder's file wins
 * over an earlier one's at the same path), rendered with `facts`. Throws on
 * a folder readOverlay finds fault with (validate reports those first).
 */
export function overlayArchive(
  dirs: readonly string[],
  facts: OverlayFacts,
  /** The environment folder: an overlay folder must be inside it once links are resolved. */
  root?: string,
): { archive: Buffer; sha256: string } {
  const byPath = new Map<string, OverlayFile>();
  const dirModes = new Map<string, number>();
  for (const d of dirs) {
    if (root !== undefined && !insideRoot(root, d)) throw new Error(`overlay ${d} is not inside ${root}`);
    const { files, dirs: folders, problems } = readOverlay(d);
    if (problems.length > 0) {
      const p = problems[0]!;
      throw new Error(`overlay ${p.file} ${p.message} (fix: ${p.fix})`);
    }
    for (const f of files) byPath.set(f.path, f);
    for (const f of folders) dirModes.set(f.path, f.mode);
  }
  const entries: CpioEntry[] = [];
  const dirsSeen = new Set<string>();
  for (const path of [...byPath.keys()].sort()) {
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (!dirsSeen.has(d)) {
        dirsSeen.add(d);
        // The folder's own mode (a tmp/ keeps 1777): the kernel applies it to the OS's folder.
        entries.push({ type: 'dir', path: d, mode: dirModes.get(d) ?? 0o755 });
      }
    }
    const f = byPath.get(path)!;
    entries.push({ type: 'file', path, data: renderFile(f.data, facts), mode: f.mode });
  }
  const archive = encodeCpio(entries);
  if (archive.length > OVERLAY_MAX_BYTES)
    throw new Error(
      `overlay for ${facts.mac} is larger than ${OVERLAY_MAX_BYTES / 1024 / 1024} MiB once rendered`,
    );
  return { archive, sha256: createHash('sha256').update(archive).digest('hex') };
}
