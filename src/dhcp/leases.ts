/**
 * The lease table of the full-mode DHCP server: which MAC holds which
 * address until when, addresses held by pending offers, addresses clients
 * declined, and the leases file that lets a restarted server hand every
 * client its old address.
 *
 * Leases are keyed by MAC (chaddr), not by client identifier (option 61):
 * one lab machine asks DHCP as PXE ROM, as iPXE and as the phase-1 Linux,
 * each with a different client identifier or none, and must keep one
 * address through the whole chain.
 *
 * Persistence is synchronous and atomic (write a temporary file, fsync,
 * rename) and happens before the DHCPACK leaves, as RFC 2131 §4.3.1 asks
 * ("the server MUST ... commit the binding to persistent storage" before
 * replying); a crash after that point loses nothing. The file is small
 * (a lab, not an ISP), so writing it whole each time is cheap.
 */

import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';

import { BootTorrentError } from '../errors.js';
import { intToIp, ipToInt, normalizeMac } from './codec.js';

/** One binding. `expires` is a millisecond timestamp; an expired lease stays as history. */
export interface Lease {
  mac: string;
  ip: string;
  expires: number;
  hostname?: string;
}

export interface LeaseTableOptions {
  rangeStart: string;
  rangeEnd: string;
  /** MAC -> address; reserved addresses go to no other MAC, even outside the range. */
  reservations?: ReadonlyMap<string, string>;
  /** Addresses never handed out (the server's own). */
  exclude?: readonly string[];
  /** Leases file; without one the table lives in memory only. */
  file?: string;
  /** How long an OFFERed address stays held for its client (default 60 s). */
  offerHoldMs?: number;
  /** How long a DECLINEd address stays out of use (default 10 min). */
  declineHoldMs?: number;
  now?: () => number;
}

interface LeaseFile {
  version: 1;
  leases: { mac: string; ip: string; expires: string; hostname?: string }[];
  declined: { ip: string; until: string }[];
}

export class LeaseTable {
  readonly #start: number;
  readonly #end: number;
  readonly #reservations: ReadonlyMap<string, string>;
  readonly #reservedIps: Map<string, string>;
  readonly #exclude: Set<string>;
  readonly #file: string | undefined;
  readonly #offerHoldMs: number;
  readonly #declineHoldMs: number;
  readonly #now: () => number;
  readonly #byMac = new Map<string, Lease>();
  readonly #byIp = new Map<string, string>();
  readonly #held = new Map<string, { ip: string; until: number }>();
  readonly #declined = new Map<string, number>();

  constructor(o: LeaseTableOptions) {
    this.#start = ipToInt(o.rangeStart);
    this.#end = ipToInt(o.rangeEnd);
    this.#reservations = o.reservations ?? new Map();
    this.#reservedIps = new Map([...this.#reservations].map(([mac, ip]) => [ip, mac]));
    this.#exclude = new Set(o.exclude ?? []);
    this.#file = o.file;
    this.#offerHoldMs = o.offerHoldMs ?? 60_000;
    this.#declineHoldMs = o.declineHoldMs ?? 600_000;
    this.#now = o.now ?? Date.now;
  }

  /** Loads the leases file if it exists; a corrupt file is an error, never silently emptied. */
  load(): void {
    if (!this.#file) return;
    let text: string;
    try {
      text = readFileSync(this.#file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw new BootTorrentError(
        'BT_ERR_DHCP_LEASES',
        `cannot read DHCP leases file ${this.#file}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    let data: LeaseFile;
    try {
      data = JSON.parse(text) as LeaseFile;
      if (data.version !== 1 || !Array.isArray(data.leases)) throw new Error('not a version 1 leases file');
    } catch (err) {
      throw new BootTorrentError(
        'BT_ERR_DHCP_LEASES',
        `DHCP leases file ${this.#file} is not valid (${(err as Error).message}); fix or move it away to start with no leases`,
        { cause: err },
      );
    }
    for (const l of data.leases) {
      const mac = normalizeMac(String(l.mac));
      const expires = Date.parse(l.expires);
      if (!mac || typeof l.ip !== 'string' || Number.isNaN(expires)) continue;
      this.#put({ mac, ip: l.ip, expires, ...(l.hostname ? { hostname: l.hostname } : {}) });
    }
    for (const d of data.declined ?? []) {
      const until = Date.parse(d.until);
      if (!Number.isNaN(until) && until > this.#now()) this.#declined.set(d.ip, until);
    }
  }

  /** Every recorded lease, active or expired. */
  all(): Lease[] {
    return [...this.#byMac.values()].map((l) => ({ ...l }));
  }

  leaseOf(mac: string): Lease | undefined {
    const l = this.#byMac.get(mac);
    return l ? { ...l } : undefined;
  }

  reservationOf(mac: string): string | undefined {
    return this.#reservations.get(mac);
  }

  inRange(ip: string): boolean {
    const n = ipToInt(ip);
    return n >= this.#start && n <= this.#end;
  }

  /**
   * May `ip` be bound to `mac` now? Only addresses in the range or reserved
   * for this MAC, not reserved for another, not declined, not held by
   * another client's active lease or pending offer.
   */
  canAssign(mac: string, ip: string): boolean {
    const now = this.#now();
    if (this.#exclude.has(ip)) return false;
    const reservedFor = this.#reservedIps.get(ip);
    if (reservedFor !== undefined && reservedFor !== mac) return false;
    const own = this.#reservations.get(mac);
    if (own !== undefined && own !== ip) return false;
    if (reservedFor === undefined && !this.inRange(ip)) return false;
    if ((this.#declined.get(ip) ?? 0) > now) return false;
    const holder = this.#byIp.get(ip);
    if (holder !== undefined && holder !== mac && (this.#byMac.get(holder)?.expires ?? 0) > now) return false;
    for (const [m, h] of this.#held) if (m !== mac && h.ip === ip && h.until > now) return false;
    return true;
  }

  /**
   * The address to offer `mac`: its reservation, else its previous address,
   * else the requested one, else a never-used address, else the one whose
   * lease expired longest ago. Never-used addresses go first so that a
   * client coming back after its lease ran out still finds its old one.
   */
  pick(mac: string, requested?: string): string | undefined {
    const reserved = this.#reservations.get(mac);
    if (reserved !== undefined) return this.canAssign(mac, reserved) ? reserved : undefined;
    const held = this.#held.get(mac);
    if (held && this.canAssign(mac, held.ip)) return held.ip;
    const prev = this.#byMac.get(mac);
    if (prev && this.canAssign(mac, prev.ip)) return prev.ip;
    if (requested !== undefined && this.canAssign(mac, requested)) return requested;
    let oldest: { ip: string; expires: number } | undefined;
    for (let n = this.#start; n <= this.#end; n++) {
      const ip = intToIp(n);
      if (!this.canAssign(mac, ip)) continue;
      const holder = this.#byIp.get(ip);
      if (holder === undefined) return ip;
      const expires = this.#byMac.get(holder)?.expires ?? 0;
      if (!oldest || expires < oldest.expires) oldest = { ip, expires };
    }
    return oldest?.ip;
  }

  /** Holds `ip` for `mac` while an OFFER is outstanding (not persisted). */
  hold(mac: string, ip: string): void {
    this.#held.set(mac, { ip, until: this.#now() + this.#offerHoldMs });
  }

  /** The client chose another server (RFC 2131 §4.3.2, SELECTING): drop its hold. */
  unhold(mac: string): void {
    this.#held.delete(mac);
  }

  heldFor(mac: string): string | undefined {
    const h = this.#held.get(mac);
    return h && h.until > this.#now() ? h.ip : undefined;
  }

  /** Binds and persists before returning, so the ACK can go out. */
  bind(mac: string, ip: string, seconds: number, hostname?: string): Lease {
    this.#held.delete(mac);
    const lease: Lease = {
      mac,
      ip,
      expires: this.#now() + seconds * 1000,
      ...(hostname ? { hostname } : {}),
    };
    this.#put(lease);
    this.flush();
    return { ...lease };
  }

  /** DHCPRELEASE: the lease ends now; the record stays, so the MAC gets this address again. */
  release(mac: string, ip: string): boolean {
    const l = this.#byMac.get(mac);
    if (!l || l.ip !== ip) return false;
    l.expires = Math.min(l.expires, this.#now());
    this.flush();
    return true;
  }

  /** DHCPDECLINE: someone else uses `ip`; keep it out of use for a while and forget the binding. */
  decline(mac: string, ip: string): void {
    this.#declined.set(ip, this.#now() + this.#declineHoldMs);
    this.#held.delete(mac);
    const l = this.#byMac.get(mac);
    if (l && l.ip === ip) {
      this.#byMac.delete(mac);
      this.#byIp.delete(ip);
    }
    this.flush();
  }

  /** Writes the leases file atomically (temporary file, fsync, rename). */
  flush(): void {
    if (!this.#file) return;
    const now = this.#now();
    const data: LeaseFile = {
      version: 1,
      leases: [...this.#byMac.values()]
        .sort((a, b) => ipToInt(a.ip) - ipToInt(b.ip))
        .map((l) => ({
          mac: l.mac,
          ip: l.ip,
          expires: new Date(l.expires).toISOString(),
          ...(l.hostname ? { hostname: l.hostname } : {}),
        })),
      declined: [...this.#declined]
        .filter(([, until]) => until > now)
        .map(([ip, until]) => ({ ip, until: new Date(until).toISOString() })),
    };
    const tmp = join(dirname(this.#file), `.${basename(this.#file)}.${process.pid}.tmp`);
    try {
      const fd = openSync(tmp, 'w', 0o644);
      try {
        writeSync(fd, `${JSON.stringify(data, null, 2)}\n`);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, this.#file);
    } catch (err) {
      throw new BootTorrentError(
        'BT_ERR_DHCP_LEASES',
        `cannot write DHCP leases file ${this.#file}: ${(err as Error).message}; check that its folder exists and is writable`,
        { cause: err },
      );
    }
  }

  #put(lease: Lease): void {
    const old = this.#byMac.get(lease.mac);
    if (old) this.#byIp.delete(old.ip);
    const prevHolder = this.#byIp.get(lease.ip);
    if (prevHolder !== undefined && prevHolder !== lease.mac) this.#byMac.delete(prevHolder);
    this.#byMac.set(lease.mac, lease);
    this.#byIp.set(lease.ip, lease.mac);
  }
}
