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
 * Every piece of state is bounded by the pool: an offer or a decline
 * reserves one pool address, and a lease record for an address is replaced
 * when the address goes to another MAC. Offers and declines expire and are
 * pruned oldest first (their maps are in expiry order: the hold time is a
 * constant), so no lookup walks them.
 *
 * Persistence is asynchronous and atomic (write a temporary file, fsync,
 * rename), with at most one write in flight; changes made meanwhile share
 * the next write. A new binding (a MAC gets an address it did not have) is
 * committed before its DHCPACK leaves, as RFC 2131 §4.3.1 asks ("the server
 * MUST ... commit the binding to persistent storage"): bind() returns a
 * promise for that. Renewals, RELEASEs and DECLINEs are written after
 * `writeDelayMs`, so a flood of them costs one write per window, not one
 * per packet; a crash inside that window loses only lease extensions and
 * declines, never which MAC has which address. close() flushes.
 */

import { open, rename } from 'node:fs/promises';
import { isIPv4 } from 'node:net';
import { dirname, basename, join } from 'node:path';

import { BootTorrentError } from '../errors.js';
import { DHCP_LIMITS } from '../limits.js';
import { intToIp, ipToInt, normalizeMac } from '../util/address.js';

/** One binding. `expires` is a millisecond timestamp; an expired lease stays as history. */
export interface Lease {
  mac: string;
  ip: string;
  expires: number;
  hostname?: string;
}

/** A leases-file entry that load() dropped, and why. */
export interface DroppedEntry {
  entry: string;
  why: string;
}

export interface LeaseTableOptions {
  rangeStart: string;
  rangeEnd: string;
  /**
   * Further pools (relayed subnets, #21), indexes 1, 2, ... for pick();
   * the main range is pool 0. A lease is a lease in any pool: a MAC holds
   * one address at a time, wherever it last asked from.
   */
  pools?: readonly { rangeStart: string; rangeEnd: string }[];
  /** MAC -> address; reserved addresses go to no other MAC, even outside the range. */
  reservations?: ReadonlyMap<string, string>;
  /** Addresses never handed out (the server's own). */
  exclude?: readonly string[];
  /** Leases file; without one the table lives in memory only. */
  file?: string;
  /** How long an OFFERed address stays held for its client (default DHCP_LIMITS.offerHoldMs). */
  offerHoldMs?: number;
  /** How long a DECLINEd address stays out of use (default DHCP_LIMITS.declinedHoldMs). */
  declineHoldMs?: number;
  /** Delay before a write that needs no immediate commit (default DHCP_LIMITS.leasesWriteDelayMs). */
  writeDelayMs?: number;
  /** Called when a background write fails (the state stays dirty; the next change or close retries). */
  onWriteError?: (err: BootTorrentError) => void;
  now?: () => number;
}

interface LeaseFile {
  version: 1;
  leases: { mac: string; ip: string; expires: string; hostname?: string }[];
  declined: { ip: string; until: string }[];
}

/** A lease plus the change generation at which its MAC got this address. */
interface Binding extends Lease {
  gen: number;
}

interface Waiter {
  gen: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

/** One range of addresses; `cursor` is where the next search for a never-used address starts. */
interface Pool {
  start: number;
  end: number;
  cursor: number;
}

export class LeaseTable {
  readonly #pools: Pool[];
  readonly #reservations: ReadonlyMap<string, string>;
  readonly #reservedIps: Map<string, string>;
  readonly #exclude: Set<string>;
  readonly #file: string | undefined;
  readonly #offerHoldMs: number;
  readonly #declineHoldMs: number;
  readonly #writeDelayMs: number;
  readonly #onWriteError: (err: BootTorrentError) => void;
  readonly #now: () => number;
  readonly #byMac = new Map<string, Binding>();
  readonly #byIp = new Map<string, string>();
  /** Outstanding offers: MAC -> address, oldest first. */
  readonly #held = new Map<string, { ip: string; until: number }>();
  /** Address -> MAC of the offer holding it. */
  readonly #heldIps = new Map<string, string>();
  /** Declined address -> until, oldest first. */
  readonly #declined = new Map<string, number>();
  // Persistence: every change bumps #gen; a write saves the state as of one generation.
  #gen = 0;
  #savedGen = 0;
  #writing: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #waiters: Waiter[] = [];
  #writes = 0;

  constructor(o: LeaseTableOptions) {
    this.#pools = [{ rangeStart: o.rangeStart, rangeEnd: o.rangeEnd }, ...(o.pools ?? [])].map((r) => {
      const start = ipToInt(r.rangeStart);
      return { start, end: ipToInt(r.rangeEnd), cursor: start };
    });
    this.#reservations = o.reservations ?? new Map();
    this.#reservedIps = new Map([...this.#reservations].map(([mac, ip]) => [ip, mac]));
    this.#exclude = new Set(o.exclude ?? []);
    this.#file = o.file;
    this.#offerHoldMs = o.offerHoldMs ?? DHCP_LIMITS.offerHoldMs;
    this.#declineHoldMs = o.declineHoldMs ?? DHCP_LIMITS.declinedHoldMs;
    this.#writeDelayMs = o.writeDelayMs ?? DHCP_LIMITS.leasesWriteDelayMs;
    this.#onWriteError = o.onWriteError ?? ((): void => undefined);
    this.#now = o.now ?? Date.now;
  }

  /**
   * Loads the leases file if it exists. A file that is not a leases file at
   * all is an error, never silently emptied; a bad entry in a good file is
   * dropped and returned, so the room still boots and the caller can say
   * which entry went (issue #14 item 10: one bad `ip` used to make every
   * later write, and so every ACK, throw).
   */
  async load(): Promise<DroppedEntry[]> {
    if (!this.#file) return [];
    let text: string;
    try {
      const fh = await open(this.#file, 'r');
      try {
        text = await fh.readFile('utf8');
      } finally {
        await fh.close();
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new BootTorrentError(
        'BT_ERR_DHCP_LEASES',
        `cannot read DHCP leases file ${this.#file}: ${(err as Error).message}`,
        { cause: err },
      );
    }
    let data: LeaseFile;
    try {
      data = JSON.parse(text) as LeaseFile;
      if (typeof data !== 'object' || data === null || data.version !== 1 || !Array.isArray(data.leases))
        throw new Error('not a version 1 leases file');
      if (data.declined !== undefined && !Array.isArray(data.declined))
        throw new Error('"declined" is not a list');
    } catch (err) {
      throw new BootTorrentError(
        'BT_ERR_DHCP_LEASES',
        `DHCP leases file ${this.#file} is not valid (${(err as Error).message}); fix or move it away to start with no leases`,
        { cause: err },
      );
    }
    const dropped: DroppedEntry[] = [];
    const drop = (e: unknown, why: string): void => {
      dropped.push({ entry: JSON.stringify(e) ?? String(e), why });
    };
    for (const l of data.leases as unknown[]) {
      const e = l as { mac?: unknown; ip?: unknown; expires?: unknown; hostname?: unknown } | null;
      if (typeof e !== 'object' || e === null) {
        drop(l, 'not an object');
        continue;
      }
      const mac = typeof e.mac === 'string' ? normalizeMac(e.mac) : undefined;
      if (!mac) {
        drop(l, 'mac is not a MAC address');
        continue;
      }
      if (typeof e.ip !== 'string' || !isIPv4(e.ip)) {
        drop(l, 'ip is not a dotted IPv4 address');
        continue;
      }
      if (!this.#inPool(mac, e.ip)) {
        drop(l, `ip is not in the pool (${this.#rangesText()} or this MAC's reservation)`);
        continue;
      }
      const expires = timestamp(e.expires);
      if (expires === undefined) {
        drop(l, 'expires is not a date');
        continue;
      }
      const holder = this.#byIp.get(e.ip);
      if (holder !== undefined && holder !== mac)
        drop(this.#byMac.get(holder), `${e.ip} is listed again later`);
      const hostname = typeof e.hostname === 'string' && e.hostname !== '' ? { hostname: e.hostname } : {};
      this.#put({ mac, ip: e.ip, expires, gen: 0, ...hostname });
    }
    const now = this.#now();
    for (const d of (data.declined ?? []) as unknown[]) {
      const e = d as { ip?: unknown; until?: unknown } | null;
      const until = timestamp(e?.until);
      if (
        typeof e?.ip !== 'string' ||
        !isIPv4(e.ip) ||
        !this.#inPool(undefined, e.ip) ||
        until === undefined
      ) {
        drop(d, 'not a pool address with an until date');
        continue;
      }
      if (until > now) this.#declined.set(e.ip, Math.min(until, now + this.#declineHoldMs));
    }
    return dropped;
  }

  /** Every recorded lease, active or expired. */
  all(): Lease[] {
    return [...this.#byMac.values()].map(toLease);
  }

  leaseOf(mac: string): Lease | undefined {
    const l = this.#byMac.get(mac);
    return l ? toLease(l) : undefined;
  }

  reservationOf(mac: string): string | undefined {
    return this.#reservations.get(mac);
  }

  /** Is `ip` in any pool's range? */
  inRange(ip: string): boolean {
    const n = ipToInt(ip);
    return this.#pools.some((p) => n >= p.start && n <= p.end);
  }

  #rangesText(): string {
    return this.#pools.map((p) => `${intToIp(p.start)}-${intToIp(p.end)}`).join(', ');
  }

  /** Sizes of the state a client can grow, for status and tests. */
  stats(): { leases: number; offers: number; declined: number; writes: number } {
    this.prune();
    return {
      leases: this.#byMac.size,
      offers: this.#held.size,
      declined: this.#declined.size,
      writes: this.#writes,
    };
  }

  /** Drops lapsed offers and declines; both maps are in expiry order, so this stops at the first live one. */
  prune(): void {
    const now = this.#now();
    for (const [mac, h] of this.#held) {
      if (h.until > now) break;
      this.#dropHold(mac);
    }
    for (const [ip, until] of this.#declined) {
      if (until > now) break;
      this.#declined.delete(ip);
    }
  }

  /**
   * May `ip` be bound to `mac` now? Only addresses in the range or reserved
   * for this MAC, not reserved for another, not declined, not held by
   * another client's active lease or pending offer.
   */
  canAssign(mac: string, ip: string): boolean {
    if ((this.#declined.get(ip) ?? 0) > this.#now()) return false;
    if (!this.#assignableIgnoringOffers(mac, ip)) return false;
    const offeredTo = this.#heldIps.get(ip);
    return (
      offeredTo === undefined || offeredTo === mac || (this.#held.get(offeredTo)?.until ?? 0) <= this.#now()
    );
  }

  /** canAssign without the offer and decline checks. */
  #assignableIgnoringOffers(mac: string, ip: string): boolean {
    const now = this.#now();
    if (this.#exclude.has(ip)) return false;
    const reservedFor = this.#reservedIps.get(ip);
    if (reservedFor !== undefined && reservedFor !== mac) return false;
    const own = this.#reservations.get(mac);
    if (own !== undefined && own !== ip) return false;
    if (reservedFor === undefined && !this.inRange(ip)) return false;
    const holder = this.#byIp.get(ip);
    if (holder !== undefined && holder !== mac && (this.#byMac.get(holder)?.expires ?? 0) > now) return false;
    return true;
  }

  /**
   * The address to offer `mac`: its reservation, else its previous address,
   * else the requested one, else a never-used address, else the one whose
   * lease expired longest ago, else (the pool is full of offers) the address
   * of the oldest offer nobody requested (made-up MACs that DISCOVER and
   * never REQUEST must not lock honest clients out until their offers lapse),
   * else the address declined longest ago.
   * Never-used addresses go first so that a client coming back after its
   * lease ran out still finds its old one.
   *
   * Everything but the reservation comes from pool `poolIndex` (0: the main
   * range): a client that moved to another subnet gets an address there,
   * not its old one. A reservation is returned wherever it lies; the caller
   * checks it belongs to the client's subnet.
   */
  pick(mac: string, requested?: string, poolIndex = 0): string | undefined {
    this.prune();
    const reserved = this.#reservations.get(mac);
    if (reserved !== undefined) return this.canAssign(mac, reserved) ? reserved : undefined;
    const pool = this.#pools[poolIndex];
    if (!pool) return undefined;
    const here = (ip: string): boolean => {
      const n = ipToInt(ip);
      return n >= pool.start && n <= pool.end;
    };
    const held = this.#held.get(mac);
    if (held && here(held.ip) && this.canAssign(mac, held.ip)) return held.ip;
    const prev = this.#byMac.get(mac);
    if (prev && here(prev.ip) && this.canAssign(mac, prev.ip)) return prev.ip;
    if (requested !== undefined && isIPv4(requested) && here(requested) && this.canAssign(mac, requested))
      return requested;
    // The scan starts after the last address picked, so a run of new clients
    // costs O(1) each instead of walking past every address handed out.
    const size = pool.end - pool.start + 1;
    let oldest: { ip: string; expires: number } | undefined;
    for (let i = 0; i < size; i++) {
      const n = pool.start + ((pool.cursor - pool.start + i) % size);
      const ip = intToIp(n);
      if (!this.canAssign(mac, ip)) continue;
      const holder = this.#byIp.get(ip);
      if (holder === undefined) {
        pool.cursor = n + 1 > pool.end ? pool.start : n + 1;
        return ip;
      }
      const expires = this.#byMac.get(holder)?.expires ?? 0;
      if (!oldest || expires < oldest.expires) oldest = { ip, expires };
    }
    if (oldest) return oldest.ip;
    for (const [other, h] of this.#held) {
      if (
        other !== mac &&
        here(h.ip) &&
        !this.#declined.has(h.ip) &&
        this.#assignableIgnoringOffers(mac, h.ip)
      ) {
        this.#dropHold(other);
        return h.ip;
      }
    }
    // Nothing left but declined addresses: a decline is a hint, not a claim,
    // or clients declining address after address could empty the pool for
    // declinedHoldMs. The one declined longest ago goes back; a client that
    // finds it still in use declines it again (RFC 2131 §4.4.1).
    for (const ip of this.#declined.keys()) {
      const offeredTo = this.#heldIps.get(ip);
      if (
        here(ip) &&
        (offeredTo === undefined || offeredTo === mac) &&
        this.#assignableIgnoringOffers(mac, ip)
      ) {
        this.#declined.delete(ip);
        this.#changed();
        return ip;
      }
    }
    return undefined;
  }

  /** Holds `ip` for `mac` while an OFFER is outstanding (not persisted). */
  hold(mac: string, ip: string): void {
    this.#dropHold(mac);
    const other = this.#heldIps.get(ip);
    if (other !== undefined) this.#dropHold(other);
    // Re-inserted at the end: the map stays in expiry order.
    this.#held.set(mac, { ip, until: this.#now() + this.#offerHoldMs });
    this.#heldIps.set(ip, mac);
  }

  /** The client chose another server (RFC 2131 §4.3.2, SELECTING): drop its hold. */
  unhold(mac: string): void {
    this.#dropHold(mac);
  }

  heldFor(mac: string): string | undefined {
    const h = this.#held.get(mac);
    return h && h.until > this.#now() ? h.ip : undefined;
  }

  #dropHold(mac: string): void {
    const h = this.#held.get(mac);
    if (!h) return;
    this.#held.delete(mac);
    if (this.#heldIps.get(h.ip) === mac) this.#heldIps.delete(h.ip);
  }

  /**
   * Binds `ip` to `mac`. The promise resolves once the MAC-to-address
   * binding is on disk (at once when only the expiry changed and the
   * binding was already written), so the ACK waits for it; it rejects with
   * BT_ERR_DHCP_LEASES if the write fails.
   */
  bind(
    mac: string,
    ip: string,
    seconds: number,
    hostname?: string,
  ): { lease: Lease; persisted: Promise<void> } {
    this.#dropHold(mac);
    const prev = this.#byMac.get(mac);
    const gen = ++this.#gen;
    const rec: Binding = {
      mac,
      ip,
      expires: this.#now() + seconds * 1000,
      ...(hostname ? { hostname } : {}),
      gen: prev && prev.ip === ip ? prev.gen : gen,
    };
    this.#put(rec);
    const persisted = this.#persistedThrough(rec.gen);
    // The expiry (and hostname) ride along with the next write.
    this.#kick(this.#writeDelayMs);
    return { lease: toLease(rec), persisted };
  }

  /**
   * RFC 2131 §4.3.3/§4.3.4: only the client that holds `ip` (by lease or
   * pending offer) may DECLINE or RELEASE it, and only pool addresses can be
   * declined; anyone else would take a neighbour's address away.
   */
  holds(mac: string, ip: string): boolean {
    return this.#byMac.get(mac)?.ip === ip || this.heldFor(mac) === ip;
  }

  /** DHCPRELEASE: the lease ends now; the record stays, so the MAC gets this address again. */
  release(mac: string, ip: string): boolean {
    const l = this.#byMac.get(mac);
    if (!l || l.ip !== ip) return false;
    l.expires = Math.min(l.expires, this.#now());
    this.#changed();
    return true;
  }

  /**
   * DHCPDECLINE: someone else uses `ip`; keep it out of use for a while and
   * forget the binding. Refused (false) unless `mac` holds `ip` and `ip` is
   * a pool address, which also bounds the declined list by the pool size.
   */
  decline(mac: string, ip: string): boolean {
    if (!isIPv4(ip) || !this.holds(mac, ip) || !this.#inPool(mac, ip)) return false;
    this.prune();
    this.#declined.delete(ip);
    this.#declined.set(ip, this.#now() + this.#declineHoldMs);
    this.#dropHold(mac);
    const l = this.#byMac.get(mac);
    if (l && l.ip === ip) {
      this.#byMac.delete(mac);
      this.#byIp.delete(ip);
    }
    this.#changed();
    return true;
  }

  /** Writes any unsaved change now and waits for it; for close(). */
  async flush(): Promise<void> {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    while (this.#writing) await this.#writing.catch(() => undefined);
    if (this.#file && this.#gen > this.#savedGen) {
      const done = this.#persistedThrough(this.#gen);
      await done;
    }
  }

  #inPool(mac: string | undefined, ip: string): boolean {
    if (this.#exclude.has(ip)) return false;
    const reservedFor = this.#reservedIps.get(ip);
    if (reservedFor !== undefined) return mac === undefined || reservedFor === mac;
    return this.inRange(ip);
  }

  #changed(): void {
    this.#gen++;
    this.#kick(this.#writeDelayMs);
  }

  /** Resolves once a write covering generation `gen` has completed; asks for a write now if needed. */
  #persistedThrough(gen: number): Promise<void> {
    if (!this.#file || this.#savedGen >= gen) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.#waiters.push({ gen, resolve, reject });
      this.#kick(0);
    });
  }

  /** Starts a write after `delayMs` (0: now) unless one is in flight; its completion re-kicks. */
  #kick(delayMs: number): void {
    if (!this.#file || this.#writing) return;
    if (this.#timer) {
      if (delayMs > 0) return;
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    if (delayMs > 0) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#startWrite();
      }, delayMs);
      this.#timer.unref();
      return;
    }
    this.#startWrite();
  }

  #startWrite(): void {
    const file = this.#file;
    if (!file || this.#writing || this.#gen <= this.#savedGen) return;
    const gen = this.#gen;
    const text = this.#serialize();
    this.#writing = atomicWrite(file, text).then(
      () => {
        this.#writes++;
        this.#savedGen = Math.max(this.#savedGen, gen);
        this.#settle(gen, undefined);
      },
      (err: unknown) => {
        const e = new BootTorrentError(
          'BT_ERR_DHCP_LEASES',
          `cannot write DHCP leases file ${file}: ${(err as Error).message}; check that its folder exists and is writable`,
          { cause: err },
        );
        this.#settle(gen, e);
        this.#onWriteError(e);
      },
    );
    void this.#writing.finally(() => {
      this.#writing = undefined;
      // Changes made during the write: the next one, sooner if an ACK waits for it.
      if (this.#gen > gen) this.#kick(this.#waiters.length > 0 ? 0 : this.#writeDelayMs);
    });
  }

  #settle(gen: number, err: Error | undefined): void {
    const done = this.#waiters.filter((w) => w.gen <= gen);
    this.#waiters = this.#waiters.filter((w) => w.gen > gen);
    for (const w of done) {
      if (err) w.reject(err);
      else w.resolve();
    }
  }

  #serialize(): string {
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
    return `${JSON.stringify(data, null, 2)}\n`;
  }

  #put(lease: Binding): void {
    const old = this.#byMac.get(lease.mac);
    if (old) this.#byIp.delete(old.ip);
    const prevHolder = this.#byIp.get(lease.ip);
    if (prevHolder !== undefined && prevHolder !== lease.mac) this.#byMac.delete(prevHolder);
    this.#byMac.set(lease.mac, lease);
    this.#byIp.set(lease.ip, lease.mac);
  }
}

/** Temporary file, fsync, rename: a crash leaves the old file or the new one, never half of one. */
async function atomicWrite(file: string, text: string): Promise<void> {
  const tmp = join(dirname(file), `.${basename(file)}.${process.pid}.tmp`);
  const fh = await open(tmp, 'w', 0o644);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
}

function timestamp(v: unknown): number | undefined {
  const t = typeof v === 'string' ? Date.parse(v) : typeof v === 'number' ? v : NaN;
  return Number.isFinite(t) ? t : undefined;
}

function toLease(r: Binding): Lease {
  return { mac: r.mac, ip: r.ip, expires: r.expires, ...(r.hostname ? { hostname: r.hostname } : {}) };
}
