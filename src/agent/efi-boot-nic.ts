/**
 * Which NIC the firmware booted from, read from UEFI variables (issue #22
 * item 4). A signed phase-1 image (a unified kernel image) has one command
 * line for every machine, so it cannot carry `boottorrent.mac=`; it says
 * `boottorrent.mac=auto` and the agent asks the firmware instead:
 * BootCurrent names the Boot#### option that started this boot, and a
 * network boot option's device path holds a MAC address node (UEFI 2.10,
 * 10.3.5.11: type 3 messaging, subtype 11, 37 bytes: 32 bytes of address
 * and the interface type). efivarfs prefixes each variable with its 4-byte
 * attributes.
 */
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';

export const EFIVARS = '/sys/firmware/efi/efivars';
/** EFI_GLOBAL_VARIABLE. */
const GLOBAL = '8be4df61-93ca-11d2-aa0d-00e098032b8c';

/** The option number in a BootCurrent variable's efivarfs bytes, or undefined. */
export function parseBootCurrent(buf: Buffer): number | undefined {
  return buf.length >= 6 ? buf.readUInt16LE(4) : undefined;
}

/**
 * The first MAC address node of a Boot#### variable (efivarfs bytes: 4
 * attribute bytes, then EFI_LOAD_OPTION), lower-case colon form; undefined
 * when the option holds none or is malformed.
 */
export function macOfLoadOption(buf: Buffer): string | undefined {
  if (buf.length < 4 + 6) return undefined;
  const opt = buf.subarray(4);
  const pathLen = opt.readUInt16LE(4);
  // Description: UCS-2, up to and including a 0x0000 unit.
  let i = 6;
  while (i + 1 < opt.length && opt.readUInt16LE(i) !== 0) i += 2;
  i += 2;
  const end = Math.min(opt.length, i + pathLen);
  while (i + 4 <= end) {
    const type = opt[i]!;
    const sub = opt[i + 1]!;
    const len = opt.readUInt16LE(i + 2);
    if (len < 4 || i + len > end) return undefined;
    if (type === 0x7f && sub === 0xff) return undefined; // end of the whole path
    if (type === 0x03 && sub === 0x0b && len >= 37) {
      const ifType = opt[i + 36]!;
      // 0 and 1 (Ethernet) carry a 6-byte address in the first bytes.
      if (ifType <= 1)
        return [...opt.subarray(i + 4, i + 10)].map((b) => b.toString(16).padStart(2, '0')).join(':');
    }
    i += len;
  }
  return undefined;
}

/** The MAC of the NIC the firmware booted from, or undefined (no UEFI, no efivarfs, not a network boot). */
export async function efiBootMac(dir = EFIVARS): Promise<string | undefined> {
  try {
    const current = parseBootCurrent(await readFile(join(dir, `BootCurrent-${GLOBAL}`)));
    if (current === undefined) return undefined;
    const name = `Boot${current.toString(16).toUpperCase().padStart(4, '0')}-${GLOBAL}`;
    return macOfLoadOption(await readFile(join(dir, name)));
  } catch {
    return undefined;
  }
}

/** The NICs of this machine other than loopback, by MAC (from sysfs). */
export async function wiredMacs(sysNet = '/sys/class/net'): Promise<string[]> {
  const out: string[] = [];
  for (const n of await readdir(sysNet).catch(() => [] as string[])) {
    if (n === 'lo') continue;
    const mac = (await readFile(join(sysNet, n, 'address'), 'utf8').catch(() => '')).trim().toLowerCase();
    if (/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(mac) && mac !== '00:00:00:00:00:00') out.push(mac);
  }
  return out;
}

/**
 * `boottorrent.mac=auto`: the firmware's boot NIC, or the machine's only
 * NIC; an error that says what to do when neither answers.
 */
export async function resolveAutoMac(dirs: { efivars?: string; sysNet?: string } = {}): Promise<string> {
  const fromEfi = await efiBootMac(dirs.efivars);
  if (fromEfi) return fromEfi;
  const nics = await wiredMacs(dirs.sysNet);
  if (nics.length === 1) return nics[0]!;
  throw new Error(
    `boottorrent.mac=auto: the firmware does not say which NIC it booted from (no BootCurrent network option in efivarfs) and this machine has ${nics.length} NICs (${nics.join(', ') || 'none'}); boot it through the server's iPXE or GRUB chain, which names the MAC`,
  );
}
