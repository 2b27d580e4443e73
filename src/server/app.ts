/**
 * `boottorrent start`: one process that serves an environment. It loads and
 * checks the environment, hashes each OS folder into a torrent (cached),
 * then starts the tracker, the seeder, DHCP/TFTP/HTTP and the dashboard;
 * logs one line per client event; picks up OS folders added or changed
 * while it runs; and stops everything on close() (Ctrl-C / SIGTERM in the
 * CLI). If any part fails to start, the parts already started are closed.
 */
import { watchListener } from '../util/listener-error.js';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFile, writeFile, rename, mkdir, rm, readdir, stat } from 'node:fs/promises';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { networkInterfaces } from 'node:os';
import { dirname, join } from 'node:path';
import { BootTorrentError, errorText } from '../errors.js';
import { createBoundedServer, httpLimits, type HttpListenerLimits } from '../util/http-guard.js';
import { refuseBadTarget, requestUrl } from '../http/target.js';
import { HTTP_LIMITS } from '../limits.js';
import { DropLog, LineBudget } from '../util/drop-log.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { inspectEnvironment, loadEnvironment } from '../env/load.js';
import type { Environment, OsEntry } from '../env/types.js';
import { TrackerServer } from '../tracker/server.js';
import { BitTorrentClient } from '../swarm/client.js';
import type { TorrentSession } from '../swarm/session.js';
import { NetbootServer, type PhaseOneFiles } from './netboot.js';
import { RequesterCheck } from './requester.js';
import { groupSent, NOTHING_SENT } from './traffic.js';
import { OsCatalog, type CatalogEntry } from './catalog.js';
import { probeDhcpServers } from '../dhcp/probe.js';
import { ClientStore, type ServerSnapshot, type ClientState, type SwarmSummary } from './state.js';
import { BOOT_CONFIG_VERSION, parseAgentReport, type BootConfig, type BootOs } from '../boot-config.js';

export interface StartOptions {
  readonly envDir: string;
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
  /** The dashboard handler (GET /, SSE); the built-in one serves only /api/v1/status. */
  readonly dashboard?: (ctx: {
    snapshot: () => ServerSnapshot;
    store: ClientStore;
    token: string;
  }) => DashboardHandler;
}

export interface DashboardHandler {
  handle(req: IncomingMessage, res: ServerResponse): boolean;
  close(): void;
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
export const SERVER_INFO = 'server.json';

function interfaceOf(address: string): string | undefined {
  for (const [name, list] of Object.entries(networkInterfaces()))
    if ((list ?? []).some((a) => a.family === 'IPv4' && a.address === address)) return name;
  return undefined;
}

async function writeAtomic(path: string, data: string | Buffer, mode = 0o600): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, data, { mode });
  await rename(tmp, path);
}

/** Bytes of the phase-1 files every client loads (0 for a file not there: netboot says so at listen). */
async function phaseOneSize(p: PhaseOneFiles): Promise<number> {
  let n = 0;
  for (const f of [p.kernel, ...p.initrds])
    n += await stat(join(p.dir, f)).then(
      (s) => s.size,
      () => 0,
    );
  return n;
}

/** Size and mtime of every file under the environment: changes mean "look again". */
async function envFingerprint(dir: string): Promise<string> {
  const parts: string[] = [];
  const add = async (p: string) => {
    try {
      const st = await stat(p);
      parts.push(`${p}\0${st.size}\0${st.mtimeMs}`);
    } catch {
      parts.push(`${p}\0-`);
    }
  };
  await add(join(dir, 'Boottorrent.yaml'));
  let names: string[] = [];
  try {
    names = (await readdir(join(dir, 'oss'), { recursive: true })).sort();
  } catch {
    // no oss/ folder: the loader says so
  }
  for (const n of names) await add(join(dir, 'oss', n));
  return parts.join('\n');
}

/**
 * The dashboard port's request listener: the dashboard's own URLs, else a
 * bare status JSON (when there is no dashboard), else 404. Answers every
 * request, also one whose target does not parse as a URL (`GET //`).
 */
export function dashboardListener(
  dashboard: DashboardHandler | undefined,
  snapshot: () => ServerSnapshot,
  log: Logger = silentLogger,
): (req: IncomingMessage, res: ServerResponse) => void {
  const answer = (req: IncomingMessage, res: ServerResponse): void => {
    if (dashboard?.handle(req, res)) return;
    const path = requestUrl(req.url)?.pathname;
    if (path === undefined) return refuseBadTarget(res);
    if (path === '/api/v1/status' && (req.method === 'GET' || req.method === 'HEAD')) {
      res
        .writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' })
        .end(`${JSON.stringify(snapshot())}\n`);
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  };
  // A throw in a request listener is an uncaught exception, which ends the
  // process: one request's fault is caught here and ends that request only.
  return (req, res) => {
    try {
      answer(req, res);
    } catch (err) {
      log.error('dashboard request failed', { url: req.url, error: (err as Error).message });
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' }).end('internal error\n');
      else res.destroy();
    }
  };
}

export class BootServer {
  readonly store: ClientStore;
  private env!: Environment;
  private catalog!: OsCatalog;
  private tracker: TrackerServer | undefined;
  private seeder: BitTorrentClient | undefined;
  private netboot: NetbootServer | undefined;
  private dashboardServer: Server | undefined;
  private dashboard: DashboardHandler | undefined;
  private readonly sessions = new Map<string, TorrentSession>();
  private readonly log: Logger;
  private secret: Buffer = Buffer.alloc(0);
  /** The dashboard's action token; never in anything sent to a client. */
  private token = '';
  private requesters!: RequesterCheck;
  /** Reports and token requests refused, logged once per source per minute. */
  private readonly drops: DropLog;
  /** Failed accepts on the dashboard port (a connection flood): one line a minute, counted. */
  private readonly dashboardDrops: DropLog;
  /** Settles once, when a listener fails after start-up. */
  private failWith!: (err: BootTorrentError) => void;
  /**
   * Resolves with the error when a listener (HTTP, dashboard, TFTP, DHCP,
   * tracker, seeder) fails after start-up; everything is closed by then.
   * `start` waits on it beside Ctrl-C.
   */
  readonly failed: Promise<BootTorrentError>;
  private startedAt = Date.now();
  /** Bytes of one phase 1 (kernel + initramfs files), read at start. */
  private phase1Size = 0;
  private reloadTimer: NodeJS.Timeout | undefined;
  /** The reload in progress, if any (close() waits for it). */
  private reloadRun: Promise<void> | undefined;
  /** server.json is ours to remove only once we wrote it. */
  private wroteInfo = false;
  private lastFingerprint = '';
  private stateDir = '';
  private dashboardUrlValue = '';
  private bootUrlValue = '';
  private closed = false;
  /** Times each OS's seeding session failed and was started again (for the back-off). */
  private readonly reseeds = new Map<string, number>();
  /** 'asked DHCP' lines: anyone can send DISCOVERs from made-up MACs by the thousand. */
  private readonly dhcpLines: LineBudget;
  /** Progress quarter last logged per client, so the log says 25/50/75 % once each. */
  private readonly loggedQuarter = new Map<string, number>();

  constructor(
    private readonly options: StartOptions,
    private readonly services: StartServices = {},
  ) {
    this.log = services.logger ?? silentLogger;
    this.dhcpLines = new LineBudget(this.log);
    this.drops = new DropLog(this.log.child('client-api'));
    this.dashboardDrops = new DropLog(this.log.child('dashboard'));
    this.failed = new Promise((resolve) => (this.failWith = resolve));
    this.store = new ClientStore((os) => this.catalog?.get(os)?.meta.length);
  }

  get environment(): Environment {
    return this.env;
  }
  get dashboardUrl(): string {
    return this.dashboardUrlValue;
  }
  get bootUrl(): string {
    return this.bootUrlValue;
  }
  /** The server's seeder, e.g. for its upload totals. */
  get seedClient(): BitTorrentClient | undefined {
    return this.seeder;
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
    const env = await loadEnvironment(this.options.envDir);
    this.env = env;
    const iface = env.server.interface ?? interfaceOf(env.server.address);
    if (!iface)
      throw new BootTorrentError(
        'BT_ERR_SERVER',
        `no interface has address ${env.server.address} (server.address in ${join(env.dir, 'Boottorrent.yaml')}); fix: set it to the lab interface's address`,
      );
    if (env.dhcp.mode === 'full') await this.probeDhcp(iface, env);
    this.requesters = new RequesterCheck(
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
    this.phase1Size = await phaseOneSize(this.options.phase1);
    this.stateDir = join(env.dir, STATE_DIR);
    await mkdir(this.stateDir, { recursive: true, mode: 0o700 });
    this.secret = await this.loadSecret();
    this.token = randomBytes(16).toString('hex');
    const address = env.server.address;
    const httpPort = env.server.httpPort;
    const base = `http://${address}${httpPort === 80 ? '' : `:${httpPort}`}`;
    this.bootUrlValue = base;

    // 1. Torrents for every OS folder (cached by content).
    this.catalog = new OsCatalog(
      {
        cacheDir: join(this.stateDir, 'torrents'),
        ...(env.tracker.enabled ? { announce: `${base}/announce` } : {}),
      },
      {
        logger: this.log,
        ...(this.services.signal ? { signal: this.services.signal } : {}),
        ...(this.services.onHashProgress ? { onProgress: this.services.onHashProgress } : {}),
      },
    );
    await this.catalog.update(env.oss);
    this.lastFingerprint = await envFingerprint(env.dir);

    // 2. Tracker: its own port (UDP + HTTP, as opentracker did) and /announce on the boot HTTP server.
    if (env.tracker.enabled) {
      this.tracker = new TrackerServer(
        { host: '0.0.0.0', port: env.tracker.port },
        { logger: this.log.child('tracker') },
      );
      this.tracker.on('listenerError', (err) => this.fail('tracker', err));
      for (const e of this.catalog.entries()) this.tracker.add(e.meta.infoHash);
      await this.tracker.listen();
    }

    // 3. The seeder: every OS, from its folder, trusted (the catalog just checked the fingerprint).
    this.seeder = new BitTorrentClient(
      { host: '0.0.0.0', port: this.options.seedPort ?? 6881 },
      {
        logger: this.log.child('seed'),
        ...(this.services.signal ? { signal: this.services.signal } : {}),
        onListenerError: (err) => this.fail('seeder (peer listener)', err),
      },
    );
    await this.seeder.listen();
    for (const e of this.catalog.entries()) await this.seed(e);

    // 4. DHCP, TFTP, HTTP.
    this.netboot = new NetbootServer(
      {
        interface: iface,
        serverIp: address,
        dhcp: {
          mode: env.dhcp.mode,
          ...(env.dhcp.range ? { rangeStart: env.dhcp.range.first, rangeEnd: env.dhcp.range.last } : {}),
          ...(env.dhcp.router ? { router: env.dhcp.router } : {}),
          dns: env.dhcp.dns,
          leaseTimeSeconds: env.dhcp.leaseSeconds,
          leasesFile: join(this.stateDir, 'leases.json'),
        },
        ipxeDir: env.server.ipxeDir,
        httpPort,
        ...(this.options.httpLimits ? { httpLimits: this.options.httpLimits } : {}),
        ...(this.options.tftpPort !== undefined ? { tftpPort: this.options.tftpPort } : {}),
        phase1: this.options.phase1,
        ...(env.allowMacs ? { allowMacs: env.allowMacs } : {}),
        bootConfig: (mac, client) => this.bootConfigFor(mac, client),
      },
      {
        logger: this.log,
        ...(this.tracker ? { tracker: this.tracker } : {}),
        routes: (req, res, path, client) => this.route(req, res, path, client),
        onBootStep: (s) => {
          if (s.kind === 'script') this.store.ipxe(s.mac, s.client);
          else if (s.kind === 'phase1') this.store.phase1(s.mac);
        },
        onListenerError: (err) => this.fail('boot HTTP server', err),
      },
    );
    this.netboot.dhcp.on('listenerError', (err) => this.fail('DHCP server', err));
    this.netboot.tftp.on('listenerError', (err) => this.fail('TFTP server', err));
    this.netboot.dhcp.on('lease', (l) => this.store.dhcp(l.mac, { ip: l.ip }));
    this.netboot.dhcp.on('boot', (b) =>
      this.store.dhcp(b.mac, { firmware: b.client.ipxe ? 'ipxe' : b.client.arch }),
    );
    await this.netboot.listen();

    // 5. Dashboard and status API.
    await this.startDashboard();
    this.watchEvents();
    await writeAtomic(
      join(this.stateDir, SERVER_INFO),
      JSON.stringify({
        pid: process.pid,
        startedAt: this.startedAt,
        dashboardUrl: this.dashboardUrlValue,
        bootUrl: base,
        token: this.token,
      } satisfies ServerInfoFile),
    );
    this.wroteInfo = true;
    const interval = this.options.reloadIntervalMs ?? 2000;
    this.reloadTimer = setInterval(() => {
      this.reloadRun ??= this.reload().finally(() => (this.reloadRun = undefined));
    }, interval);
    this.reloadTimer.unref();
    this.log.info('ready', {
      environment: env.dir,
      interface: iface,
      address,
      dhcp: env.dhcp.mode,
      oss:
        this.catalog
          .entries()
          .map((e) => e.os.id)
          .join(',') || '(none)',
      dashboard: this.dashboardUrlValue,
    });
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

  private async seed(e: CatalogEntry): Promise<void> {
    const seeder = this.seeder!;
    if (this.sessions.get(e.os.id)?.meta.infoHashHex === e.meta.infoHashHex) return;
    const session = await seeder.add({
      meta: e.meta,
      // The torrent's name is the folder's name, so its data root is the folder's parent.
      dir: dirname(e.os.dir),
      mode: 'seed',
      verify: false,
      // Announced from the lab address, so the tracker hands clients an address they can reach.
      trackers: this.env.tracker.enabled
        ? [`http://${this.env.server.address}:${this.env.tracker.port}/announce`]
        : [],
      pex: this.env.peers.pex,
      ...(this.env.peers.lsd ? { lsdInterface: this.env.server.address } : {}),
      ...(this.options.uploadLimit ? { uploadLimit: this.options.uploadLimit } : {}),
    });
    this.sessions.set(e.os.id, session);
    // A fault inside a torrent session ends that session only (issue #14);
    // the room still needs the OS seeded, so seed it again after a pause
    // that grows while it keeps failing.
    session.once('failed', (err) => {
      const wait = Math.min(300_000, 5_000 * 2 ** (this.reseeds.get(e.os.id) ?? 0));
      this.reseeds.set(e.os.id, (this.reseeds.get(e.os.id) ?? 0) + 1);
      this.log.error('seeding stopped after a fault; seeding again soon', {
        os: e.os.id,
        error: err.message,
        retryInSeconds: wait / 1000,
      });
      const timer = setTimeout(() => {
        if (this.closed || this.sessions.get(e.os.id) !== session) return;
        this.sessions.delete(e.os.id);
        void seeder
          .remove(e.meta.infoHashHex)
          .then(() =>
            this.closed || this.catalog?.get(e.os.id)?.meta.infoHashHex !== e.meta.infoHashHex
              ? undefined
              : this.seed(e),
          )
          .catch((error: unknown) =>
            this.log.error('seeding again failed', { os: e.os.id, error: errorText(error) }),
          );
      }, wait);
      timer.unref();
    });
  }

  // --- what agents get --------------------------------------------------

  reportToken(mac: string): string {
    return createHmac('sha256', this.secret).update(`report ${mac}`).digest('hex').slice(0, 32);
  }

  private bootOs(e: CatalogEntry): BootOs {
    const base = {
      id: e.os.id,
      name: e.os.name,
      torrentUrl: `${this.bootUrlValue}/api/v1/torrent/${encodeURIComponent(e.os.id)}.torrent`,
      infoHash: e.meta.infoHashHex,
      files: e.files,
    };
    const os: OsEntry = e.os;
    if (os.method === 'kexec')
      return { ...base, method: 'kexec', kernel: os.kernel, initrd: os.initrd, cmdline: os.cmdline };
    if (os.method === 'qemu') return { ...base, method: 'qemu', args: os.args };
    return { ...base, method: 'bin', bin: os.bin, args: os.args };
  }

  /**
   * The boot config for `mac` as asked by `client` (its source IP): with the
   * MAC's report token only when the requester is tied to that MAC
   * (src/server/requester.ts); otherwise with an empty token, and the agent
   * boots without reporting.
   */
  async bootConfigFor(mac: string, client: string): Promise<BootConfig> {
    const tie = await this.requesters.tie(client, mac);
    if (!tie)
      this.drops.drop(client, 'boot config sent without a report token: requester is not that MAC', { mac });
    return this.bootConfig(mac, tie !== undefined);
  }

  /** The boot config for one MAC: the environment's menu with that host's overrides. */
  bootConfig(mac: string, withToken = true): BootConfig {
    const env = this.env;
    const host = env.hosts.get(mac);
    const oss = this.catalog.entries().map((e) => this.bootOs(e));
    const ids = new Set(oss.map((o) => o.id));
    const timeout = host?.timeout ?? env.boot.timeout;
    let def = host?.defaultOs ?? env.boot.defaultOs;
    if (def !== null && !ids.has(def)) def = oss[0]?.id ?? null;
    const seeds = this.seeder ? [`${env.server.address}:${this.seeder.listenPort}`] : [];
    const trackers = this.tracker
      ? [`${this.bootUrlValue}/announce`, `udp://${env.server.address}:${env.tracker.port}/announce`]
      : [];
    return {
      version: BOOT_CONFIG_VERSION,
      mac,
      server: this.bootUrlValue,
      menu: { timeout: def === null && timeout >= 0 ? -1 : timeout, default: def },
      seedTime: env.boot.seedTime,
      peers: { trackers, seeds, lsd: env.peers.lsd, pex: env.peers.pex },
      reportUrl: `${this.bootUrlValue}/api/v1/report/${mac}`,
      reportToken: withToken ? this.reportToken(mac) : '',
      oss,
    };
  }

  /** Extra routes on the boot HTTP server: torrents and agent reports. */
  private route(req: IncomingMessage, res: ServerResponse, path: string, client: string): boolean {
    const torrent = /^\/api\/v1\/torrent\/([^/]+)\.torrent$/.exec(path);
    if (torrent && (req.method === 'GET' || req.method === 'HEAD')) {
      let id = '';
      try {
        id = decodeURIComponent(torrent[1]!);
      } catch {
        // fall through: not found
      }
      const e = this.catalog.get(id);
      if (!e) {
        res
          .writeHead(404, { 'content-type': 'text/plain' })
          .end(`no OS ${JSON.stringify(id)} on this server\n`);
        return true;
      }
      res.writeHead(200, { 'content-type': 'application/x-bittorrent', 'content-length': e.torrent.length });
      res.end(req.method === 'HEAD' ? undefined : e.torrent);
      return true;
    }
    const report = /^\/api\/v1\/report\/([0-9a-f:]{17})$/.exec(path);
    if (report && req.method === 'POST') {
      this.readReport(req, res, report[1]!, client);
      return true;
    }
    return false;
  }

  private readReport(req: IncomingMessage, res: ServerResponse, mac: string, client: string): void {
    const reply = (status: number, text: string): void => {
      res.writeHead(status, { 'content-type': 'text/plain' }).end(status === 204 ? undefined : `${text}\n`);
    };
    // A reset mid-body is that request's end, nothing more.
    req.on('error', (err) => this.log.debug('report connection failed', { mac, client, error: err.message }));
    // The token is the MAC's own (HMAC of the server secret): one MAC's token reports as no other.
    const given = Buffer.from(String(req.headers['x-boottorrent-token'] ?? ''));
    const want = Buffer.from(this.reportToken(mac));
    if (given.length !== want.length || !timingSafeEqual(given, want)) {
      req.resume();
      this.drops.drop(client, 'report refused: bad or missing token', { mac });
      return reply(403, 'bad or missing x-boottorrent-token');
    }
    const max = this.options.reportBodyBytes ?? HTTP_LIMITS.reportBodyBytes;
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      if (res.headersSent) return;
      size += c.length;
      if (size > max) {
        this.drops.drop(client, 'report refused: body too large', { mac, limit: max });
        // Close after the answer: the rest of the body is not read.
        res.setHeader('connection', 'close');
        reply(413, 'report too large');
        req.pause();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (res.headersSent) return;
      try {
        const r = parseAgentReport(Buffer.concat(chunks).toString('utf8'));
        this.store.report(mac, client, r);
        reply(204, '');
      } catch (err) {
        // Client text goes in a field, never into the message (issue #14 item 7).
        this.drops.drop(client, 'bad agent report dropped', { mac, error: (err as Error).message });
        if (!res.headersSent) reply(400, (err as Error).message);
      }
    });
  }

  // --- state ------------------------------------------------------------

  snapshot(): ServerSnapshot {
    const swarmsByHash = new Map((this.tracker?.swarms() ?? []).map((s) => [s.infoHash, s]));
    const seederId = this.seeder?.peerId.toString('hex');
    const swarms: SwarmSummary[] = this.catalog.entries().map((e) => {
      const t = swarmsByHash.get(e.meta.infoHashHex);
      const s = this.sessions.get(e.os.id)?.stats();
      return {
        os: e.os.id,
        name: e.os.name,
        infoHash: e.meta.infoHashHex,
        size: e.meta.length,
        seeders: t?.seeders ?? 0,
        leechers: t?.leechers ?? 0,
        completed: t?.completed ?? 0,
        serverUploaded: s?.uploaded ?? 0,
        // Everything peers announced they uploaded (also those gone since), less the server's own seeder.
        peerUploaded: t ? t.uploaded - (t.peers.find((p) => p.peerId === seederId)?.uploaded ?? 0) : 0,
      };
    });
    const clients: ClientState[] = this.store.list();
    const deliveredOs = clients.reduce((n, c) => n + c.downloaded, 0);
    const deliveredPhase1 = this.store.phase1Loads * this.phase1Size;
    return {
      startedAt: this.startedAt,
      now: Date.now(),
      server: {
        address: this.env.server.address,
        interface: this.env.server.interface,
        httpPort: this.env.server.httpPort,
        dhcp: this.env.dhcp.mode,
        environment: this.env.dir,
        phase1Size: this.phase1Size,
      },
      clients,
      swarms,
      totals: {
        serverUploaded: swarms.reduce((n, s) => n + s.serverUploaded, 0),
        delivered: deliveredPhase1 + deliveredOs,
        deliveredPhase1,
        deliveredOs,
        sent: this.netboot
          ? groupSent({
              dhcp: this.netboot.dhcp.sentBytes,
              tftp: this.netboot.tftp.sentBytes,
              http: this.netboot.http.sent.totals(),
              tracker: this.tracker?.sent.totals().total ?? 0,
              seeder: this.seeder?.bytesSent ?? 0,
            })
          : NOTHING_SENT,
        booted: clients.filter((c) => c.stage === 'booting' || c.stage === 'running').length,
        failed: clients.filter((c) => c.stage === 'failed').length,
      },
    };
  }

  private async startDashboard(): Promise<void> {
    const ctx = { snapshot: () => this.snapshot(), store: this.store, token: this.token };
    this.dashboard = this.services.dashboard?.(ctx);
    const server = createBoundedServer(
      dashboardListener(this.dashboard, () => this.snapshot(), this.log.child('dashboard')),
      httpLimits(this.options.httpLimits),
      this.log.child('dashboard'),
    );
    const host = this.options.dashboardHost ?? '127.0.0.1';
    const port = this.options.dashboardPort ?? 8480;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(
          new BootTorrentError(
            'BT_ERR_LISTEN',
            `dashboard cannot listen on ${host}:${port}: ${err.code}; fix: stop what uses it or pass --dashboard HOST:PORT`,
            { cause: err },
          ),
        ),
      );
      server.listen(port, host, () => resolve());
    });
    watchListener(
      server,
      { drops: this.dashboardDrops, packet: 'dashboard connection not accepted' },
      (err) => this.fail('dashboard', err),
    );
    this.dashboardServer = server;
    const addr = server.address();
    const bound = typeof addr === 'object' && addr ? addr.port : port;
    this.dashboardUrlValue = `http://${host.includes(':') ? `[${host}]` : host}:${bound}/`;
  }

  /** One readable log line per client event. */
  private watchEvents(): void {
    this.store.on('stage', (c, previous) => {
      const who = `client ${c.mac}${c.ip ? ` (${c.ip})` : ''}`;
      switch (c.stage) {
        case 'dhcp':
          if (previous === null || c.ip)
            this.dhcpLines.info(`${who} asked DHCP${c.firmware ? ` (${c.firmware})` : ''}`);
          break;
        case 'ipxe':
          this.log.info(`${who} runs iPXE: sending phase 1`);
          break;
        case 'phase1':
          this.log.info(`${who} loads phase 1`);
          break;
        case 'menu':
          this.log.info(`${who} shows the menu`);
          break;
        // The OS id and the error come from the client's report: fields, not message text.
        case 'downloading':
          this.loggedQuarter.set(c.mac, 0);
          this.log.info(`${who} chose an OS: downloading`, { os: c.os ?? '?' });
          break;
        case 'seeding':
          this.log.info(`${who} verified its OS; seeding before it boots`, { os: c.os ?? '?' });
          break;
        case 'booting':
          this.log.info(`${who} boots after ${c.bootSeconds?.toFixed(1) ?? '?'} s`, { os: c.os ?? '?' });
          break;
        case 'running':
          this.log.info(`${who} runs its OS`, { os: c.os ?? '?' });
          break;
        case 'failed':
          this.log.warn(`${who} failed`, { error: c.error ?? 'no reason given' });
          break;
        default:
          this.log.debug(`${who} ${c.stage}`);
      }
    });
    this.store.on('change', (c) => {
      if (c.stage !== 'downloading') return;
      const q = Math.floor(c.progress * 4);
      if (q > (this.loggedQuarter.get(c.mac) ?? 0) && q < 4) {
        this.loggedQuarter.set(c.mac, q);
        this.log.info(`client ${c.mac} ${q * 25} % (${c.peers} peers)`, { os: c.os ?? '?' });
      }
    });
  }

  /** Picks up OS folders added, changed or removed (and boot settings) without a restart. */
  private async reload(): Promise<void> {
    if (this.closed) return;
    try {
      const fp = await envFingerprint(this.env.dir);
      if (fp === this.lastFingerprint) return;
      const { env, problems } = await inspectEnvironment(this.env.dir, { machineChecks: false });
      if (!env) {
        this.log.warn('environment changed but has problems; still serving the previous one', {
          problems: problems.length,
        });
        for (const p of problems)
          this.log.warn(`${p.file}${p.line ? `:${p.line}` : ''}: ${p.field}: ${p.message}`);
        this.lastFingerprint = fp;
        return;
      }
      const { added, removed } = await this.catalog.update(env.oss);
      for (const e of removed) {
        const s = [...this.sessions.entries()].find(([, v]) => v.meta.infoHashHex === e.meta.infoHashHex);
        if (s) {
          this.sessions.delete(s[0]);
          await this.seeder?.remove(e.meta.infoHashHex);
        }
        this.tracker?.remove(e.meta.infoHash);
      }
      this.env = {
        ...this.env,
        boot: env.boot,
        hosts: env.hosts,
        oss: env.oss,
        allowMacs: this.env.allowMacs,
      };
      let failed = false;
      for (const e of added) {
        this.tracker?.add(e.meta.infoHash);
        // One OS that cannot be seeded must not keep the others from it.
        await this.seed(e).catch((err: unknown) => {
          failed = true;
          this.log.warn(`cannot seed ${e.os.id}; will try again`, { error: (err as Error).message });
        });
      }
      // A failure leaves the fingerprint stale, so the next tick tries again.
      if (!failed) this.lastFingerprint = fp;
      if (added.length || removed.length)
        this.log.info('environment reloaded', {
          added: added.map((e) => e.os.id).join(',') || '-',
          removed: removed.map((e) => e.os.id).join(',') || '-',
        });
    } catch (err) {
      this.log.warn('reload failed; will try again', { error: (err as Error).message });
    }
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
    if (this.reloadTimer) clearInterval(this.reloadTimer);
    await this.reloadRun;
    this.dashboard?.close();
    const d = this.dashboardServer;
    this.dashboardServer = undefined;
    await Promise.allSettled([
      d
        ? new Promise<void>((resolve) => {
            d.close(() => resolve());
            d.closeAllConnections();
          })
        : undefined,
      this.netboot?.close(),
      this.seeder?.close(),
      this.tracker?.close(),
    ]);
    // Only ours: a second start that failed (ports in use) must not remove the running one's.
    if (this.wroteInfo) await rm(join(this.stateDir, SERVER_INFO), { force: true });
  }
}
