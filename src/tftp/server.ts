/**
 * The read-only TFTP server that hands iPXE to PXE firmware. This module owns
 * the TFTP sockets (STYLE.md lesson 2); the codec, option negotiation, path
 * cleaning and block sources beside it are pure or file-only.
 *
 * - RFC 1350: lock-step DATA/ACK, each transfer on its own ephemeral socket
 *   (its TID, §4); a packet from another TID gets ERROR 5 and changes nothing.
 *   Only our timer retransmits: a duplicate ACK never triggers a send, which
 *   is the fix for the Sorcerer's Apprentice bug (RFC 1123 §4.2.3.1).
 * - RFC 2347/2348/2349: blksize, timeout, tsize; RFC 7440: windowsize.
 * - Block numbers wrap from 65535 to 0 (what tftp-hpa, atftp and iPXE expect),
 *   so files larger than 65535 blocks work.
 * - Per-packet trouble is logged and dropped; only the listener's bind is
 *   fatal (STYLE.md lesson 4).
 * - A hostile client cannot hold the server (issue #14): transfers are capped
 *   per source IP and in total, the RFC 2349 timeout has a ceiling, and every
 *   transfer has an absolute deadline (TFTP_LIMITS in src/limits.ts).
 */
import { createSocket } from 'node:dgram';
import type { RemoteInfo, Socket } from 'node:dgram';
import { EventEmitter } from 'node:events';
import { isIP } from 'node:net';
import { BootTorrentError, ErrorCounts, isBootTorrentError, errorText } from '../errors.js';
import { TFTP_LIMITS } from '../limits.js';
import { DropLog } from '../util/drop-log.js';
import { silentLogger } from '../util/logger.js';
import type { Logger } from '../util/logger.js';
import { watchListener } from '../util/listener-error.js';
import { octetBlocks, netasciiBlocks } from './blocks.js';
import type { BlockSource } from './blocks.js';
import { decode, encode, TftpErrorCode } from './codec.js';
import type { RequestPacket, TftpPacket } from './codec.js';
import { RootFileProvider, cleanRequestPath } from './files.js';
import type { FileProvider, ServedFile } from './files.js';
import { negotiateRead } from './options.js';
import type { Negotiated } from './options.js';

export interface TftpServerOptions {
  /** Listen address (default '0.0.0.0'). Transfer sockets bind to it too. */
  host?: string;
  /** UDP port (default 69; 0 picks a free one, for tests). */
  port?: number;
  /** Folder to serve; ignored when a FileProvider is injected as a service. */
  root?: string;
  /**
   * Transfers at once from all clients; a request beyond it is dropped so the
   * client's own retry queues it (default TFTP_LIMITS.transfersTotal).
   */
  maxTransfers?: number;
  /** Transfers at once from one IP; a request beyond it is dropped likewise (default TFTP_LIMITS.transfersPerIp). */
  transfersPerIp?: number;
  /** Largest RFC 2349 timeout accepted, in seconds; a larger one is ignored (default TFTP_LIMITS.maxTimeoutS). */
  maxTimeoutS?: number;
  /** A transfer running this long (ms) is ended with an ERROR (default TFTP_LIMITS.transferDeadlineMs). */
  transferDeadlineMs?: number;
  /** Retransmission timeout when the client does not negotiate one, ms (default 1000). */
  timeoutMs?: number;
  /** Retransmissions of one window before the transfer is abandoned (default 5). */
  retries?: number;
  /**
   * Largest blksize granted (default 1468: a 1500-byte Ethernet MTU minus IP,
   * UDP and TFTP headers, so no block is ever IP-fragmented; iPXE asks 1432).
   * Raise it to 65464 on loopback or jumbo-frame networks.
   */
  maxBlockSize?: number;
  /** Largest windowsize granted (default 64 blocks). */
  maxWindowSize?: number;
}

export interface TftpServerServices {
  logger?: Logger;
  /** Where files come from (default: RootFileProvider over `options.root`). */
  files?: FileProvider;
}

/** How a transfer ends: every request answered is one of these (a dropped one is none). */
export const TRANSFER_RESULTS = [
  'ok',
  'refused',
  'timeout',
  'client-error',
  'read-error',
  'protocol-error',
  'aborted',
] as const;
export type TransferResult = (typeof TRANSFER_RESULTS)[number];

/** One finished (or refused) transfer, as logged and emitted. */
export interface TransferInfo {
  /** "address:port" of the client's TID. */
  client: string;
  /** The file name as the client sent it. */
  file: string;
  /** File size in bytes, when the file was opened. */
  size: number | undefined;
  /** Bytes the client acknowledged. */
  bytes: number;
  blockSize: number;
  windowSize: number;
  result: TransferResult;
  /** Why it failed (a refusal's reason, the client's error message, ...). */
  detail?: string;
  /** TFTP error code sent to the client, if any. */
  errorCode?: number;
  durationMs: number;
}

export interface TftpServerEvents {
  transfer: [TransferInfo];
  /** The request socket failed after listen(): the server no longer serves (its owner stops). */
  listenerError: [Error];
}

const DEFAULTS = {
  host: '0.0.0.0',
  port: 69,
  maxTransfers: TFTP_LIMITS.transfersTotal,
  transfersPerIp: TFTP_LIMITS.transfersPerIp,
  maxTimeoutS: TFTP_LIMITS.maxTimeoutS,
  transferDeadlineMs: TFTP_LIMITS.transferDeadlineMs,
  timeoutMs: 1000,
  retries: 5,
  maxBlockSize: 1468,
  maxWindowSize: 64,
};
/** Read this much of a file at once, whatever the block size. */
const READ_AHEAD = 256 * 1024;

function bindSocket(socket: Socket, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    socket.once('error', onError);
    socket.bind({ address: host, port, exclusive: true }, () => {
      socket.off('error', onError);
      resolve();
    });
  });
}

function closeSocket(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    try {
      socket.close(() => resolve());
    } catch {
      resolve(); // already closed
    }
  });
}

interface TransferParams {
  socket: Socket;
  peer: RemoteInfo;
  request: RequestPacket;
  file: ServedFile;
  negotiated: Negotiated;
  timeoutMs: number;
  retries: number;
  deadlineMs: number;
  log: Logger;
  /** Bad packets, logged once per source IP per minute (shared with the server). */
  drops: DropLog;
  /** The server's typed errors by code. */
  errors: ErrorCounts;
  /** Counts what the transfer sends (the server's sentBytes). */
  sent: (bytes: number) => void;
  onEnd: (info: TransferInfo) => void;
}

/**
 * One read transfer: a window of blocks in flight (1 in RFC 1350 lock-step),
 * kept until acknowledged so a retransmission or an RFC 7440 rewind never
 * re-reads the file. Every event runs through one queue, so an ACK arriving
 * during a file read waits for it.
 */
class Transfer {
  private readonly p: TransferParams;
  private readonly source: BlockSource;
  private readonly blockSize: number;
  private readonly window: number;
  private readonly timeoutMs: number;
  private readonly started = Date.now();
  /** Absolute (unwrapped) number of the last acknowledged block; 0 before the first. */
  private acked = 0;
  /** Absolute number of the highest block sent. */
  private sent = 0;
  /** Blocks acked+1 .. acked+cache.length, produced but not yet acknowledged. */
  private cache: Buffer[] = [];
  /** Absolute number of the final (short) block, once produced. */
  private lastBlock: number | undefined;
  private awaitingOack: boolean;
  private bytesAcked = 0;
  private tries = 0;
  private timer: NodeJS.Timeout | undefined;
  private deadline: NodeJS.Timeout | undefined;
  /** Sends handed to the socket whose callback has not run yet. */
  private inflight = 0;
  private flushed: (() => void) | undefined;
  private readonly queue: (() => Promise<void> | void)[] = [];
  private busy = false;
  private done = false;
  /** Resolves when the socket and the file are closed. */
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;

  constructor(p: TransferParams) {
    this.p = p;
    this.blockSize = p.negotiated.blockSize;
    this.window = p.negotiated.windowSize;
    this.timeoutMs = p.negotiated.timeoutMs ?? p.timeoutMs;
    this.awaitingOack = p.negotiated.accepted.size > 0;
    const readAhead = Math.min(4 << 20, Math.max(READ_AHEAD, this.blockSize * this.window));
    this.source =
      p.request.mode === 'netascii'
        ? netasciiBlocks(p.file, this.blockSize, readAhead)
        : octetBlocks(p.file, this.blockSize, readAhead);
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
  }

  start(): void {
    this.p.socket.on('message', (msg, rinfo) => {
      // Containment: a fault while handling one packet ends this transfer, never the process.
      try {
        this.onMessage(msg, rinfo);
      } catch (err) {
        this.crashed(err);
      }
    });
    // After bind, socket errors are per-packet trouble (e.g. ICMP port unreachable).
    this.p.socket.on('error', (err) => this.p.log.debug('transfer socket error', { error: err.message }));
    // Not through the queue: a step stuck on a read must not delay the deadline.
    this.deadline = setTimeout(() => {
      try {
        this.onDeadline();
      } catch (err) {
        this.crashed(err);
      }
    }, this.p.deadlineMs);
    if (this.awaitingOack) {
      this.sendOack();
      this.arm();
    } else {
      this.enqueue(() => this.sendWindow());
    }
  }

  abort(): void {
    this.finish('aborted', 'server closing');
  }

  private get peerName(): string {
    return `${this.p.peer.address}:${this.p.peer.port}`;
  }

  private send(packet: TftpPacket, to: { address: string; port: number } = this.p.peer): void {
    if (this.done) return;
    this.inflight++;
    const bytes = encode(packet);
    this.p.sent(bytes.length);
    this.p.socket.send(bytes, to.port, to.address, (err) => {
      if (err) this.p.log.debug('send failed', { client: this.peerName, error: err.message });
      if (--this.inflight === 0) this.flushed?.();
    });
  }

  /** Resolves once the sends already queued have left: closing a socket drops them, the final ERROR included. */
  private sendsFlushed(): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => (this.flushed = resolve));
  }

  private sendOack(): void {
    this.send({ type: 'OACK', options: this.p.negotiated.accepted });
  }

  /**
   * Runs steps one at a time. A step that finishes without I/O (most do:
   * blocks come from the read-ahead) runs synchronously, which saves promise
   * hops per block; one that returns a promise holds the queue until it settles.
   */
  private enqueue(step: () => Promise<void> | void): void {
    this.queue.push(step);
    if (!this.busy) this.drain();
  }

  private drain(): void {
    this.busy = true;
    while (this.queue.length > 0 && !this.done) {
      const step = this.queue.shift()!;
      let pending: Promise<void> | void;
      try {
        pending = step();
      } catch (err) {
        this.fail(err);
        break;
      }
      if (pending) {
        pending.then(
          () => this.drain(),
          (err: unknown) => {
            this.fail(err);
            this.busy = false;
          },
        );
        return;
      }
    }
    this.busy = false;
  }

  /** A bug reached a socket or timer callback: log it and end this transfer alone. */
  private crashed(err: unknown): void {
    this.p.log.error('transfer failed', {
      client: this.peerName,
      error: err instanceof Error ? (err.stack ?? err.message) : String(err),
    });
    this.finish('aborted', 'internal error');
  }

  private fail(err: unknown): void {
    this.p.errors.count(err);
    const message = errorText(err);
    this.send({ type: 'ERROR', code: TftpErrorCode.NotDefined, message: 'read error on the server' });
    this.finish('read-error', message, TftpErrorCode.NotDefined);
  }

  private arm(): void {
    // One timer per transfer, restarted in place: cheaper than a new one per block.
    if (this.timer) this.timer.refresh();
    else this.timer = setTimeout(() => this.enqueue(() => this.onTimeout()), this.timeoutMs);
  }

  private onMessage(msg: Buffer, rinfo: RemoteInfo): void {
    if (this.done) return;
    if (rinfo.address !== this.p.peer.address || rinfo.port !== this.p.peer.port) {
      // RFC 1350 §4: answer the stranger with error 5, leave the transfer alone.
      this.p.drops.drop(rinfo.address, 'packet from an unknown transfer ID answered with error 5', {
        from: `${rinfo.address}:${rinfo.port}`,
        transfer: this.peerName,
      });
      this.send(
        { type: 'ERROR', code: TftpErrorCode.UnknownTransferId, message: 'unknown transfer ID' },
        rinfo,
      );
      return;
    }
    let packet: TftpPacket;
    try {
      packet = decode(msg);
    } catch (err) {
      this.p.errors.count(err);
      this.p.drops.drop(rinfo.address, 'malformed packet dropped', {
        client: this.peerName,
        error: errorText(err),
      });
      return;
    }
    switch (packet.type) {
      case 'ACK': {
        const block = packet.block;
        this.enqueue(() => this.onAck(block));
        break;
      }
      case 'ERROR':
        // RFC 2347: error 8 here means the client refused our OACK.
        this.finish('client-error', `client sent error ${packet.code}: ${packet.message}`);
        break;
      default:
        this.send({
          type: 'ERROR',
          code: TftpErrorCode.IllegalOperation,
          message: `unexpected ${packet.type} in a read transfer`,
        });
        this.finish('protocol-error', `client sent ${packet.type}`, TftpErrorCode.IllegalOperation);
    }
  }

  private onAck(wire: number): Promise<void> | void {
    if (this.awaitingOack) {
      // RFC 2347: the client confirms the OACK with ACK 0.
      if (wire !== 0) return;
      this.awaitingOack = false;
      this.tries = 0;
      return this.sendWindow();
    }
    // Map the 16-bit number onto the blocks in flight (acked .. sent); the
    // window is at most 65535 blocks, so the mapping is unambiguous.
    const k = this.acked + ((wire - (this.acked & 0xffff)) & 0xffff);
    // A duplicate (k === acked) or a number we never sent is ignored: only
    // the timer retransmits (Sorcerer's Apprentice, RFC 1123 §4.2.3.1).
    if (k === this.acked || k > this.sent) return;
    for (const b of this.cache.splice(0, k - this.acked)) this.bytesAcked += b.length;
    this.acked = k;
    this.tries = 0;
    if (this.lastBlock !== undefined && k >= this.lastBlock) {
      this.finish('ok');
      return;
    }
    // RFC 7440 §4: an ACK inside the window rewinds to the block after it.
    return this.sendWindow();
  }

  /**
   * The absolute deadline: retries alone do not bound a transfer, since every
   * ACK that moves it on resets them, so a client ACKing one block per
   * timeout could keep its slot for hours.
   */
  private onDeadline(): void {
    this.send({ type: 'ERROR', code: TftpErrorCode.NotDefined, message: 'transfer took too long' });
    this.finish('timeout', `transfer deadline of ${this.p.deadlineMs} ms passed`, TftpErrorCode.NotDefined);
  }

  private onTimeout(): Promise<void> | void {
    if (++this.tries > this.p.retries) {
      this.finish('timeout', `no ACK after ${this.p.retries} retransmissions of ${this.timeoutMs} ms`);
      return;
    }
    if (this.awaitingOack) {
      this.sendOack();
      this.arm();
      return;
    }
    return this.sendWindow();
  }

  /** Sends the window after the last acknowledged block, producing blocks as needed. */
  private sendWindow(): Promise<void> | void {
    while (this.cache.length < this.window && this.lastBlock === undefined) {
      // Read-ahead blocks come without a promise: most blocks of a transfer.
      const ready = this.source.nextReady?.();
      if (ready === undefined) {
        return this.source.next().then((data) => {
          if (this.done) return;
          this.produced(data);
          return this.sendWindow();
        });
      }
      this.produced(ready);
    }
    const n = Math.min(this.window, this.cache.length);
    for (let i = 0; i < n; i++) {
      this.send({ type: 'DATA', block: (this.acked + 1 + i) & 0xffff, data: this.cache[i]! });
    }
    this.sent = this.acked + n;
    this.arm();
  }

  private produced(data: Buffer): void {
    this.cache.push(data);
    if (data.length < this.blockSize) this.lastBlock = this.acked + this.cache.length;
  }

  private finish(result: TransferResult, detail?: string, errorCode?: number): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.timer);
    clearTimeout(this.deadline);
    const info: TransferInfo = {
      client: this.peerName,
      file: this.p.request.filename,
      size: this.p.file.size,
      bytes: this.bytesAcked,
      blockSize: this.blockSize,
      windowSize: this.window,
      result,
      ...(detail !== undefined ? { detail } : {}),
      ...(errorCode !== undefined ? { errorCode } : {}),
      durationMs: Date.now() - this.started,
    };
    this.cache = [];
    void Promise.allSettled([
      this.sendsFlushed().then(() => closeSocket(this.p.socket)),
      Promise.resolve().then(() => this.p.file.close()),
    ]).then(() => this.resolveClosed());
    this.p.onEnd(info);
  }
}

/**
 * Read-only TFTP server. `listen()` binds the request port; every read
 * request then gets its own socket. `close()` ends everything, transfers in
 * progress included.
 */
export class TftpServer extends EventEmitter<TftpServerEvents> {
  private readonly host: string;
  private readonly requestedPort: number;
  private readonly maxTransfers: number;
  private readonly transfersPerIp: number;
  private readonly maxTimeoutS: number;
  private readonly transferDeadlineMs: number;
  private readonly timeoutMs: number;
  private readonly retries: number;
  private readonly maxBlockSize: number;
  private readonly maxWindowSize: number;
  private readonly files: FileProvider;
  private readonly log: Logger;
  private socket: Socket | undefined;
  private boundPort = 0;
  private closing = false;
  /** Keyed by the client's "address:port"; 'opening' while the file is being opened. */
  private readonly transfers = new Map<string, Transfer | 'opening'>();
  /** Entries of `transfers` per client IP, for the per-IP cap. */
  private readonly perIp = new Map<string, number>();
  /** Malformed packets and requests over a cap, logged once per source IP per minute. */
  private readonly drops: DropLog;
  /** Refused requests (missing files, access violations), logged apart from malformed packets. */
  private readonly refusals: DropLog;
  /**
   * Transfers that did not finish (client error, timeout, abort): a client can
   * start and abort one transfer after another, so one line per source a
   * minute, counted, like refusals (#14 review).
   */
  private readonly failures: DropLog;
  private readonly pending = new Set<Promise<unknown>>();
  /** UDP payload bytes sent (DATA with retransmissions, OACKs, ERRORs): the server's own figure (#16). */
  sentBytes = 0;
  /** Transfers ended (refusals included), by result: what the 'transfer' event reported. */
  readonly results: Record<TransferResult, number> = Object.fromEntries(
    TRANSFER_RESULTS.map((r) => [r, 0]),
  ) as Record<TransferResult, number>;
  /** Typed errors met (malformed packets, refused paths, read errors), by code. */
  readonly errors = new ErrorCounts();

  constructor(options: TftpServerOptions = {}, services: TftpServerServices = {}) {
    super();
    this.host = options.host ?? DEFAULTS.host;
    this.requestedPort = options.port ?? DEFAULTS.port;
    this.maxTransfers = options.maxTransfers ?? DEFAULTS.maxTransfers;
    this.transfersPerIp = options.transfersPerIp ?? DEFAULTS.transfersPerIp;
    this.maxTimeoutS = options.maxTimeoutS ?? DEFAULTS.maxTimeoutS;
    this.transferDeadlineMs = options.transferDeadlineMs ?? DEFAULTS.transferDeadlineMs;
    this.timeoutMs = options.timeoutMs ?? DEFAULTS.timeoutMs;
    this.retries = options.retries ?? DEFAULTS.retries;
    this.maxBlockSize = options.maxBlockSize ?? DEFAULTS.maxBlockSize;
    this.maxWindowSize = options.maxWindowSize ?? DEFAULTS.maxWindowSize;
    this.log = (services.logger ?? silentLogger).child('tftp');
    this.drops = new DropLog(this.log);
    this.refusals = new DropLog(this.log);
    this.failures = new DropLog(this.log);
    if (services.files) this.files = services.files;
    else if (options.root !== undefined) this.files = new RootFileProvider(options.root);
    else throw new BootTorrentError('BT_ERR_USAGE', 'TftpServer needs options.root or a files provider');
  }

  /** The bound address once listen() resolved. */
  address(): { host: string; port: number } {
    return { host: this.host, port: this.boundPort };
  }

  /** Transfers in progress (including requests whose file is being opened). */
  activeTransfers(): number {
    return this.transfers.size;
  }

  /** Binds the request port; rejects with BT_ERR_LISTEN naming host:port and the fix. */
  async listen(): Promise<{ host: string; port: number }> {
    if (this.socket) throw new BootTorrentError('BT_ERR_LISTEN', 'TFTP server is already listening');
    this.closing = false;
    const socket = createSocket({ type: isIP(this.host) === 6 ? 'udp6' : 'udp4' });
    try {
      await bindSocket(socket, this.host, this.requestedPort);
    } catch (err) {
      await closeSocket(socket);
      throw this.listenError(err);
    }
    this.socket = socket;
    this.boundPort = socket.address().port;
    socket.on('message', (msg, rinfo) => {
      // Containment: a fault while handling one request is logged; the listener goes on.
      try {
        this.onRequest(msg, rinfo);
      } catch (err) {
        this.log.error('request failed', {
          from: `${rinfo.address}:${rinfo.port}`,
          error: err instanceof Error ? (err.stack ?? err.message) : String(err),
        });
      }
    });
    watchListener(
      socket,
      { drops: this.drops, packet: 'request socket error', log: this.log, failed: 'request socket failed' },
      (err) => this.emit('listenerError', err),
    );
    this.log.info('listening', { address: `${this.host}:${this.boundPort}` });
    return this.address();
  }

  private listenError(err: unknown): BootTorrentError {
    const code = (err as NodeJS.ErrnoException | undefined)?.code ?? String(err);
    const where = `${this.host}:${this.requestedPort}`;
    const fix =
      code === 'EADDRINUSE'
        ? 'another TFTP server (dnsmasq with enable-tftp, tftpd-hpa, atftpd, inetd) already uses that port: stop it (e.g. `systemctl stop tftpd-hpa`) or choose another port'
        : code === 'EACCES'
          ? 'ports below 1024 (TFTP is 69) need root or CAP_NET_BIND_SERVICE: run as root or give node that capability'
          : code === 'EADDRNOTAVAIL'
            ? 'that address is not on this machine: choose one of its addresses'
            : 'check the TFTP host and port';
    return new BootTorrentError(
      'BT_ERR_LISTEN',
      `TFTP server cannot listen on UDP ${where}: ${code}; ${fix}`,
      {
        cause: err,
      },
    );
  }

  /** Stops listening and aborts every transfer; resolves when all sockets and files are closed. */
  async close(): Promise<void> {
    this.closing = true;
    const socket = this.socket;
    this.socket = undefined;
    const waits: Promise<unknown>[] = [...this.pending];
    for (const t of this.transfers.values()) {
      if (t === 'opening') continue;
      t.abort();
      waits.push(t.closed);
    }
    if (socket) waits.push(closeSocket(socket));
    await Promise.all(waits);
    // Transfers that were still opening noticed `closing` and cleaned up.
    for (const t of this.transfers.values()) if (t !== 'opening') await t.closed;
    this.transfers.clear();
    this.perIp.clear();
  }

  /** Takes a transfer slot for the client `from` ("address:port") at `ip`. */
  private occupy(from: string, ip: string): void {
    this.transfers.set(from, 'opening');
    this.perIp.set(ip, (this.perIp.get(ip) ?? 0) + 1);
  }

  /** Frees the client's slot; only the first call for a slot counts. */
  private release(from: string, ip: string): void {
    if (!this.transfers.delete(from)) return;
    const n = (this.perIp.get(ip) ?? 1) - 1;
    if (n > 0) this.perIp.set(ip, n);
    else this.perIp.delete(ip);
  }

  private onRequest(msg: Buffer, rinfo: RemoteInfo): void {
    const from = `${rinfo.address}:${rinfo.port}`;
    let packet: TftpPacket;
    try {
      packet = decode(msg);
    } catch (err) {
      this.errors.count(err);
      // Counted, one line per source a minute: junk must not choose how much we log.
      this.drops.drop(rinfo.address, 'malformed packet dropped', {
        from,
        error: errorText(err),
      });
      return;
    }
    if (packet.type === 'WRQ') {
      this.refuse(rinfo, packet, TftpErrorCode.AccessViolation, 'this TFTP server is read-only', undefined);
      return;
    }
    if (packet.type !== 'RRQ') {
      this.log.debug('non-request packet on the request port dropped', { from, type: packet.type });
      return;
    }
    // A retransmitted RRQ while its transfer runs: the transfer's timer already retransmits.
    if (this.transfers.has(from)) {
      this.log.debug('duplicate request ignored', { from, file: packet.filename });
      return;
    }
    // Over a cap, the request is dropped rather than answered with an ERROR:
    // firmware retransmits an unanswered RRQ and gets a slot once one frees,
    // while an ERROR would end its boot attempt. The drop is counted and
    // logged once per IP per minute, so a flood cannot flood the log.
    if (this.transfers.size >= this.maxTransfers) {
      this.drops.drop(rinfo.address, 'request dropped: too many transfers (the client will retry)', {
        file: packet.filename,
        max: this.maxTransfers,
      });
      return;
    }
    if ((this.perIp.get(rinfo.address) ?? 0) >= this.transfersPerIp) {
      this.drops.drop(
        rinfo.address,
        'request dropped: too many transfers from this address (the client will retry)',
        { file: packet.filename, max: this.transfersPerIp },
      );
      return;
    }
    this.occupy(from, rinfo.address);
    const work = this.startTransfer(packet, rinfo).catch((err: unknown) => {
      this.release(from, rinfo.address);
      this.log.error('transfer failed to start', {
        from,
        file: packet.filename,
        error: errorText(err),
      });
    });
    this.pending.add(work);
    void work.finally(() => this.pending.delete(work));
  }

  /** Answers a request with an error from the request port, logs and emits it. */
  private refuse(
    rinfo: RemoteInfo,
    request: RequestPacket,
    code: number,
    message: string,
    logDetail: string | undefined,
  ): void {
    const client = `${rinfo.address}:${rinfo.port}`;
    const packet = encode({ type: 'ERROR', code, message });
    if (this.socket) this.sentBytes += packet.length;
    this.socket?.send(packet, rinfo.port, rinfo.address, (err) => {
      if (err) this.log.debug('send failed', { client, error: err.message });
    });
    const info: TransferInfo = {
      client,
      file: request.filename,
      size: undefined,
      bytes: 0,
      blockSize: 0,
      windowSize: 0,
      result: 'refused',
      detail: logDetail ?? message,
      errorCode: code,
      durationMs: 0,
    };
    // Once per source a minute, counted: a client asking for file after
    // missing file (or climbing out of the root) cannot flood the log. The
    // first refusal still names the file, which is what a PXE debug needs.
    this.refusals.drop(rinfo.address, `${request.type} refused`, {
      client,
      file: request.filename,
      code,
      reason: info.detail,
    });
    this.emitTransfer(info);
  }

  /** Listeners are other components' code: one that throws is logged, and the transfer's timer or socket goes on. */
  private emitTransfer(info: TransferInfo): void {
    this.results[info.result]++;
    try {
      this.emit('transfer', info);
    } catch (err) {
      this.log.error('a transfer listener failed', {
        client: info.client,
        error: errorText(err),
      });
    }
  }

  private async startTransfer(request: RequestPacket, rinfo: RemoteInfo): Promise<void> {
    const from = `${rinfo.address}:${rinfo.port}`;
    const refuse = (code: number, message: string, detail?: string) => {
      this.release(from, rinfo.address);
      this.refuse(rinfo, request, code, message, detail);
    };
    if (request.mode === 'mail') {
      refuse(TftpErrorCode.IllegalOperation, 'mail mode is for writing; this server is read-only');
      return;
    }
    let path: string;
    try {
      path = cleanRequestPath(request.filename);
    } catch (err) {
      this.errors.count(err);
      refuse(TftpErrorCode.AccessViolation, `access violation: ${(err as Error).message}`);
      return;
    }
    let file: ServedFile | undefined;
    try {
      file = await this.files.open(path, { address: rinfo.address, port: rinfo.port });
    } catch (err) {
      this.errors.count(err);
      if (isBootTorrentError(err, 'BT_ERR_TFTP_ACCESS')) {
        // The log gets the whole reason (it may name real paths); the client a short one.
        refuse(TftpErrorCode.AccessViolation, 'access violation', err.message);
      } else {
        refuse(TftpErrorCode.NotDefined, 'cannot open the file', errorText(err));
      }
      return;
    }
    if (!file) {
      refuse(TftpErrorCode.FileNotFound, 'file not found', `${path} not found`);
      return;
    }
    if (this.closing) {
      this.release(from, rinfo.address);
      await file.close();
      return;
    }
    const negotiated = negotiateRead(request.options, request.mode, file.size, {
      maxBlockSize: this.maxBlockSize,
      maxWindowSize: this.maxWindowSize,
      maxTimeoutS: this.maxTimeoutS,
    });
    const socket = createSocket({ type: isIP(this.host) === 6 ? 'udp6' : 'udp4' });
    try {
      await bindSocket(socket, this.host, 0);
    } catch (err) {
      await Promise.allSettled([closeSocket(socket), Promise.resolve().then(() => file.close())]);
      refuse(TftpErrorCode.NotDefined, 'server cannot open a transfer socket', (err as Error).message);
      return;
    }
    if (this.closing) {
      this.release(from, rinfo.address);
      await Promise.allSettled([closeSocket(socket), Promise.resolve().then(() => file.close())]);
      return;
    }
    const transfer = new Transfer({
      socket,
      peer: rinfo,
      request,
      file,
      negotiated,
      timeoutMs: this.timeoutMs,
      retries: this.retries,
      deadlineMs: this.transferDeadlineMs,
      log: this.log,
      drops: this.drops,
      errors: this.errors,
      sent: (n) => (this.sentBytes += n),
      onEnd: (info) => {
        if (this.transfers.get(from) === transfer) this.release(from, rinfo.address);
        this.logTransfer(info);
        this.emitTransfer(info);
      },
    });
    this.transfers.set(from, transfer);
    this.log.debug('transfer started', {
      client: from,
      file: request.filename,
      size: file.size,
      mode: request.mode,
      options: Object.fromEntries(negotiated.accepted),
    });
    transfer.start();
  }

  /** The one line per transfer: client, file, size, result. */
  private logTransfer(info: TransferInfo): void {
    const fields = {
      client: info.client,
      file: info.file,
      size: info.size,
      bytes: info.bytes,
      blksize: info.blockSize,
      windowsize: info.windowSize,
      result: info.result,
      detail: info.detail,
      ms: info.durationMs,
    };
    if (info.result === 'ok') this.log.info('transfer', fields);
    else this.failures.drop(info.client.replace(/:\d+$/, ''), 'transfer', fields);
  }
}
