/**
 * Where a booting client gets the big part of phase 1 (issue #16 item 2).
 *
 * The server always sends the kernel and a small first-stage initramfs
 * (stage 0); stage 0 then asks the server where to fetch the rest (the
 * payload: Node, the agent, its libraries) and checks it against the
 * SHA-256 on its kernel command line before anything in it runs. Clients
 * whose agent runs serve their payload to later clients, so the server
 * sends a handful of payloads rather than one per client.
 *
 * This class decides, per question, one of:
 * - a peer: a client whose agent said (in a report with its MAC's token)
 *   that it serves phase 1, still in an agent stage, heard from lately, with
 *   a free slot, not this client, not caught serving a wrong payload;
 * - the server, while fewer than `serverSlots` clients fetch from it, or
 *   once a client has waited `maxWaitMs`, or when no peer can come;
 * - "wait and ask again" otherwise: a room that powers on at once would
 *   otherwise fetch every payload from the server in the first seconds.
 *
 * A peer's address is the source address of its reports, never a field a
 * client writes, so nobody can point clients at a host of their choosing.
 * Pure: the clock comes in with each call.
 */
import type { AgentReport } from '../boot-config.js';
import type { PayloadFailure, PayloadProgress, PayloadSource } from '../boot/policy.js';
import { LineBudget } from '../util/drop-log.js';
import type { Logger } from '../util/logger.js';

export interface PhaseOneSourceLimits {
  /** Clients fetching from one peer at once (its link is a client's link). */
  readonly perPeer: number;
  /** Clients fetching the payload from the server at once. */
  readonly serverSlots: number;
  /** A peer not heard from for this long is not offered. */
  readonly freshMs: number;
  /** An assignment holds its slot until the client's agent reports, or this long. */
  readonly holdMs: number;
  /** A client told to wait gets the server after waiting this long in all. */
  readonly maxWaitMs: number;
  /** How long a client waits before asking again. */
  readonly waitMs: number;
  /** A peer that served a wrong payload is not offered again for this long. */
  readonly banMs: number;
  /** A peer a client could not reach is not offered again for this long, even if it reports. */
  readonly goneMs: number;
  /** Peers and waiting clients remembered at most (a MAC flood must not grow them). */
  readonly maxEntries: number;
}

export const PHASE1_SOURCE_LIMITS: PhaseOneSourceLimits = {
  perPeer: 1,
  serverSlots: 4,
  freshMs: 30_000,
  holdMs: 120_000,
  maxWaitMs: 90_000,
  waitMs: 3_000,
  banMs: 600_000,
  goneMs: 60_000,
  maxEntries: 4096,
};

export type SourceAnswer =
  | { readonly kind: 'peer'; readonly url: string; readonly peer: string }
  | { readonly kind: 'server'; readonly url: string }
  | { readonly kind: 'wait'; readonly seconds: number };

interface Peer {
  url: string;
  ip: string;
  lastSeen: number;
  /**
   * Blocks of the payload it holds and serves, verified (a stage 0 still
   * fetching relays what it has checked); undefined: all of it (its agent runs).
   */
  have?: number;
}

interface Assignment {
  /** MAC of the peer, or '' for the server. */
  source: string;
  until: number;
}

export class PhaseOneSources {
  private readonly limits: PhaseOneSourceLimits;
  private readonly peers = new Map<string, Peer>();
  private readonly banned = new Map<string, number>();
  /** Client MAC -> what it was last told to fetch from. */
  private readonly assigned = new Map<string, Assignment>();
  /** Client MAC -> when it was first told to wait (this boot). */
  private readonly waitingSince = new Map<string, number>();

  constructor(
    /** The payload's URL on the server. */
    private readonly serverUrl: string,
    limits: Partial<PhaseOneSourceLimits> = {},
    /** What a peer serves, below its host:port (the payload; the GRUB loader's files are below /phase1/). */
    private readonly peerPath = '/phase1/payload',
  ) {
    this.limits = { ...PHASE1_SOURCE_LIMITS, ...limits };
  }

  /** An agent (MAC, reporting from `ip`) serves its payload on `port`; also ends that client's own fetch. */
  offer(mac: string, ip: string, port: number, now: number): void {
    this.arrived(mac);
    this.add(mac, ip, port, now, undefined);
  }

  /**
   * A stage 0 still fetching (MAC, asking from `ip`) relays the first
   * `have` blocks, each checked against the server's block list, on `port`.
   * Its own fetch goes on.
   */
  offerPartial(mac: string, ip: string, port: number, have: number, now: number): void {
    const known = this.peers.get(mac);
    // An agent's word (all of it) is not undone by a late stage-0 heartbeat.
    if (known && known.have === undefined && now - known.lastSeen <= this.limits.freshMs) return;
    this.add(mac, ip, port, now, have);
  }

  private add(mac: string, ip: string, port: number, now: number, have: number | undefined): void {
    if (this.isBanned(mac, now) || this.isBanned(`ip ${ip}`, now)) return;
    if (!this.peers.has(mac)) {
      if (this.peers.size >= this.limits.maxEntries) return;
      // One machine is one source: made-up MACs from one address do not fill the table.
      let fromIp = 0;
      for (const p of this.peers.values()) if (p.ip === ip) fromIp++;
      if (fromIp >= 2) return;
    }
    const host = ip.includes(':') ? `[${ip}]` : ip;
    this.peers.set(mac, {
      url: `http://${host}:${port}${this.peerPath}`,
      ip,
      lastSeen: now,
      ...(have !== undefined ? { have } : {}),
    });
  }

  /**
   * Client `mac` could not use `url`, the source it was last sent to (the
   * server saw it fall back): as a failure stage 0 reports. Only that
   * client's own source can be named.
   */
  fault(mac: string, url: string, why: PayloadFailure['why'], now: number): void {
    const mine = this.peers.get(this.assigned.get(mac)?.source ?? '');
    if (mine?.url === url) this.failed(url, why, now);
  }

  /** The client's agent is up (any report): its own fetch is over, its slot free. */
  arrived(mac: string): void {
    this.assigned.delete(mac);
    this.waitingSince.delete(mac);
  }

  /** The agent stops serving (it boots its OS, failed, or its machine is gone). */
  withdraw(mac: string): void {
    this.peers.delete(mac);
  }

  /**
   * Where `mac` fetches its payload now. `failed` is the URL it tried last
   * and why: 'gone' (no answer: that peer is withdrawn) or 'bad' (a payload
   * whose SHA-256 did not match: that peer is banned).
   */
  pick(mac: string, now: number, failed?: PayloadFailure, have = 0): SourceAnswer {
    // Only the source this client was sent to can be reported by it: nobody
    // gets an honest peer dropped by naming its URL.
    const mine = this.peers.get(this.assigned.get(mac)?.source ?? '');
    if (failed && mine?.url === failed.url) this.failed(failed.url, failed.why, now);
    // A source that answers but had nothing new for a while is not banned
    // (it may wait on its own source); this client just gets another.
    const skip = failed?.why === 'slow' ? failed.url : undefined;
    this.assigned.delete(mac);
    this.expire(now);
    const load = new Map<string, number>();
    for (const a of this.assigned.values()) load.set(a.source, (load.get(a.source) ?? 0) + 1);
    // An agent (all of it) first, the least loaded; else the stage 0 furthest
    // ahead of this client; never one with nothing this client lacks.
    const rank = (m: string, p: Peer) => (p.have === undefined ? 1e9 : p.have) * 100 - (load.get(m) ?? 0);
    let best: [string, Peer] | undefined;
    for (const [peerMac, p] of this.peers) {
      if (
        peerMac === mac ||
        p.url === skip ||
        this.isBanned(peerMac, now) ||
        this.isBanned(`ip ${p.ip}`, now)
      )
        continue;
      if (now - p.lastSeen > this.limits.freshMs) continue;
      // A stage 0 that has nothing yet still helps a client with nothing if it is fetching itself.
      if (p.have !== undefined && p.have <= have && !(have === 0 && this.assigned.has(peerMac))) continue;
      // Never a ring: a stage 0 whose own source is (through others) this client.
      if (p.have !== undefined && this.feedsFrom(peerMac, mac)) continue;
      const n = load.get(peerMac) ?? 0;
      if (n >= this.limits.perPeer) continue;
      if (!best || rank(peerMac, p) > rank(best[0], best[1])) best = [peerMac, p];
    }
    const since = this.waitingSince.get(mac);
    const waited = since === undefined ? 0 : now - since;
    const serverFree = (load.get('') ?? 0) < this.limits.serverSlots;
    // A free server slot goes before a stage 0 still fetching: each chain of
    // relays starts at the server, and shorter chains stall less.
    if (best && (best[1].have === undefined || !serverFree)) {
      this.assign(mac, best[0], now);
      return { kind: 'peer', url: best[1].url, peer: best[0] };
    }
    if (serverFree || waited >= this.limits.maxWaitMs) {
      this.assign(mac, '', now);
      return { kind: 'server', url: this.serverUrl };
    }
    if (since === undefined) {
      if (this.waitingSince.size >= this.limits.maxEntries) {
        // Past the bound the oldest waiter is forgotten (it starts its wait again).
        const oldest = this.waitingSince.keys().next().value;
        if (oldest !== undefined) this.waitingSince.delete(oldest);
      }
      this.waitingSince.set(mac, now);
    }
    return { kind: 'wait', seconds: Math.ceil(this.limits.waitMs / 1000) };
  }

  /** Peers offered now (for status): MAC -> URL. */
  list(now: number): { mac: string; url: string; serving: number }[] {
    const load = new Map<string, number>();
    for (const a of this.assigned.values()) load.set(a.source, (load.get(a.source) ?? 0) + 1);
    return [...this.peers]
      .filter(([m, p]) => !this.isBanned(m, now) && now - p.lastSeen <= this.limits.freshMs)
      .map(([m, p]) => ({ mac: m, url: p.url, serving: load.get(m) ?? 0 }));
  }

  private isBanned(mac: string, now: number): boolean {
    const until = this.banned.get(mac);
    if (until === undefined) return false;
    if (until > now) return true;
    this.banned.delete(mac);
    return false;
  }

  private assign(mac: string, source: string, now: number): void {
    if (this.assigned.size >= this.limits.maxEntries) {
      const oldest = this.assigned.keys().next().value;
      if (oldest !== undefined) this.assigned.delete(oldest);
    }
    this.assigned.set(mac, { source, until: now + this.limits.holdMs });
  }

  /** Whether `peer`'s fetch comes, through the sources behind it, from `mac`. */
  private feedsFrom(peer: string, mac: string): boolean {
    const seen = new Set<string>();
    for (let at = this.assigned.get(peer)?.source; at; at = this.assigned.get(at)?.source) {
      if (at === mac) return true;
      if (seen.has(at)) return false;
      // A chain this long is no help either (and a made-up one must not cost a walk per candidate).
      if (seen.size >= 16) return true;
      seen.add(at);
    }
    return false;
  }

  private failed(url: string, why: PayloadFailure['why'], now: number): void {
    // A wrong block or payload bans its address too: a liar cannot come back under a new MAC.
    const liar = why === 'bad' ? [...this.peers.values()].find((p) => p.url === url) : undefined;
    if (liar) this.ban(`ip ${liar.ip}`, now + this.limits.banMs);
    for (const [peerMac, p] of this.peers) {
      if (p.url !== url) continue;
      // Its reports do not bring it back for a while: a machine that is
      // gone cannot report, and one that still does, yet does not answer
      // its clients (or trickles), is no help. A slow one may only wait on
      // its own source: it is out for the same short time.
      this.ban(peerMac, now + (why === 'bad' ? this.limits.banMs : this.limits.goneMs));
      this.peers.delete(peerMac);
    }
  }

  /** Bans are bounded too: past maxEntries the one ending soonest makes room. */
  private ban(key: string, until: number): void {
    if (!this.banned.has(key) && this.banned.size >= this.limits.maxEntries) {
      let first: [string, number] | undefined;
      for (const e of this.banned) if (!first || e[1] < first[1]) first = e;
      if (first) this.banned.delete(first[0]);
    }
    this.banned.set(key, until);
  }

  private expire(now: number): void {
    for (const [m, a] of this.assigned) if (a.until <= now) this.assigned.delete(m);
    for (const [m, until] of this.banned) if (until <= now) this.banned.delete(m);
    for (const [m, p] of this.peers) if (now - p.lastSeen > this.limits.freshMs * 4) this.peers.delete(m);
  }
}

/**
 * PhaseOneSources as the server uses it: fed by agents' reports, asked by
 * stage 0 (GET /api/v1/phase1/<mac>), with the clock and the log.
 */
export class PhaseOneSourcing {
  private readonly sources: PhaseOneSources;
  /** Stage 0s are many in a big room: at most so many lines a minute. */
  private readonly lines: LineBudget;

  constructor(
    /** The payload on this server, without ?mac=. */
    private readonly serverUrl: string,
    log: Logger,
    limits: Partial<PhaseOneSourceLimits> = {},
    private readonly now: () => number = Date.now,
  ) {
    this.sources = new PhaseOneSources(serverUrl, limits);
    this.lines = new LineBudget(log);
  }

  /** An accepted agent report (token checked), from `client`. */
  report(mac: string, client: string, r: AgentReport): void {
    if (r.stage === 'booting' || r.stage === 'running' || r.stage === 'failed') {
      // It leaves (or cannot help): no longer offered to anyone.
      this.sources.arrived(mac);
      this.sources.withdraw(mac);
    } else if (r.phase1Port !== undefined) this.sources.offer(mac, client, r.phase1Port, this.now());
    else {
      // Its agent runs but serves no phase 1 (or has stopped serving it).
      this.sources.arrived(mac);
      this.sources.withdraw(mac);
    }
  }

  answer(mac: string, client: string, failed?: PayloadFailure, progress?: PayloadProgress): PayloadSource {
    if (progress?.port !== undefined)
      this.sources.offerPartial(mac, client, progress.port, progress.have, this.now());
    if (progress?.heartbeat) {
      if (failed) this.sources.pick(mac, this.now(), failed, progress.have);
      return { kind: 'wait', seconds: 0 };
    }
    const a = this.sources.pick(mac, this.now(), failed, progress?.have ?? 0);
    if (a.kind === 'wait') return a;
    if (a.kind === 'peer') {
      this.lines.info(`client ${mac} (${client}) loads phase 1 from peer ${a.peer}`, { url: a.url });
      return { kind: 'get', url: a.url };
    }
    this.lines.info(`client ${mac} (${client}) loads phase 1 from this server`);
    // ?mac= moves the client's row to "phase 1", as iPXE's own fetches do.
    return { kind: 'get', url: `${a.url}?mac=${mac}` };
  }

  /** Peers offered now, for status. */
  peers(): { mac: string; url: string; serving: number }[] {
    return this.sources.list(this.now());
  }
}
