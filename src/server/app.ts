/**
 * `boottorrent start`: one process that serves an environment. It loads and
 * checks the environment, hashes each OS folder into a torrent (cached),
 * then starts the tracker, the seeder, DHCP/TFTP/HTTP and the dashboard;
 * logs one line per client event; picks up OS folders added or changed
 * while it runs; and stops everything on close() (Ctrl-C / SIGTERM in the
 * CLI). If any part fails to start, the parts already started are closed.
 */
import { randomBytes } from 'node:crypto';
import { readFile, writeFile, mkdir, rm, stat } from 'node:fs/promises';
import { networkInterfaces } from 'node:os';
import { dirname, join } from 'node:path';
import { writeAtomic } from '../util/atomic-file.js';
import { loadSigningKey } from './signing.js';
import { BootTorrentError, type ErrorCode } from '../errors.js';
import type { HttpListenerLimits } from '../util/http-guard.js';
import { silentLogger, type Logger } from '../util/logger.js';
import type { Environment } from '../env/types.js';
import { TrackerServer } from '../tracker/server.js';
import type { BitTorrentClient } from '../swarm/client.js';
import { probeDhcpServers } from '../dhcp/probe.js';
import type { BootConfig } from '../boot-config.js';
import { DashboardPort, type DashboardHandler } from '../dashboard/listener.js';
import { NetbootServer, type PhaseOneFiles } from './netboot.js';
import { RequesterCheck } from './requester.js';
import { ClientStore, type ServerSnapshot } from './state.js';
import { OsLibrary } from './os-library.js';
import { Reloader } from './reloader.js';
import { ClientApi } from './client-api.js';
import { buildSnapshot } from './snapshot.js';
import { groupSent, NOTHING_SENT } from './traffic.js';
import { serverMetrics } from './metrics.js';
import { renderMetrics } from '../util/prometheus.js';
import { version } from '../version.js';
import { hashPayload } from './phase1-blocks.js';
import { PhaseOneSourcing } from './phase1-sources.js';
import { GRUB_EFI_FILE, GRUB_URL_DIR, PhaseOneLoader } from './phase1-loader.js';
import type { PayloadFailure, PayloadProgress } from '../boot/policy.js';
import { logClientEvents } from './event-log.js';
import { NextBootStore } from './next-boot.js';
import { buildSignedUki } from '../boot/uki.js';
import { roomActions } from './room-actions.js';
import { groupsOf, machineOf } from '../env/room.js';
import type { ChangeSource, DashboardAction } from '../dashboard/dashboard.js';
import { EventEmitter } from 'node:events';
import type { RoomSummary } from '../http/snapshot.js';
import { Upstream } from './upstream.js';
import { FetchedOss } from './fetched-os.js';

export interface StartOptions {
  /** The environment, loaded and checked once by the caller (env/load.ts). */
  readonly environment: Environment;
  /** Phase-1 kernel and initramfs (the output folder of build-phase1). */
  readonly phase1: PhaseOneFiles;
  /** Where the dashboard and status API listen (default 127.0.0.1:8480). */
  readonly dashboardHost?: string;
  readonly dashboardPort?: number;
  /** TCP port of the server's seeder (default 6881; 0 picks one). */
  readonly seedPort?: number;
  /** Ports tests change (default 69 and the environment's). */
  readonly tftpPort?: number;
  /** How often OS folders are checked for changes (default 2000 ms). */
  readonly reloadIntervalMs?: number;
  /** Upload cap of the server's seeder in bytes/s (default none). */
  readonly uploadLimit?: number;
  /**
   * Full DHCP mode: how long to listen for other DHCP servers before
   * starting ours (default 5000 ms; 0 skips the probe, as --force-dhcp does).
   */
  readonly dhcpProbeMs?: number;
  /**
   * IPv4 CIDRs whose requesters get any MAC's report token without being
   * tied to it (clients behind a router; rigs where agents share one address).
   */
  readonly reportFrom?: readonly string[];
  /** Hand report tokens to loopback requesters (default true: local tools and tests). */
  readonly trustLoopback?: boolean;
  /** Deadlines and connection caps of the boot HTTP server and the dashboard port (default HTTP_LIMITS). */
  readonly httpLimits?: Partial<HttpListenerLimits>;
  /** Largest agent report body in bytes (default HTTP_LIMITS.reportBodyBytes). */
  readonly reportBodyBytes?: number;
}

export interface StartServices {
  readonly logger?: Logger;
  readonly signal?: AbortSignal;
  /** Progress of hashing OS folders at start. */
  readonly onHashProgress?: (os: string, hashed: number, total: number) => void;
  /** The kernel neighbour table's text (default: /proc/net/arp), for tests. */
  readonly readArp?: () => Promise<string>;
  /** The dashboard handler (GET /, SSE); the built-in one serves only /api/v1/status and /metrics. */
  readonly dashboard?: (ctx: {
    snapshot: () => ServerSnapshot;
    /** GET /metrics's body (Prometheus text format). */
    metrics: () => string;
    store: ClientStore;
    token: string;
    /** The room actions (wake, next-boot) behind the token (src/server/room-actions.ts). */
    actions: Readonly<Record<string, DashboardAction>>;
    /** 'change' when the snapshot may differ: a client changed, or an action changed a next boot. */
    changes: ChangeSource;
  }) => DashboardHandler;
}

/** What `status` reads to find a running server: written at start, removed at stop. */
export interface ServerInfoFile {
  readonly pid: number;
  readonly startedAt: number;
  readonly dashboardUrl: string;
  readonly bootUrl: string;
  /**
   * The dashboard's action token (Bearer), for the sysadmin only: it is in
   * this file (mode 0600) and nowhere a client can read it. Agents' report
   * tokens are separate, one per MAC.
   */
  readonly token: string;
}

export const STATE_DIR = '.boottorrent';
/** Stages only an agent's (token-checked) report sets. */
const AGENT_STAGES: ReadonlySet<string> = new Set([
  'menu',
  'downloading',
  'verifying',
  'seeding',
  'booting',
  'running',
]);
export const SERVER_INFO = 'server.json';

function interfaceOf(address: string): string | undefined {
  for (const [name, list] of Object.entries(networkInterfaces()))
    if ((list ?? []).some((a) => a.family === 'IPv4' && a.address === address)) return name;
  return undefined;
}

/** Bytes of the phase-1 files every client loads (0 for a file not there: netboot says so at listen). */
async function phaseOneSize(p: PhaseOneFiles): Promise<number> {
  let n = 0;
  for (const f of [p.kernel, ...p.initrds])
    n += await stat(join(p.dir, f)).then(
      (st) => st.size,
      () => 0,
    );
  return n;
}

/**
 * `start`'s server, as wiring: it builds the parts in order (OS library,
 * tracker, seeder, DHCP/TFTP/HTTP with the client API, dashboard port,
 * event log, reloader), closes what started if one fails, and turns a
 * listener's failure after start-up into `failed`.
 */
export class BootServer {
  readonly store: ClientStore;
  private readonly log: Logger;
  private library: OsLibrary | undefined;
  private tracker: TrackerServer | undefined;
  private netboot: NetbootServer | undefined;
  private api: ClientApi | undefined;
  private dashboard: DashboardPort | undefined;
  private reloader: Reloader | undefined;
  /** A satellite's upstream (server.upstream): its catalog, fetched OSs, state. */
  private upstream: Upstream | undefined;
  /** OSs configured by a .torrent (`torrent:`), fetched from their web seeds. */
  private fetched: FetchedOss | undefined;
  /** The environment a satellite serves, made for one local environment and one set of OSs. */
  private served: { base: Environment; key: string; env: Environment } | undefined;
  private stateDir = '';
  /** server.json is ours to remove only once we wrote it. */
  private wroteInfo = false;
  private bootUrlValue = '';
  private readonly startedAt = Date.now();
  /** Where stage 0s fetch the phase-1 payload, when peers serve phase 1 (#16). */
  private phase1Sources: PhaseOneSourcing | undefined;
  /** The GRUB loader that lets peers serve the kernel and stage 0 too (peers.phase1_loader: grub). */
  private phase1Loader: PhaseOneLoader | undefined;
  /** Bytes of one phase 1 (kernel + initramfs files), read at start. */
  private phase1Size = 0;
  /** What machines and groups boot next (next-boot.json in the state folder). */
  private nextBoot: NextBootStore | undefined;
  /** Stops wake-ups still spreading out when the server closes. */
  private readonly stopping = new AbortController();
  /** 'change' when a next boot was set, cleared or used (the dashboard's stream sends a snapshot). */
  private readonly roomChanged = new EventEmitter();
  private closed = false;
  /** Settles once, when a listener fails after start-up. */
  private failWith!: (err: BootTorrentError) => void;
  /**
   * Resolves with the error when a listener (HTTP, dashboard, TFTP, DHCP,
   * tracker, seeder) fails after start-up; everything is closed by then.
   * `start` waits on it beside Ctrl-C.
   */
  readonly failed: Promise<BootTorrentError>;

  constructor(
    private readonly options: StartOptions,
    private readonly services: StartServices = {},
  ) {
    this.log = services.logger ?? silentLogger;
    this.failed = new Promise((resolve) => (this.failWith = resolve));
    this.store = new ClientStore((os) => this.library?.get(os)?.meta.length);
  }

  /** The environment served now: the one passed in, with what reloads changed. */
  get environment(): Environment {
    const base = this.reloader?.environment ?? this.options.environment;
    const up = this.upstream;
    if (!up) return base;
    // A satellite: its upstream's OSs, and its default where it names none.
    const entries = this.library?.entries() ?? [];
    const defaultOs = base.boot.defaultOs ?? up.defaultOs();
    const key = `${defaultOs}\n${entries.map((e) => `${e.os.id} ${e.meta.infoHashHex}`).join('\n')}`;
    if (this.served?.base !== base || this.served.key !== key)
      this.served = {
        base,
        key,
        env: Object.freeze({ ...base, boot: { ...base.boot, defaultOs }, oss: entries.map((e) => e.os) }),
      };
    return this.served.env;
  }

  /** The OS ids a satellite's settings name that its upstream's catalog lacks, as last logged. */
  private unknownOss = '';

  /**
   * A satellite's default_os, hosts and groups name OSs validate cannot
   * check (they are the upstream's): once the catalog is known, each name
   * it lacks is logged (again only when the list changes).
   */
  private warnUnknownOss(): void {
    if (!this.upstream?.hasCatalog()) return;
    const env = this.reloader?.environment ?? this.options.environment;
    const known = new Set(this.upstream.osIds());
    const named = new Map<string, string>();
    const note = (id: string | null | undefined, where: string) => {
      if (id && !known.has(id) && !named.has(id)) named.set(id, where);
    };
    note(env.boot.defaultOs, 'boot.default_os');
    for (const g of env.groups) {
      note(g.defaultOs, `groups.${g.name}.default_os`);
      for (const id of g.oss ?? []) note(id, `groups.${g.name}.oss`);
    }
    for (const [mac, h] of env.hosts) {
      note(h.defaultOs, `hosts.${mac}.default_os`);
      for (const id of h.oss ?? []) note(id, `hosts.${mac}.oss`);
    }
    const text = [...named].map(([id, where]) => `${id} (${where})`).join(', ');
    if (text === this.unknownOss) return;
    this.unknownOss = text;
    if (text)
      this.log.warn(
        `${join(env.dir, 'Boottorrent.yaml')} names OSs the upstream's catalog does not have: ${text}; menus leave them out. Fix: use one of: ${[...known].join(', ') || '(none yet)'}`,
      );
  }

  /** A satellite's upstream and how it answers; undefined for a server that is not a satellite. */
  get upstreamStatus() {
    return this.upstream?.status();
  }
  get dashboardUrl(): string {
    return this.dashboard?.url ?? '';
  }
  get bootUrl(): string {
    return this.bootUrlValue;
  }
  /** The server's seeder, e.g. for its upload totals. */
  get seedClient(): BitTorrentClient | undefined {
    return this.library?.seedClient;
  }
  get trackerServer(): TrackerServer | undefined {
    return this.tracker;
  }

  /** Starts everything; on any failure, what already started is closed and the error thrown. */
  async start(): Promise<void> {
    try {
      await this.startInner();
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  private async startInner(): Promise<void> {
    const env = this.options.environment;
    const iface = env.server.interface ?? interfaceOf(env.server.address);
    if (!iface)
      throw new BootTorrentError(
        'BT_ERR_SERVER',
        `no interface has address ${env.server.address} (server.address in ${join(env.dir, 'Boottorrent.yaml')}); fix: set it to the lab interface's address`,
      );
    if (env.dhcp.mode === 'full') await this.probeDhcp(iface, env);
    const requesters = this.requesterCheck();
    this.phase1Size = await phaseOneSize(this.options.phase1);
    this.stateDir = join(env.dir, STATE_DIR);
    await mkdir(this.stateDir, { recursive: true, mode: 0o700 });
    const secret = await this.loadSecret();
    const nextBoot = new NextBootStore(join(this.stateDir, 'next-boot.json'), this.log);
    await nextBoot.load();
    this.nextBoot = nextBoot;
    // Every boot config is signed; phase 1 gets the public key as its last archive.
    const signing = await loadSigningKey(this.stateDir, this.log);
    const keyArchive = join(this.stateDir, 'phase1-key', 'server-key.cpio');
    await mkdir(dirname(keyArchive), { recursive: true, mode: 0o755 });
    await writeFile(keyArchive, signing.keyCpio, { mode: 0o644 });
    /** The dashboard's action token; never in anything sent to a client. */
    const token = randomBytes(16).toString('hex');
    const address = env.server.address;
    const httpPort = env.server.httpPort;
    const base = `http://${address}${httpPort === 80 ? '' : `:${httpPort}`}`;
    this.bootUrlValue = base;

    // 1. Torrents for every OS folder, the tracker that knows them, reloads.
    const { library, reloader } = await this.startLibrary(env, base);

    // 2. Tracker, then 3. the seeder: every OS, from its folder (a satellite: what it has; it asks its upstream for the rest).
    await this.tracker?.listen();
    await library.listen();
    this.upstream?.start();
    void this.fetched?.apply(env.oss);

    // 4. DHCP, TFTP, HTTP, with the client API's routes.
    const api = new ClientApi(
      {
        bootUrl: base,
        secret,
        sign: signing.sign,
        publicKeyPem: signing.publicPem,
        ...(this.options.reportBodyBytes !== undefined
          ? { reportBodyBytes: this.options.reportBodyBytes }
          : {}),
      },
      {
        environment: () => this.environment,
        library,
        requesters,
        store: this.store,
        logger: this.log,
        nextBoot: (mac, groups) => nextBoot.forMachine(mac, groups),
        onReport: (mac, client, r) => {
          this.phase1Sources?.report(mac, client, r);
          this.phase1Loader?.report(mac, client, r);
        },
        upstreamTrackers: () => this.upstream?.trackers() ?? [],
      },
    );
    this.api = api;
    const phase1 = await this.phaseOneLoader(env, { ...(await this.phaseOneFiles(env)), keyArchive }, base);
    const uefiImage = await this.labSignedPhaseOne(env, phase1, base);
    await this.startNetboot(env, iface, base, api, phase1, signing.sign, uefiImage);

    // 5. Dashboard and status API, the client log, server.json, reloads.
    this.dashboard = await this.startDashboard(token);
    // A machine that starts its OS (kexec: booting; qemu, bin: running) has used a `once` next boot.
    const started = (stage: string | null) => stage === 'booting' || stage === 'running';
    this.store.on('stage', (c, previous) => {
      if (started(c.stage) && !started(previous) && c.os) this.nextBootUsed(c.mac, c.os);
    });
    logClientEvents(this.store, this.log, (mac) => this.environment.hosts.get(mac)?.name ?? null);
    await writeAtomic(
      join(this.stateDir, SERVER_INFO),
      JSON.stringify({
        pid: process.pid,
        startedAt: this.startedAt,
        dashboardUrl: this.dashboard.url,
        bootUrl: base,
        token,
      } satisfies ServerInfoFile),
    );
    this.wroteInfo = true;
    reloader.start();
    this.log.info('ready', {
      environment: env.dir,
      interface: iface,
      address,
      dhcp: env.dhcp.mode,
      ...(env.server.upstream ? { upstream: env.server.upstream.url } : {}),
      oss:
        library
          .entries()
          .map((e) => e.os.id)
          .join(',') || '(none)',
      dashboard: this.dashboard.url,
    });
  }

  /** Who may get a MAC's report token (see RequesterCheck). */
  private requesterCheck(): RequesterCheck {
    return new RequesterCheck(
      {
        ...(this.options.trustLoopback !== undefined ? { trustLoopback: this.options.trustLoopback } : {}),
        ...(this.options.reportFrom ? { trusted: this.options.reportFrom } : {}),
      },
      {
        ...(this.services.readArp ? { readArp: this.services.readArp } : {}),
        // Full DHCP mode: the address we leased to the MAC is that MAC's.
        leaseIp: (mac) => {
          const lease = this.netboot?.dhcp.leaseOf(mac);
          return lease && lease.expires > Date.now() ? lease.ip : undefined;
        },
      },
    );
  }

  /**
   * Torrents for every OS folder (cached by content) and the seeder. The
   * tracker (its own port, UDP + HTTP as opentracker did, and /announce on
   * the boot HTTP server) is told of each before it listens.
   */
  private async startLibrary(
    env: Environment,
    base: string,
  ): Promise<{ library: OsLibrary; reloader: Reloader }> {
    const { signal } = this.services;
    const address = env.server.address;
    if (env.tracker.enabled) {
      this.tracker = new TrackerServer(
        { host: '0.0.0.0', port: env.tracker.port },
        { logger: this.log.child('tracker') },
      );
      this.tracker.on('listenerError', (err) => this.fail('tracker', err));
    }
    const library = new OsLibrary(
      {
        cacheDir: join(this.stateDir, 'torrents'),
        ...(env.tracker.enabled ? { announce: `${base}/announce` } : {}),
        ...(this.options.seedPort !== undefined ? { seedPort: this.options.seedPort } : {}),
        ...(this.options.uploadLimit ? { uploadLimit: this.options.uploadLimit } : {}),
        // Announced from the lab address, so the tracker hands clients an address they can reach.
        seedTrackers: env.tracker.enabled ? [`http://${address}:${env.tracker.port}/announce`] : [],
        pex: env.peers.pex,
        ...(env.peers.lsd ? { lsdInterface: address } : {}),
      },
      {
        logger: this.log,
        ...(signal ? { signal } : {}),
        ...(this.services.onHashProgress ? { onHashProgress: this.services.onHashProgress } : {}),
        ...(this.tracker ? { tracker: this.tracker } : {}),
        onListenerError: (err) => this.fail('seeder (peer listener)', err),
        moreTrackers: () => this.upstream?.trackers() ?? [],
      },
    );
    this.library = library;
    const up = env.server.upstream;
    if (up) {
      // A satellite: its OSs come from the upstream's catalog, not from oss/.
      this.upstream = new Upstream(
        { url: up.url, keyFile: up.key, stateDir: this.stateDir },
        {
          library,
          logger: this.log,
          onChange: () => {
            this.warnUnknownOss();
            this.roomChanged.emit('change');
          },
        },
      );
      await this.upstream.load();
    } else {
      await library.load(env.oss);
      // OSs named by a .torrent: what was fetched before is served at once, the rest once fetched.
      this.fetched = new FetchedOss(this.stateDir, library, this.log);
      await this.fetched.load(env.oss);
    }
    const fetched = this.fetched;
    const reloader = new Reloader(
      {
        environment: env,
        ...(this.options.reloadIntervalMs !== undefined ? { intervalMs: this.options.reloadIntervalMs } : {}),
      },
      {
        // A satellite reloads its boot settings and hosts; its OSs follow the upstream.
        library: up
          ? { update: () => Promise.resolve({ added: [], removed: [] }), offer: () => Promise.resolve() }
          : {
              update: async (oss) => {
                const change = await library.update(oss);
                void fetched?.apply(oss);
                return change;
              },
              offer: (e) => library.offer(e),
            },
        logger: this.log,
      },
    );
    this.reloader = reloader;
    await reloader.mark();

    return { library, reloader };
  }

  /** DHCP, TFTP and the boot HTTP server, with the client API's routes. */
  private async startNetboot(
    env: Environment,
    iface: string,
    base: string,
    api: ClientApi,
    phase1: PhaseOneFiles,
    signConfig: (body: Buffer) => string,
    uefiImage: string | undefined,
  ): Promise<void> {
    this.netboot = new NetbootServer(
      {
        interface: iface,
        serverIp: env.server.address,
        dhcp: {
          mode: env.dhcp.mode,
          ...(env.dhcp.range ? { rangeStart: env.dhcp.range.first, rangeEnd: env.dhcp.range.last } : {}),
          ...(env.dhcp.router ? { router: env.dhcp.router } : {}),
          dns: env.dhcp.dns,
          subnets: env.dhcp.subnets.map((n) => ({
            subnet: n.subnet,
            ...(n.range ? { rangeStart: n.range.first, rangeEnd: n.range.last } : {}),
            ...(n.router ? { router: n.router } : {}),
            ...(n.dns ? { dns: n.dns } : {}),
          })),
          leaseTimeSeconds: env.dhcp.leaseSeconds,
          leasesFile: join(this.stateDir, 'leases.json'),
        },
        ipxeDir: env.server.ipxeDir,
        uefiChain: env.server.uefiChain,
        uefiLoader: env.server.uefiLoader,
        ...(uefiImage ? { uefiImage } : {}),
        httpPort: env.server.httpPort,
        ...(this.options.httpLimits ? { httpLimits: this.options.httpLimits } : {}),
        ...(this.options.tftpPort !== undefined ? { tftpPort: this.options.tftpPort } : {}),
        tftp: env.server.tftp,
        phase1,
        ...(env.allowMacs ? { allowMacs: env.allowMacs } : {}),
        bootConfig: (mac, client) => api.bootConfigFor(mac, client),
        signConfig,
        ...(this.phase1Sources
          ? {
              payloadSource: (
                mac: string,
                client: string,
                failed?: PayloadFailure,
                progress?: PayloadProgress,
              ) => {
                // Its stage 0 runs: GRUB's kernel fetch is over.
                this.phase1Loader?.arrived(mac);
                return this.phase1Sources!.answer(mac, client, failed, progress);
              },
            }
          : {}),
      },
      {
        logger: this.log,
        ...(this.tracker ? { tracker: this.tracker } : {}),
        routes: (req, res, path, client) =>
          (this.phase1Loader?.route(
            req,
            res,
            path,
            client,
            (mac) => this.grubCmdline(mac, base),
            (mac) => this.store.phase1(mac),
          ) ??
            false) ||
          api.route(req, res, path, client),
        onBootStep: (s) => {
          if (s.kind === 'script') this.store.ipxe(s.mac, s.client);
          else if (s.kind === 'phase1') this.store.phase1(s.mac);
        },
        onListenerError: (err) => this.fail('boot HTTP server', err),
      },
    );
    this.netboot.dhcp.on('listenerError', (err) => this.fail('DHCP server', err));
    this.netboot.tftp?.on('listenerError', (err) => this.fail('TFTP server', err));
    this.netboot.dhcp.on('lease', (l) => this.store.dhcp(l.mac, { ip: l.ip }));
    this.netboot.dhcp.on('boot', (b) =>
      this.store.dhcp(b.mac, { firmware: b.client.ipxe ? 'ipxe' : b.client.arch }),
    );
    // A firmware we cannot serve (ARM64 or 32-bit UEFI, ...): a row and a log line that say so.
    const netboot = this.netboot;
    netboot.dhcp.on('no-boot', ({ mac, client }) => {
      const why = netboot.policy.unservedArch(
        { mac, arch: client.arch, ipxe: client.ipxe },
        client.archCodes,
      );
      if (why) this.store.unserved(mac, client.arch, why);
    });
    await this.netboot.listen();
  }

  /**
   * With server.uefi_chain: uki, phase 1 as one image signed with the lab's
   * key (src/boot/uki.ts): the whole initramfs (peers cannot serve a part of
   * a signed image) and the server's key archive, built once per phase 1
   * and key into the state folder.
   */
  private async labSignedPhaseOne(
    env: Environment,
    p: PhaseOneFiles,
    base: string,
  ): Promise<string | undefined> {
    if (env.server.uefiChain !== 'uki' || !env.server.uki) return undefined;
    this.log.info("building phase 1 as one image signed with the lab's key", { cert: env.server.uki.cert });
    const file = await buildSignedUki(join(this.stateDir, 'uki'), {
      kernel: join(p.dir, p.kernel),
      initrds: [...p.initrds.map((f) => join(p.dir, f)), ...(p.keyArchive ? [p.keyArchive] : [])],
      cmdline: `${p.cmdline} boottorrent.server=${base} boottorrent.mac=auto`.trim(),
      key: env.server.uki.key,
      cert: env.server.uki.cert,
    });
    this.log.info('lab-signed phase 1 ready', { file });
    return file;
  }

  /** The dashboard and status API on their own port. */
  private startDashboard(token: string): Promise<DashboardPort> {
    const snapshot = () => this.snapshot();
    const metrics = () => this.metrics();
    return DashboardPort.listen(
      {
        ...(this.options.dashboardHost !== undefined ? { host: this.options.dashboardHost } : {}),
        ...(this.options.dashboardPort !== undefined ? { port: this.options.dashboardPort } : {}),
        ...(this.options.httpLimits ? { httpLimits: this.options.httpLimits } : {}),
      },
      {
        snapshot,
        metrics,
        ...(this.services.dashboard
          ? {
              handler: this.services.dashboard({
                snapshot,
                metrics,
                store: this.store,
                token,
                changes: {
                  on: (e, l) => (this.store.on(e, l), this.roomChanged.on(e, l)),
                  off: (e, l) => (this.store.off(e, l), this.roomChanged.off(e, l)),
                },
                actions: roomActions({
                  environment: () => this.environment,
                  nextBoot: this.nextBoot!,
                  osIds: () => this.library?.entries().map((e) => e.os.id) ?? [],
                  // Machines whose agent reported with its token, not any MAC a DHCP packet named.
                  knownMacs: () =>
                    this.store.list().flatMap((c) => (AGENT_STAGES.has(c.stage) ? [c.mac] : [])),
                  logger: this.log,
                  signal: this.stopping.signal,
                  onChange: () => this.roomChanged.emit('change'),
                }),
              }),
            }
          : {}),
        logger: this.log,
        onFailure: (err) => this.fail('dashboard', err),
      },
    );
  }

  /** Refuses full DHCP when another server answers on the interface: two servers hand out conflicting leases. */
  private async probeDhcp(iface: string, env: Environment): Promise<void> {
    const ms = this.options.dhcpProbeMs ?? 5000;
    if (ms <= 0) return;
    this.log.info(`looking for other DHCP servers on ${iface} for ${ms / 1000} s (full DHCP mode)`);
    let seen;
    try {
      seen = await probeDhcpServers({
        interface: iface,
        serverIp: env.server.address,
        timeoutMs: ms,
        ...(this.services.signal ? { signal: this.services.signal } : {}),
      });
    } catch (err) {
      if (err instanceof BootTorrentError && err.code === 'BT_ERR_ABORTED') throw err;
      this.log.warn(
        `could not look for other DHCP servers on ${iface}: ${(err as Error).message}; make sure this server is the only one there`,
      );
      return;
    }
    if (seen.length === 0) return;
    const who = seen.map((s) => `${s.serverId} (offered ${s.offeredIp})`).join(', ');
    throw new BootTorrentError(
      'BT_ERR_DHCP_CONFIG',
      `another DHCP server answers on ${iface}: ${who}. Two DHCP servers on one LAN hand out conflicting addresses, ` +
        `so full mode (dhcp.mode in ${join(env.dir, 'Boottorrent.yaml')}) will not start. Fix: set dhcp.mode: proxy ` +
        `(that server keeps handing out addresses and BootTorrent adds only the boot information), or turn the other ` +
        `server off, or start with --force-dhcp if you are sure.`,
    );
  }

  /** The secret report tokens derive from: kept in the state folder, so tokens survive a restart. */
  private async loadSecret(): Promise<Buffer> {
    const file = join(this.stateDir, 'secret');
    try {
      const s = await readFile(file);
      if (s.length >= 32) return s;
    } catch {
      // first start
    }
    const s = randomBytes(32);
    await writeAtomic(file, s);
    return s;
  }

  /** A MAC's report token (the client API's; after start). */
  reportToken(mac: string): string {
    return this.started().reportToken(mac);
  }

  /** The boot config for one MAC: the environment's menu with that host's overrides (after start). */
  bootConfig(mac: string, withToken = true): BootConfig {
    return this.started().bootConfig(mac, withToken);
  }

  /**
   * Phase 1 as served: with peers.phase1 on and a stage0.img beside the
   * initramfs, iPXE loads kernel + stage 0 and the initramfs becomes the
   * payload stage 0 fetches and checks (hashed here, not taken from a file).
   */
  private async phaseOneFiles(env: Environment): Promise<PhaseOneFiles> {
    const p = this.options.phase1;
    if (!env.peers.phase1) return p;
    const payload = p.initrds[0];
    const stage0 = 'stage0.img';
    try {
      await stat(join(p.dir, stage0));
    } catch {
      this.log.warn(
        `peers.phase1 is on but ${join(p.dir, stage0)} is missing; phase 1 comes from this server alone. Fix: rebuild phase 1 with \`boottorrent build-phase1\` (xz or gzip compression)`,
      );
      return p;
    }
    if (payload === undefined || p.initrds.length !== 1) return p;
    const hashes = await hashPayload(join(p.dir, payload));
    const payloadSha256 = hashes.sha256;
    this.phase1Sources = new PhaseOneSourcing(
      `${this.bootUrlValue}/phase1/${encodeURIComponent(payload)}`,
      this.log.child('phase1'),
    );
    this.log.info(
      'phase 1 is served by peers: clients load the kernel and stage 0 here, the rest from each other',
      {
        payload: `${payload} (sha256 ${payloadSha256.slice(0, 16)}...)`,
      },
    );
    return {
      ...p,
      stage0: { file: stage0, payloadSha256, blocks: hashes.blocks, blocksSha256: hashes.blocksSha256 },
    };
  }

  /**
   * With peers.phase1_loader: grub, the GRUB loader (phase1-loader.ts):
   * key, signatures and GRUB build, and the phase 1 that names them. A
   * missing grub-mkimage is a warning: clients then load phase 1 by iPXE.
   */
  private async phaseOneLoader(env: Environment, p: PhaseOneFiles, base: string): Promise<PhaseOneFiles> {
    if (env.peers.phase1Loader !== 'grub') return p;
    if (!p.stage0 || !this.phase1Sources) {
      this.log.warn(
        'peers.phase1_loader is grub but phase 1 is not served by peers (peers.phase1 and stage0.img): clients load it by iPXE',
      );
      return p;
    }
    try {
      this.phase1Loader = await PhaseOneLoader.prepare({
        stateDir: this.stateDir,
        publicUrl: base,
        kernel: { name: p.kernel, path: join(p.dir, p.kernel) },
        stage0: join(p.dir, p.stage0.file),
        ...(p.keyArchive ? { keyArchive: p.keyArchive } : {}),
        cmdline: p.cmdline,
        tokenFor: (mac) => this.started().reportToken(mac),
        log: this.log.child('phase1'),
      });
    } catch (err) {
      if (!(err instanceof BootTorrentError)) throw err;
      this.log.warn(`${err.message}; UEFI clients load the kernel and stage 0 by iPXE, from this server`);
      return p;
    }
    this.log.info(
      'UEFI clients load phase 1 through GRUB, which checks every signature: peers serve the kernel too',
      {
        grub: join(this.stateDir, 'grub', GRUB_EFI_FILE),
      },
    );
    return {
      ...p,
      stage0: { ...p.stage0, hold: this.phase1Loader.holdArg() },
      grubEfi: `${GRUB_URL_DIR}${GRUB_EFI_FILE}`,
    };
  }

  /** The kernel command line GRUB gives `mac` (phase1-loader.ts), or undefined when that MAC may not boot here. */
  private grubCmdline(mac: string, base: string): string | undefined {
    const policy = this.netboot?.policy;
    if (!policy || 'refused' in policy.phaseOneFor(mac)) return undefined;
    return `${policy.grubPhaseOne().cmdline} boottorrent.server=${base} boottorrent.mac=${mac}`.trim();
  }

  private started(): ClientApi {
    if (!this.api) throw new BootTorrentError('BT_ERR_SERVER', 'the server has not started');
    return this.api;
  }

  /** A machine reported it boots `os`: a `once` next boot of that OS that applied to it is used up. */
  private nextBootUsed(mac: string, os: string): void {
    const groups = groupsOf(this.environment, mac).map((g) => g.name);
    this.nextBoot
      ?.booted(mac, groups, os)
      .then((e) => {
        if (e) this.roomChanged.emit('change');
        if (e)
          this.log.info(`client ${this.environment.hosts.get(mac)?.name ?? mac} used its next boot (once)`, {
            mac,
            os: e.os,
            via: e.via.kind === 'group' ? `group ${e.via.key}` : 'machine',
          });
      })
      .catch((err: unknown) =>
        this.log.warn('could not save next-boot.json', { error: (err as Error).message }),
      );
  }

  /** The groups and named hosts, with what each group boots next, for status and the dashboard. */
  private room(): RoomSummary {
    const env = this.environment;
    const nb = this.nextBoot?.list();
    return {
      groups: env.groups.map((g) => {
        const e = nb?.groups[g.name];
        return { name: g.name, nextBoot: e ? { os: e.os, once: e.once } : null };
      }),
      hosts: [...env.hosts].flatMap(([mac, h]) => (h.name ? [{ mac, name: h.name }] : [])),
    };
  }

  snapshot(): ServerSnapshot {
    const env = this.environment;
    return buildSnapshot({
      room: this.room(),
      machine: (mac) => {
        const m = machineOf(env, mac);
        const next = this.nextBoot?.forMachine(mac, m.groups);
        return {
          name: m.name,
          groups: m.groups,
          nextBoot: next
            ? { os: next.os, once: next.once, via: next.via.kind === 'group' ? next.via.key : 'machine' }
            : null,
        };
      },
      startedAt: this.startedAt,
      environment: this.environment,
      store: this.store,
      library: this.library ?? { entries: () => [], stats: () => undefined, seederPeerId: undefined },
      tracker: this.tracker,
      phase1Size: this.phase1Size,
      ...(this.upstream ? { upstream: this.upstream.status() } : {}),
      ...(this.fetched ? { fetching: this.fetched.fetching() } : {}),
      sent: () =>
        this.netboot
          ? groupSent({
              dhcp: this.netboot.dhcp.sentBytes,
              tftp: this.netboot.tftp?.sentBytes ?? 0,
              http: this.netboot.http.sent.totals(),
              tracker: this.tracker?.sent.totals().total ?? 0,
              seeder: this.library?.seederBytesSent ?? 0,
            })
          : NOTHING_SENT,
    });
  }

  /**
   * GET /metrics: the snapshot above and the counters the listeners keep
   * (src/server/metrics.ts), in the Prometheus text format.
   */
  metrics(): string {
    const dhcp = this.netboot?.dhcp;
    const tftp = this.netboot?.tftp;
    const errorSources = [dhcp?.errors, tftp?.errors, this.tracker?.errors, this.api?.errors];
    return renderMetrics(
      serverMetrics({
        snapshot: this.snapshot(),
        version: version(),
        processStartSeconds: performance.timeOrigin / 1000,
        boots: this.store.boots,
        failures: this.store.failures,
        unserved: this.store.unservedFirmware,
        dhcp: {
          leases: dhcp?.activeLeases() ?? 0,
          replies: dhcp?.replies ?? {},
        },
        tftp: { active: tftp?.activeTransfers() ?? 0, results: tftp?.results ?? {} },
        errors: (code: ErrorCode) => errorSources.reduce((n, e) => n + (e?.get(code) ?? 0), 0),
      }),
    );
  }

  /**
   * A listener failed after start-up: log which and why, close everything
   * (server.json goes too) and settle `failed`. Once; later failures are
   * part of the same stop.
   */
  private fail(what: string, err: Error): void {
    if (this.closed) return;
    const code = (err as NodeJS.ErrnoException).code;
    const e = new BootTorrentError(
      'BT_ERR_LISTEN',
      `${what} stopped working: ${code ? `${code} ` : ''}${err.message}; stopping the server`,
      { cause: err },
    );
    this.log.error(e.message);
    void this.close().finally(() => this.failWith(e));
  }

  /** Stops everything; safe to call twice and after a failed start. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopping.abort();
    await this.reloader?.close();
    await this.upstream?.close();
    this.fetched?.close();
    await Promise.allSettled([
      this.dashboard?.close(),
      this.netboot?.close(),
      this.library?.close(),
      this.tracker?.close(),
    ]);
    // Only ours: a second start that failed (ports in use) must not remove the running one's.
    if (this.wroteInfo) await rm(join(this.stateDir, SERVER_INFO), { force: true });
  }
}
