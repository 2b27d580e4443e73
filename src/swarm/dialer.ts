/**
 * Whom a torrent dials next: the candidate addresses learned from trackers,
 * LSD, PEX and the user, their backoff after failures, bans, and the limits
 * that keep peer-supplied addresses from costing us CPU, memory or dials
 * (issue #14 item 4). A pure policy class (STYLE.md lesson 7): it opens no
 * sockets; the session asks it what to dial and reports how dials went.
 *
 * Addresses from PEX are chosen by a remote peer, so they are trusted least:
 * a PEX address is ignored when the table is full, while one from a
 * tracker, LSD or the user evicts the oldest PEX address instead; and one
 * source peer may hold only so many candidates at once.
 */
import { PEER_LIMITS } from '../limits.js';

/** Where a candidate came from: `pex` carries the address of the peer that sent it. */
export type CandidateSource =
  | { readonly kind: 'tracker' }
  | { readonly kind: 'lsd' }
  | { readonly kind: 'user' }
  | { readonly kind: 'pex'; readonly from: string };

export interface DialCandidate {
  readonly address: string;
  readonly ip: string;
  readonly port: number;
  /** Failed dials (or connections that closed before the handshake) in a row. */
  failures: number;
  /** No dial before this time (ms on the dialer's clock). */
  nextTry: number;
  /**
   * Heard through LSD: a seed dials these too, since such a peer learns of
   * us only at our next LSD announce (BEP 14: at most one a minute).
   */
  readonly local: boolean;
  /** The source peer's address for PEX candidates (counted against its quota). */
  readonly pexFrom: string | undefined;
}

export interface DialerOptions {
  /** Candidates held at once, all sources together (default PEER_LIMITS.maxCandidates). */
  maxCandidates?: number;
  /** Candidates one PEX source peer may have in the table at once (default PEER_LIMITS.maxCandidatesPerPeer). */
  maxCandidatesPerPeer?: number;
  /** Dials in progress at once (default PEER_LIMITS.maxConcurrentDials). */
  maxConcurrentDials?: number;
  /** Dials started per second, as a bucket of this size refilled at this rate (default PEER_LIMITS.maxDialsPerSecond). */
  maxDialsPerSecond?: number;
  /** Failed dials after which a PEX candidate is forgotten (default PEER_LIMITS.maxPexDialFailures). */
  maxPexDialFailures?: number;
  /** Clock in ms, for tests (default Date.now). */
  now?: () => number;
}

/** Why add() did not take an address (undefined: taken); `known`: it is a candidate already. */
export type AddRefusal = 'known' | 'invalid' | 'banned' | 'full' | 'source-full';

/** Backoff after `failures` failed dials: 2 s, 4 s, ... up to a minute. */
export function backoffMs(failures: number): number {
  return Math.min(60_000, 1000 * 2 ** failures);
}

export class PeerDialer {
  readonly maxCandidates: number;
  readonly maxCandidatesPerPeer: number;
  readonly maxConcurrentDials: number;
  readonly maxDialsPerSecond: number;
  readonly maxPexDialFailures: number;
  readonly #now: () => number;
  /** By "ip:port"; Map order is insertion order. */
  readonly #candidates = new Map<string, DialCandidate>();
  /** The PEX candidates, oldest first: what a trusted address evicts. */
  readonly #pex = new Set<string>();
  /** Candidates held per PEX source peer. */
  readonly #perSource = new Map<string, number>();
  readonly #dialing = new Set<string>();
  /** Banned peers, by listen address ("ip:port") and by peer id (hex). */
  readonly #banned = new Set<string>();
  #tokens: number;
  #refilledAt: number;
  /** Dials handed out by next(), ever. */
  started = 0;

  constructor(options: DialerOptions = {}) {
    this.maxCandidates = options.maxCandidates ?? PEER_LIMITS.maxCandidates;
    this.maxCandidatesPerPeer = options.maxCandidatesPerPeer ?? PEER_LIMITS.maxCandidatesPerPeer;
    this.maxConcurrentDials = options.maxConcurrentDials ?? PEER_LIMITS.maxConcurrentDials;
    this.maxDialsPerSecond = options.maxDialsPerSecond ?? PEER_LIMITS.maxDialsPerSecond;
    this.maxPexDialFailures = options.maxPexDialFailures ?? PEER_LIMITS.maxPexDialFailures;
    this.#now = options.now ?? Date.now;
    this.#tokens = this.maxDialsPerSecond;
    this.#refilledAt = this.#now();
  }

  /** Candidates held. */
  get size(): number {
    return this.#candidates.size;
  }

  /** Dials in progress. */
  get dialing(): number {
    return this.#dialing.size;
  }

  has(address: string): boolean {
    return this.#candidates.has(address);
  }

  get(address: string): DialCandidate | undefined {
    return this.#candidates.get(address);
  }

  isBanned(key: string): boolean {
    return this.#banned.has(key);
  }

  isDialing(address: string): boolean {
    return this.#dialing.has(address);
  }

  /** Bans an address or peer id for good, and forgets it as a candidate. */
  ban(key: string): void {
    this.#banned.add(key);
    this.remove(key);
  }

  /**
   * Adds a candidate; O(1). A known address keeps its state. Returns why it
   * was not added, if it was not, so the caller can count drops.
   */
  add(ip: string, port: number, source: CandidateSource): AddRefusal | undefined {
    if (!Number.isInteger(port) || port <= 0 || port > 65535 || ip === '') return 'invalid';
    const address = `${ip}:${port}`;
    if (this.#banned.has(address)) return 'banned';
    if (this.#candidates.has(address)) return 'known';
    const pexFrom = source.kind === 'pex' ? source.from : undefined;
    if (pexFrom !== undefined && (this.#perSource.get(pexFrom) ?? 0) >= this.maxCandidatesPerPeer) {
      return 'source-full';
    }
    if (this.#candidates.size >= this.maxCandidates) {
      // Only an address we did not get from a peer may push out one we did.
      const oldest = pexFrom === undefined ? this.#oldestIdlePex() : undefined;
      if (oldest === undefined) return 'full';
      this.remove(oldest);
    }
    this.#candidates.set(address, {
      address,
      ip,
      port,
      failures: 0,
      nextTry: 0,
      local: source.kind === 'lsd',
      pexFrom,
    });
    if (pexFrom !== undefined) {
      this.#pex.add(address);
      this.#perSource.set(pexFrom, (this.#perSource.get(pexFrom) ?? 0) + 1);
    }
    return undefined;
  }

  /**
   * Keeps a peer that closed as a candidate, so a restart of it finds us
   * again; it is dialed after a short wait. Taken even when the table is
   * full of PEX addresses (it evicts one): we knew this peer for real.
   */
  keep(ip: string, port: number): void {
    const address = `${ip}:${port}`;
    if (this.#banned.has(address)) return;
    this.remove(address);
    if (this.#candidates.size >= this.maxCandidates) {
      const oldest = this.#oldestIdlePex();
      if (oldest === undefined) return;
      this.remove(oldest);
    }
    this.#candidates.set(address, {
      address,
      ip,
      port,
      failures: 1,
      nextTry: this.#now() + 2000,
      local: false,
      pexFrom: undefined,
    });
  }

  /** Forgets a candidate (connected, banned, or given up). */
  remove(address: string): void {
    const c = this.#candidates.get(address);
    if (!c) return;
    this.#candidates.delete(address);
    if (c.pexFrom !== undefined) {
      this.#pex.delete(address);
      const n = (this.#perSource.get(c.pexFrom) ?? 1) - 1;
      if (n <= 0) this.#perSource.delete(c.pexFrom);
      else this.#perSource.set(c.pexFrom, n);
    }
  }

  /** Some candidate could be dialed now if a slot were free (not dialing, backoff over, not connected). */
  hasDue(connected: (address: string) => boolean): boolean {
    const now = this.#now();
    for (const c of this.#candidates.values()) if (this.#due(c, now, connected)) return true;
    return false;
  }

  /** Not being dialed, backoff over, not connected. */
  #due(c: DialCandidate, now: number, connected: (address: string) => boolean): boolean {
    return !this.#dialing.has(c.address) && c.nextTry <= now && !connected(c.address);
  }

  /**
   * The candidates to dial now, marked as dialing: due (backoff over), not
   * connected, within `slots` (free connection slots), the concurrent-dial
   * limit and the dial rate. A seed dials only LSD candidates.
   */
  next(slots: number, opts: { seeding: boolean; connected: (address: string) => boolean }): DialCandidate[] {
    this.#refill();
    const now = this.#now();
    const out: DialCandidate[] = [];
    let room = Math.min(slots - this.#dialing.size, this.maxConcurrentDials - this.#dialing.size);
    for (const c of this.#candidates.values()) {
      if (room <= 0 || this.#tokens < 1) break;
      if (opts.seeding && !c.local) continue;
      if (!this.#due(c, now, opts.connected)) continue;
      this.#dialing.add(c.address);
      this.#tokens--;
      this.started++;
      room--;
      out.push(c);
    }
    return out;
  }

  /** A dial ended (connected, failed or abandoned); frees its slot. */
  dialEnded(address: string): void {
    this.#dialing.delete(address);
  }

  /** A dial failed, or its connection closed before the handshake: back off, or forget a PEX address. */
  failed(address: string): void {
    this.#dialing.delete(address);
    const c = this.#candidates.get(address);
    if (!c) return;
    c.failures++;
    if (c.pexFrom !== undefined && c.failures >= this.maxPexDialFailures) {
      this.remove(address);
      return;
    }
    c.nextTry = this.#now() + backoffMs(c.failures);
  }

  /** The oldest PEX candidate not being dialed, if any. */
  #oldestIdlePex(): string | undefined {
    for (const a of this.#pex) if (!this.#dialing.has(a)) return a;
    return undefined;
  }

  #refill(): void {
    const now = this.#now();
    const elapsed = Math.max(0, now - this.#refilledAt);
    this.#refilledAt = now;
    this.#tokens = Math.min(this.maxDialsPerSecond, this.#tokens + (elapsed * this.maxDialsPerSecond) / 1000);
  }
}
