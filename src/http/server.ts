/**
 * The boot HTTP server: per-MAC iPXE scripts, the agent's JSON API, static
 * files (iPXE binaries, phase 1, OS folders as web seeds) with Range, and
 * the tracker's /announce and /scrape when a tracker is mounted. One socket
 * owner; every decision comes from the policy it is given.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { BootTorrentError } from '../errors.js';
import { DropLog } from '../util/drop-log.js';
import { watchListener } from '../util/listener-error.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { payloadFailure, type BootPolicy, type PayloadProgress } from '../boot/policy.js';
import { phaseOneScript, refusalScript } from './ipxe.js';
import { normalizeMac } from '../util/address.js';
import { createBoundedServer, httpLimits, sourceIp, type HttpListenerLimits } from '../util/http-guard.js';
import { sendFile, serveFile } from './static.js';
import { ByteMeter } from '../util/byte-meter.js';

/** What the boot HTTP server's bytes were for (see ByteMeter; the rest is `other`). */
export const HTTP_SENT_KINDS = ['ipxe', 'script', 'phase1', 'config', 'api', 'tracker', 'files'] as const;
export type HttpSentKind = (typeof HTTP_SENT_KINDS)[number];
import { refuseBadTarget, requestUrl } from './target.js';

/** What the HTTP side asks the boot policy (src/boot/policy.ts): phase 1 and the boot config. */
export type HttpBootPolicy = Pick<
  BootPolicy,
  'phaseOneFor' | 'bootConfigFor' | 'payloadSourceFor' | 'payloadBlocks'
>;

export interface BootHttpOptions {
  host?: string;
  /** Default 80; 0 picks a free port. */
  port?: number;
  /** URL clients use to reach this server, e.g. http://10.0.0.1 (default from host and port). */
  publicUrl?: string;
  /** URL prefix -> folder served below it, e.g. { '/phase1/': '/var/lib/boottorrent/phase1' }. */
  mounts?: Record<string, string>;
  /** Exact URL path -> file, e.g. { '/ipxe.efi': '/usr/lib/ipxe/ipxe.efi' } (symlinks followed). */
  files?: Record<string, string>;
  /** Deadlines and connection caps (default HTTP_LIMITS). */
  limits?: Partial<HttpListenerLimits>;
}

export interface BootHttpServices {
  policy: HttpBootPolicy;
  logger?: Logger;
  /** A tracker to answer /announce and /scrape (TrackerServer.handleHttp). */
  tracker?: { handleHttp(req: IncomingMessage, res: ServerResponse): boolean };
  /**
   * More routes (agent reports, status): asked first, before the method
   * check; returns true when it answered the request.
   */
  routes?: (req: IncomingMessage, res: ServerResponse, path: string, client: string) => boolean;
  /** What a client fetched along the boot chain (for the server's client view). */
  onBootStep?: (step: { kind: 'script' | 'phase1' | 'menu'; mac: string; client: string }) => void;
  /**
   * The listening socket failed after start-up: the server no longer
   * serves, so the owner stops (STYLE.md lesson 4). Without it, logged.
   */
  onListenerError?: (err: Error) => void;
  /**
   * Signs a boot config's body, the exact bytes sent (the server's key,
   * src/server/signing.ts): the value of the x-boottorrent-signature header.
   */
  signConfig?: (body: Buffer) => string;
}

/** What a request's answer is for, by its path (the same order handle() asks in). */
function kindOf(path: string, options: BootHttpOptions): HttpSentKind {
  if (path === '/announce' || path === '/scrape') return 'tracker';
  if (
    path === '/boot.ipxe' ||
    path.startsWith('/api/v1/phase1/') ||
    path.startsWith('/api/v1/phase1-loader/')
  )
    return 'script';
  if (path.startsWith('/api/v1/boot/')) return 'config';
  if (path.startsWith('/api/')) return 'api';
  if (options.files && Object.hasOwn(options.files, path)) return 'ipxe';
  // The GRUB loader's program and per-client configs (src/server/phase1-loader.ts) are phase 1 too.
  if (path.startsWith('/phase1/') || path.startsWith('/phase1-key/') || path.startsWith('/boottorrent/grub/'))
    return 'phase1';
  return 'files';
}

export class BootHttpServer {
  private server: Server | undefined;
  private boundPort = 0;
  private readonly log: Logger;
  /** Failed accepts (out of file descriptors under a flood): one line a minute, counted. */
  private readonly acceptDrops: DropLog;
  /**
   * Boot scripts refused (no valid MAC, MAC not allowed): a client can ask
   * again and again, so one line per source a minute, counted (#14).
   */
  private readonly scriptDrops: DropLog;
  /**
   * Every byte this server wrote, by what it was for: iPXE binaries, boot
   * scripts, phase-1 files, boot configs, the API (torrents, reports),
   * tracker announces, other files.
   */
  readonly sent = new ByteMeter<HttpSentKind>(HTTP_SENT_KINDS);

  constructor(
    private readonly options: BootHttpOptions,
    private readonly services: BootHttpServices,
  ) {
    this.log = (services.logger ?? silentLogger).child('http');
    this.acceptDrops = new DropLog(this.log);
    this.scriptDrops = new DropLog(this.log);
  }

  get port(): number {
    return this.boundPort;
  }

  /** The base URL clients use. */
  get url(): string {
    if (this.options.publicUrl) return this.options.publicUrl.replace(/\/$/, '');
    const host = this.options.host && this.options.host !== '0.0.0.0' ? this.options.host : '127.0.0.1';
    return `http://${host}${this.boundPort === 80 ? '' : `:${this.boundPort}`}`;
  }

  async listen(): Promise<number> {
    const server = createBoundedServer(
      (req, res) => {
        // One request's fault ends that request only (handle is async: a throw is a rejection).
        this.handle(req, res).catch((err: unknown) => {
          this.log.error('request failed', { url: req.url, error: (err as Error).message });
          if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' }).end('internal error\n');
          else res.destroy();
        });
      },
      // requestTimeout bounds receiving a request, not sending the response,
      // so large files over slow links are not cut.
      httpLimits(this.options.limits),
      this.log,
    );
    this.sent.watch(server);
    const host = this.options.host ?? '0.0.0.0';
    const port = this.options.port ?? 80;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        const fix =
          err.code === 'EACCES'
            ? 'ports below 1024 need root: run as root or set another HTTP port'
            : err.code === 'EADDRINUSE'
              ? 'another web server uses it: stop it or set another HTTP port'
              : 'check the address and port';
        reject(
          new BootTorrentError(
            'BT_ERR_LISTEN',
            `HTTP cannot listen on ${host}:${port}: ${err.code}; ${fix}`,
            { cause: err },
          ),
        );
      });
      server.listen(port, host, () => resolve());
    });
    watchListener(
      server,
      {
        drops: this.acceptDrops,
        packet: 'HTTP connection not accepted',
        log: this.log,
        failed: 'HTTP listener failed',
      },
      (err) => this.services.onListenerError?.(err),
    );
    this.server = server;
    const addr = server.address();
    this.boundPort = typeof addr === 'object' && addr ? addr.port : port;
    this.log.info('listening', { url: this.url });
    return this.boundPort;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = requestUrl(req.url);
    if (!url) return refuseBadTarget(res);
    const path = url.pathname;
    const client = sourceIp(req.socket);
    this.sent.attribute(res, kindOf(path, this.options));
    if (this.services.tracker?.handleHttp(req, res)) return;
    if (this.services.routes?.(req, res, path, client)) return;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    if (path === '/boot.ipxe') return this.bootScript(url, client, res);
    const api = /^\/api\/v1\/boot\/([^/]+)$/.exec(path);
    if (api) return await this.menu(api[1]!, url, client, res);
    if (path === '/api/v1/phase1/blocks') return this.payloadBlocks(res);
    const source = /^\/api\/v1\/phase1\/([^/]+)$/.exec(path);
    if (source) return this.payloadSource(source[1]!, url, client, res);
    const exact =
      this.options.files && Object.hasOwn(this.options.files, path) ? this.options.files[path] : undefined;
    if (exact !== undefined) {
      const r = await sendFile(req, res, exact);
      if (r) {
        this.log.debug('file', { client, path, status: r.status, bytes: r.bytes });
        return;
      }
    }
    for (const [prefix, root] of Object.entries(this.options.mounts ?? {})) {
      if (!path.startsWith(prefix)) continue;
      const r = await serveFile(req, res, root, url.pathname.slice(prefix.length));
      // Only a served file from an allowed machine moves its row to "phase 1".
      const mac = normalizeMac(url.searchParams.get('mac') ?? '');
      if (
        r &&
        r.status < 400 &&
        mac &&
        prefix === '/phase1/' &&
        req.method === 'GET' &&
        !('refused' in this.services.policy.phaseOneFor(mac))
      )
        this.services.onBootStep?.({ kind: 'phase1', mac, client });
      if (r) {
        this.log.debug('file', { client, path, status: r.status, bytes: r.bytes });
        return;
      }
    }
    this.log.debug('not found', { client, path });
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  }

  private bootScript(url: URL, client: string, res: ServerResponse): void {
    const raw = url.searchParams.get('mac') ?? '';
    const mac = normalizeMac(raw);
    const send = (body: string) =>
      res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' }).end(body);
    if (!mac) {
      this.scriptDrops.drop(client, 'boot script asked without a valid MAC', { mac: raw });
      send(refusalScript('this machine', 'the boot script URL needs ?mac= and the MAC address'));
      return;
    }
    const decision = this.services.policy.phaseOneFor(mac);
    if ('refused' in decision) {
      this.scriptDrops.drop(client, 'boot refused', { mac, reason: decision.refused });
      send(refusalScript(mac, decision.refused));
      return;
    }
    this.log.info('phase 1 script', { client, mac });
    this.services.onBootStep?.({ kind: 'script', mac, client });
    send(
      phaseOneScript({
        mac,
        image: decision,
        serverUrl: this.url,
        scriptUrl: `${this.url}/boot.ipxe?mac=${mac}`,
      }),
    );
  }

  /**
   * Stage 0 asks where to fetch the phase-1 payload (#16): one line,
   * `get <url>` or `wait <seconds>`, easy for busybox sh to read. `failed=`
   * and `why=` name the source it tried last and what went wrong.
   */
  private payloadSource(rawMac: string, url: URL, client: string, res: ServerResponse): void {
    const text = (status: number, body: string) =>
      res.writeHead(status, { 'content-type': 'text/plain', 'cache-control': 'no-store' }).end(`${body}\n`);
    const mac = normalizeMac(rawMac);
    if (!mac) return void text(400, `not a MAC address: ${rawMac}`);
    if (!this.services.policy.payloadSourceFor) return void text(404, 'phase 1 is not served by peers here');
    const failed = payloadFailure(url.searchParams);
    // What the asking stage 0 has checked, and the port it relays it on (optional).
    const num = (k: string, max: number) => {
      const v = url.searchParams.get(k);
      return v !== null && /^\d{1,6}$/.test(v) && Number(v) <= max ? Number(v) : undefined;
    };
    const port = num('serve', 65535);
    const progress: PayloadProgress = {
      ...(port !== undefined && port > 0 ? { port } : {}),
      have: num('have', 1_000_000) ?? 0,
      heartbeat: url.searchParams.get('hb') === '1',
    };
    const answer = this.services.policy.payloadSourceFor(mac, client, failed, progress);
    if ('refused' in answer) {
      this.scriptDrops.drop(client, 'phase-1 source refused', { mac, reason: answer.refused });
      return void text(403, answer.refused);
    }
    if (failed)
      this.log.info('stage 0 could not use a phase-1 source', {
        client,
        mac,
        source: failed.url,
        why: failed.why,
      });
    text(200, answer.kind === 'get' ? `get ${answer.url}` : `wait ${answer.seconds}`);
  }

  private payloadBlocks(res: ServerResponse): void {
    const blocks = this.services.policy.payloadBlocks?.();
    if (blocks === undefined)
      return void res
        .writeHead(404, { 'content-type': 'text/plain' })
        .end('phase 1 is not served by peers here\n');
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' }).end(blocks);
  }

  private async menu(rawMac: string, url: URL, client: string, res: ServerResponse): Promise<void> {
    const mac = normalizeMac(rawMac);
    const json = (status: number, body: object, signed = false) => {
      const bytes = Buffer.from(`${JSON.stringify(body)}\n`);
      const sign = signed ? this.services.signConfig : undefined;
      res
        .writeHead(status, {
          'content-type': 'application/json',
          'cache-control': 'no-store',
          ...(sign ? { 'x-boottorrent-signature': sign(bytes) } : {}),
        })
        .end(bytes);
    };
    if (!mac) return void json(400, { error: `not a MAC address: ${rawMac}` });
    // The agent's nonce goes into the signed body: a config recorded earlier
    // (for this MAC or another) cannot be replayed to it.
    const nonce = url.searchParams.get('nonce');
    if (nonce !== null && !/^[0-9a-f]{32,64}$/.test(nonce))
      return void json(400, { error: 'nonce must be 32 to 64 lower-case hex digits' });
    const config = await this.services.policy.bootConfigFor(mac, client);
    if (!config) return void json(403, { error: `${mac} may not boot from this server` });
    this.log.debug('menu', { client, mac });
    this.services.onBootStep?.({ kind: 'menu', mac, client });
    json(200, nonce !== null ? { ...config, nonce } : config, true);
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    await new Promise<void>((resolve) => {
      s.close(() => resolve());
      s.closeAllConnections();
    });
  }
}
