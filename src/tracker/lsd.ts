/**
 * Local Service Discovery (BEP 14): the one owner of the LSD multicast
 * socket (STYLE.md lesson 2). It announces our torrents on one interface and
 * reports peers that announce torrents we share.
 *
 * IPv4 only: the BEP 14 IPv6 group [ff15::efc0:988f]:6771 is not joined.
 * BootTorrent's labs boot over DHCPv4/PXE, so every client has an IPv4
 * address on the lab segment, and IPv6 would add a second socket and scope-id
 * handling for no extra peers.
 */

import { createSocket } from 'node:dgram';
import type { Socket, RemoteInfo } from 'node:dgram';
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { isIPv4 } from 'node:net';
import { networkInterfaces } from 'node:os';

import { BootTorrentError, abortError } from '../errors.js';
import { ipToInt } from '../util/address.js';
import { LSD_IPV4_GROUP, LSD_PORT, decode, encode, normalizeInfoHash } from './lsd-codec.js';

/** The logging surface LSD needs; any structured logger (pino-like) fits. */
export interface LsdLogger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export interface LocalServiceDiscoveryOptions {
  /** Port we accept BitTorrent peer connections on; goes into `Port:`. */
  port: number;
  /**
   * IPv4 address of the interface to announce and listen on. Required on
   * purpose: a BootTorrent server usually has an uplink and a lab NIC, and
   * letting the kernel choose would send multicast out of the default
   * route's interface, i.e. announce our torrents to the campus network and
   * never reach the lab clients. The caller must name the lab interface.
   */
  interfaceAddress: string;
  /** Torrents to announce (40 hex characters or 20 bytes each). */
  infoHashes?: Iterable<string | Uint8Array>;
  /**
   * Time between announces of the same torrent, default 5 minutes (BEP 14
   * §Usage: "every 5 minutes", and "no more than 1 announce per minute").
   * Values below 60 s break that rule and are only meant for tests in an
   * isolated network namespace; the floor of 1 s stops accidental floods.
   */
  announceIntervalMs?: number;
  /**
   * Infohashes per datagram, default 1. BEP 14 allows several, but aria2
   * reads LSD datagrams into a 200-byte buffer and only its first Infohash,
   * and libtorrent sends one per datagram; one per datagram is understood by
   * every implementation. Datagrams stay under BEP 14's 1400 bytes anyway.
   */
  infoHashesPerAnnounce?: number;
  /**
   * IP_MULTICAST_TTL, default 1 (stay on the lab segment, as aria2 does).
   * BEP 14 notes implementations may go higher since the group is org-local;
   * raise it only if peers sit behind multicast routers.
   */
  multicastTtl?: number;
  /** Multicast group; default 239.192.152.143. Overridable for tests. */
  multicastGroup?: string;
  /** Multicast port; default 6771. Overridable for tests. */
  multicastPort?: number;
}

export interface LocalServiceDiscoveryServices {
  logger: LsdLogger;
}

/** A peer found by LSD: `ip` is the UDP source address (BEP 14 §Usage). */
export interface LsdPeer {
  infoHash: string;
  ip: string;
  port: number;
}

interface LsdEvents {
  peer: [LsdPeer];
  /** The socket failed after start; the instance has stopped itself. */
  error: [BootTorrentError];
}

const DEFAULT_INTERVAL_MS = 5 * 60_000;
const MIN_INTERVAL_MS = 1_000;

/**
 * Announces our torrents on one IPv4 interface every `announceIntervalMs`
 * (the first at `start()`), and emits `peer` for announces from others that
 * name a torrent we announce. Our own announces come back through multicast
 * loopback and are recognised by a per-instance cookie.
 *
 * Several instances (and other clients such as aria2 or libtorrent) can run
 * on one host: the socket sets SO_REUSEADDR so all of them bind port 6771.
 */
export class LocalServiceDiscovery extends EventEmitter<LsdEvents> {
  /** Random per-instance token sent as `cookie:` to spot our own announces. */
  readonly cookie: string = randomBytes(8).toString('hex');

  readonly #port: number;
  readonly #iface: string;
  readonly #intervalMs: number;
  readonly #perAnnounce: number;
  readonly #ttl: number;
  readonly #group: string;
  readonly #groupPort: number;
  readonly #log: LsdLogger;
  readonly #infoHashes = new Set<string>();
  /** When each infohash was last announced, so re-adding cannot exceed the rate. */
  readonly #lastSent = new Map<string, number>();

  #socket: Socket | undefined;
  #timer: NodeJS.Timeout | undefined;
  #subnet: { network: number; mask: number } | undefined;
  #state: 'new' | 'starting' | 'running' | 'stopped' = 'new';
  #abortCleanup: (() => void) | undefined;

  constructor(options: LocalServiceDiscoveryOptions, services: LocalServiceDiscoveryServices) {
    super();
    const { port, interfaceAddress } = options;
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new BootTorrentError('BT_ERR_USAGE', `LSD port must be an integer 1..65535, got ${String(port)}`);
    }
    if (typeof interfaceAddress !== 'string' || !isIPv4(interfaceAddress)) {
      throw new BootTorrentError(
        'BT_ERR_USAGE',
        `LSD interfaceAddress must be the IPv4 address of the lab interface, got ${JSON.stringify(interfaceAddress)}`,
      );
    }
    const intervalMs = options.announceIntervalMs ?? DEFAULT_INTERVAL_MS;
    if (!Number.isInteger(intervalMs) || intervalMs < MIN_INTERVAL_MS) {
      throw new BootTorrentError(
        'BT_ERR_USAGE',
        `LSD announceIntervalMs must be an integer >= ${MIN_INTERVAL_MS}`,
      );
    }
    const perAnnounce = options.infoHashesPerAnnounce ?? 1;
    // 20 x 52-byte Infohash lines plus headers stays under 1400 bytes.
    if (!Number.isInteger(perAnnounce) || perAnnounce < 1 || perAnnounce > 20) {
      throw new BootTorrentError('BT_ERR_USAGE', 'LSD infoHashesPerAnnounce must be an integer 1..20');
    }
    const ttl = options.multicastTtl ?? 1;
    if (!Number.isInteger(ttl) || ttl < 1 || ttl > 255) {
      throw new BootTorrentError('BT_ERR_USAGE', 'LSD multicastTtl must be an integer 1..255');
    }
    const group = options.multicastGroup ?? LSD_IPV4_GROUP;
    const first = Number(group.split('.')[0]);
    if (!isIPv4(group) || first < 224 || first > 239) {
      throw new BootTorrentError(
        'BT_ERR_USAGE',
        `LSD multicastGroup must be an IPv4 multicast address, got ${group}`,
      );
    }
    const groupPort = options.multicastPort ?? LSD_PORT;
    if (!Number.isInteger(groupPort) || groupPort < 1 || groupPort > 65535) {
      throw new BootTorrentError('BT_ERR_USAGE', 'LSD multicastPort must be an integer 1..65535');
    }
    this.#port = port;
    this.#iface = interfaceAddress;
    this.#intervalMs = intervalMs;
    this.#perAnnounce = perAnnounce;
    this.#ttl = ttl;
    this.#group = group;
    this.#groupPort = groupPort;
    this.#log = services.logger;
    for (const ih of options.infoHashes ?? []) this.#infoHashes.add(this.#normalize(ih));
  }

  /** Infohashes currently announced (lower-case hex). */
  get infoHashes(): string[] {
    return [...this.#infoHashes];
  }

  /**
   * Binds, joins the group on `interfaceAddress`, sends the first announce
   * and starts the announce timer. Rejects with BT_ERR_LISTEN (naming the
   * address) if the interface does not exist or the socket cannot be set up.
   * Aborting `signal` stops the instance, before or after start completes.
   */
  async start(options: { signal?: AbortSignal } = {}): Promise<void> {
    const { signal } = options;
    if (this.#state !== 'new') {
      throw new BootTorrentError('BT_ERR_USAGE', `LSD start() called in state ${this.#state}`);
    }
    if (signal?.aborted) throw abortError(signal);
    this.#state = 'starting';
    const where = `${this.#group}:${this.#groupPort} on interface ${this.#iface}`;

    // Look the address up ourselves: the netmask lets us drop announces from
    // other segments (see #onMessage), and a missing address gets a clear
    // message instead of a bare EADDRNOTAVAIL from setsockopt.
    this.#subnet = this.#findSubnet();
    if (this.#subnet === undefined) {
      this.#state = 'stopped';
      throw new BootTorrentError(
        'BT_ERR_LISTEN',
        `LSD cannot listen on ${where}: no local interface that is up and running (with carrier) ` +
          `has the IPv4 address ${this.#iface}; set the LSD interface to an address of the lab NIC ` +
          '(see `ip -4 addr`) and check its link',
      );
    }

    // stop() or an abort while binding closes the socket; the bind promise
    // below then rejects through its 'close' listener.
    if (signal !== undefined) {
      const onAbort = (): void => void this.stop();
      signal.addEventListener('abort', onAbort, { once: true });
      this.#abortCleanup = () => signal.removeEventListener('abort', onAbort);
    }
    const socket = createSocket({ type: 'udp4', reuseAddr: true });
    this.#socket = socket;
    try {
      await new Promise<void>((resolve, reject) => {
        const onError = (err: Error): void => reject(err);
        const onClose = (): void => reject(new Error('stopped during start'));
        socket.once('error', onError);
        socket.once('close', onClose);
        // Bind to the group address, not 0.0.0.0: the socket then only sees
        // datagrams sent to the LSD group, never unicast traffic to port 6771.
        socket.bind({ port: this.#groupPort, address: this.#group, exclusive: false }, () => {
          socket.off('error', onError);
          socket.off('close', onClose);
          resolve();
        });
      });
      socket.addMembership(this.#group, this.#iface);
      socket.setMulticastInterface(this.#iface);
      socket.setMulticastTTL(this.#ttl);
      // Loopback on: other clients on this host (several BootTorrent
      // instances, or aria2 next to us) must hear us; our own copies are
      // filtered by cookie.
      socket.setMulticastLoopback(true);
    } catch (err) {
      // TypeScript narrowed #state to 'starting' above; stop() may have run
      // during the await, so read it afresh.
      const stoppedMeanwhile = (this.#state as string) === 'stopped';
      await this.stop();
      if (signal?.aborted) throw abortError(signal);
      if (stoppedMeanwhile) {
        throw new BootTorrentError('BT_ERR_ABORTED', 'LSD stopped during start', { cause: err });
      }
      throw new BootTorrentError(
        'BT_ERR_LISTEN',
        `LSD cannot listen on ${where}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }

    socket.on('message', (msg, rinfo) => this.#onMessage(msg, rinfo));
    socket.on('error', (err) => this.#onSocketError(err, where));
    this.#state = 'running';
    this.#log.info('LSD listening', {
      group: this.#group,
      port: this.#groupPort,
      interfaceAddress: this.#iface,
      cookie: this.cookie,
    });

    this.#announce([...this.#infoHashes]);
    this.#timer = setInterval(() => this.#announceDue(), this.#tickMs());
  }

  /** Stops announcing and closes the socket. Safe to call more than once. */
  async stop(): Promise<void> {
    if (this.#state === 'stopped') return;
    this.#state = 'stopped';
    this.#abortCleanup?.();
    this.#abortCleanup = undefined;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    const socket = this.#socket;
    this.#socket = undefined;
    if (socket !== undefined) {
      await new Promise<void>((resolve) => {
        try {
          socket.close(() => resolve());
        } catch {
          resolve(); // already closed after a socket error
        }
      });
      this.#log.info('LSD stopped', { interfaceAddress: this.#iface });
    }
  }

  /** Starts announcing a torrent; announced at once if running and not sent recently. */
  addInfoHash(infoHash: string | Uint8Array): void {
    const hex = this.#normalize(infoHash);
    if (this.#infoHashes.has(hex)) return;
    this.#infoHashes.add(hex);
    if (this.#state === 'running') this.#announceDue();
  }

  /** Stops announcing a torrent and stops reporting peers for it. */
  removeInfoHash(infoHash: string | Uint8Array): void {
    this.#infoHashes.delete(this.#normalize(infoHash));
  }

  #normalize(infoHash: string | Uint8Array): string {
    try {
      return normalizeInfoHash(infoHash);
    } catch (err) {
      throw new BootTorrentError('BT_ERR_USAGE', `LSD: ${(err as Error).message}`, { cause: err });
    }
  }

  #findSubnet(): { network: number; mask: number } | undefined {
    for (const addrs of Object.values(networkInterfaces())) {
      for (const a of addrs ?? []) {
        if (a.family === 'IPv4' && a.address === this.#iface) {
          const mask = ipToInt(a.netmask);
          return { network: (ipToInt(a.address) & mask) >>> 0, mask };
        }
      }
    }
    return undefined;
  }

  /**
   * Timer granularity: a tenth of the interval (at least 1 s), so a torrent
   * added between ticks is announced close to its own schedule while each
   * torrent still goes out no more than once per interval.
   */
  #tickMs(): number {
    return Math.max(MIN_INTERVAL_MS, Math.floor(this.#intervalMs / 10));
  }

  #announceDue(): void {
    const now = Date.now();
    const due = [...this.#infoHashes].filter(
      (ih) => now - (this.#lastSent.get(ih) ?? -Infinity) >= this.#intervalMs,
    );
    this.#announce(due);
  }

  #announce(infoHashes: string[]): void {
    const socket = this.#socket;
    if (socket === undefined || this.#state !== 'running' || infoHashes.length === 0) return;
    const now = Date.now();
    for (let i = 0; i < infoHashes.length; i += this.#perAnnounce) {
      const batch = infoHashes.slice(i, i + this.#perAnnounce);
      const datagram = encode({
        port: this.#port,
        infoHashes: batch,
        cookie: this.cookie,
        host: `${this.#group}:${this.#groupPort}`,
      });
      for (const ih of batch) this.#lastSent.set(ih, now);
      socket.send(datagram, this.#groupPort, this.#group, (err) => {
        // A failed send (interface down, no route) is per-packet: log and
        // keep going; the next interval retries.
        if (err) this.#log.warn('LSD announce not sent', { error: err.message, infoHashes: batch });
      });
      this.#log.debug('LSD announce sent', { infoHashes: batch, port: this.#port });
    }
    // Forget removed torrents once their interval has passed: the map stays
    // bounded, and remove + re-add cannot announce faster than the interval.
    for (const [ih, sent] of this.#lastSent) {
      if (!this.#infoHashes.has(ih) && now - sent >= this.#intervalMs) this.#lastSent.delete(ih);
    }
  }

  #onMessage(datagram: Buffer, rinfo: RemoteInfo): void {
    if (this.#state !== 'running' || this.#subnet === undefined) return;
    // Linux delivers a group's datagrams to every socket bound to the group
    // port, whichever interface joined (IP_MULTICAST_ALL), so announces from
    // another segment can reach us. A peer outside our interface's subnet is
    // not a lab neighbour: drop it (libtorrent filters the same way).
    if (
      rinfo.family !== 'IPv4' ||
      (ipToInt(rinfo.address) & this.#subnet.mask) >>> 0 !== this.#subnet.network
    ) {
      this.#log.debug('LSD datagram from outside the interface subnet ignored', { from: rinfo.address });
      return;
    }
    let announce;
    try {
      announce = decode(datagram);
    } catch (err) {
      this.#log.warn('LSD malformed datagram dropped', {
        from: `${rinfo.address}:${rinfo.port}`,
        error: (err as Error).message,
      });
      return;
    }
    if (announce.cookie === this.cookie) {
      this.#log.debug('LSD own announce ignored', { infoHashes: announce.infoHashes });
      return;
    }
    for (const infoHash of announce.infoHashes) {
      if (!this.#infoHashes.has(infoHash)) continue;
      this.emit('peer', { infoHash, ip: rinfo.address, port: announce.port });
    }
  }

  #onSocketError(err: Error, where: string): void {
    // A socket that fails after start is a listener failure: fatal for this
    // component (STYLE.md lesson 4). Close and tell the owner.
    // Emitted synchronously so that an owner without an 'error' listener
    // gets Node's usual uncaught error, not a silent stop.
    this.#log.error('LSD socket failed', { error: err.message });
    void this.stop();
    this.emit(
      'error',
      new BootTorrentError('BT_ERR_LISTEN', `LSD socket on ${where} failed: ${err.message}`, { cause: err }),
    );
  }
}
