/**
 * Phase 1 as one signed EFI image (issue #22 item 4, `server.uefi_chain:
 * uki`): a unified kernel image (systemd's EFI stub from Debian's
 * systemd-boot-efi with the kernel, the initramfs plus the server's key
 * archive, and the command line as PE sections), signed with the lab's key
 * by sbsign (Debian's sbsigntool). A UEFI firmware with that key enrolled
 * (its db, or shim's MOK list) verifies the whole image, initramfs and
 * command line included, before it runs: nothing of phase 1 comes from the
 * network unsigned. Under Secure Boot the stub uses its built-in command
 * line only, so it is the same for every machine: the agent learns its NIC
 * from the firmware (boottorrent.mac=auto, src/agent/efi-boot-nic.ts).
 *
 * Section addresses follow the stub's own image (its PE header says where it
 * ends); the kernel and initramfs sit at 1 MiB boundaries after it.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { BootTorrentError } from '../errors.js';

const run = promisify(execFile);

export const UKI_STUB = '/usr/lib/systemd/boot/efi/linuxx64.efi.stub';
/** The Debian packages the lab-key path needs (validate names them). */
export const UKI_PACKAGES = 'sbsigntool systemd-boot-efi binutils';
/** The name the firmware fetches over TFTP (and HTTP Boot over HTTP). */
export const UKI_NAME = 'boottorrent-phase1.efi';

export interface UkiInputs {
  /** Phase 1's kernel. */
  readonly kernel: string;
  /** Files joined into the one initramfs, in order (each starting at a 4-byte boundary). */
  readonly initrds: readonly string[];
  readonly cmdline: string;
  /** The lab's private key and certificate (PEM; the key unencrypted). */
  readonly key: string;
  readonly cert: string;
  /** Default UKI_STUB. */
  readonly stub?: string;
}

/** What is wrong with a key or certificate file for sbsign, or undefined. */
export function labKeyProblem(
  file: string,
  kind: 'key' | 'cert',
): { message: string; fix: string } | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'latin1');
  } catch (err) {
    return {
      message: `cannot read ${file}: ${(err as Error).message}`,
      fix: 'give the path of a readable PEM file',
    };
  }
  if (kind === 'cert') {
    if (!text.includes('-----BEGIN CERTIFICATE-----'))
      return {
        message: `${file} is not a PEM certificate`,
        fix: 'give the lab certificate (PEM, -----BEGIN CERTIFICATE-----)',
      };
    return undefined;
  }
  if (/ENCRYPTED/.test(text))
    return {
      message: `${file} is encrypted with a passphrase (sbsign would ask for it on a terminal)`,
      fix: `write an unencrypted copy readable by root only: openssl pkey -in ${file} -out ${file}.plain && chmod 600 ${file}.plain`,
    };
  if (!/-----BEGIN (RSA |EC )?PRIVATE KEY-----/.test(text))
    return {
      message: `${file} is not a PEM private key`,
      fix: 'give the lab key (PEM, -----BEGIN PRIVATE KEY-----)',
    };
  return undefined;
}

/** SizeOfImage + ImageBase of a PE file: where its last section ends in memory. */
function peImageEnd(pe: Buffer): number {
  const at = pe.readUInt32LE(0x3c);
  if (pe.toString('latin1', at, at + 4) !== 'PE\0\0') throw new Error('not a PE image');
  const opt = at + 24;
  const magic = pe.readUInt16LE(opt);
  const sizeOfImage = pe.readUInt32LE(opt + 56);
  const imageBase = magic === 0x20b ? Number(pe.readBigUInt64LE(opt + 24)) : pe.readUInt32LE(opt + 28);
  return imageBase + sizeOfImage;
}

const align = (n: number, a: number) => Math.ceil(n / a) * a;

/**
 * Builds and signs the image into `dir` (named by the SHA-256 of every
 * input, so an unchanged phase 1 is not built again) and returns its path.
 * The key never leaves its file: sbsign reads it.
 */
export async function buildSignedUki(dir: string, u: UkiInputs): Promise<string> {
  const stub = u.stub ?? UKI_STUB;
  for (const [f, pkg] of [
    [stub, 'systemd-boot-efi'],
    ['/usr/bin/sbsign', 'sbsigntool'],
    ['/usr/bin/objcopy', 'binutils'],
  ] as const)
    if (!existsSync(f))
      throw new BootTorrentError(
        'BT_ERR_FILE',
        `${f} is missing (server.uefi_chain: uki): apt-get install ${pkg}`,
      );
  for (const [f, kind] of [
    [u.key, 'key'],
    [u.cert, 'cert'],
  ] as const) {
    const p = labKeyProblem(f, kind);
    if (p) throw new BootTorrentError('BT_ERR_FILE', `${p.message}; fix: ${p.fix}`);
  }
  const h = createHash('sha256').update('boottorrent-uki 1\n');
  const parts: Buffer[] = [];
  let initrdSize = 0;
  for (const f of u.initrds) {
    const pad = (4 - (initrdSize % 4)) % 4;
    const data = await readFile(f);
    parts.push(Buffer.alloc(pad), data);
    initrdSize += pad + data.length;
  }
  const initrd = Buffer.concat(parts);
  const kernel = await readFile(u.kernel);
  const stubBytes = await readFile(stub);
  for (const b of [
    stubBytes,
    kernel,
    initrd,
    Buffer.from(u.cmdline),
    await readFile(u.cert),
    await readFile(u.key),
  ])
    h.update(createHash('sha256').update(b).digest());
  const id = h.digest('hex').slice(0, 16);
  const out = join(dir, `phase1-${id}.efi`);
  if (
    await stat(out).then(
      (s) => s.isFile(),
      () => false,
    )
  )
    return out;

  await mkdir(dir, { recursive: true, mode: 0o700 });
  const work = join(dir, `.build-${process.pid}`);
  await rm(work, { recursive: true, force: true });
  await mkdir(work, { mode: 0o700 });
  try {
    const osrel = join(work, 'osrel');
    const cmdline = join(work, 'cmdline');
    const initrdFile = join(work, 'initrd');
    await writeFile(osrel, 'ID=boottorrent\nNAME="BootTorrent phase 1"\n');
    await writeFile(cmdline, u.cmdline);
    await writeFile(initrdFile, initrd);
    const base = align(peImageEnd(stubBytes), 0x10000);
    const osrelAt = base;
    const cmdlineAt = osrelAt + 0x10000;
    const linuxAt = align(cmdlineAt + 0x10000, 0x100000);
    const initrdAt = align(linuxAt + kernel.length, 0x100000);
    const hex = (n: number) => `0x${n.toString(16)}`;
    const unsigned = join(work, 'unsigned.efi');
    await run(
      'objcopy',
      [
        ['--add-section', `.osrel=${osrel}`, '--change-section-vma', `.osrel=${hex(osrelAt)}`],
        ['--add-section', `.cmdline=${cmdline}`, '--change-section-vma', `.cmdline=${hex(cmdlineAt)}`],
        ['--add-section', `.linux=${u.kernel}`, '--change-section-vma', `.linux=${hex(linuxAt)}`],
        ['--add-section', `.initrd=${initrdFile}`, '--change-section-vma', `.initrd=${hex(initrdAt)}`],
        [stub, unsigned],
      ].flat(),
      { timeout: 120_000 },
    ).catch((err: Error & { stderr?: string }) => {
      throw new BootTorrentError(
        'BT_ERR_FILE',
        `objcopy could not build the phase-1 image: ${err.stderr?.trim() || err.message}`,
      );
    });
    const signed = join(work, 'signed.efi');
    // stdin closed: an encrypted key is an error, never a prompt that hangs start.
    await run('sbsign', ['--key', u.key, '--cert', u.cert, '--output', signed, unsigned], {
      timeout: 120_000,
    }).catch((err: Error & { stderr?: string }) => {
      throw new BootTorrentError(
        'BT_ERR_FILE',
        `sbsign could not sign the phase-1 image with ${u.key}: ${err.stderr?.trim() || err.message}`,
      );
    });
    await rename(signed, out);
    return out;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
