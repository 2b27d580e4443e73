/**
 * What the running server knows about its clients and swarms: one store fed
 * by DHCP, the HTTP boot chain and the agents' reports, read by `status`,
 * the dashboard (SSE) and the one-line-per-event log. Pure bookkeeping: no
 * sockets here.
 */
import { EventEmitter } from 'node:events';
import type { AgentReport } from '../boot-config.js';
import type { ClientStage, ClientState } from '../http/snapshot.js';

// The snapshot types live beside the dashboard that serves them (http/ must not import server/).
export type { ClientStage, ClientState, ServerSent, ServerSnapshot, SwarmSummary } from '../http/snapshot.js';

export interface ClientStoreEvents {
  /** A client changed stage (not on every progress report). */
  stage: [client: ClientState, previous: ClientStage | null];
  /** Any change, stage or progress. */
  change: [client: ClientState];
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

const DONE: ReadonlySet<ClientStage> = new Set(['booting', 'running', 'failed']);
/** Stages of a boot that worked: the OS is handed the machine. */
const BOOTED: ReadonlySet<ClientStage> = new Set(['booting', 'running']);
/** Stages the server sees before the agent runs. */
const PRE_AGENT: ReadonlySet<ClientStage> = new Set(['dhcp', 'ipxe', 'phase1']);

/** Most clients a store keeps by default: far above any lab, far below a flood of made-up MACs. */
export const MAX_CLIENTS = 4096;

/**
 * Clients by MAC, newest state only. A client that starts over (DHCP again
 * after booting) starts a new row. At most `maxClients` are kept: a new MAC
 * beyond that forgets the one heard from least recently, so a server that
 * runs for months, or a LAN host sending DHCP from endless made-up MACs,
 * cannot grow it without bound. Clients whose agent never reported go
 * first: anyone can send DHCP or ask /boot.ipxe for a made-up MAC, but a
 * report needs the MAC's token, so such a flood cannot push real clients
 * off `status` and the dashboard (the hostile soak showed it did).
 */
export class ClientStore extends EventEmitter<ClientStoreEvents> {
  /** In order of last update (oldest first): the first is the one to forget. */
  private readonly clients = new Map<string, Mutable<ClientState>>();
  /** MACs kept whose agent has not reported in this row, oldest update first: forgotten before the others. */
  private readonly unreported = new Set<string>();

  constructor(
    /** Size in bytes of an OS id, for the seed ratio. */
    private readonly osSize: (os: string) => number | undefined = () => undefined,
    private readonly now: () => number = Date.now,
    private readonly maxClients = MAX_CLIENTS,
  ) {
    super();
  }

  /** Clients kept now. */
  get size(): number {
    return this.clients.size;
  }

  list(): ClientState[] {
    // Ties (a room powered on at once) by MAC: the map's order changes with every update.
    return [...this.clients.values()]
      .map((c) => ({ ...c }))
      .sort((a, b) => a.firstSeen - b.firstSeen || (a.mac < b.mac ? -1 : a.mac > b.mac ? 1 : 0));
  }

  get(mac: string): ClientState | undefined {
    const c = this.clients.get(mac);
    return c ? { ...c } : undefined;
  }

  /** Clients kept whose stage is not a done one (kept as a count: a flood of new MACs must not cost a scan each). */
  private active = 0;
  /**
   * Boots whose agent reported after the firmware fetched phase 1 from this
   * server (ipxe or phase1 stage, then an agent stage): phase 1 delivered.
   */
  phase1Loads = 0;
  /**
   * Boots that reached booting or running, and boots that failed, since the
   * server started, by OS id: one per row that gets there. Keyed only by an
   * OS the server serves (`osSize` knows it), else '': an agent writes its
   * `os` itself, and a made-up id per report must not grow these maps.
   */
  readonly boots = new Map<string, number>();
  readonly failures = new Map<string, number>();
  /**
   * Machines whose firmware asked to boot with an architecture this server
   * does not serve, by architecture (a fixed set of names): counted apart
   * from failed boots, since made-up MACs in DISCOVERs cost nothing to send.
   */
  readonly unservedFirmware = new Map<string, number>();

  private fresh(mac: string): Mutable<ClientState> {
    const t = this.now();
    return {
      mac,
      ip: null,
      firmware: null,
      stage: 'dhcp',
      os: null,
      progress: 0,
      downloadRate: 0,
      uploadRate: 0,
      downloaded: 0,
      uploaded: 0,
      peers: 0,
      seedRatio: 0,
      error: null,
      firstSeen: t,
      updatedAt: t,
      bootSeconds: null,
      concurrent: this.active + 1,
      peakRss: null,
      secureBoot: null,
    };
  }

  private update(
    mac: string,
    stage: ClientStage | null,
    patch: Partial<Mutable<ClientState>>,
    reported = false,
    countFailure = true,
  ): void {
    let c = this.clients.get(mac);
    let previous: ClientStage | null = c?.stage ?? null;
    // The firmware asking again after this client booted or failed is a new boot.
    if (!c || (stage !== null && (stage === 'dhcp' || stage === 'ipxe') && DONE.has(c.stage))) {
      const old = c;
      if (old) {
        if (!DONE.has(old.stage)) this.active--;
      } else if (this.clients.size >= this.maxClients) {
        const oldest = this.unreported.values().next().value ?? this.clients.keys().next().value!;
        const gone = this.clients.get(oldest)!;
        this.clients.delete(oldest);
        this.unreported.delete(oldest);
        if (!DONE.has(gone.stage)) this.active--;
      }
      c = this.fresh(mac);
      this.active++;
      if (old) c.ip = old.ip;
      previous = null;
      this.unreported.add(mac);
    }
    // Re-inserted: the map stays in order of last update.
    this.clients.delete(mac);
    this.clients.set(mac, c);
    if (this.unreported.delete(mac) && !reported) this.unreported.add(mac);
    Object.assign(c, patch);
    c.updatedAt = this.now();
    // An agent's first word after the firmware loaded phase 1 from us: one phase 1 delivered.
    if (reported && (previous === 'ipxe' || previous === 'phase1') && stage !== null && !PRE_AGENT.has(stage))
      this.phase1Loads++;
    if (stage !== null) {
      if (DONE.has(c.stage) !== DONE.has(stage)) this.active += DONE.has(stage) ? -1 : 1;
      if (BOOTED.has(stage) && !BOOTED.has(c.stage)) this.countOutcome(this.boots, c.os);
      else if (stage === 'failed' && c.stage !== 'failed' && countFailure)
        this.countOutcome(this.failures, c.os);
      c.stage = stage;
      if (stage === 'booting' && c.bootSeconds === null) c.bootSeconds = (c.updatedAt - c.firstSeen) / 1000;
      if (stage !== 'failed') c.error = patch.error ?? null;
    }
    const size = c.os ? this.osSize(c.os) : undefined;
    c.seedRatio = size ? c.uploaded / size : 0;
    const snapshot = { ...c };
    if (c.stage !== previous) this.emit('stage', snapshot, previous);
    this.emit('change', snapshot);
  }

  private countOutcome(counts: Map<string, number>, os: string | null): void {
    const key = os !== null && this.osSize(os) !== undefined ? os : '';
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }

  /** DHCP handed out (or the proxy answered) for this MAC. */
  dhcp(mac: string, info: { ip?: string; firmware?: string }): void {
    const c = this.clients.get(mac);
    // Phase 1's own DHCP (the agent) comes after the firmware's: not a new boot.
    const stage = c && !DONE.has(c.stage) && c.stage !== 'dhcp' ? null : 'dhcp';
    this.update(mac, stage, {
      ...(info.ip ? { ip: info.ip } : {}),
      ...(info.firmware && stage ? { firmware: info.firmware } : {}),
    });
  }

  /**
   * Firmware asked to boot but its architecture is not served: the client
   * is shown as failed with the reason. Its retries change nothing (one
   * row, one log line).
   */
  unserved(mac: string, arch: string, why: string): void {
    const c = this.clients.get(mac);
    if (c && c.stage === 'failed' && c.error === why) return;
    // Like dhcp(): firmware DHCP for a client whose agent is at work is not a
    // new boot (anyone can send a DISCOVER with another machine's MAC).
    if (c && !DONE.has(c.stage) && c.stage !== 'dhcp') return;
    this.update(mac, 'dhcp', { firmware: arch });
    this.update(mac, 'failed', { error: why }, false, false);
    this.unservedFirmware.set(arch, (this.unservedFirmware.get(arch) ?? 0) + 1);
  }

  /** iPXE fetched its boot script. */
  ipxe(mac: string, ip: string): void {
    this.update(mac, 'ipxe', { ip });
  }

  /** The phase-1 kernel or initramfs was requested. */
  phase1(mac: string): void {
    this.update(mac, 'phase1', {});
  }

  /** The agent reported. */
  report(mac: string, ip: string, r: AgentReport): void {
    this.update(
      mac,
      r.stage,
      {
        ip,
        ...(r.os !== undefined ? { os: r.os } : {}),
        ...(r.progress !== undefined ? { progress: r.progress } : {}),
        ...(r.downloaded !== undefined ? { downloaded: r.downloaded } : {}),
        ...(r.uploaded !== undefined ? { uploaded: r.uploaded } : {}),
        ...(r.downloadRate !== undefined ? { downloadRate: r.downloadRate } : {}),
        ...(r.uploadRate !== undefined ? { uploadRate: r.uploadRate } : {}),
        ...(r.peers !== undefined ? { peers: r.peers } : {}),
        ...(r.peakRss !== undefined ? { peakRss: r.peakRss } : {}),
        ...(r.secureBoot !== undefined ? { secureBoot: r.secureBoot } : {}),
        ...(r.error !== undefined ? { error: r.error } : {}),
      },
      true,
    );
  }
}
