/**
 * The BitTorrent tracker: HTTP (BEP 3/23/48) and UDP (BEP 15) on the same
 * port number, one swarm table behind both. This module owns the tracker's
 * sockets (STYLE.md lesson 2); the codecs beside it stay pure.
 *
 * Both transports decode to one AnnounceRequest and call `announce()`; a
 * malformed request is logged and refused or dropped, only a listener failure
 * is fatal (STYLE.md lesson 4).
 *
 * A hostile client cannot grow the tables or the cost of an announce (issue
 * #14): peers are capped per source address, per swarm and in total, swarms
 * in total (TRACKER_LIMITS in src/limits.ts); silent peers expire on a timer,
 * not during announces; and a reply samples its peers at random without
 * copying the swarm.
 */
import { createHmac, randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import type { Socket as UdpSocket, RemoteInfo } from 'node:dgram';
import { EventEmitter } from 'node:events';
import { ByteMeter } from '../util/byte-meter.js';
import { createBoundedServer, httpLimits, type HttpListenerLimits } from '../util/http-guard.js';
import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http';
import { BootTorrentError, ErrorCounts, isBootTorrentError } from '../errors.js';
import { TRACKER_LIMITS } from '../limits.js';
import { DropLog } from '../util/drop-log.js';
import { networkKey } from '../util/address.js';
import type { LogFields, Logger } from '../util/logger.js';
import {
  encodeAnnounceResponse,
  encodeFailure,
  encodeScrapeResponse,
  parseAnnounceQuery,
  parseScrapeQuery,
} from './http-codec.js';
import type {
  AnnounceEvent,
  AnnounceRequest,
  AnnounceResponse,
  PeerAddress,
  ScrapeFile,
  TrackerLogger,
} from './types.js';
import { silentLogger } from './types.js';
import { decodeUdpRequest, encodeUdpResponse, isIpv4 } from './udp-codec.js';
import type { UdpRequest, UdpResponse } from './udp-codec.js';
import { watchListener } from '../util/listener-error.js';

export interface TrackerServerOptions {
  /** Address for both listeners (default '0.0.0.0'). */
  host?: string;
  /** TCP (HTTP) and UDP port, the same number; 0 picks one free for both (default 6969). */
  port?: number;
  /** Seconds between regular announces we ask for (default 60: a LAN boot is short). */
  intervalSeconds?: number;
  /** `min interval` we send to HTTP clients (default: none). */
  minIntervalSeconds?: number;
  /** A peer silent this long is dropped (default: 2 intervals + 30 s, in ms). */
  peerTimeoutMs?: number;
  /** Serve any infohash (true) or only those given to add() (default false). */
  open?: boolean;
  /**
   * Locality (issue #21): up to half of a reply are peers whose address
   * shares this many leading bits (IPv4; IPv6 /64) with the announcer's,
   * the rest drawn from the whole swarm. On a campus of many subnets a
   * client then knows its neighbours, whom its engine asks first, and
   * still some of everyone. Default 24; false: the whole reply at random.
   */
  localityPrefix?: number | false;
  /** Use the announce's `ip` field instead of the socket's address (only for NAT-free LANs). */
  trustIpParam?: boolean;
  /** Peers per reply when the client does not say (default 50); also the cap. */
  maxPeersPerReply?: number;
  /** Peers one source address has in one swarm (default TRACKER_LIMITS.peersPerIp). */
  peersPerIp?: number;
  /** Peers one source address has in all swarms (default TRACKER_LIMITS.peersPerIpAllSwarms). */
  peersPerIpAllSwarms?: number;
  /** Peers in one swarm (default TRACKER_LIMITS.peersPerSwarmTotal). */
  peersPerSwarmTotal?: number;
  /** Peers in all swarms (default TRACKER_LIMITS.peersTotal). */
  peersTotal?: number;
  /** Swarms at once, counting those from add() (default TRACKER_LIMITS.swarmsTotal). */
  swarmsTotal?: number;
  /**
   * Deadlines and connection caps of the tracker's HTTP port (default
   * HTTP_LIMITS, with the short deadlines tracker requests need).
   */
  httpLimits?: Partial<HttpListenerLimits>;
}

export interface TrackerServerServices {
  logger?: TrackerLogger;
  /** Clock in ms (default Date.now); tests inject one to expire peers. */
  now?: () => number;
}

/** One peer as the dashboard sees it. */
export interface PeerState {
  /** Lowercase hex of the 20-byte peer id. */
  peerId: string;
  /** The peer id as text with non-printable bytes as '.', e.g. "-aria2-0..." (shows the client). */
  peerIdText: string;
  ip: string;
  port: number;
  uploaded: number;
  downloaded: number;
  left: number;
  /** ms since the epoch (by the server's clock) of the last announce. */
  lastSeen: number;
  /** Finished downloading while we watched (event=completed or left reached 0). */
  completed: boolean;
  /** Transport of the last announce. */
  transport: 'http' | 'udp';
}

export interface SwarmState {
  /** Lowercase hex infohash. */
  infoHash: string;
  seeders: number;
  leechers: number;
  /** Completed downloads counted since the server started (scrape `downloaded`). */
  completed: number;
  peers: PeerState[];
  /** Bytes every peer said it uploaded / downloaded, including peers that have left since. */
  uploaded: number;
  downloaded: number;
}

export interface AnnounceEventInfo {
  infoHash: string;
  event: AnnounceEvent;
  peer: PeerState;
}

export interface PeerExpiredInfo {
  infoHash: string;
  peer: PeerState;
}

export interface TrackerServerEvents {
  announce: [AnnounceEventInfo];
  'peer-expired': [PeerExpiredInfo];
  /** The UDP socket or HTTP server failed after listen(): the tracker no longer serves. */
  listenerError: [Error];
}

/** One peer in a swarm: what the dashboard sees, plus what the caps and the sampling need. */
interface Entry {
  state: PeerState;
  /** The address the announce came from (never the `ip` parameter): what the per-address caps count. */
  source: string;
  /** Index in its swarm's `seeders` or `leechers` array. */
  slot: number;
  /** Its address's network (networkKey), and its index in that network's list in `byNet`. */
  net: string | undefined;
  netSlot: number;
}

interface Swarm {
  /** Keyed by hex peer id. */
  peers: Map<string, Entry>;
  /**
   * The same entries in two arrays (left = 0 and left > 0), so a reply can
   * draw peers at random by index and a seeder can be given leechers first,
   * without copying the swarm; removal swaps the last entry into the hole.
   */
  seeders: Entry[];
  leechers: Entry[];
  /** Entries per source address. */
  bySource: Map<string, number>;
  /** The same entries by network (see TrackerServerOptions.localityPrefix), for same-subnet peers first. */
  byNet: Map<string, Entry[]>;
  completed: number;
  /** Added by add(): kept while empty and served in closed mode. */
  pinned: boolean;
  /** Last reported totals of peers that left (stopped or expired), so the swarm's totals outlive them. */
  goneUploaded: number;
  goneDownloaded: number;
  /** What each expired peer had said, so its totals are not counted twice if it comes back (bounded). */
  expired: Map<string, { uploaded: number; downloaded: number }>;
}

/** Expired peers remembered per swarm for the totals; past this, the oldest are forgotten. */
const MAX_EXPIRED_REMEMBERED = 4096;

const DEFAULT_PORT = 6969;
const DEFAULT_INTERVAL = 60;
const DEFAULT_MAX_PEERS = 50;
const MAX_HTTP_QUERY = 8192;
/** BEP 15: a connection id is valid about 2 minutes; we mint per 1-minute bucket and accept the previous one. */
const CONNECTION_BUCKET_MS = 60_000;
const PORT_RETRIES = 20;
/**
 * Peers a reply may look at beyond the number it wants, to skip the asker
 * itself, port-0 peers and peers gone silent since the last sweep; bounds
 * the work of one announce whatever the swarm holds.
 */
const SAMPLE_SLACK = 32;

function newSwarm(pinned: boolean): Swarm {
  return {
    peers: new Map(),
    seeders: [],
    leechers: [],
    bySource: new Map(),
    byNet: new Map(),
    completed: 0,
    pinned,
    goneUploaded: 0,
    goneDownloaded: 0,
    expired: new Map(),
  };
}

function listOf(swarm: Swarm, left: number): Entry[] {
  return left === 0 ? swarm.seeders : swarm.leechers;
}

function listAdd(list: Entry[], e: Entry): void {
  e.slot = list.length;
  list.push(e);
}

function listRemove(list: Entry[], e: Entry): void {
  const last = list.pop()!;
  if (last !== e) {
    list[e.slot] = last;
    last.slot = e.slot;
  }
}

function bump(counts: Map<string, number>, key: string, by: number): void {
  const n = (counts.get(key) ?? 0) + by;
  if (n > 0) counts.set(key, n);
  else counts.delete(key);
}

/**
 * Up to `want` of the `n` items `at(0..n-1)` in random order that pass
 * `keep`, looking at no more than `maxLooks` of them: a Fisher-Yates shuffle
 * run lazily over the indices, with the swaps kept in a small map, so the
 * cost follows the reply's size, not the swarm's.
 */
function sample<T>(
  n: number,
  at: (i: number) => T,
  want: number,
  keep: (x: T) => boolean,
  maxLooks: number,
): T[] {
  const out: T[] = [];
  const swapped = new Map<number, number>();
  for (let i = 0; i < n && i < maxLooks && out.length < want; i++) {
    const j = i + Math.floor(Math.random() * (n - i));
    const pick = swapped.get(j) ?? j;
    swapped.set(j, swapped.get(i) ?? i);
    const x = at(pick);
    if (keep(x)) out.push(x);
  }
  return out;
}

/** DropLog speaks the scoped Logger; the tracker's logger takes plain lines. */
function lineLogger(log: TrackerLogger): Logger {
  const line = (msg: string, fields?: LogFields): string =>
    fields
      ? `${msg} (${Object.entries(fields)
          .map(([k, v]) => `${k}=${String(v)}`)
          .join(' ')})`
      : msg;
  const l: Logger = {
    debug: (m, f) => log.debug(line(m, f)),
    info: (m, f) => log.debug(line(m, f)),
    warn: (m, f) => log.warn(line(m, f)),
    error: (m, f) => log.warn(line(m, f)),
    child: () => l,
  };
  return l;
}

function peerIdText(id: Buffer): string {
  let s = '';
  for (const b of id) s += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.';
  return s;
}

/** IPv4-mapped IPv6 ('::ffff:1.2.3.4') from a dual-stack socket is an IPv4 peer. */
function normalizeIp(ip: string | undefined): string {
  if (!ip) return '0.0.0.0';
  return ip.startsWith('::ffff:') && isIpv4(ip.slice(7)) ? ip.slice(7) : ip;
}

function hexKey(infoHash: Buffer | string): string {
  const hex = typeof infoHash === 'string' ? infoHash.toLowerCase() : infoHash.toString('hex');
  if (!/^[0-9a-f]{40}$/.test(hex)) {
    throw new BootTorrentError(
      'BT_ERR_USAGE',
      `infohash must be 20 bytes or 40 hex digits, got "${String(hex)}"`,
    );
  }
  return hex;
}

export class TrackerServer extends EventEmitter<TrackerServerEvents> {
  /**
   * What the tracker's own port sent: UDP replies and HTTP answers (its
   * /announce on the boot HTTP server is counted there).
   */
  readonly sent = new ByteMeter<'udp' | 'http'>(['udp', 'http']);
  /** Typed errors met in requests (malformed, refused, expired connection ids), by code. */
  readonly errors = new ErrorCounts();
  private readonly host: string;
  private readonly requestedPort: number;
  private readonly interval: number;
  private readonly localityPrefix: number | false;
  private readonly minInterval: number | undefined;
  private readonly peerTimeoutMs: number;
  private readonly open: boolean;
  private readonly trustIpParam: boolean;
  private readonly maxPeers: number;
  private readonly limits: {
    peersPerIp: number;
    peersPerIpAllSwarms: number;
    peersPerSwarmTotal: number;
    peersTotal: number;
    swarmsTotal: number;
  };
  private readonly log: TrackerLogger;
  /** Refused announces and bad UDP packets, logged once per source address per minute. */
  private readonly drops: DropLog;
  private readonly now: () => number;
  private readonly swarmTable = new Map<string, Swarm>();
  /** Peers per source address in all swarms, and in all. */
  private readonly bySource = new Map<string, number>();
  private peerCount = 0;
  private readonly secret = randomBytes(32);
  private http: HttpServer | undefined;
  private udp: UdpSocket | undefined;
  private sweepTimer: NodeJS.Timeout | undefined;
  private boundPort = 0;
  private readonly httpLimitOverrides: Partial<HttpListenerLimits>;

  constructor(options: TrackerServerOptions = {}, services: TrackerServerServices = {}) {
    super();
    this.host = options.host ?? '0.0.0.0';
    this.requestedPort = options.port ?? DEFAULT_PORT;
    this.interval = options.intervalSeconds ?? DEFAULT_INTERVAL;
    this.minInterval = options.minIntervalSeconds;
    this.peerTimeoutMs = options.peerTimeoutMs ?? (2 * this.interval + 30) * 1000;
    this.open = options.open ?? false;
    this.trustIpParam = options.trustIpParam ?? false;
    this.maxPeers = options.maxPeersPerReply ?? DEFAULT_MAX_PEERS;
    const loc = options.localityPrefix;
    if (loc !== undefined && loc !== false && !(Number.isInteger(loc) && loc >= 0 && loc <= 32)) {
      throw new RangeError(`localityPrefix must be 0-32 or false, not ${String(loc)}`);
    }
    this.localityPrefix = loc ?? 24;
    this.limits = {
      peersPerIp: options.peersPerIp ?? TRACKER_LIMITS.peersPerIp,
      peersPerIpAllSwarms: options.peersPerIpAllSwarms ?? TRACKER_LIMITS.peersPerIpAllSwarms,
      peersPerSwarmTotal: options.peersPerSwarmTotal ?? TRACKER_LIMITS.peersPerSwarmTotal,
      peersTotal: options.peersTotal ?? TRACKER_LIMITS.peersTotal,
      swarmsTotal: options.swarmsTotal ?? TRACKER_LIMITS.swarmsTotal,
    };
    this.httpLimitOverrides = options.httpLimits ?? {};
    this.log = services.logger ?? silentLogger;
    this.drops = new DropLog(lineLogger(this.log), services.now ? { now: services.now } : {});
    this.now = services.now ?? Date.now;
  }

  /** Serve this infohash (20 bytes or 40 hex digits), also in closed mode. */
  add(infoHash: Buffer | string): void {
    const key = hexKey(infoHash);
    const s = this.swarmTable.get(key);
    if (s) s.pinned = true;
    else this.swarmTable.set(key, newSwarm(true));
  }

  /** Stop serving this infohash and forget its peers. */
  remove(infoHash: Buffer | string): void {
    const key = hexKey(infoHash);
    const swarm = this.swarmTable.get(key);
    if (!swarm) return;
    for (const [source, n] of swarm.bySource) bump(this.bySource, source, -n);
    this.peerCount -= swarm.peers.size;
    this.swarmTable.delete(key);
  }

  /** The bound address once listen() resolved. */
  address(): { host: string; port: number } {
    return { host: this.host, port: this.boundPort };
  }

  /**
   * Binds HTTP (TCP) and UDP on one port number. With port 0 the UDP socket
   * picks a free port and TCP tries the same; on a clash both retry. Rejects
   * with BT_ERR_LISTEN when a listener cannot bind.
   */
  async listen(): Promise<{ host: string; port: number }> {
    if (this.http || this.udp) throw new BootTorrentError('BT_ERR_LISTEN', 'tracker is already listening');
    const attempts = this.requestedPort === 0 ? PORT_RETRIES : 1;
    let lastErr: unknown;
    for (let i = 0; i < attempts; i++) {
      const udp = createSocket({ type: isIpv4(this.host) ? 'udp4' : 'udp6' });
      try {
        await bindUdp(udp, this.host, this.requestedPort);
      } catch (err) {
        closeQuietly(udp);
        throw this.listenError('UDP', this.requestedPort, err);
      }
      const port = udp.address().port;
      // The same per-address and total connection caps as the boot HTTP
      // server (#14 review: without them one address could open sockets until
      // the process ran out of file descriptors). Tracker requests are tiny;
      // a slow client must not hold a socket long.
      const http = createBoundedServer(
        (req, res) => {
          this.sent.attribute(res, 'http');
          if (!this.handleHttp(req, res)) {
            res
              .writeHead(404, { 'content-type': 'text/plain' })
              .end('not found: the tracker serves /announce and /scrape\n');
          }
        },
        httpLimits({
          headersTimeoutMs: 10_000,
          requestTimeoutMs: 15_000,
          keepAliveTimeoutMs: 5_000,
          ...this.httpLimitOverrides,
        }),
        lineLogger(this.log),
      );
      this.sent.watch(http);
      try {
        await listenHttp(http, this.host, port);
      } catch (err) {
        closeQuietly(udp);
        lastErr = err;
        if (this.requestedPort === 0 && (err as NodeJS.ErrnoException).code === 'EADDRINUSE') continue;
        throw this.listenError('TCP', port, err);
      }
      this.udp = udp;
      this.http = http;
      this.boundPort = port;
      udp.on('message', (msg, rinfo) => {
        // Containment: a fault while answering one packet is logged; the listener goes on.
        try {
          this.onUdpMessage(msg, rinfo);
        } catch (err) {
          this.log.warn(`tracker: UDP packet from ${rinfo.address}:${rinfo.port} failed: ${String(err)}`);
        }
      });
      // A failed send is one reply lost; any other error means the socket no longer serves.
      const lines = lineLogger(this.log);
      const fail = (err: Error) => this.emit('listenerError', err);
      watchListener(
        udp,
        {
          drops: this.drops,
          packet: 'tracker UDP reply not sent',
          log: lines,
          failed: 'tracker UDP socket failed',
        },
        fail,
      );
      watchListener(
        http,
        {
          drops: this.drops,
          packet: 'tracker HTTP connection not accepted',
          log: lines,
          failed: 'tracker HTTP server failed',
        },
        fail,
      );
      // Expiry runs here, never inside an announce: a sweep visits every peer of every swarm.
      this.sweepTimer = setInterval(() => this.sweepSafely(), Math.min(this.peerTimeoutMs, 30_000));
      this.sweepTimer.unref();
      this.log.debug(`tracker listening on ${this.host}:${port} (HTTP and UDP)`);
      return this.address();
    }
    throw this.listenError('TCP', 0, lastErr);
  }

  private listenError(proto: string, port: number, err: unknown): BootTorrentError {
    const code = (err as NodeJS.ErrnoException | undefined)?.code ?? String(err);
    const fix =
      code === 'EADDRINUSE'
        ? 'another program (another tracker?) uses that port: stop it or choose another port (--port)'
        : code === 'EACCES'
          ? 'ports below 1024 need root: run as root or choose a port >= 1024 (--port)'
          : code === 'EADDRNOTAVAIL'
            ? 'that address is not on this machine: choose one of its addresses (--host)'
            : 'check --host and --port';
    return new BootTorrentError(
      'BT_ERR_LISTEN',
      `tracker cannot listen on ${this.host}:${port} (${proto}): ${code}; ${fix}`,
      {
        cause: err,
      },
    );
  }

  /** Closes both listeners and open HTTP connections. */
  async close(): Promise<void> {
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = undefined;
    const http = this.http;
    const udp = this.udp;
    this.http = undefined;
    this.udp = undefined;
    await Promise.all([
      http &&
        new Promise<void>((resolve) => {
          http.close(() => resolve());
          http.closeAllConnections();
        }),
      udp && new Promise<void>((resolve) => udp.close(() => resolve())),
    ]);
  }

  /**
   * Answers GET /announce and GET /scrape; returns false for any other path so
   * a larger HTTP server can mount the tracker and route the rest itself.
   */
  handleHttp(req: IncomingMessage, res: ServerResponse): boolean {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q >= 0 ? url.slice(0, q) : url;
    const query = q >= 0 ? url.slice(q + 1) : '';
    if (path !== '/announce' && path !== '/scrape') return false;
    const send = (status: number, body: Buffer): void => {
      res.writeHead(status, {
        'content-type': 'text/plain',
        'content-length': body.length,
        'cache-control': 'no-store',
      });
      res.end(body);
    };
    if (req.method !== 'GET') {
      send(405, encodeFailure('use GET'));
      return true;
    }
    if (query.length > MAX_HTTP_QUERY) {
      send(414, encodeFailure('query string too long'));
      return true;
    }
    const ip = normalizeIp(req.socket.remoteAddress);
    try {
      if (path === '/announce') {
        const request = parseAnnounceQuery(query);
        const resp = this.announce(request, ip, 'http');
        send(200, encodeAnnounceResponse(resp, { compact: request.compact !== false }));
      } else {
        const { infoHashes } = parseScrapeQuery(query);
        const files = new Map<string, ScrapeFile>();
        const keys =
          infoHashes.length > 0 ? infoHashes.map((h) => h.toString('hex')) : [...this.servedKeys()];
        for (const k of keys) {
          const f = this.scrapeOne(k);
          if (f) files.set(k, f);
        }
        send(200, encodeScrapeResponse({ files }));
      }
    } catch (err) {
      this.errors.count(err);
      if (!isBootTorrentError(err)) {
        this.log.warn(`tracker HTTP ${path} from ${ip} failed: ${String(err)}`);
        if (!res.headersSent) send(500, encodeFailure('internal error'));
        return true;
      }
      // BEP 3: errors go back as a `failure reason` with status 200 so every client shows them.
      this.log.debug(`tracker HTTP ${path} from ${ip} refused: ${err.message}`);
      send(200, encodeFailure(err.message));
    }
    return true;
  }

  /**
   * The one announce handler for both transports. Throws
   * BT_ERR_TRACKER_FAILURE (sent back as failure reason / UDP error).
   */
  announce(req: AnnounceRequest, sourceIp: string, transport: 'http' | 'udp'): AnnounceResponse {
    const now = this.now();
    const key = req.infoHash.toString('hex');
    let swarm = this.swarmTable.get(key);
    if (!swarm && !this.open)
      throw new BootTorrentError(
        'BT_ERR_TRACKER_FAILURE',
        'unknown infohash: this tracker does not serve it',
      );
    const id = req.peerId.toString('hex');
    const ip = this.trustIpParam && req.ip !== undefined ? req.ip : sourceIp;
    const prev = swarm?.peers.get(id);
    if (req.event !== 'stopped' && (!prev || prev.source !== sourceIp)) this.admit(swarm, sourceIp, !prev);
    if (!swarm) {
      swarm = newSwarm(false);
      this.swarmTable.set(key, swarm);
    }
    // An expired peer announcing again carries its totals along: take them back out of the gone part.
    const back = prev ? undefined : swarm.expired.get(id);
    if (back) {
      swarm.expired.delete(id);
      swarm.goneUploaded -= back.uploaded;
      swarm.goneDownloaded -= back.downloaded;
    }
    const peer: PeerState = {
      peerId: id,
      peerIdText: peerIdText(req.peerId),
      ip,
      port: req.port,
      uploaded: req.uploaded,
      downloaded: req.downloaded,
      left: req.left,
      lastSeen: now,
      completed: prev?.state.completed ?? false,
      transport,
    };
    // A download counts once per peer: on event=completed, or when a peer we
    // saw leeching reports left=0 without the event (some clients skip it).
    const finished =
      req.event === 'completed' || (prev !== undefined && prev.state.left > 0 && req.left === 0);
    if (finished && !peer.completed) {
      peer.completed = true;
      swarm.completed++;
    }
    if (req.event === 'stopped') {
      if (prev) this.unlink(swarm, prev);
      swarm.goneUploaded += peer.uploaded;
      swarm.goneDownloaded += peer.downloaded;
    } else if (prev) this.update(swarm, prev, peer, sourceIp);
    else this.insert(swarm, peer, sourceIp);
    this.emit('announce', { infoHash: key, event: req.event, peer: { ...peer } });

    const resp: AnnounceResponse = {
      interval: this.interval,
      complete: swarm.seeders.length,
      incomplete: swarm.leechers.length,
      peers: [],
    };
    if (this.minInterval !== undefined) resp.minInterval = this.minInterval;
    if (req.event !== 'stopped') {
      const want = Math.max(0, Math.min(req.numWant ?? this.maxPeers, this.maxPeers));
      const maxLooks = want + SAMPLE_SLACK;
      // Peers silent past the timeout but not yet swept are not handed out.
      const staleBefore = now - this.peerTimeoutMs;
      const fresh = (e: Entry): boolean =>
        e.state.peerId !== id && e.state.port !== 0 && e.state.lastSeen >= staleBefore;
      // Up to half from the announcer's own network first (a seeder: its leechers).
      // One entry per source address in the local half: a host registering
      // many peer ids (up to peersPerIp) must not crowd out its neighbours.
      const sources = new Set<string>();
      const onePerSource = (e: Entry): boolean =>
        !sources.has(e.source) && sources.add(e.source) !== undefined;
      const near = swarm.byNet.get(this.netOf(ip) ?? '');
      const local = near
        ? sample(
            near.length,
            (i) => near[i]!,
            Math.ceil(want / 2),
            (e) => fresh(e) && (req.left !== 0 || e.state.left > 0) && onePerSource(e),
            maxLooks,
          )
        : [];
      const taken = new Set(local);
      const keep = (e: Entry): boolean => fresh(e) && !taken.has(e);
      const wantMore = want - local.length;
      const { seeders, leechers } = swarm;
      let picked: Entry[];
      if (wantMore === 0) picked = [];
      else if (req.left === 0) {
        // A seeder gets leechers first, then seeders: it usually has no use
        // for other seeders, but a magnet client fetching metadata (BEP 9)
        // announces left=0 before it knows the size, and needs them.
        picked = sample(leechers.length, (i) => leechers[i]!, wantMore, keep, maxLooks);
        if (picked.length < wantMore)
          picked.push(
            ...sample(seeders.length, (i) => seeders[i]!, wantMore - picked.length, keep, maxLooks),
          );
      } else {
        const l = leechers.length;
        const at = (i: number): Entry => (i < l ? leechers[i]! : seeders[i - l]!);
        picked = sample(l + seeders.length, at, wantMore, keep, maxLooks);
      }
      picked = [...local, ...picked];
      resp.peers = picked.map(({ state: p }): PeerAddress => ({
        ip: p.ip,
        port: p.port,
        peerId: Buffer.from(p.peerId, 'hex'),
      }));
    }
    if (!swarm.pinned && swarm.peers.size === 0) this.swarmTable.delete(key);
    return resp;
  }

  /**
   * Throws (and counts the drop) when a peer new to this swarm, or one now
   * announcing from another address, would pass a cap. A refusal is the
   * announce's `failure reason` (BEP 3) or UDP error (BEP 15), so the client
   * shows why; peers already in keep announcing.
   */
  private admit(swarm: Swarm | undefined, source: string, isNew: boolean): void {
    const l = this.limits;
    let why: string | undefined;
    if ((swarm?.bySource.get(source) ?? 0) >= l.peersPerIp)
      why = `too many peers from your address in this torrent (at most ${l.peersPerIp})`;
    else if ((this.bySource.get(source) ?? 0) >= l.peersPerIpAllSwarms)
      why = `too many peers from your address on this tracker (at most ${l.peersPerIpAllSwarms})`;
    else if (isNew && (swarm?.peers.size ?? 0) >= l.peersPerSwarmTotal)
      why = `this torrent's swarm is full (${l.peersPerSwarmTotal} peers)`;
    else if (isNew && this.peerCount >= l.peersTotal) why = `the tracker is full (${l.peersTotal} peers)`;
    else if (!swarm && this.swarmTable.size >= l.swarmsTotal)
      why = `the tracker is full (${l.swarmsTotal} torrents)`;
    if (why === undefined) return;
    this.drops.drop(source, `tracker: announce refused: ${why}`);
    throw new BootTorrentError('BT_ERR_TRACKER_FAILURE', why);
  }

  private insert(swarm: Swarm, state: PeerState, source: string): void {
    const e: Entry = { state, source, slot: 0, net: undefined, netSlot: 0 };
    swarm.peers.set(state.peerId, e);
    listAdd(listOf(swarm, state.left), e);
    this.netAdd(swarm, e);
    bump(swarm.bySource, source, 1);
    bump(this.bySource, source, 1);
    this.peerCount++;
  }

  private update(swarm: Swarm, e: Entry, state: PeerState, source: string): void {
    if ((e.state.left === 0) !== (state.left === 0)) {
      listRemove(listOf(swarm, e.state.left), e);
      listAdd(listOf(swarm, state.left), e);
    }
    const moved = e.state.ip !== state.ip;
    if (moved) this.netRemove(swarm, e);
    e.state = state;
    if (moved) this.netAdd(swarm, e);
    if (e.source !== source) {
      bump(swarm.bySource, e.source, -1);
      bump(this.bySource, e.source, -1);
      bump(swarm.bySource, source, 1);
      bump(this.bySource, source, 1);
      e.source = source;
    }
  }

  private netOf(ip: string): string | undefined {
    return this.localityPrefix === false ? undefined : networkKey(ip, this.localityPrefix);
  }

  private netAdd(swarm: Swarm, e: Entry): void {
    e.net = this.netOf(e.state.ip);
    if (e.net === undefined) return;
    let list = swarm.byNet.get(e.net);
    if (!list) swarm.byNet.set(e.net, (list = []));
    e.netSlot = list.length;
    list.push(e);
  }

  private netRemove(swarm: Swarm, e: Entry): void {
    if (e.net === undefined) return;
    const list = swarm.byNet.get(e.net);
    if (!list) return;
    const last = list.pop()!;
    if (last !== e) {
      list[e.netSlot] = last;
      last.netSlot = e.netSlot;
    }
    if (list.length === 0) swarm.byNet.delete(e.net);
    e.net = undefined;
  }

  private unlink(swarm: Swarm, e: Entry): void {
    swarm.peers.delete(e.state.peerId);
    listRemove(listOf(swarm, e.state.left), e);
    this.netRemove(swarm, e);
    bump(swarm.bySource, e.source, -1);
    bump(this.bySource, e.source, -1);
    this.peerCount--;
  }

  /** Scrape counts for one hex infohash; undefined when not served. */
  private scrapeOne(hex: string): ScrapeFile | undefined {
    const swarm = this.swarmTable.get(hex);
    if (!swarm) return undefined;
    return { complete: swarm.seeders.length, downloaded: swarm.completed, incomplete: swarm.leechers.length };
  }

  private *servedKeys(): Iterable<string> {
    yield* this.swarmTable.keys();
  }

  /** The timer's sweep: a throwing 'peer-expired' listener is logged, not fatal. */
  private sweepSafely(): void {
    try {
      this.sweep();
    } catch (err) {
      this.log.warn(`tracker: expiring silent peers failed: ${String(err)}`);
    }
  }

  /**
   * Drops peers silent longer than the peer timeout; emits 'peer-expired'.
   * Visits every peer: run by the timer and for the dashboard's snapshot,
   * never per announce.
   */
  sweep(): void {
    const limit = this.now() - this.peerTimeoutMs;
    for (const [key, swarm] of this.swarmTable) {
      for (const [id, e] of swarm.peers) {
        const p = e.state;
        if (p.lastSeen < limit) {
          this.unlink(swarm, e);
          swarm.goneUploaded += p.uploaded;
          swarm.goneDownloaded += p.downloaded;
          swarm.expired.set(id, { uploaded: p.uploaded, downloaded: p.downloaded });
          if (swarm.expired.size > MAX_EXPIRED_REMEMBERED) {
            const oldest = swarm.expired.keys().next().value;
            if (oldest !== undefined) swarm.expired.delete(oldest);
          }
          this.emit('peer-expired', { infoHash: key, peer: { ...p } });
        }
      }
      if (!swarm.pinned && swarm.peers.size === 0) this.swarmTable.delete(key);
    }
  }

  /** Snapshot of every swarm for the dashboard and `status`. */
  swarms(): SwarmState[] {
    this.sweep();
    const out: SwarmState[] = [];
    for (const [key, swarm] of this.swarmTable) {
      const peers = [...swarm.peers.values()].map((e) => ({ ...e.state }));
      const seeders = peers.filter((p) => p.left === 0).length;
      out.push({
        infoHash: key,
        seeders,
        leechers: peers.length - seeders,
        completed: swarm.completed,
        peers,
        uploaded: swarm.goneUploaded + peers.reduce((n, p) => n + p.uploaded, 0),
        downloaded: swarm.goneDownloaded + peers.reduce((n, p) => n + p.downloaded, 0),
      });
    }
    return out;
  }

  // --- UDP (BEP 15) ---

  /** HMAC of the client address and the time bucket: unforgeable without keeping state. */
  private connectionId(rinfo: RemoteInfo, bucket: number): bigint {
    const mac = createHmac('sha256', this.secret).update(`${bucket}|${rinfo.address}|${rinfo.port}`).digest();
    return mac.readBigUInt64BE(0);
  }

  private connectionIdValid(id: bigint, rinfo: RemoteInfo): boolean {
    const bucket = Math.floor(this.now() / CONNECTION_BUCKET_MS);
    return id === this.connectionId(rinfo, bucket) || id === this.connectionId(rinfo, bucket - 1);
  }

  private onUdpMessage(msg: Buffer, rinfo: RemoteInfo): void {
    let req: UdpRequest;
    try {
      req = decodeUdpRequest(msg);
    } catch (err) {
      this.errors.count(err);
      // Counted, one line per source a minute: junk must not choose how much we log.
      this.drops.drop(normalizeIp(rinfo.address), 'tracker: dropped bad UDP packet', {
        bytes: msg.length,
        port: rinfo.port,
        error: (err as Error).message,
      });
      return;
    }
    let resp: UdpResponse;
    try {
      resp = this.answerUdp(req, rinfo);
    } catch (err) {
      this.errors.count(err);
      if (!isBootTorrentError(err)) {
        this.log.warn(`tracker: UDP request from ${rinfo.address}:${rinfo.port} failed: ${String(err)}`);
        return;
      }
      resp = { action: 'error', transactionId: req.transactionId, message: err.message };
    }
    const reply = encodeUdpResponse(resp);
    if (this.udp) this.sent.add('udp', reply.length);
    this.udp?.send(reply, rinfo.port, rinfo.address, (err) => {
      if (err) this.log.warn(`tracker: UDP reply to ${rinfo.address}:${rinfo.port} failed: ${err.message}`);
    });
  }

  private answerUdp(req: UdpRequest, rinfo: RemoteInfo): UdpResponse {
    const transactionId = req.transactionId;
    if (req.action === 'connect') {
      return {
        action: 'connect',
        transactionId,
        connectionId: this.connectionId(rinfo, Math.floor(this.now() / CONNECTION_BUCKET_MS)),
      };
    }
    if (!this.connectionIdValid(req.connectionId, rinfo)) {
      throw new BootTorrentError(
        'BT_ERR_TRACKER_PROTOCOL',
        'connection id expired or invalid: connect again',
      );
    }
    if (req.action === 'announce') {
      const r = this.announce(req.request, normalizeIp(rinfo.address), 'udp');
      // UDP replies carry IPv4 peers only (BEP 15); the codec filters others out.
      return {
        action: 'announce',
        transactionId,
        interval: r.interval,
        complete: r.complete,
        incomplete: r.incomplete,
        peers: r.peers,
      };
    }
    return {
      action: 'scrape',
      transactionId,
      // Positional reply: an infohash we do not serve reads as an empty swarm.
      files: req.infoHashes.map(
        (h) => this.scrapeOne(h.toString('hex')) ?? { complete: 0, downloaded: 0, incomplete: 0 },
      ),
    };
  }
}

function bindUdp(sock: UdpSocket, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    sock.once('error', onError);
    sock.bind({ address: host, port, exclusive: true }, () => {
      sock.off('error', onError);
      resolve();
    });
  });
}

function listenHttp(server: HttpServer, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen({ host, port, exclusive: true }, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

function closeQuietly(sock: UdpSocket): void {
  try {
    sock.close();
  } catch {
    // Already closed by the failed bind.
  }
}
