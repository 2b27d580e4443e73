/**
 * Who may receive a client's report token (issue #14 item 7). The token for
 * MAC M lets its holder report as M, so it goes only to a requester the
 * server can tie to M at the link layer: the kernel's neighbour table maps
 * the requester's source IP to M (the TCP handshake that carried the request
 * put the entry there; RFC 826), or, in full DHCP mode, M's lease is that IP.
 * Loopback is trusted (local tools, tests), and so are networks the
 * sysadmin names (`start --report-from CIDR`: clients behind a router, test
 * rigs where many agents share one address). Anyone else still gets the
 * boot config, without the token, and boots without reporting.
 */
import { readFile } from 'node:fs/promises';
import { isIPv4 } from 'node:net';
import { inSubnet, normalizeMac, parseSubnet } from '../util/address.js';

/** Why a requester was tied to the MAC it asked for. */
export type TieReason = 'loopback' | 'neighbour' | 'lease' | 'trusted';

/**
 * IPv4 address -> MAC (lower case) from the text of /proc/net/arp. Entries
 * still being resolved (flags 0x0, MAC all zero) are skipped: they name no
 * machine.
 */
export function parseProcNetArp(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n').slice(1)) {
    // IP address, HW type, Flags, HW address, Mask, Device
    const [ip, , flags, mac] = line.trim().split(/\s+/);
    if (!ip || !flags || !mac || !isIPv4(ip)) continue;
    if ((Number.parseInt(flags, 16) & 0x2) === 0) continue; // ATF_COM: resolved
    const m = normalizeMac(mac);
    if (!m || m === '00:00:00:00:00:00') continue;
    out.set(ip, m);
  }
  return out;
}

/** An IPv4 CIDR ("10.0.0.0/24", or an address alone for /32) as a predicate; throws on anything else. */
export function parseCidr(cidr: string): (ip: string) => boolean {
  const s = parseSubnet(cidr);
  if (!s) throw new Error(`not an IPv4 CIDR: ${cidr}`);
  return (ip) => inSubnet(ip, s);
}

export interface RequesterOptions {
  /** Trust requests from 127.0.0.0/8 and ::1 (default true; tests turn it off). */
  readonly trustLoopback?: boolean;
  /** IPv4 CIDRs whose requesters get any MAC's token. */
  readonly trusted?: readonly string[];
}

export interface RequesterServices {
  /** The neighbour table's text (default: read /proc/net/arp). */
  readonly readArp?: () => Promise<string>;
  /** The IP leased to `mac` (full DHCP mode), if any. */
  readonly leaseIp?: (mac: string) => string | undefined;
}

/** Decides whether a requester's source IP belongs to the MAC it asks about. */
export class RequesterCheck {
  readonly #trustLoopback: boolean;
  readonly #trusted: ((ip: string) => boolean)[];
  readonly #readArp: () => Promise<string>;
  readonly #leaseIp: (mac: string) => string | undefined;

  constructor(options: RequesterOptions = {}, services: RequesterServices = {}) {
    this.#trustLoopback = options.trustLoopback ?? true;
    this.#trusted = (options.trusted ?? []).map(parseCidr);
    this.#readArp = services.readArp ?? (() => readFile('/proc/net/arp', 'utf8'));
    this.#leaseIp = services.leaseIp ?? (() => undefined);
  }

  /** How `ip` is tied to `mac`, or undefined when it is not (then it gets no token). */
  async tie(ip: string, mac: string): Promise<TieReason | undefined> {
    if (this.#trustLoopback && (ip === '::1' || /^127\./.test(ip))) return 'loopback';
    if (this.#trusted.some((t) => t(ip))) return 'trusted';
    let table: Map<string, string> | undefined;
    try {
      table = parseProcNetArp(await this.#readArp());
    } catch {
      // No neighbour table (not Linux, no /proc): only a lease can tie.
    }
    const seen = table?.get(ip);
    // A lease is the MAC's only while the link layer does not say otherwise:
    // anyone can ask DHCP with another machine's MAC and use the address it
    // gets, but their frames carry their own MAC (unless they change it).
    if (this.#leaseIp(mac) === ip && (seen === undefined || seen === mac)) return 'lease';
    return seen === mac ? 'neighbour' : undefined;
  }
}
