/**
 * A GRUB for UEFI that checks every file it loads against the server's
 * OpenPGP key (openpgp.ts) and refuses the rest: built here with
 * `grub-mkimage` from Debian's grub-efi-amd64-bin, the key and a script
 * embedded. Built with a key, GRUB starts with `check_signatures=enforce`:
 * `linux` and `initrd` over HTTP fail unless `<file>.sig` (fetched from the
 * same place) is a good signature by that key of the very bytes loaded, so
 * the files may come from any peer. A failed `linux` or `initrd` is an
 * error the script can act on (another source: the server).
 *
 * The embedded script runs in GRUB's rescue parser: one command per line,
 * no `if`. It fetches the real config (grubLoadFromFirst's conditionals)
 * with `configfile` from the server, and that config is checked like any
 * other file, so the server signs it too.
 *
 * This is the loader a peer-served phase 1 needs (issue #16): Debian's
 * iPXE has no `imgverify`, so today the kernel and stage 0 always come
 * from the server. Not wired into `start` yet; test/e2e/grub-verify.test.ts
 * boots it in OVMF against a lying peer.
 *
 * An HTTP server for this GRUB (2.06) must spell the header
 * `Content-Length` so: its http module compares case-sensitively, and a
 * file without it fails its check silently.
 *
 * Unsigned: under Secure Boot it would need shim and the lab's key (the
 * signed chain in grub.ts uses Debian's signed GRUB, which has no HTTP).
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { BootTorrentError } from '../errors.js';

const execFileP = promisify(execFile);

/**
 * Built into the image, so nothing is loaded from a prefix (which, under
 * enforce, would need signatures too): networking (UEFI: the firmware's or
 * iPXE's SNP; BIOS: the PXE API iPXE or the ROM offers), DHCP and HTTP,
 * the Linux loader, the OpenPGP check with RSA and SHA-256, and the
 * script's commands (`exit` returns to iPXE, which then loads phase 1 the
 * old way).
 */
export const VERIFYING_GRUB_MODULES = [
  'net',
  'http',
  'linux',
  'pgp',
  'gcry_rsa',
  'gcry_sha256',
  'normal',
  'configfile',
  'echo',
  'test',
  'sleep',
  'reboot',
  'minicmd',
] as const;

/** The two GRUB builds: UEFI x64, and a PXE program for BIOS. */
export type VerifyingGrubFormat = 'x86_64-efi' | 'i386-pc-pxe';

/** Per format: Debian's module folder, its package, and the modules only that platform has. */
export const VERIFYING_GRUB_PLATFORMS: Record<
  VerifyingGrubFormat,
  { readonly dir: string; readonly pkg: string; readonly modules: readonly string[] }
> = {
  'x86_64-efi': { dir: '/usr/lib/grub/x86_64-efi', pkg: 'grub-efi-amd64-bin', modules: ['efinet'] },
  // BIOS GRUB writes to the VGA screen unless told: serial for a headless room and its tests.
  'i386-pc-pxe': { dir: '/usr/lib/grub/i386-pc', pkg: 'grub-pc-bin', modules: ['pxe', 'serial', 'terminal'] },
};

/** Where Debian puts the x86_64-efi modules (package grub-efi-amd64-bin). */
export const GRUB_EFI_MODULES_DIR = VERIFYING_GRUB_PLATFORMS['x86_64-efi'].dir;

/**
 * Writes to `out` a GRUB program (UEFI by default, or BIOS PXE) that trusts
 * `publicKey` (an OpenPGP key file, pgpPublicKeyFile) only and runs
 * `script` at start, in the rescue parser (plain commands; see above).
 */
export async function buildVerifyingGrub(o: {
  /** One key, or several (GRUB then trusts each; `distrust` in a script can drop one). */
  publicKey: Buffer | readonly Buffer[];
  script: string;
  out: string;
  format?: VerifyingGrubFormat;
}): Promise<void> {
  const format = o.format ?? 'x86_64-efi';
  const platform = VERIFYING_GRUB_PLATFORMS[format];
  const work = mkdtempSync(join(tmpdir(), 'bt-grub-'));
  try {
    const keys = (Buffer.isBuffer(o.publicKey) ? [o.publicKey] : o.publicKey).map((k, i) => {
      const file = join(work, `key${i}.gpg`);
      writeFileSync(file, k);
      return file;
    });
    const cfg = join(work, 'embedded.cfg');
    writeFileSync(cfg, o.script);
    await execFileP(
      'grub-mkimage',
      [
        '--format',
        format,
        '--directory',
        platform.dir,
        '--output',
        o.out,
        // No prefix to load from: everything is built in (see VERIFYING_GRUB_MODULES).
        '--prefix',
        '(memdisk)/',
        ...keys.flatMap((k) => ['--pubkey', k]),
        '--config',
        cfg,
        ...platform.modules,
        ...VERIFYING_GRUB_MODULES,
      ],
      { maxBuffer: 1 << 20 },
    );
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    throw new BootTorrentError(
      'BT_ERR_PHASE1',
      e.code === 'ENOENT'
        ? `grub-mkimage is not installed: apt-get install ${platform.pkg}`
        : `grub-mkimage could not build the verifying GRUB (${o.out}): ${(e.stderr ?? e.message).trim()}` +
            ` (are the ${format} modules in ${platform.dir}? apt-get install ${platform.pkg})`,
    );
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** One file as GRUB loads it over HTTP: from `source` (`host` or `host:port`), at `file`. */
export interface GrubFile {
  readonly source: string;
  readonly file: string;
}

function checkGrubFile(f: GrubFile): void {
  if (!/^[A-Za-z0-9.:[\]-]+$/.test(f.source))
    throw new Error(`not a host:port for GRUB: ${JSON.stringify(f.source)}`);
  if (!/^\/[A-Za-z0-9._/-]+$/.test(f.file))
    throw new Error(`not a plain absolute path for GRUB: ${JSON.stringify(f.file)}`);
}

/**
 * GRUB config lines (for `configfile`: they use `if`) that run `command`
 * (`linux` or `initrd`) with each attempt's files in turn until one
 * attempt passes the signature check of every file, saying which on the
 * console; `args` follow the files (the kernel's command line). Sources
 * and paths are checked: GRUB takes them into a device name and a path,
 * and a quote or a space there would break the script.
 */
export function grubLoadFirstOf(
  command: 'linux' | 'initrd',
  attempts: readonly (readonly GrubFile[])[],
  args = '',
  /** Per attempt: `set bt_from=<mark>` when it loads (lower-case letters), for later lines to test. */
  marks?: readonly string[],
): string {
  if (attempts.length === 0 || attempts.some((a) => a.length === 0))
    throw new Error('no source to load from');
  attempts.flat().forEach(checkGrubFile);
  checkGrubArgs(args);
  if (marks && (marks.length !== attempts.length || marks.some((m) => !/^[a-z]{1,16}$/.test(m))))
    throw new Error(`marks must be one lower-case word per attempt: ${JSON.stringify(marks)}`);
  const load = (a: readonly GrubFile[]) =>
    `${command} ${a.map((f) => `(http,${f.source})${f.file}`).join(' ')}${args ? ` ${args}` : ''}`;
  const what = attempts[0]!.map((f) => f.file).join(' ');
  // Nested: each else tries the next attempt; after the last, the script says none was good.
  const lines: string[] = [];
  attempts.forEach((a, i) => {
    const pad = '  '.repeat(i);
    lines.push(
      `${pad}if ${load(a)}; then`,
      `${pad}  echo "boottorrent: ${command} ${what} from ${a[0]!.source}"`,
      ...(marks ? [`${pad}  set bt_from=${marks[i]}`] : []),
      `${pad}else`,
    );
  });
  lines.push(`${'  '.repeat(attempts.length)}echo "boottorrent: no source had a good ${what}"`);
  for (let i = attempts.length - 1; i >= 0; i--) lines.push(`${'  '.repeat(i)}fi`);
  return `${lines.join('\n')}\n`;
}

/**
 * Throws unless GRUB keeps `args` (a kernel command line) as given: no
 * quotes, escapes, variables, separators, redirections, blocks, or `#` (a
 * comment from there, which would swallow `; then`); nothing but printable
 * ASCII (a newline, a tab).
 */
export function checkGrubArgs(args: string): void {
  if (/['"\\$;&|`<>{}#]/.test(args) || /[^\x20-\x7e]/.test(args))
    throw new Error(`kernel arguments GRUB would not keep as given: ${JSON.stringify(args)}`);
}

/** grubLoadFirstOf with one file, tried from each source in turn. */
export function grubLoadFromFirst(
  command: 'linux' | 'initrd',
  sources: readonly string[],
  file: string,
  args = '',
): string {
  return grubLoadFirstOf(
    command,
    sources.map((source) => [{ source, file }]),
    args,
  );
}
