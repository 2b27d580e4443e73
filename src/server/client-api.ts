/**
 * What agents get from `start` and send to it: the boot config of a MAC
 * (the environment's menu with that host's overrides, each OS's torrent
 * and files, where the peers are), each OS's .torrent at
 * /api/v1/torrent/<id>.torrent, and progress reports at
 * /api/v1/report/<mac>, each behind that MAC's own token (an HMAC of the
 * server secret) and a body limit.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  BOOT_CONFIG_SIGNATURE_HEADER,
  BOOT_CONFIG_VERSION,
  CATALOG_KIND,
  CATALOG_VERSION,
  type Catalog,
  parseAgentReport,
  type AgentReport,
  type BootConfig,
  type BootOs,
} from '../boot-config.js';
import { overlayArchive } from '../boot/overlay.js';
import { ErrorCounts } from '../errors.js';
import { machineOf, type Machine } from '../env/room.js';
import type { Environment, OsEntry } from '../env/types.js';
import { HTTP_LIMITS } from '../limits.js';
import { DropLog } from '../util/drop-log.js';
import { silentLogger, type Logger } from '../util/logger.js';
import type { CatalogEntry } from './catalog.js';
import type { NextBootFor } from './next-boot.js';
import type { RequesterCheck } from './requester.js';
import type { ClientStore } from './state.js';
import { CATALOG_ROUTE, SERVER_KEY_ROUTE } from './upstream.js';

export interface ClientApiOptions {
  /** The boot HTTP server's base URL (`http://address[:port]`). */
  readonly bootUrl: string;
  /** The server secret report tokens are derived from. */
  readonly secret: Buffer;
  /** Largest agent report body in bytes (default HTTP_LIMITS.reportBodyBytes). */
  readonly reportBodyBytes?: number;
  /** Signs a catalog body (the boot-config key): the x-boottorrent-signature header's value. */
  readonly sign?: (body: Buffer) => string;
  /** The boot-config key's public half (PEM), served to satellites that keep the first key they see. */
  readonly publicKeyPem?: string;
}

export interface ClientApiServices {
  /** The environment served now (a reload changes its menu and OSs). */
  readonly environment: () => Environment;
  readonly library: {
    entries(): readonly CatalogEntry[];
    get(id: string): CatalogEntry | undefined;
    /** The seeder's port, once it listens. */
    readonly seedPort: number | undefined;
  };
  /** Who may have a MAC's report token (src/server/requester.ts). */
  readonly requesters: Pick<RequesterCheck, 'tie'>;
  /** Where reports go. */
  readonly store: Pick<ClientStore, 'report'>;
  /** Each accepted report, after the store has it (phase-1 sources follow agents' reports). */
  readonly onReport?: (mac: string, client: string, report: AgentReport) => void;
  /** What a machine boots next, set by `next-boot` (src/server/next-boot.ts). */
  readonly nextBoot?: (mac: string, groups: readonly string[]) => NextBootFor | undefined;
  /** A satellite's upstream trackers, added to every boot config's (src/server/upstream.ts). */
  readonly upstreamTrackers?: () => readonly string[];
  /** The server's logger; refusals are logged as 'client-api', once per source per minute. */
  readonly logger?: Logger;
}

/** How long a rendered overlay is reused for the same MAC and address. */
export const OVERLAY_CACHE_MS = 30_000;
const OVERLAY_CACHE_ENTRIES = 1024;

/** A menu with a next boot set but waiting forever counts down this long instead (seconds). */
export const NEXT_BOOT_TIMEOUT = 10;

export class ClientApi {
  private readonly log: Logger;
  /** Reports and token requests refused, logged once per source per minute. */
  private readonly drops: DropLog;
  /** Typed errors met in reports (a report that does not parse), by code. */
  readonly errors = new ErrorCounts();
  /** Rendered overlays by "mac address" (overlayFor). */
  private readonly overlays = new Map<string, { env: Environment; at: number; archive: Buffer }>();
  /** Overlays that could not be built, logged once per MAC per minute. */
  private readonly overlayDrops: DropLog;

  constructor(
    private readonly options: ClientApiOptions,
    private readonly services: ClientApiServices,
  ) {
    this.log = services.logger ?? silentLogger;
    this.drops = new DropLog(this.log.child('client-api'));
    this.overlayDrops = new DropLog(this.log.child('overlay'));
  }

  reportToken(mac: string): string {
    return createHmac('sha256', this.options.secret).update(`report ${mac}`).digest('hex').slice(0, 32);
  }

  /**
   * The boot config for `mac` as asked by `client` (its source IP): with the
   * MAC's report token only when the requester is tied to that MAC
   * (src/server/requester.ts); otherwise with an empty token, and the agent
   * boots without reporting.
   */
  async bootConfigFor(mac: string, client: string): Promise<BootConfig> {
    const tie = await this.services.requesters.tie(client, mac);
    if (!tie)
      this.drops.drop(client, 'boot config sent without a report token: requester is not that MAC', { mac });
    // Overlays hold secrets (SSH host keys): loopback trust (local tools) does not cover them.
    return this.bootConfig(mac, tie !== undefined, client, tie !== undefined && tie !== 'loopback');
  }

  /**
   * The boot config for one MAC: the environment's menu with its groups'
   * and its own settings (src/env/room.ts) and its next boot. With the
   * token (a requester tied to the MAC) it also names the machine's
   * overlay, rendered for `client` (its address).
   */
  bootConfig(mac: string, withToken = true, client = '', withOverlay = withToken): BootConfig {
    const env = this.services.environment();
    const base = this.options.bootUrl;
    const m = machineOf(env, mac);
    const all = this.services.library.entries();
    const byId = new Map(all.map((e) => [e.os.id, e]));
    const next = this.services.nextBoot?.(mac, m.groups);
    const served = next && byId.has(next.os) ? next.os : undefined;
    let entries = m.oss ? m.oss.flatMap((id) => byId.get(id) ?? []) : all;
    // A next boot set by the sysadmin is offered even where the menu would not list it.
    if (served && !entries.some((e) => e.os.id === served)) entries = [...entries, byId.get(served)!];
    const oss = entries.map((e) => this.bootOs(e, m.cmdline));
    const ids = new Set(oss.map((o) => o.id));
    let timeout = m.timeout;
    let def = served ?? m.defaultOs;
    if (served && timeout < 0) timeout = NEXT_BOOT_TIMEOUT;
    if (def !== null && !ids.has(def)) def = oss[0]?.id ?? null;
    const { trackers, seeds } = this.peers(env);
    const overlay = withOverlay ? this.overlayFor(m, client) : undefined;
    const withheld =
      m.overlays.length === 0 || overlay
        ? undefined
        : withOverlay
          ? "it could not be built (see the server's log)"
          : 'the server could not tie this request to the MAC (a requester behind a router needs start --report-from)';
    return {
      version: BOOT_CONFIG_VERSION,
      mac,
      server: base,
      menu: { timeout: def === null && timeout >= 0 ? -1 : timeout, default: def },
      seedTime: m.seedTime,
      peers: { trackers, seeds, lsd: env.peers.lsd, pex: env.peers.pex },
      reportUrl: `${base}/api/v1/report/${mac}`,
      reportToken: withToken ? this.reportToken(mac) : '',
      oss,
      ...(m.name ? { name: m.name } : {}),
      ...(withheld ? { overlayWithheld: withheld } : {}),
      ...(overlay
        ? {
            overlay: {
              url: `${base}/api/v1/overlay/${mac}`,
              sha256: createHash('sha256').update(overlay).digest('hex'),
              length: overlay.length,
            },
          }
        : {}),
    };
  }

  /**
   * This server's tracker and seeder as clients reach them; a satellite
   * adds its upstream's trackers, so its clients and the upstream's form
   * one swarm (the tracker's locality keeps each reply half local).
   */
  private peers(env: Environment): { trackers: string[]; seeds: string[] } {
    const base = this.options.bootUrl;
    const seedPort = this.services.library.seedPort;
    const seeds = seedPort !== undefined ? [`${env.server.address}:${seedPort}`] : [];
    const own = env.tracker.enabled
      ? [`${base}/announce`, `udp://${env.server.address}:${env.tracker.port}/announce`]
      : [];
    const upstream = this.services.upstreamTrackers?.() ?? [];
    return { trackers: [...own, ...upstream.filter((u) => !own.includes(u))], seeds };
  }

  /**
   * GET /api/v1/catalog: every OS this server offers, as boot configs list
   * them, with its tracker and seeder, for satellites (`server.upstream`).
   * Nothing in it is per machine; the body is signed like a boot config.
   */
  catalog(): Catalog {
    const env = this.services.environment();
    const { trackers, seeds } = this.peers(env);
    const oss = this.services.library.entries().map((e) => this.bootOs(e));
    const def = env.boot.defaultOs;
    return {
      kind: CATALOG_KIND,
      version: CATALOG_VERSION,
      server: this.options.bootUrl,
      issued: Date.now(),
      defaultOs: def !== null && oss.some((o) => o.id === def) ? def : null,
      trackers,
      seeds,
      oss,
    };
  }

  /**
   * The machine's overlay archive rendered for `client`, or undefined when
   * it has none (or it cannot be built: logged once a minute per MAC).
   * Rendered archives are kept OVERLAY_CACHE_MS per MAC and address for
   * the environment they came from: a client asking again and again costs
   * no disk reads.
   */
  private overlayFor(m: Machine, client: string): Buffer | undefined {
    if (m.overlays.length === 0) return undefined;
    const env = this.services.environment();
    const key = `${m.mac} ${client}`;
    const hit = this.overlays.get(key);
    if (hit && hit.env === env && Date.now() - hit.at < OVERLAY_CACHE_MS) return hit.archive;
    let archive: Buffer | undefined;
    try {
      archive = overlayArchive(
        m.overlays,
        { name: m.name, mac: m.mac, ip: client, group: m.groups[0] ?? null },
        env.dir,
      ).archive;
    } catch (err) {
      this.overlayDrops.drop(m.mac, 'overlay not sent', { error: (err as Error).message });
    }
    this.overlays.delete(key);
    if (archive) {
      if (this.overlays.size >= OVERLAY_CACHE_ENTRIES)
        this.overlays.delete(this.overlays.keys().next().value!);
      this.overlays.set(key, { env, at: Date.now(), archive });
    }
    return archive;
  }

  private bootOs(e: CatalogEntry, extraCmdline = ''): BootOs {
    const base = {
      id: e.os.id,
      name: e.os.name,
      torrentUrl: `${this.options.bootUrl}/api/v1/torrent/${encodeURIComponent(e.os.id)}.torrent`,
      infoHash: e.meta.infoHashHex,
      files: e.files,
    };
    const os: OsEntry = e.os;
    if (os.method === 'kexec')
      return {
        ...base,
        method: 'kexec',
        kernel: os.kernel,
        initrd: os.initrd,
        cmdline: extraCmdline ? `${os.cmdline} ${extraCmdline}`.trim() : os.cmdline,
      };
    if (os.method === 'qemu') return { ...base, method: 'qemu', args: os.args };
    return { ...base, method: 'bin', bin: os.bin, args: os.args };
  }

  /** Routes on the boot HTTP server: torrents and agent reports. False for any other path. */
  route(req: IncomingMessage, res: ServerResponse, path: string, client: string): boolean {
    if (
      path === SERVER_KEY_ROUTE &&
      this.options.publicKeyPem &&
      (req.method === 'GET' || req.method === 'HEAD')
    ) {
      const pem = Buffer.from(this.options.publicKeyPem);
      res.writeHead(200, { 'content-type': 'application/x-pem-file', 'content-length': pem.length });
      res.end(req.method === 'HEAD' ? undefined : pem);
      return true;
    }
    if (path === CATALOG_ROUTE && (req.method === 'GET' || req.method === 'HEAD')) {
      const body = Buffer.from(JSON.stringify(this.catalog()));
      const sign = this.options.sign;
      res.writeHead(200, {
        'content-type': 'application/json',
        'content-length': body.length,
        'cache-control': 'no-store',
        ...(sign ? { [BOOT_CONFIG_SIGNATURE_HEADER]: sign(body) } : {}),
      });
      res.end(req.method === 'HEAD' ? undefined : body);
      return true;
    }
    const torrent = /^\/api\/v1\/torrent\/([^/]+)\.torrent$/.exec(path);
    if (torrent && (req.method === 'GET' || req.method === 'HEAD')) {
      let id = '';
      try {
        id = decodeURIComponent(torrent[1]!);
      } catch {
        // fall through: not found
      }
      const e = this.services.library.get(id);
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
    const overlay = /^\/api\/v1\/overlay\/([0-9a-f:]{17})$/.exec(path);
    if (overlay && (req.method === 'GET' || req.method === 'HEAD')) {
      void this.sendOverlay(req, res, overlay[1]!, client);
      return true;
    }
    const report = /^\/api\/v1\/report\/([0-9a-f:]{17})$/.exec(path);
    if (report && req.method === 'POST') {
      this.readReport(req, res, report[1]!, client);
      return true;
    }
    return false;
  }

  /** A machine's overlay: only to a requester tied to that MAC, as its report token (secrets are in it). */
  private async sendOverlay(
    req: IncomingMessage,
    res: ServerResponse,
    mac: string,
    client: string,
  ): Promise<void> {
    const refuse = (status: number, text: string) => {
      if (!res.headersSent) res.writeHead(status, { 'content-type': 'text/plain' }).end(`${text}\n`);
    };
    try {
      const tie = await this.services.requesters.tie(client, mac);
      if (!tie || tie === 'loopback') {
        this.drops.drop(client, 'overlay refused: requester is not that MAC', { mac });
        return refuse(403, 'an overlay is sent only to the machine it belongs to');
      }
      const m = machineOf(this.services.environment(), mac);
      if (m.overlays.length === 0) return refuse(404, 'this machine has no overlay');
      const overlay = this.overlayFor(m, client);
      if (!overlay) return refuse(503, "this machine's overlay cannot be built now: see the server's log");
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': overlay.length });
      res.end(req.method === 'HEAD' ? undefined : overlay);
    } catch (err) {
      this.log.warn('overlay request failed', { mac, error: (err as Error).message });
      refuse(500, 'internal error');
    }
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
        this.services.store.report(mac, client, r);
        this.services.onReport?.(mac, client, r);
        reply(204, '');
      } catch (err) {
        this.errors.count(err);
        // Client text goes in a field, never into the message (issue #14 item 7).
        this.drops.drop(client, 'bad agent report dropped', { mac, error: (err as Error).message });
        if (!res.headersSent) reply(400, (err as Error).message);
      }
    });
  }
}
