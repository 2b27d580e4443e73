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
 * enforce, would need signatures too): UEFI networking (the firmware's or
 * iPXE's SNP), DHCP and HTTP, the Linux loader, the OpenPGP check with RSA
 * and SHA-256, and the script's commands.
 */
export const VERIFYING_GRUB_MODULES = [
  'efinet',
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
] as const;

/** Where Debian puts the x86_64-efi modules (package grub-efi-amd64-bin). */
export const GRUB_EFI_MODULES_DIR = '/usr/lib/grub/x86_64-efi';

/**
 * Writes to `out` a GRUB EFI program that trusts `publicKey` (an OpenPGP
 * key file, pgpPublicKeyFile) only and runs `script` at start, in the
 * rescue parser (plain commands; see above).
 */
export async function buildVerifyingGrub(o: {
  publicKey: Buffer;
  script: string;
  out: string;
}): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'bt-grub-'));
  try {
    const key = join(work, 'key.gpg');
    const cfg = join(work, 'embedded.cfg');
    writeFileSync(key, o.publicKey);
    writeFileSync(cfg, o.script);
    await execFileP(
      'grub-mkimage',
      [
        '--format',
        'x86_64-efi',
        '--directory',
        GRUB_EFI_MODULES_DIR,
        '--output',
        o.out,
        // No prefix to load from: everything is built in (see VERIFYING_GRUB_MODULES).
        '--prefix',
        '(memdisk)/',
        '--pubkey',
        key,
        '--config',
        cfg,
        ...VERIFYING_GRUB_MODULES,
      ],
      { maxBuffer: 1 << 20 },
    );
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    throw new BootTorrentError(
      'BT_ERR_PHASE1',
      e.code === 'ENOENT'
        ? 'grub-mkimage is not installed: apt-get install grub-efi-amd64-bin'
        : `grub-mkimage could not build the verifying GRUB (${o.out}): ${(e.stderr ?? e.message).trim()}` +
            ` (are the x86_64-efi modules in ${GRUB_EFI_MODULES_DIR}? apt-get install grub-efi-amd64-bin)`,
    );
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/**
 * GRUB config lines (for `configfile`: they use `if`) that load `file` with `command` (`linux` or `initrd`)
 * from each source in turn until one passes the signature check, saying
 * which on the console; `args` follow the file (the kernel's command line).
 * Sources are `host:port` and paths absolute, both checked: GRUB takes
 * them into a device name and a path, and a quote or a space there would
 * break the script.
 */
export function grubLoadFromFirst(
  command: 'linux' | 'initrd',
  sources: readonly string[],
  file: string,
  args = '',
): string {
  if (sources.length === 0) throw new Error('no source to load from');
  for (const s of sources)
    if (!/^[A-Za-z0-9.:[\]-]+$/.test(s)) throw new Error(`not a host:port for GRUB: ${JSON.stringify(s)}`);
  if (!/^\/[A-Za-z0-9._/-]+$/.test(file))
    throw new Error(`not a plain absolute path for GRUB: ${JSON.stringify(file)}`);
  // GRUB's script syntax: quotes, escapes, variables, separators, redirections,
  // blocks, and `#` (a comment from there, which would swallow `; then`).
  // Anything but printable ASCII (a newline, a tab) is refused too.
  if (/['"\\$;&|`<>{}#]/.test(args) || /[^\x20-\x7e]/.test(args))
    throw new Error(`kernel arguments GRUB would not keep as given: ${JSON.stringify(args)}`);
  const load = (s: string) => `${command} (http,${s})${file}${args ? ` ${args}` : ''}`;
  // Nested: each else tries the next source; after the last, the script says none was good.
  const lines: string[] = [];
  sources.forEach((s, i) => {
    const pad = '  '.repeat(i);
    lines.push(
      `${pad}if ${load(s)}; then`,
      `${pad}  echo "boottorrent: ${command} ${file} from ${s}"`,
      `${pad}else`,
    );
  });
  lines.push(`${'  '.repeat(sources.length)}echo "boottorrent: no source had a good ${file}"`);
  for (let i = sources.length - 1; i >= 0; i--) lines.push(`${'  '.repeat(i)}fi`);
  return `${lines.join('\n')}\n`;
}
