/**
 * The signed boot chain for UEFI Secure Boot (#22 item 1), pure: which
 * files the server serves and the GRUB script that loads phase 1.
 *
 * Firmware with Secure Boot on runs only EFI programs signed by a key in
 * its db (on shop PCs: Microsoft's). iPXE is not signed by such a key;
 * Debian's shim is (Microsoft's UEFI CA), and shim runs Debian's signed GRUB,
 * which runs a kernel signed by Debian (shim's built-in Debian CA) and
 * refuses any other. So a UEFI PXE client gets:
 *
 *   firmware -> TFTP shimx64.efi  (Debian's shim-signed)
 *   shim     -> TFTP grubx64.efi  (Debian's grubnetx64.efi.signed; shim
 *                                  fetches it from the folder it came from)
 *   GRUB     -> TFTP /grub/grub.cfg (prefix (tftp,<server>)/grub; this script)
 *            -> TFTP /phase1/vmlinuz, the initramfs and the server-key archive
 *
 * Debian's signed GRUB has TFTP but no HTTP, so phase 1 comes over TFTP;
 * with `peers.phase1` it is the kernel and stage 0 (a few MB) and stage 0
 * fetches the rest over HTTP from peers. The same chain runs with Secure
 * Boot off (shim then checks nothing), so every UEFI PXE client gets it
 * when the environment asks for it: DHCP cannot tell whether a machine
 * enforces Secure Boot.
 */
import { BootTorrentError } from '../errors.js';

/**
 * `server.uefi_chain`: iPXE (unsigned; Secure Boot off), Debian's signed
 * shim and GRUB, or phase 1 as one image signed with the lab's key (uki.ts).
 */
export type UefiChain = 'ipxe' | 'signed' | 'uki';

/** Where Debian's packages put the signed binaries (shim-signed, grub-efi-amd64-signed). */
export const SIGNED_CHAIN_FILES = {
  shim: '/usr/lib/shim/shimx64.efi.signed',
  grub: '/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed',
  /** MokManager, which enrolls a lab's key after `mokutil --import` (served when present). */
  mokManager: '/usr/lib/shim/mmx64.efi.signed',
} as const;
export const SIGNED_CHAIN_PACKAGES = 'shim-signed grub-efi-amd64-signed';

/** The names served over TFTP: shim asks for grubx64.efi beside itself; GRUB for its prefix's grub.cfg. */
export const SHIM_NAME = 'shimx64.efi';
export const GRUB_NAME = 'grubx64.efi';
export const GRUB_CONFIG_NAME = 'grub/grub.cfg';
export const MOK_MANAGER_NAME = 'mmx64.efi';

/**
 * Where a PE image's certificate table (Authenticode signatures, PE/COFF
 * data directory 4) is: `entry` is the offset of its directory entry, `at`
 * and `size` what the entry says. Undefined when `pe` is not a PE image.
 */
export function peCertificateTable(pe: Buffer): { entry: number; at: number; size: number } | undefined {
  if (pe.length < 0x40 || pe.toString('latin1', 0, 2) !== 'MZ') return undefined;
  const peOff = pe.readUInt32LE(0x3c);
  if (peOff + 24 + 2 > pe.length || pe.toString('latin1', peOff, peOff + 4) !== 'PE\0\0') return undefined;
  const opt = peOff + 24;
  const magic = pe.readUInt16LE(opt);
  // Data directories: at 96 (PE32) or 112 (PE32+) into the optional header; entry 4, 8 bytes each.
  const entry = opt + (magic === 0x20b ? 112 : magic === 0x10b ? 96 : NaN) + 4 * 8;
  if (!(entry + 8 <= pe.length)) return undefined;
  return { entry, at: pe.readUInt32LE(entry), size: pe.readUInt32LE(entry + 4) };
}

/**
 * True when `pe` is a PE image with an Authenticode signature (a non-empty
 * certificate table inside the file). GRUB under Secure Boot refuses a
 * phase-1 kernel without one; whether the signature is trusted is for the
 * firmware and shim to say.
 */
export function peHasSignature(pe: Buffer): boolean {
  const t = peCertificateTable(pe);
  return t !== undefined && t.at > 0 && t.size > 8 && t.at + t.size <= pe.length;
}

/** Phase 1 as GRUB loads it: TFTP paths on the server GRUB came from. */
export interface GrubPhaseOne {
  /** e.g. /phase1/vmlinuz */
  readonly kernel: string;
  /** Concatenated by GRUB into one initramfs, in order (the server key last). */
  readonly initrds: readonly string[];
  /** Kernel command line without the boottorrent.server/mac words. */
  readonly cmdline: string;
  /** Base URL of the server (boottorrent.server=). */
  readonly serverUrl: string;
}

/**
 * A GRUB word in single quotes: GRUB keeps everything inside literally, and
 * has no escape for a quote inside. Values come from the environment, but a
 * newline or a quote would change the script.
 */
function word(s: string, what: string): string {
  if (/['\r\n\0]/.test(s))
    throw new BootTorrentError(
      'BT_ERR_CONFIG_FIELD',
      `${what} must be one line without a single quote (GRUB script): ${JSON.stringify(s)}`,
    );
  return `'${s}'`;
}

/**
 * The grub.cfg GRUB reads from TFTP. The MAC comes from GRUB itself
 * ($net_default_mac: the NIC it booted from), so one script serves every
 * machine; the MAC allow-list already decided at DHCP who gets here.
 */
export function grubConfig(p: GrubPhaseOne): string {
  const args = p.cmdline
    .split(/\s+/)
    .filter(Boolean)
    .map((a) => word(a, 'kernel command line'));
  args.push(word(`boottorrent.server=${p.serverUrl}`, 'server URL'), '"boottorrent.mac=${net_default_mac}"');
  return [
    '# BootTorrent: phase 1 for UEFI PXE clients through the signed chain (shim, GRUB).',
    '# Written by the server at start; not read from disk.',
    'set timeout=0',
    "echo 'BootTorrent: loading phase 1 (signed chain) for' $net_default_mac",
    `if linux ${word(p.kernel, 'kernel path')} ${args.join(' ')}; then`,
    `  if initrd ${p.initrds.map((i) => word(i, 'initrd path')).join(' ')}; then`,
    '    boot',
    '  fi',
    'fi',
    "echo 'BootTorrent: could not load phase 1 from the server; retrying in 10 seconds'",
    'sleep 10',
    `configfile ${word(`/${GRUB_CONFIG_NAME}`, 'config path')}`,
    '',
  ].join('\n');
}
