/**
 * The live dashboard: one page, a JSON status, a Server-Sent Events stream
 * of whole snapshots (WHATWG HTML, "Server-sent events") and the Prometheus
 * metrics at /metrics. It owns no socket: the server mounts `handle()` on
 * the HTTP listener it binds.
 *
 * Reading is open (the server binds the dashboard where configured, by
 * default 127.0.0.1); anything that changes state is a POST under
 * /api/v1/actions/ and needs `Authorization: Bearer <token>` (RFC 6750).
 * A browser cannot attach that header to a cross-site request without a
 * CORS preflight, which is never answered, so the token also stops CSRF.
 *
 * Every request must name the dashboard in its Host header by an IP
 * address, `localhost`, this machine's hostname or a
 * name the server was told (`start --dashboard-name`). Otherwise a web page
 * whose own domain the attacker re-points at the server's address (DNS
 * rebinding) could read the status from a sysadmin's browser as same-origin:
 * every client's MAC and IP address.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { hostname } from 'node:os';
import { isBootTorrentError } from '../errors.js';
import type { ServerSnapshot } from '../http/snapshot.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { METRICS_CONTENT_TYPE } from '../util/prometheus.js';
import { dashboardPage, type DashboardPage } from './page.js';
import { requestUrl } from '../http/target.js';

/** A state-changing operation behind POST /api/v1/actions/<name>; gets the parsed JSON body (undefined if empty). */
export type DashboardAction = (body: unknown) => unknown;

/** Anything that emits 'change' when the snapshot may differ (ClientStore is one). */
export interface ChangeSource {
  on(event: 'change', listener: () => void): unknown;
  off(event: 'change', listener: () => void): unknown;
}

export interface DashboardServices {
  snapshot: () => ServerSnapshot;
  /** GET /metrics's body (Prometheus text format); without it /metrics is left to the caller. */
  metrics?: () => string;
  changes: ChangeSource;
  /** Bearer token for actions; without one every action is refused (403). */
  token?: string;
  /** Name -> action; none yet in the server, the door is here for them. */
  actions?: Readonly<Record<string, DashboardAction>>;
  logger?: Logger;
}

export interface DashboardOptions {
  /** Most SSE streams open at once; more get 503 (default 64). Each holds a socket and up to one snapshot in its buffer. */
  maxStreams?: number;
  /** Least time between two snapshots on the stream (default 500 ms). */
  minIntervalMs?: number;
  /** A comment line this often keeps proxies and NAT from dropping an idle stream (default 15 s). */
  keepAliveMs?: number;
  /** Largest action body accepted (default 64 KiB). */
  maxBodyBytes?: number;
  /** More names the dashboard answers to besides IP addresses, localhost and the hostname (a DNS alias). */
  names?: readonly string[];
  /** This machine's hostname (default os.hostname()). */
  hostname?: string;
}

/**
 * True if `host` (a Host header: name or address, maybe with a port) names
 * this dashboard: an IP address, localhost or a name under it, `hostname`,
 * or one of `names`. Case-insensitive. Not any name that merely starts with
 * the hostname: an attacker can register `<hostname>.their-domain`; a
 * fully qualified name is given with --dashboard-name.
 */
export function hostAllowed(
  host: string | undefined,
  hostname: string,
  names: readonly string[] = [],
): boolean {
  if (host === undefined || host === '') return false;
  let name = host.trim().toLowerCase();
  const v6 = /^\[([^\]]*)\](?::\d+)?$/.exec(name);
  if (v6) return isIP(v6[1]!) === 6;
  name = name.replace(/:\d+$/, '').replace(/\.$/, '');
  if (name === '') return false;
  if (isIP(name) !== 0) return true;
  const under = (base: string) => base !== '' && (name === base || name.endsWith(`.${base}`));
  if (under('localhost')) return true;
  const own = hostname.toLowerCase().replace(/\.$/, '');
  if (own !== '' && name === own) return true;
  return names.some((n) => name === n.toLowerCase().replace(/\.$/, ''));
}

interface Stream {
  readonly res: ServerResponse;
  /** The socket buffer is full: skip snapshots until 'drain', then send the newest. */
  blocked: boolean;
  missed: boolean;
}

const API = '/api/v1/';
const METRICS = '/metrics';
const ACTIONS = '/api/v1/actions/';

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

export class Dashboard {
  private readonly page: DashboardPage;
  private readonly log: Logger;
  private readonly maxStreams: number;
  private readonly minIntervalMs: number;
  private readonly keepAliveMs: number;
  private readonly maxBodyBytes: number;
  private readonly names: readonly string[];
  private readonly hostname: string;
  private readonly tokenDigest: Buffer | undefined;
  private readonly streams = new Set<Stream>();
  private listening = false;
  private closed = false;
  private lastBroadcast = 0;
  private pending: NodeJS.Timeout | undefined;
  private keepAlive: NodeJS.Timeout | undefined;
  private readonly onChange = () => this.scheduleBroadcast();

  constructor(
    private readonly services: DashboardServices,
    options: DashboardOptions = {},
  ) {
    this.page = dashboardPage();
    this.log = (services.logger ?? silentLogger).child('dashboard');
    this.maxStreams = options.maxStreams ?? 64;
    this.minIntervalMs = options.minIntervalMs ?? 500;
    this.keepAliveMs = options.keepAliveMs ?? 15_000;
    this.maxBodyBytes = options.maxBodyBytes ?? 64 * 1024;
    this.names = options.names ?? [];
    this.hostname = options.hostname ?? hostname();
    this.tokenDigest = services.token ? digest(services.token) : undefined;
  }

  /** SSE streams open now. */
  get streamCount(): number {
    return this.streams.size;
  }

  /**
   * Answers the dashboard's URLs (`/`, `/api/v1/...`) and returns true; any
   * other path is left alone (false) for the caller to route.
   */
  handle(req: IncomingMessage, res: ServerResponse): boolean {
    const path = pathOf(req.url);
    if (path === undefined) {
      sendJson(res, 400, { error: 'bad request target' });
      return true;
    }
    const metrics = path === METRICS ? this.services.metrics : undefined;
    const ours =
      path === '/' || path === '/index.html' || path === '/favicon.ico' || path.startsWith(API) || !!metrics;
    if (ours && !hostAllowed(req.headers.host, this.hostname, this.names)) {
      const host = (req.headers.host ?? '').slice(0, 200);
      this.logRefused(host, path);
      sendJson(res, 421, {
        error:
          `this dashboard answers to its IP address, localhost or this machine's hostname, not to Host '${host}'; ` +
          `to open it by that name, start the server with --dashboard-name ${host.replace(/:\d+$/, '') || 'NAME'}`,
      });
      return true;
    }
    if (path === '/' || path === '/index.html') return this.read(req, res, () => this.sendPage(req, res));
    if (path === '/favicon.ico') return this.read(req, res, () => void res.writeHead(204).end());
    if (metrics) return this.read(req, res, () => this.sendMetrics(req, res, metrics));
    if (!path.startsWith(API)) return false;
    if (path.startsWith(ACTIONS) || req.method === 'POST') {
      this.action(req, res, path);
      return true;
    }
    if (path === `${API}status`) return this.read(req, res, () => this.sendStatus(req, res));
    if (path === `${API}events`) {
      if (req.method !== 'GET') return methodNotAllowed(res, 'GET');
      this.openStream(req, res);
      return true;
    }
    sendJson(res, 404, { error: `no such endpoint: ${path}` });
    return true;
  }

  /** Refused Host headers since the last warning. */
  private refused = 0;
  private refusedLoggedAt = -Infinity;

  /** A page may retry in a loop: one warning per minute at most, with the count. */
  private logRefused(host: string, path: string): void {
    this.refused++;
    const now = Date.now();
    if (now - this.refusedLoggedAt < 60_000) return;
    this.log.warn('refused requests naming another host (DNS rebinding?)', {
      host,
      path,
      count: this.refused,
    });
    this.refused = 0;
    this.refusedLoggedAt = now;
  }

  /** Ends every open stream and refuses new ones, so the HTTP server can close. */
  close(): void {
    this.closed = true;
    clearTimeout(this.pending);
    this.pending = undefined;
    // A viewer that stopped reading would keep its socket open: cut it.
    for (const s of this.streams)
      if (s.blocked) s.res.destroy();
      else s.res.end();
    this.streams.clear();
    this.stopListening();
  }

  // -------------------------------------------------------------------------

  private read(req: IncomingMessage, res: ServerResponse, send: () => void): true {
    if (req.method !== 'GET' && req.method !== 'HEAD') return methodNotAllowed(res, 'GET, HEAD');
    send();
    return true;
  }

  private sendPage(req: IncomingMessage, res: ServerResponse): void {
    const body = Buffer.from(this.page.html, 'utf8');
    res.writeHead(200, {
      'content-type': 'text/html; charset=utf-8',
      'content-length': body.length,
      'content-security-policy': this.page.contentSecurityPolicy,
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      'cache-control': 'no-cache',
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  private sendStatus(req: IncomingMessage, res: ServerResponse): void {
    let snap: ServerSnapshot;
    try {
      snap = this.services.snapshot();
    } catch (err) {
      this.log.error('snapshot failed', { error: (err as Error).message });
      sendJson(res, 500, { error: 'internal error' });
      return;
    }
    sendJson(res, 200, snap, req.method === 'HEAD');
  }

  /** Read like the status (same Host check, no token): no MAC or address is in it. */
  private sendMetrics(req: IncomingMessage, res: ServerResponse, metrics: () => string): void {
    let body: Buffer;
    try {
      body = Buffer.from(metrics(), 'utf8');
    } catch (err) {
      this.log.error('metrics failed', { error: (err as Error).message });
      sendJson(res, 500, { error: 'internal error' });
      return;
    }
    res.writeHead(200, {
      'content-type': METRICS_CONTENT_TYPE,
      'content-length': body.length,
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  // ---- Server-Sent Events ---------------------------------------------------

  private openStream(req: IncomingMessage, res: ServerResponse): void {
    if (this.closed) {
      sendJson(res, 503, { error: 'the server is shutting down' });
      return;
    }
    if (this.streams.size >= this.maxStreams) {
      res.setHeader('retry-after', '10');
      sendJson(res, 503, { error: `too many dashboard viewers (at most ${this.maxStreams})` });
      return;
    }
    let first: string;
    try {
      first = frame(this.services.snapshot());
    } catch (err) {
      this.log.error('snapshot failed', { error: (err as Error).message });
      sendJson(res, 500, { error: 'internal error' });
      return;
    }
    req.socket.setNoDelay(true);
    // No keep-alive afterwards: ending the response closes the socket, so
    // close() lets the HTTP server finish even with viewers connected.
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'close',
      'x-accel-buffering': 'no',
    });
    const stream: Stream = { res, blocked: false, missed: false };
    this.streams.add(stream);
    res.once('close', () => {
      this.streams.delete(stream);
      if (this.streams.size === 0) this.stopListening();
    });
    // `retry` sets the browser's reconnection delay (ms) after a drop.
    this.write(stream, `retry: 2000\n\n${first}`);
    this.startListening();
    this.log.debug('viewer connected', { streams: this.streams.size });
  }

  /** The store is watched only while someone views: no work for an unwatched dashboard. */
  private startListening(): void {
    if (this.listening) return;
    this.listening = true;
    this.services.changes.on('change', this.onChange);
    this.keepAlive = setInterval(() => {
      for (const s of this.streams) if (!s.blocked) s.res.write(': keep-alive\n\n');
    }, this.keepAliveMs);
    this.keepAlive.unref();
  }

  private stopListening(): void {
    if (!this.listening) return;
    this.listening = false;
    this.services.changes.off('change', this.onChange);
    clearInterval(this.keepAlive);
    clearTimeout(this.pending);
    this.pending = undefined;
  }

  /** At most one snapshot per interval: the first change goes out at once, a burst after it as one trailing snapshot. */
  private scheduleBroadcast(): void {
    if (this.pending || this.closed) return;
    const wait = this.lastBroadcast + this.minIntervalMs - Date.now();
    if (wait <= 0) {
      this.broadcast();
      return;
    }
    this.pending = setTimeout(() => {
      this.pending = undefined;
      this.broadcast();
    }, wait);
  }

  private broadcast(): void {
    if (this.streams.size === 0) return;
    this.lastBroadcast = Date.now();
    for (const s of this.streams) if (s.blocked) s.missed = true;
    // Every viewer is behind: they get the newest snapshot on 'drain'; none to build now.
    if ([...this.streams].every((s) => s.blocked)) return;
    let data: string;
    try {
      data = frame(this.services.snapshot());
    } catch (err) {
      this.log.error('snapshot failed', { error: (err as Error).message });
      return;
    }
    for (const s of this.streams) if (!s.blocked) this.write(s, data);
  }

  private write(s: Stream, data: string): void {
    if (s.res.write(data)) return;
    // A slow viewer: stop queueing snapshots for it (memory stays bounded)
    // and send the newest one once its buffer drains.
    s.blocked = true;
    s.res.once('drain', () => {
      s.blocked = false;
      if (!s.missed || !this.streams.has(s)) return;
      s.missed = false;
      try {
        this.write(s, frame(this.services.snapshot()));
      } catch (err) {
        this.log.error('snapshot failed', { error: (err as Error).message });
      }
    });
  }

  // ---- actions --------------------------------------------------------------

  private action(req: IncomingMessage, res: ServerResponse, path: string): void {
    if (req.method !== 'POST') {
      methodNotAllowed(res, 'POST');
      return;
    }
    if (!this.tokenDigest) {
      sendJson(res, 403, { error: 'actions are disabled: the server has no dashboard token' });
      return;
    }
    const m = /^Bearer +(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    // Compare digests: equal length, constant time, no hint about the token's length.
    if (!m || !timingSafeEqual(digest(m[1]!), this.tokenDigest)) {
      res.setHeader(
        'www-authenticate',
        m ? 'Bearer realm="boottorrent", error="invalid_token"' : 'Bearer realm="boottorrent"',
      );
      sendJson(res, 401, { error: m ? 'wrong token' : 'this needs Authorization: Bearer <token>' });
      req.resume();
      return;
    }
    let name = '';
    try {
      if (path.startsWith(ACTIONS)) name = decodeURIComponent(path.slice(ACTIONS.length));
    } catch {
      // A malformed escape names no action: 404 below.
    }
    const run = Object.hasOwn(this.services.actions ?? {}, name) ? this.services.actions![name] : undefined;
    if (!run) {
      sendJson(res, 404, { error: `no such action: ${name || path}` });
      req.resume();
      return;
    }
    void this.runAction(req, res, name, run);
  }

  private async runAction(
    req: IncomingMessage,
    res: ServerResponse,
    name: string,
    run: DashboardAction,
  ): Promise<void> {
    let body: unknown;
    try {
      const text = await readBody(req, this.maxBodyBytes);
      if (text.length > 0 && !/^application\/json\b/i.test(req.headers['content-type'] ?? '')) {
        sendJson(res, 415, { error: 'send the body as application/json' });
        return;
      }
      body = text.length > 0 ? (JSON.parse(text) as unknown) : undefined;
    } catch (err) {
      if (err instanceof BodyTooLarge) sendJson(res, 413, { error: `body over ${this.maxBodyBytes} bytes` });
      else if (err instanceof SyntaxError) sendJson(res, 400, { error: `body is not JSON: ${err.message}` });
      else res.destroy();
      return;
    }
    try {
      const result = await run(body);
      this.log.info('action', { name });
      sendJson(res, 200, result ?? { ok: true });
    } catch (err) {
      // Our typed errors are the caller's mistake and say so; anything else is ours.
      if (isBootTorrentError(err)) sendJson(res, 400, { error: err.message, code: err.code });
      else {
        this.log.error('action failed', { name, error: (err as Error).message });
        sendJson(res, 500, { error: 'internal error' });
      }
    }
  }
}

/** One SSE event; JSON.stringify never emits a raw newline, so the data is one line. */
function frame(snap: ServerSnapshot): string {
  return `event: snapshot\ndata: ${JSON.stringify(snap)}\n\n`;
}

/** The path of a request target, or undefined if it does not parse (`//`, `/\\`): never a throw. */
function pathOf(url: string | undefined): string | undefined {
  return requestUrl(url)?.pathname;
}

function sendJson(res: ServerResponse, status: number, value: unknown, headOnly = false): void {
  const body = Buffer.from(JSON.stringify(value), 'utf8');
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': body.length,
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
  });
  res.end(headOnly ? undefined : body);
}

function methodNotAllowed(res: ServerResponse, allow: string): true {
  res.setHeader('allow', allow);
  sendJson(res, 405, { error: `method not allowed; use ${allow}` });
  return true;
}

class BodyTooLarge extends Error {}

function readBody(req: IncomingMessage, max: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > max) {
        req.pause();
        reject(new BodyTooLarge());
        return;
      }
      chunks.push(c);
    });
    req.once('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.once('error', reject);
  });
}
