/**
 * The BitTorrent client: one TCP listener shared by every torrent (the
 * handshake's infohash routes each incoming peer), one tracker client, and
 * a TorrentSession per torrent. `seed`, `get`, the agent and the server's
 * seeder all use this.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { BootTorrentError } from '../errors.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { DropLog } from '../util/drop-log.js';
import { watchListener } from '../util/listener-error.js';
import { PEER_LIMITS } from '../limits.js';
import { PeerConnection, type ByteTally } from '../wire/connection.js';
import { TrackerClient } from '../tracker/client.js';
import { TorrentSession, type SessionOptions } from './session.js';

export interface ClientOptions {
  /** Address to accept peers on (default 0.0.0.0). */
  host?: string;
  /** Port to accept peers on (default 6881; 0 picks a free one). */
  port?: number;
  peerId?: Buffer;
  /** Handshakes in progress at once; more incoming sockets are refused (default PEER_LIMITS.maxHalfOpen). */
  maxHalfOpen?: number;
  /** Handshakes in progress at once from one IP (default PEER_LIMITS.halfOpenPerIp). */
  halfOpenPerIp?: number;
  /** Time from accept to a complete handshake, not extended by data (ms, default PEER_LIMITS.handshakeTimeoutMs). */
  handshakeTimeoutMs?: number;
}

export interface ClientServices {
  logger?: Logger;
  signal?: AbortSignal;
  /** The peer listener failed after listen(): no more incoming peers (the owner stops). */
  onListenerError?: (err: Error) => void;
}

/** Azureus-style peer id: "-BT0100-" and 12 random bytes. */
export function newPeerId(): Buffer {
  return Buffer.concat([Buffer.from('-BT0100-'), randomBytes(12)]);
}

export type AddOptions = Omit<SessionOptions, 'peerId' | 'listenPort'>;

export class BitTorrentClient {
  readonly peerId: Buffer;
  private readonly host: string;
  private readonly requestedPort: number;
  private readonly log: Logger;
  private readonly signal: AbortSignal | undefined;
  private readonly maxHalfOpen: number;
  private readonly halfOpenPerIp: number;
  private readonly handshakeTimeoutMs: number;
  private readonly drops: DropLog;
  private readonly onListenerError: ((err: Error) => void) | undefined;
  private server: Server | undefined;
  private port = 0;
  private halfOpen = 0;
  /** Handshakes in progress per source IP (entries removed at zero). */
  private readonly halfOpenByIp = new Map<string, number>();
  private readonly sessions = new Map<string, TorrentSession>();
  private readonly sockets = new Set<Socket>();
  /** Every byte sent to peers by every connection of this client, dialed or accepted, open or closed. */
  private readonly wire: ByteTally = { bytes: 0 };
  readonly tracker = new TrackerClient({
    udpRetransmitBaseMs: 2000,
    udpMaxRetransmits: 3,
    httpTimeoutMs: 10_000,
  });

  constructor(options: ClientOptions = {}, services: ClientServices = {}) {
    this.peerId = options.peerId ?? newPeerId();
    this.host = options.host ?? '0.0.0.0';
    this.requestedPort = options.port ?? 6881;
    this.maxHalfOpen = options.maxHalfOpen ?? PEER_LIMITS.maxHalfOpen;
    this.halfOpenPerIp = options.halfOpenPerIp ?? PEER_LIMITS.halfOpenPerIp;
    this.handshakeTimeoutMs = options.handshakeTimeoutMs ?? PEER_LIMITS.handshakeTimeoutMs;
    this.log = (services.logger ?? silentLogger).child('bt');
    this.drops = new DropLog(this.log);
    this.onListenerError = services.onListenerError;
    this.signal = services.signal;
  }

  /**
   * Bytes written to peers so far: handshakes, messages and blocks of every
   * torrent, including torrents since removed (not LSD or tracker traffic).
   */
  get bytesSent(): number {
    return this.wire.bytes;
  }

  /** The port peers reach us on, once listening. */
  get listenPort(): number {
    return this.port;
  }

  async listen(): Promise<number> {
    const server = createServer((socket) => this.onSocket(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        const fix =
          err.code === 'EADDRINUSE'
            ? 'another program uses it: choose another port (--port)'
            : err.code === 'EACCES'
              ? 'ports below 1024 need root: choose a port >= 1024'
              : 'check the address and port';
        reject(
          new BootTorrentError(
            'BT_ERR_LISTEN',
            `cannot accept peers on ${this.host}:${this.requestedPort}: ${err.code}; ${fix}`,
            {
              cause: err,
            },
          ),
        );
      });
      server.listen(this.requestedPort, this.host, () => resolve());
    });
    watchListener(
      server,
      { drops: this.drops, packet: 'peer connection not accepted', log: this.log, failed: 'listener failed' },
      (err) => this.onListenerError?.(err),
    );
    this.server = server;
    const addr = server.address();
    this.port = typeof addr === 'object' && addr ? addr.port : this.requestedPort;
    this.log.debug('accepting peers', { host: this.host, port: this.port });
    return this.port;
  }

  /**
   * An incoming socket, until its handshake names a torrent. Until then it
   * holds a half-open slot: at most maxHalfOpen in all and halfOpenPerIp
   * per source, for at most handshakeTimeoutMs from accept (absolute: a
   * byte every few seconds does not extend it), so no one host can keep
   * others from connecting.
   */
  private onSocket(socket: Socket): void {
    const ip = (socket.remoteAddress ?? '').replace(/^::ffff:/, '');
    const remotePort = socket.remotePort ?? 0;
    const fromIp = this.halfOpenByIp.get(ip) ?? 0;
    if (this.halfOpen >= this.maxHalfOpen || fromIp >= this.halfOpenPerIp) {
      // Swallow a late reset on a socket we drop before attaching anything to it.
      socket.on('error', () => {});
      socket.destroy();
      this.drops.drop(
        ip,
        fromIp >= this.halfOpenPerIp
          ? 'peer refused: too many handshakes in progress from this address'
          : 'peer refused: too many handshakes in progress',
        { limit: fromIp >= this.halfOpenPerIp ? this.halfOpenPerIp : this.maxHalfOpen },
      );
      return;
    }
    this.halfOpen++;
    this.halfOpenByIp.set(ip, fromIp + 1);
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    socket.setNoDelay(true);
    const conn = new PeerConnection(socket, {
      peerId: this.peerId,
      initiator: false,
      onInfoHash: (ih) => this.sessions.has(ih.toString('hex')),
      handshakeTimeout: this.handshakeTimeoutMs,
      tally: this.wire,
    });
    let counted = true;
    const settle = () => {
      if (!counted) return;
      counted = false;
      this.halfOpen--;
      const n = (this.halfOpenByIp.get(ip) ?? 1) - 1;
      if (n > 0) this.halfOpenByIp.set(ip, n);
      else this.halfOpenByIp.delete(ip);
    };
    conn.on('error', (err) => {
      // Before the handshake: bad input (a timeout, garbage, an unknown
      // torrent), logged once per address per minute. After: the session's.
      if (counted) this.drops.drop(ip, 'peer dropped during its handshake', { error: err.message });
      else this.log.debug('incoming peer error', { peer: `${ip}:${remotePort}`, error: err.message });
    });
    conn.once('close', settle);
    conn.once('handshake', (h) => {
      settle();
      const session = this.sessions.get(h.infoHash.toString('hex'));
      if (!session) conn.destroy();
      else session.acceptIncoming(conn, ip, remotePort);
    });
  }

  /** Adds a torrent and starts it (storage check, announces, connections). */
  async add(options: AddOptions): Promise<TorrentSession> {
    if (!this.server) throw new BootTorrentError('BT_ERR_SWARM', 'call listen() before add()');
    const hex = options.meta.infoHashHex;
    if (this.sessions.has(hex)) throw new BootTorrentError('BT_ERR_SWARM', `torrent ${hex} is already added`);
    const session = new TorrentSession(
      { ...options, peerId: this.peerId, listenPort: this.port },
      {
        logger: this.log,
        trackerClient: this.tracker,
        tally: this.wire,
        ...(this.signal ? { signal: this.signal } : {}),
      },
    );
    this.sessions.set(hex, session);
    try {
      await session.start();
    } catch (err) {
      this.sessions.delete(hex);
      await session.stop();
      throw err;
    }
    // Closed (or removed) while it started: close() could not stop what had not started yet.
    if (this.sessions.get(hex) !== session) {
      await session.stop();
      throw new BootTorrentError('BT_ERR_SWARM', `torrent ${hex} was removed while it started`);
    }
    return session;
  }

  /** Stops one torrent. */
  async remove(infoHashHex: string): Promise<void> {
    const s = this.sessions.get(infoHashHex);
    this.sessions.delete(infoHashHex);
    await s?.stop();
  }

  get torrents(): TorrentSession[] {
    return [...this.sessions.values()];
  }

  /** Stops every torrent (announcing `stopped`) and the listener. */
  async close(): Promise<void> {
    const sessions = [...this.sessions.values()];
    this.sessions.clear();
    await Promise.all(sessions.map((s) => s.stop()));
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    this.server = undefined;
    this.tracker.close();
  }
}
