/**
 * MAC and IPv4 address helpers, the one place DHCP, HTTP, the environment
 * loader and the agent parse them (they had three MAC normalizers and two
 * ipToInt that disagreed on what they accepted). Pure; no I/O.
 */
import { isIPv4 } from 'node:net';

/**
 * Lower-case colon form "aa:bb:cc:dd:ee:ff" of a MAC written as
 * "AA-BB-CC-DD-EE-FF", "aa:bb:..", "aabb.ccdd.eeff" or "aabbccddeeff";
 * undefined if it is not one.
 */
export function normalizeMac(raw: string): string | undefined {
  if (!/^[0-9a-f:.-]+$/i.test(raw)) return undefined;
  const hex = raw.toLowerCase().replace(/[:.-]/g, '');
  if (hex.length !== 12) return undefined;
  return hex.match(/../g)!.join(':');
}

/** Dotted quad to an unsigned 32-bit number (for range arithmetic); NaN if not an IPv4 address. */
export function ipToInt(ip: string): number {
  if (!isIPv4(ip)) return NaN;
  let n = 0;
  for (const octet of ip.split('.')) n = n * 256 + Number(octet);
  return n;
}

/** Unsigned 32-bit number to a dotted quad. */
export function intToIp(n: number): string {
  const v = n >>> 0;
  return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
}
