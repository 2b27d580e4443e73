/**
 * Where a session finds peers besides PEX: its trackers (BEP 3/15), with
 * the re-announce schedule and backoff, and Local Service Discovery
 * (BEP 14) on a LAN interface. Found peers go to `onPeer`; the session
 * dials them through its PeerDialer. The clock is injected, so the
 * schedule is testable without waiting.
 */
import { errorText } from '../errors.js';
import type { Logger } from '../util/logger.js';
import type { TrackerClient } from '../tracker/client.js';
import { LocalServiceDiscovery } from '../tracker/lsd.js';
import type { AnnounceEvent } from '../tracker/types.js';
import type { CandidateSource } from './dialer.js';

export interface AnnouncerOptions {
  readonly infoHash: Buffer;
  readonly infoHashHex: string;
  readonly peerId: Buffer;
  /** Our peer-wire port, announced. */
  readonly port: number;
  /** Tracker URLs, tried in order until one answers. */
  readonly trackers: readonly string[];
  /** IPv4 address of the interface to run LSD on; undefined: no LSD (and never for private torrents). */
  readonly lsdInterface?: string | undefined;
  /** LSD announce interval in ms (LocalServiceDiscovery's default when absent). */
  readonly lsdIntervalMs?: number | undefined;
  /** A random uint32 kept across announces (BEP 15 `key`). */
  readonly key: number;
  /** True when `completed` has no place (we started complete): it is never sent. */
  readonly startedComplete: boolean;
  /**
   * While `wantsPeers()` says so, announce again this long (ms) after the
   * last answer instead of waiting for the tracker's interval, doubling with
   * each such early announce (so a swarm that cannot give more costs the
   * tracker a handful of requests); never sooner than the tracker's
   * `min interval`, and not while the tracker fails (the backoff rules).
   * Undefined: the interval only.
   */
  readonly eagerMs?: number | undefined;
  /** Peers to ask for (default 80; none for `stopped`). */
  readonly numWant?: number | undefined;
}

export interface AnnouncerServices {
  readonly logger: Logger;
  readonly tracker: Pick<TrackerClient, 'announce'>;
  readonly signal?: AbortSignal | undefined;
  /** Byte counts for the announce. */
  readonly progress: () => { uploaded: number; downloaded: number; left: number };
  readonly onPeer: (ip: string, port: number, source: CandidateSource) => void;
  /** A problem the user should see (the session's `warning` event). */
  readonly onWarning: (message: string) => void;
  /** The session has stopped: an announce that fails then says nothing. */
  readonly stopped: () => boolean;
  /** Milliseconds, like Date.now (the default). */
  readonly now?: () => number;
  /** True while the owner could use more peers (see AnnouncerOptions.eagerMs). */
  readonly wantsPeers?: () => boolean;
}

export class Announcer {
  private readonly opts: AnnouncerOptions;
  private readonly s: AnnouncerServices;
  private readonly log: Logger;
  private readonly now: () => number;
  private announcing = false;
  /** When the next regular announce is due (0: none scheduled yet). */
  private nextAt = 0;
  private failures = 0;
  /** When the last answer came, and the earliest next announce its tracker allows (ms; 0: none yet). */
  private answeredAt = 0;
  private minNextAt = 0;
  /** Early announces made so far (each doubles the wait for the next). */
  private eagerRounds = 0;
  /** Peers in the swarm by the last answer (seeds + leechers, us included); undefined: not said. */
  private swarm: number | undefined;
  private completedSent: boolean;
  private lsd: LocalServiceDiscovery | undefined;

  constructor(options: AnnouncerOptions, services: AnnouncerServices) {
    this.opts = options;
    this.s = services;
    this.log = services.logger;
    this.now = services.now ?? Date.now;
    this.completedSent = options.startedComplete;
  }

  /** When the next regular announce is due (ms; 0 before the first answer or failure). */
  get nextAnnounceAt(): number {
    return this.nextAt;
  }

  /** Seeds + leechers (us included) by the tracker's last answer; undefined before one or when it gave no counts. */
  get swarmSize(): number | undefined {
    return this.swarm;
  }

  /** Announces `none` if one is due and none is under way (call it every tick). */
  tick(): void {
    if (this.announcing) return;
    const now = this.now();
    if (this.nextAt > 0 && now >= this.nextAt) {
      this.announceSoon('none');
      return;
    }
    const eager = this.opts.eagerMs;
    if (
      eager !== undefined &&
      this.failures === 0 &&
      this.answeredAt > 0 &&
      now >= Math.max(this.answeredAt + eager * 2 ** Math.min(this.eagerRounds, 16), this.minNextAt) &&
      (this.s.wantsPeers?.() ?? false)
    ) {
      this.eagerRounds++;
      this.announceSoon('none');
    }
  }

  /** An announce whose failure is logged, not left to reject unobserved. */
  announceSoon(event: AnnounceEvent): void {
    this.announce(event).catch((err: unknown) =>
      this.log.warn('announce failed', { event, error: errorText(err) }),
    );
  }

  /**
   * Asks the trackers in order until one answers. The answer's interval
   * (at least 5 s) sets the next announce; when none answers, the next
   * comes after 4 s, doubling to a minute. `completed` goes out once.
   * `stopped` waits 2 s at most and wants no peers.
   */
  async announce(event: AnnounceEvent): Promise<void> {
    const urls = this.opts.trackers;
    if (urls.length === 0) return;
    if (event === 'completed') {
      if (this.completedSent) return;
      this.completedSent = true;
    }
    this.announcing = true;
    const p = this.s.progress();
    let ok = false;
    try {
      for (const url of urls) {
        try {
          const r = await this.s.tracker.announce(
            url,
            {
              infoHash: this.opts.infoHash,
              peerId: this.opts.peerId,
              port: this.opts.port,
              uploaded: p.uploaded,
              downloaded: p.downloaded,
              left: p.left,
              event,
              numWant: event === 'stopped' ? 0 : (this.opts.numWant ?? 80),
              key: this.opts.key,
            },
            event === 'stopped' ? { timeoutMs: 2000 } : this.s.signal ? { signal: this.s.signal } : {},
          );
          ok = true;
          if (this.failures > 0) this.log.info('tracker reachable again', { tracker: url });
          this.failures = 0;
          if (r.warning) this.log.warn('tracker warning', { tracker: url, warning: r.warning });
          this.answeredAt = this.now();
          this.nextAt = this.answeredAt + Math.max(5, r.interval) * 1000;
          this.minNextAt = this.answeredAt + (r.minInterval ?? 0) * 1000;
          const counted = r.complete + r.incomplete;
          this.swarm = Number.isFinite(counted) && counted > 0 ? counted : undefined;
          if (event !== 'stopped') for (const a of r.peers) this.s.onPeer(a.ip, a.port, { kind: 'tracker' });
          break;
        } catch (err) {
          if (this.s.stopped() && event !== 'stopped') return;
          this.log.debug('announce failed', { tracker: url, error: (err as Error).message });
          if (event === 'stopped') continue;
          if (this.failures === 0) {
            this.s.onWarning(`tracker ${url}: ${(err as Error).message}`);
            this.log.warn('tracker unreachable; still using known peers', {
              tracker: url,
              error: (err as Error).message,
            });
          }
        }
      }
      if (!ok && event !== 'stopped') {
        this.failures++;
        this.nextAt = this.now() + Math.min(60_000, 2000 * 2 ** this.failures);
      }
    } finally {
      this.announcing = false;
    }
  }

  /** Starts LSD if asked for; its failure is a warning (trackers and known peers still work). */
  async startLsd(isPrivate: boolean): Promise<void> {
    const address = this.opts.lsdInterface;
    if (address === undefined || isPrivate) return;
    const lsd = new LocalServiceDiscovery(
      {
        port: this.opts.port,
        interfaceAddress: address,
        infoHashes: [this.opts.infoHashHex],
        ...(this.opts.lsdIntervalMs !== undefined ? { announceIntervalMs: this.opts.lsdIntervalMs } : {}),
      },
      { logger: this.log.child('lsd') },
    );
    lsd.on('peer', (p) => {
      try {
        if (p.infoHash === this.opts.infoHashHex) this.s.onPeer(p.ip, p.port, { kind: 'lsd' });
      } catch (err) {
        this.log.warn('error handling an LSD peer', { peer: `${p.ip}:${p.port}`, error: errorText(err) });
      }
    });
    lsd.on('error', (err) => this.s.onWarning(`local peer discovery stopped: ${err.message}`));
    try {
      await lsd.start(this.s.signal ? { signal: this.s.signal } : {});
      this.lsd = lsd;
    } catch (err) {
      this.s.onWarning(`local peer discovery unavailable: ${(err as Error).message}`);
      this.log.warn('LSD unavailable', { error: (err as Error).message });
    }
  }

  /** Stops LSD (the session announces `stopped` itself, after closing its peers). */
  async stopLsd(): Promise<void> {
    await this.lsd?.stop();
  }
}
