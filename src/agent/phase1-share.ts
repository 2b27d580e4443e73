/**
 * The agent serves its own phase-1 payload to clients that boot after it
 * (issue #16 item 2): stage 0 left the file it fetched and checked at
 * PHASE1_PAYLOAD_PATH; this answers GET/HEAD /phase1/payload with it and
 * nothing else. The clients check what they get against the server's
 * SHA-256, so serving is all there is to it. Bounded like the server's own
 * HTTP listeners (connections per address and in all, deadlines), since any
 * machine on the LAN can connect; a client's link is a client's link, so
 * few at once (16 connections; 8 from one address, since GRUB holds a
 * connection open per file and signature of an `initrd`). As a holder it
 * also serves the kernel and initramfs GRUB loads, with their signatures
 * (addFiles).
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createBoundedServer, httpLimits } from '../util/http-guard.js';
import { watchListener } from '../util/listener-error.js';
import { DropLog } from '../util/drop-log.js';
import { silentLogger, type Logger } from '../util/logger.js';

export interface PhaseOneShareOptions {
  /** The payload file. */
  readonly file: string;
  readonly port: number;
  readonly host?: string;
  /** Connections at once (default 16) and per address (default 8: GRUB holds several open). */
  readonly maxConnections?: number;
  readonly connectionsPerIp?: number;
}

export class PhaseOneShare {
  private server: Server | undefined;
  private size = 0;
  /** More files served (URL path -> file and size): the kernel and stage 0 a holder fetched (phase1-hold.ts). */
  private readonly extra = new Map<string, { file: string; size: number }>();
  private active = 0;
  /** Bytes sent to other clients (its report says so). */
  sent = 0;
  private readonly log: Logger;
  private readonly drops: DropLog;
  private idle: (() => void) | undefined;

  constructor(
    private readonly options: PhaseOneShareOptions,
    logger: Logger = silentLogger,
  ) {
    this.log = logger.child('phase1-share');
    this.drops = new DropLog(this.log);
  }

  /**
   * Starts serving if the payload file is there (a phase 1 that came
   * through stage 0); returns the port, or undefined when there is nothing
   * to serve or the port cannot be bound (then this client simply does not
   * serve: not a reason to stop booting).
   */
  async start(): Promise<number | undefined> {
    try {
      this.size = (await stat(this.options.file)).size;
    } catch {
      return undefined;
    }
    const server = createBoundedServer(
      (req, res) => {
        const it =
          req.url === '/phase1/payload'
            ? { file: this.options.file, size: this.size }
            : this.extra.get(req.url ?? '');
        if (!it || (req.method !== 'GET' && req.method !== 'HEAD')) {
          res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
          return;
        }
        const size = it.size;
        // A stage 0 that fetched part of it elsewhere asks for the rest (bytes=N-).
        const range = parseRange(req.headers.range, size);
        if (range === 'unsatisfiable') {
          res.writeHead(416, { 'content-range': `bytes */${size}` }).end();
          return;
        }
        const [start, end] = range ?? [0, size - 1];
        res.writeHead(range ? 206 : 200, {
          'content-type': 'application/octet-stream',
          // Spelt so: GRUB's http module (src/boot/grub-verify.ts) reads no other case.
          'Content-Length': end - start + 1,
          'accept-ranges': 'bytes',
          ...(range ? { 'content-range': `bytes ${start}-${end}/${size}` } : {}),
        });
        if (req.method === 'HEAD' || end < start) return void res.end();
        this.active++;
        const stream = createReadStream(it.file, { start, end });
        stream.on('data', (c: Buffer | string) => (this.sent += c.length));
        stream.on('error', (err) => {
          this.log.debug('payload read failed', { error: err.message });
          res.destroy();
        });
        res.once('close', () => {
          stream.destroy();
          if (--this.active === 0) this.idle?.();
        });
        stream.pipe(res);
      },
      httpLimits({
        // GRUB keeps every file of an `initrd` open (and each .sig) until all are in: 6 from one client.
        maxConnections: this.options.maxConnections ?? 16,
        connectionsPerIp: this.options.connectionsPerIp ?? 8,
        headersTimeoutMs: 5_000,
        requestTimeoutMs: 5_000,
        keepAliveTimeoutMs: 1_000,
        stalledConnectionMs: 20_000,
      }),
      this.log,
    );
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(this.options.port, this.options.host ?? '0.0.0.0', () => resolve());
      });
    } catch (err) {
      this.log.warn('cannot serve phase 1 to other clients', { error: (err as Error).message });
      return undefined;
    }
    watchListener(server, { drops: this.drops, packet: 'phase-1 connection not accepted' }, (err) =>
      this.log.warn('phase-1 sharing stopped', { error: err.message }),
    );
    this.server = server;
    return (server.address() as AddressInfo).port;
  }

  /** Serves more files at these URL paths (e.g. /phase1/vmlinuz), checked by the caller. */
  async addFiles(files: ReadonlyMap<string, string>): Promise<void> {
    for (const [path, file] of files) this.extra.set(path, { file, size: (await stat(file)).size });
  }

  /** Transfers in progress. */
  get serving(): number {
    return this.active;
  }

  /**
   * Stops taking clients, lets transfers in progress finish for up to
   * `graceMs` (the machine is about to load its OS), then closes.
   */
  async close(graceMs = 0): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.close();
    if (this.active > 0 && graceMs > 0) {
      this.log.info(`letting ${this.active} phase-1 transfer(s) to other clients finish`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, graceMs);
        this.idle = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    s.closeAllConnections();
  }
}

/**
 * One byte range of a file of `size` bytes (RFC 9110 §14.1.2: `bytes=N-`,
 * `bytes=N-M`, `bytes=-K`); undefined for no or an unreadable header (the
 * whole file), 'unsatisfiable' when it starts past the end.
 */
export function parseRange(
  header: string | undefined,
  size: number,
): [number, number] | 'unsatisfiable' | undefined {
  const m = header === undefined ? null : /^bytes=(\d{0,15})-(\d{0,15})$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  if (m[1] === '') {
    const n = Math.min(Number(m[2]), size);
    return n === 0 ? 'unsatisfiable' : [size - n, size - 1];
  }
  const start = Number(m[1]);
  if (start >= size) return 'unsatisfiable';
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  return end < start ? undefined : [start, end];
}
