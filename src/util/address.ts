/**
 * MAC and IPv4 address helpers, the one place DHCP, HTTP, the environment
 * loader and the agent parse them (they had three MAC normalizers and two
 * ipToInt that disagreed on what they accepted). Pure; no I/O.
 */
import { isIPv4, isIPv6 } from 'node:net';

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

/** An IPv4 subnet: its network address as a number, its prefix length and mask. */
export interface Subnet {
  readonly base: number;
  readonly bits: number;
  readonly mask: number;
}

/**
 * "10.1.0.0/24" (or an address alone for /32) to a Subnet; undefined if it
 * is not one. `exact` is false when host bits are set ("10.1.0.7/24"):
 * callers that want the network address written say so.
 */
export function parseSubnet(cidr: string): (Subnet & { exact: boolean }) | undefined {
  const m = /^(\d+\.\d+\.\d+\.\d+)(?:\/(\d{1,2}))?$/.exec(cidr.trim());
  if (!m) return undefined;
  const ip = ipToInt(m[1]!);
  const bits = m[2] === undefined ? 32 : Number(m[2]);
  if (Number.isNaN(ip) || bits > 32) return undefined;
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  const base = (ip & mask) >>> 0;
  return { base, bits, mask, exact: base === ip };
}

/** Is `ip` inside `s`? False for anything that is not an IPv4 address. */
export function inSubnet(ip: string, s: Subnet): boolean {
  const n = ipToInt(ip);
  return !Number.isNaN(n) && (n & s.mask) >>> 0 === s.base;
}

/** "10.1.0.0/24" of a Subnet. */
export function subnetText(s: Subnet): string {
  return `${intToIp(s.base)}/${s.bits}`;
}

/**
 * Are `a` and `b` on one network, judged by their first `bits4` bits
 * (IPv4) or `bits6` bits (IPv6)? An IPv4-mapped IPv6 address counts as
 * IPv4; addresses of different families never match. The swarm's locality
 * rule (a peer on our subnet is asked and unchoked first) is built on it.
 */
export function sameNetwork(a: string, b: string, bits4: number, bits6 = 64): boolean {
  const strip = (ip: string) => ip.replace(/^::ffff:(?=\d+\.)/i, '');
  const x = strip(a);
  const y = strip(b);
  if (isIPv4(x) && isIPv4(y)) {
    if (bits4 <= 0) return true;
    const mask = bits4 >= 32 ? 0xffffffff : (0xffffffff << (32 - bits4)) >>> 0;
    return (ipToInt(x) & mask) >>> 0 === (ipToInt(y) & mask) >>> 0;
  }
  if (isIPv6(x) && isIPv6(y)) {
    const bx = ipv6Bits(x);
    const by = ipv6Bits(y);
    if (!bx || !by) return false;
    for (let i = 0; i < Math.min(bits6, 128); i++) if (bx[i] !== by[i]) return false;
    return true;
  }
  return false;
}

/**
 * A key naming `ip`'s network: its first `bits4` bits (IPv4, IPv4-mapped
 * included) or `bits6` bits (IPv6); two addresses have one key exactly
 * when sameNetwork says so. Undefined for anything that is not an address.
 */
export function networkKey(ip: string, bits4: number, bits6 = 64): string | undefined {
  const x = ip.replace(/^::ffff:(?=\d+\.)/i, '');
  if (isIPv4(x)) {
    const mask = bits4 <= 0 ? 0 : bits4 >= 32 ? 0xffffffff : (0xffffffff << (32 - bits4)) >>> 0;
    return `4/${(ipToInt(x) & mask) >>> 0}`;
  }
  const b = isIPv6(x) ? ipv6Bits(x) : undefined;
  return b === undefined ? undefined : `6/${b.slice(0, Math.max(0, Math.min(bits6, 128)))}`;
}

/** An IPv6 address as 128 bits ("0"/"1"); undefined if it will not parse. */
function ipv6Bits(ip: string): string | undefined {
  const [head = '', tail] = ip.split('%')[0]!.split('::') as [string, string | undefined];
  const part = (s: string) => (s === '' ? [] : s.split(':'));
  const h = part(head);
  const t = tail === undefined ? [] : part(tail);
  const fill = tail === undefined ? 0 : 8 - h.length - t.length;
  const groups = [...h, ...new Array<string>(Math.max(0, fill)).fill('0'), ...t];
  if (groups.length !== 8 || groups.some((g) => !/^[0-9a-f]{1,4}$/i.test(g))) return undefined;
  return groups.map((g) => parseInt(g, 16).toString(2).padStart(16, '0')).join('');
}
