/**
 * Tracker client for http(s):// (BEP 3/23/48) and udp:// (BEP 15) URLs.
 *
 * `TrackerClient` owns one UDP socket and caches BEP 15 connection ids per
 * tracker for a minute; the module-level `announce()`/`scrape()` use a
 * throwaway client for one call. Every call takes an AbortSignal.
 */
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import type { Socket as UdpSocket, RemoteInfo } from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { request as httpRequest } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP } from 'node:net';
import { BootTorrentError, abortError, isBootTorrentError } from '../errors.js';
import {
  buildAnnounceUrl,
  buildScrapeUrl,
  decodeAnnounceResponse,
  decodeScrapeResponse,
  scrapeUrlFor,
} from './http-codec.js';
import type { AnnounceRequest, AnnounceResponse, ScrapeRequest, ScrapeResponse } from './types.js';
import { MAX_SCRAPE_HASHES, decodeUdpResponse, encodeUdpRequest } from './udp-codec.js';
import type { UdpRequest, UdpResponse } from './udp-codec.js';

export interface TrackerRequestOptions {
  signal?: AbortSignal;
  /** Give up after this long with BT_ERR_TRACKER_TIMEOUT (default: HTTP 30 s, UDP the full BEP 15 schedule). */
  timeoutMs?: number;
}

export interface TrackerClientOptions {
  /** BEP 15 retransmission base: wait base * 2^n before resending (default 15000 ms). */
  udpRetransmitBaseMs?: number;
  /** BEP 15 n runs 0..8 (default 8): 9 sends in all. */
  udpMaxRetransmits?: number;
  /** Largest HTTP reply body accepted (default 1 MiB). */
  maxBodyBytes?: number;
  /** HTTP timeout when the call gives none (default 30000 ms). */
  httpTimeoutMs?: number;
}

const DEFAULT_UDP_BASE_MS = 15_000;
const DEFAULT_UDP_MAX_N = 8;
const DEFAULT_MAX_BODY = 1 << 20;
const DEFAULT_HTTP_TIMEOUT_MS = 30_000;
/** BEP 15: "A client can use a connection ID until one minute after it has received it." */
const CONNECTION_ID_TTL_MS = 60_000;
const USER_AGENT = 'BootTorrent/0.1';

interface UdpTarget {
  address: string;
  port: number;
  /** For messages. */
  url: string;
}

interface Pending {
  target: UdpTarget;
  resolve: (r: UdpResponse) => void;
  reject: (err: Error) => void;
}

/** Combines the caller's signal with a timeout; the timeout reason is recognisable. */
function deadline(signal: AbortSignal | undefined, timeoutMs: number | undefined): AbortSignal | undefined {
  const signals: AbortSignal[] = [];
  if (signal) signals.push(signal);
  if (timeoutMs !== undefined) signals.push(AbortSignal.timeout(timeoutMs));
  if (signals.length === 0) return undefined;
  return signals.length === 1 ? signals[0] : AbortSignal.any(signals);
}

function abortReasonError(signal: AbortSignal, url: string, timeoutMs: number | undefined): BootTorrentError {
  const reason: unknown = signal.reason;
  if (reason instanceof DOMException && reason.name === 'TimeoutError') {
    return new BootTorrentError(
      'BT_ERR_TRACKER_TIMEOUT',
      `tracker ${url} did not answer within ${timeoutMs ?? '?'} ms`,
      {
        cause: reason,
      },
    );
  }
  return abortError(signal);
}

export class TrackerClient {
  private readonly udpBaseMs: number;
  private readonly udpMaxN: number;
  private readonly maxBody: number;
  private readonly httpTimeoutMs: number;
  private socket: UdpSocket | undefined;
  private socketReady: Promise<UdpSocket> | undefined;
  private readonly pending = new Map<number, Pending>();
  /** Connection ids by "address:port", with the time they were received. */
  private readonly connections = new Map<string, { id: bigint; at: number }>();
  private closed = false;

  constructor(options: TrackerClientOptions = {}) {
    this.udpBaseMs = options.udpRetransmitBaseMs ?? DEFAULT_UDP_BASE_MS;
    this.udpMaxN = options.udpMaxRetransmits ?? DEFAULT_UDP_MAX_N;
    this.maxBody = options.maxBodyBytes ?? DEFAULT_MAX_BODY;
    this.httpTimeoutMs = options.httpTimeoutMs ?? DEFAULT_HTTP_TIMEOUT_MS;
  }

  /** Announces to an http://, https:// or udp:// tracker. */
  async announce(
    url: string,
    req: AnnounceRequest,
    opts: TrackerRequestOptions = {},
  ): Promise<AnnounceResponse> {
    const u = parseTrackerUrl(url);
    if (u.protocol === 'udp:') {
      return this.withDeadline(url, opts, opts.timeoutMs, async (signal) => {
        const target = await resolveTarget(u, url);
        const r = await this.udpExchange(target, signal, (cid, tid) => ({
          action: 'announce',
          connectionId: cid,
          transactionId: tid,
          request: req,
        }));
        if (r.action !== 'announce') throw unexpected(url, 'announce', r);
        return { interval: r.interval, complete: r.complete, incomplete: r.incomplete, peers: r.peers };
      });
    }
    const timeout = opts.timeoutMs ?? this.httpTimeoutMs;
    return this.withDeadline(url, opts, timeout, async (signal) =>
      decodeAnnounceResponse(await this.httpGet(buildAnnounceUrl(url, req), url, signal)),
    );
  }

  /**
   * Scrapes a tracker given its announce URL (HTTP derives /scrape by the
   * BEP 48 convention). The result is keyed by lowercase hex infohash.
   */
  async scrape(url: string, req: ScrapeRequest, opts: TrackerRequestOptions = {}): Promise<ScrapeResponse> {
    const u = parseTrackerUrl(url);
    if (u.protocol === 'udp:') {
      if (req.infoHashes.length === 0) {
        throw new BootTorrentError(
          'BT_ERR_USAGE',
          'a UDP scrape needs at least one infohash (BEP 15 has no full scrape)',
        );
      }
      return this.withDeadline(url, opts, opts.timeoutMs, async (signal) => {
        const target = await resolveTarget(u, url);
        const out: ScrapeResponse = { files: new Map() };
        for (let i = 0; i < req.infoHashes.length; i += MAX_SCRAPE_HASHES) {
          const batch = req.infoHashes.slice(i, i + MAX_SCRAPE_HASHES);
          const r = await this.udpExchange(target, signal, (cid, tid) => ({
            action: 'scrape',
            connectionId: cid,
            transactionId: tid,
            infoHashes: batch,
          }));
          if (r.action !== 'scrape') throw unexpected(url, 'scrape', r);
          if (r.files.length !== batch.length) {
            throw new BootTorrentError(
              'BT_ERR_TRACKER_PROTOCOL',
              `tracker ${url} answered a scrape of ${batch.length} infohashes with ${r.files.length} entries`,
            );
          }
          batch.forEach((h, j) => out.files.set(h.toString('hex'), r.files[j]!));
        }
        return out;
      });
    }
    const scrapeUrl = scrapeUrlFor(url);
    if (scrapeUrl === null) {
      throw new BootTorrentError(
        'BT_ERR_TRACKER_PROTOCOL',
        `tracker ${url} has no scrape URL (its path does not end in /announce...; BEP 48)`,
      );
    }
    const timeout = opts.timeoutMs ?? this.httpTimeoutMs;
    return this.withDeadline(url, opts, timeout, async (signal) =>
      decodeScrapeResponse(await this.httpGet(buildScrapeUrl(scrapeUrl, req), url, signal)),
    );
  }

  /** Closes the UDP socket; calls in flight fail with BT_ERR_ABORTED. */
  close(): void {
    this.closed = true;
    for (const p of this.pending.values())
      p.reject(new BootTorrentError('BT_ERR_ABORTED', 'tracker client closed'));
    this.pending.clear();
    this.socket?.close();
    this.socket = undefined;
    this.socketReady = undefined;
  }

  private async withDeadline<T>(
    url: string,
    opts: TrackerRequestOptions,
    timeoutMs: number | undefined,
    fn: (signal: AbortSignal | undefined) => Promise<T>,
  ): Promise<T> {
    const signal = deadline(opts.signal, timeoutMs);
    if (signal?.aborted) throw abortReasonError(signal, url, timeoutMs);
    try {
      return await fn(signal);
    } catch (err) {
      if (signal?.aborted && isBootTorrentError(err, 'BT_ERR_ABORTED'))
        throw abortReasonError(signal, url, timeoutMs);
      throw err;
    }
  }

  // --- UDP (BEP 15) ---

  private udpSocket(): Promise<UdpSocket> {
    if (this.closed)
      return Promise.reject(new BootTorrentError('BT_ERR_ABORTED', 'tracker client is closed'));
    this.socketReady ??= new Promise<UdpSocket>((resolve, reject) => {
      const sock = createSocket('udp4');
      sock.once('error', reject);
      sock.on('message', (msg, rinfo) => this.onMessage(msg, rinfo));
      sock.bind(0, () => {
        sock.off('error', reject);
        // Later errors (e.g. ICMP unreachable) only mean lost packets: retransmission covers them.
        sock.on('error', () => {});
        // Pending requests hold their own timers; an idle cached socket must not keep the process alive.
        sock.unref();
        this.socket = sock;
        resolve(sock);
      });
    });
    return this.socketReady;
  }

  private onMessage(msg: Buffer, rinfo: RemoteInfo): void {
    let r: UdpResponse;
    try {
      r = decodeUdpResponse(msg);
    } catch {
      return; // Not a tracker reply we can read: wait for a retransmission's answer.
    }
    const p = this.pending.get(r.transactionId);
    // BEP 15: check the transaction id, and that the reply comes from the tracker we asked.
    if (!p || p.target.address !== rinfo.address || p.target.port !== rinfo.port) return;
    this.pending.delete(r.transactionId);
    p.resolve(r);
  }

  private newTransactionId(): number {
    let tid: number;
    do tid = randomBytes(4).readUInt32BE(0);
    while (this.pending.has(tid));
    return tid;
  }

  /** A valid connection id for the target: cached (< 1 min old) or from a connect exchange. */
  private async connectionId(target: UdpTarget, signal: AbortSignal | undefined): Promise<bigint> {
    const key = `${target.address}:${target.port}`;
    const cached = this.connections.get(key);
    if (cached && Date.now() - cached.at < CONNECTION_ID_TTL_MS) return cached.id;
    const r = await this.retransmit(target, signal, (tid) => ({ action: 'connect', transactionId: tid }));
    if (r.action === 'error') throw failure(target.url, r.message);
    if (r.action !== 'connect') throw unexpected(target.url, 'connect', r);
    this.connections.set(key, { id: r.connectionId, at: Date.now() });
    return r.connectionId;
  }

  /** Connect if needed, then one request, retransmitted per BEP 15. */
  private async udpExchange(
    target: UdpTarget,
    signal: AbortSignal | undefined,
    build: (connectionId: bigint, transactionId: number) => UdpRequest,
  ): Promise<UdpResponse> {
    const r = await this.retransmit(target, signal, (tid) => build(0n, tid), true);
    if (r.action === 'error') {
      // The id may have expired on the tracker's side: forget it so the next call reconnects.
      this.connections.delete(`${target.address}:${target.port}`);
      throw failure(target.url, r.message);
    }
    return r;
  }

  /**
   * Sends a request and resends it after base * 2^n (n = 0..max) until a
   * reply with its transaction id arrives. With `needsConnection`, each send
   * fetches a connection id first, so a retransmission that outlives the
   * id's minute reconnects (BEP 15).
   */
  private async retransmit(
    target: UdpTarget,
    signal: AbortSignal | undefined,
    build: (transactionId: number) => UdpRequest,
    needsConnection = false,
  ): Promise<UdpResponse> {
    const sock = await this.udpSocket();
    const tid = this.newTransactionId();
    let pending!: Pending;
    const reply = new Promise<UdpResponse>((resolve, reject) => (pending = { target, resolve, reject }));
    // Marks the rejection by close() as handled even when no waitFor() is listening yet.
    reply.catch(() => {});
    this.pending.set(tid, pending);
    try {
      for (let n = 0; n <= this.udpMaxN; n++) {
        let msg = build(tid);
        if (needsConnection && msg.action !== 'connect') {
          msg = { ...msg, connectionId: await this.connectionId(target, signal) };
        }
        const packet = encodeUdpRequest(msg);
        sock.send(packet, target.port, target.address);
        const r = await waitFor(reply, this.udpBaseMs * 2 ** n, signal);
        if (r) return r;
      }
    } finally {
      this.pending.delete(tid);
    }
    throw new BootTorrentError(
      'BT_ERR_TRACKER_TIMEOUT',
      `tracker ${target.url} did not answer after ${this.udpMaxN + 1} UDP attempts (BEP 15 retransmission)`,
    );
  }

  // --- HTTP ---

  private httpGet(fullUrl: string, url: string, signal: AbortSignal | undefined): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(abortError(signal));
      const get = fullUrl.startsWith('https:') ? httpsRequest : httpRequest;
      const req = get(fullUrl, {
        method: 'GET',
        headers: { 'user-agent': USER_AGENT, 'accept-encoding': 'identity', connection: 'close' },
        // No pooled keep-alive socket: opentracker closes after each reply, and
        // a request sent on such a socket fails with "socket hang up".
        agent: false,
        signal,
      });
      req.on('error', (err) => {
        if (signal?.aborted) return reject(abortError(signal));
        const code = (err as NodeJS.ErrnoException).code ?? err.message;
        reject(
          new BootTorrentError('BT_ERR_TRACKER_UNREACHABLE', `cannot reach tracker ${url}: ${code}`, {
            cause: err,
          }),
        );
      });
      req.on('response', (res: IncomingMessage) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > this.maxBody) {
            req.destroy();
            reject(
              new BootTorrentError(
                'BT_ERR_TRACKER_PROTOCOL',
                `tracker ${url} sent a reply larger than ${this.maxBody} bytes`,
              ),
            );
            return;
          }
          chunks.push(chunk);
        });
        res.on('error', (err) => reject(signal?.aborted ? abortError(signal) : err));
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          if (res.statusCode === 200) return resolve(body);
          // Some trackers send `failure reason` with a 4xx status: show the reason if there is one.
          try {
            decodeAnnounceResponse(body);
          } catch (err) {
            if (isBootTorrentError(err, 'BT_ERR_TRACKER_FAILURE')) return reject(err);
          }
          reject(
            new BootTorrentError(
              'BT_ERR_TRACKER_PROTOCOL',
              `tracker ${url} answered HTTP ${res.statusCode} ${res.statusMessage ?? ''}`.trimEnd(),
            ),
          );
        });
      });
      req.end();
    });
  }
}

/** One announce with a throwaway client (see TrackerClient for reuse of UDP connection ids). */
export async function announce(
  url: string,
  req: AnnounceRequest,
  opts: TrackerRequestOptions & TrackerClientOptions = {},
): Promise<AnnounceResponse> {
  const c = new TrackerClient(opts);
  try {
    return await c.announce(url, req, opts);
  } finally {
    c.close();
  }
}

/** One scrape with a throwaway client. */
export async function scrape(
  url: string,
  req: ScrapeRequest,
  opts: TrackerRequestOptions & TrackerClientOptions = {},
): Promise<ScrapeResponse> {
  const c = new TrackerClient(opts);
  try {
    return await c.scrape(url, req, opts);
  } finally {
    c.close();
  }
}

function parseTrackerUrl(url: string): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch (err) {
    throw new BootTorrentError('BT_ERR_USAGE', `not a tracker URL: "${url}"`, { cause: err });
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:' && u.protocol !== 'udp:') {
    throw new BootTorrentError(
      'BT_ERR_USAGE',
      `tracker URL "${url}" must start with http://, https:// or udp://`,
    );
  }
  if (u.protocol === 'udp:' && u.port === '') {
    throw new BootTorrentError('BT_ERR_USAGE', `UDP tracker URL "${url}" needs a port (udp://host:port)`);
  }
  return u;
}

async function resolveTarget(u: URL, url: string): Promise<UdpTarget> {
  const host = u.hostname.replace(/^\[|\]$/g, '');
  if (isIP(host) === 4) return { address: host, port: Number(u.port), url };
  try {
    const { address } = await lookup(host, { family: 4 });
    return { address, port: Number(u.port), url };
  } catch (err) {
    throw new BootTorrentError(
      'BT_ERR_TRACKER_UNREACHABLE',
      `cannot resolve tracker host "${host}" (${url}) to IPv4`,
      {
        cause: err,
      },
    );
  }
}

/** Resolves with the reply, or undefined after `ms`; rejects when the signal fires. */
function waitFor(
  reply: Promise<UdpResponse>,
  ms: number,
  signal: AbortSignal | undefined,
): Promise<UdpResponse | undefined> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError(signal));
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(abortError(signal!));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve(undefined);
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
    reply.then(
      (r) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        resolve(r);
      },
      (err: Error) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

function failure(url: string, message: string): BootTorrentError {
  return new BootTorrentError('BT_ERR_TRACKER_FAILURE', `tracker ${url} refused: ${message}`);
}

function unexpected(url: string, expected: string, r: UdpResponse): BootTorrentError {
  return new BootTorrentError(
    'BT_ERR_TRACKER_PROTOCOL',
    `tracker ${url} answered a ${expected} request with a ${r.action} response`,
  );
}
