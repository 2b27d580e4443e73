/**
 * One torrent in the swarm: its peers, requests, uploads, verification and
 * announces. Decisions are delegated to the pure PiecePicker, choker,
 * SeedPolicy (requests, upload queue, upload cap) and PieceAssembler (hash
 * check, strikes); PeerDialer picks whom to dial, Announcer talks to
 * trackers and LSD; bytes go through PieceStore; peers speak through
 * PeerConnection. This class keeps the per-peer state, wires them together
 * and owns the timers.
 *
 * Tuned for a boot LAN, where every client starts at once, peers are
 * trusted machines and the bandwidth-delay product is large: deep request
 * pipelines (sized from the measured rate), `lan` choking by default, and
 * rechoking as soon as a peer becomes interested rather than every 10 s.
 */
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { BootTorrentError, abortError, errorText } from '../errors.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { DropLog } from '../util/drop-log.js';
import { PEER_LIMITS } from '../limits.js';
import type { Metainfo } from '../torrent/metainfo.js';
import { Bitfield } from '../wire/bitfield.js';
import type { PeerConnection, PeerConnectionEvents } from '../wire/connection.js';
import { TrackerClient } from '../tracker/client.js';
import { PiecePicker } from './picker.js';
import type { ChokerMode } from './choker.js';
import { PieceStore, pieceMatches } from './storage.js';
import { PieceAssembler } from './assembler.js';
import { Announcer } from './announcer.js';
import type { CandidateSource } from './dialer.js';
import { MAX_UPLOAD_QUEUE, SeedPolicy, UploadBucket } from './seed-policy.js';
import { clientName, type Peer, type SessionCore } from './peer.js';
import { PeerPool } from './peer-pool.js';
import { Downloader } from './downloader.js';
import { Uploader, answerMetadataRequest } from './uploader.js';
import { PexExchange } from './pex.js';
import { WebSeed } from './web-seed.js';
import type { SessionEvents, SessionOptions, SessionServices, SessionStats } from './session-types.js';

export type {
  PeerStats,
  SessionEvents,
  SessionOptions,
  SessionServices,
  SessionStats,
} from './session-types.js';

const CHOKE_INTERVAL_MS = 10_000;
const TICK_MS = 1000;
/**
 * A downloading session with fewer peers than it could use asks its
 * trackers again this soon after an answer, doubling each time (within the
 * tracker's min interval): when a room starts at once, the first to
 * announce learn of few peers, and the next regular announce is minutes
 * away.
 */
const ANNOUNCE_EAGER_MS = 5000;
const PEX_INTERVAL_MS = 60_000;
/** The id we ask peers to send ut_metadata (BEP 9) messages under. */
const UT_METADATA_ID = 2;
/** How often verified pieces are announced to peers (`have`, batched per peer). */
const HAVE_BATCH_MS = 250;
/** Web seeds used per torrent; a url-list longer than this is cut (a torrent cannot make us fetch from hundreds). */
export const MAX_WEB_SEEDS = 8;

/** What exists once start() has opened the storage and checked the data. */
interface Running {
  readonly store: PieceStore;
  readonly picker: PiecePicker;
  readonly announcer: Announcer;
  readonly downloader: Downloader;
  readonly uploader: Uploader;
  readonly webSeeds: WebSeed[];
}

export class TorrentSession extends EventEmitter<SessionEvents> {
  readonly meta: Metainfo;
  private readonly opts: SessionOptions;
  private readonly log: Logger;
  private readonly signal: AbortSignal | undefined;
  /** The connected peers; PeerPool adds and removes them. */
  private readonly peers = new Map<PeerConnection, Peer>();
  /** What the parts share of this session. */
  private readonly core: SessionCore;
  private readonly maxPeers: number;
  /** Dialing, admission, bans. */
  private readonly pool: PeerPool;
  private readonly pexExchange: PexExchange | undefined;
  /** Set by start(). */
  private run: Running | undefined;
  /** Why the session ended itself (a fault in a timer or continuation), if it did. */
  private failure: BootTorrentError | undefined;
  private readonly tracker: TrackerClient;
  private readonly ownTracker: boolean;
  private timers: NodeJS.Timeout[] = [];
  private started = false;
  private stopped = false;
  /** The uploadLimit, if any. */
  private readonly uploadBucket: UploadBucket | undefined;
  private readonly chokerMode: ChokerMode;
  private readonly maxUnchoked: number;
  private readonly pex: boolean;
  private readonly maxQueue: number;
  private readonly onVerifyProgress: ((bytes: number, total: number) => void) | undefined;

  constructor(options: SessionOptions, services: SessionServices = {}) {
    super();
    this.meta = options.meta;
    this.opts = options;
    this.log = (services.logger ?? silentLogger).child(`swarm ${options.meta.infoHashHex.slice(0, 8)}`);
    this.signal = services.signal;
    this.tracker =
      services.trackerClient ??
      new TrackerClient({
        udpRetransmitBaseMs: options.trackerRetryBaseMs ?? 2000,
        udpMaxRetransmits: 3,
        httpTimeoutMs: 10_000,
      });
    this.ownTracker = services.trackerClient === undefined;
    this.chokerMode = options.choker ?? 'lan';
    const loc = options.locality;
    if (loc !== undefined && loc !== false && !(Number.isInteger(loc) && loc >= 0 && loc <= 32)) {
      throw new RangeError(`locality must be a prefix length 0-32 or false, not ${String(loc)}`);
    }
    // lan: a seed (the server, on the fast link) serves everyone who asks; a
    // downloader uploads to at most 8 at once: each unchoke is one more TCP
    // flow on a client's uplink, and dozens of flows in a small queue mostly
    // drop and retransmit (bench:swarm, N=32: 58.8 s with 64, 48.6 s with 8).
    this.maxUnchoked =
      options.maxUnchoked ?? (this.chokerMode === 'lan' ? (options.mode === 'seed' ? 64 : 8) : 4);
    this.pex = (options.pex ?? true) && !options.meta.private;
    this.maxQueue = options.maxQueue ?? 256;
    this.maxPeers = options.maxPeers ?? 80;
    this.onVerifyProgress = services.onVerifyProgress;
    this.uploadBucket = options.uploadLimit ? new UploadBucket(options.uploadLimit) : undefined;
    const l = options.limits ?? {};
    this.core = {
      meta: options.meta,
      log: this.log,
      peers: this.peers,
      drops: new DropLog(this.log),
      isStopped: () => this.stopped,
      fail: (where, err) => this.fail(where, err),
      guard: (peer, where, fn) => this.guard(peer, where, fn),
    };
    this.pool = new PeerPool(
      this.core,
      this.peers,
      {
        peerId: options.peerId,
        maxPeers: this.maxPeers,
        establishedPerIp: options.establishedPerIp ?? PEER_LIMITS.establishedPerIp,
        uselessPeerMs: options.uselessPeerMs ?? PEER_LIMITS.uselessPeerMs,
        maxWriteBacklogBytes: l.maxWriteBacklogBytes ?? PEER_LIMITS.maxWriteBacklogBytes,
        limits: l,
        tally: services.tally,
        localityPrefix: options.locality,
      },
      {
        running: () => this.run !== undefined && !this.stopped,
        seeding: () => this.run?.picker.complete ?? false,
        attached: (peer) => this.attached(peer),
      },
    );
    this.pexExchange = this.pex
      ? new PexExchange(
          this.core,
          l.maxPexAddedPerMessage ?? PEER_LIMITS.maxPexAddedPerMessage,
          (ip, port, src) => this.pool.add(ip, port, src),
        )
      : undefined;
  }

  get infoHash(): Buffer {
    return this.meta.infoHash;
  }

  get complete(): boolean {
    return this.run?.picker.complete ?? false;
  }

  /** Opens storage, checks existing data, starts announcing and connecting. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    const { meta, opts } = this;
    const store = await PieceStore.open(meta, opts.dir, { mode: opts.mode });
    let have: Bitfield;
    try {
      if (opts.verify === false && opts.mode === 'seed') {
        have = Bitfield.full(meta.pieceCount);
      } else {
        have = await store.verify({
          ...(this.signal ? { signal: this.signal } : {}),
          onProgress: (b) => this.onVerifyProgress?.(b, meta.length),
        });
      }
      if (opts.mode === 'seed' && !have.hasAll()) {
        const bad = meta.pieceCount - have.count();
        throw new BootTorrentError(
          'BT_ERR_STORAGE',
          `${store.root}: ${bad} of ${meta.pieceCount} pieces do not match the torrent; this is not the data it was made from`,
        );
      }
      if (this.signal?.aborted) throw abortError(this.signal);
      // stop() while the data was being checked: nothing may start after it.
      if (this.stopped)
        throw new BootTorrentError('BT_ERR_ABORTED', 'torrent session stopped while starting');
    } catch (err) {
      // Nothing else holds the storage yet: close it here.
      await store.close();
      throw err;
    }
    const run = this.assemble(store, have);
    this.run = run;
    const { picker, announcer, downloader, uploader } = run;
    this.log.info(picker.complete ? 'seeding' : 'downloading', {
      have: picker.piecesHave,
      pieces: meta.pieceCount,
    });
    for (const p of opts.peers ?? []) this.addPeerAddress(p, { kind: 'user' });
    // Containment (issue #14): a throw in a timer would end the process;
    // here it ends this torrent's session only, logged.
    const every = (ms: number, what: string, fn: () => void) => {
      const t = setInterval(() => {
        try {
          fn();
        } catch (err) {
          this.fail(what, err);
        }
      }, ms);
      this.timers.push(t);
    };
    every(TICK_MS, 'tick', () => this.tick());
    // The upload bucket is refilled ten times a second (see UploadBucket.refill).
    const bucket = this.uploadBucket;
    if (bucket) every(TICK_MS / 10, 'upload limit', () => bucket.refill());
    every(CHOKE_INTERVAL_MS, 'rechoke', () => uploader.rechoke(true));
    if (!picker.complete) every(HAVE_BATCH_MS, 'haves', () => downloader.flushHaves());
    const pex = this.pexExchange;
    if (pex) every(opts.pexIntervalMs ?? PEX_INTERVAL_MS, 'pex', () => pex.send());
    this.signal?.addEventListener('abort', this.onAbort, { once: true });
    announcer.announceSoon('started');
    await announcer.startLsd(meta.private);
    this.pool.connectMore();
    for (const w of run.webSeeds) w.tick();
  }

  /**
   * How many peers a download could use: every other member of the swarm
   * its tracker counts, up to maxPeers (half of it when the tracker gave no
   * counts).
   */
  private peersWanted(swarm: number | undefined): number {
    return swarm === undefined ? this.maxPeers / 2 : Math.min(this.maxPeers, swarm - 1);
  }

  /** The parts that work on the open storage: picker, announcer, downloader, uploader. */
  private assemble(store: PieceStore, have: Bitfield): Running {
    const { meta, opts } = this;
    const picker = new PiecePicker(
      {
        pieceCount: meta.pieceCount,
        pieceLength: meta.pieceLength,
        totalLength: meta.length,
        ...(opts.priority ? { priority: opts.priority } : {}),
      },
      have,
    );
    const announcer: Announcer = new Announcer(
      {
        infoHash: meta.infoHash,
        infoHashHex: meta.infoHashHex,
        peerId: opts.peerId,
        port: opts.listenPort,
        trackers: opts.trackers ? [...opts.trackers] : meta.announce.flat(),
        lsdInterface: opts.lsdInterface,
        lsdIntervalMs: opts.lsdIntervalMs,
        key: randomBytes(4).readUInt32BE(0),
        startedComplete: picker.complete,
        eagerMs: ANNOUNCE_EAGER_MS,
      },
      {
        logger: this.log,
        tracker: this.tracker,
        signal: this.signal,
        progress: () => this.stats(),
        onPeer: (ip, port, source) => this.pool.add(ip, port, source),
        onWarning: (message) => this.emit('warning', message),
        stopped: () => this.stopped,
        wantsPeers: (): boolean =>
          !picker.complete && this.core.peers.size < this.peersWanted(announcer.swarmSize),
      },
    );
    const assembler = new PieceAssembler({
      pieceLength: meta.pieceLength,
      pieceSize: (i) => picker.pieceSize(i),
      check: (i, data) => pieceMatches(meta, i, data),
    });
    const downloader = new Downloader(
      this.core,
      { picker, store, assembler },
      {
        minQueue: opts.minQueue ?? 4,
        maxQueue: this.maxQueue,
        maxPieceSetMessages: opts.limits?.maxPieceSetMessages ?? PEER_LIMITS.maxPieceSetMessages,
      },
      {
        piece: (index) => this.emit('piece', index),
        pieceFailed: (index, peers) => this.emit('piece-failed', { index, peers }),
        writeFailed: (index, err) => {
          this.emit('warning', `cannot write piece ${index}: ${err.message}`);
          this.log.error('cannot write piece', { piece: index, error: err.message });
        },
        ban: (peer, reason) => this.ban(peer, reason),
        webFailed: (pid, index) => webSeeds.find((w) => w.pid === pid)?.hashFailed(index),
        complete: () => {
          this.emit('complete');
          announcer.announceSoon('completed');
        },
      },
    );
    const webSeeds: WebSeed[] = [];
    if (!picker.complete) {
      const urls = [...new Set(opts.webSeeds ?? meta.urlList)];
      if (urls.length > MAX_WEB_SEEDS)
        this.log.warn('torrent names more web seeds than are used', {
          used: MAX_WEB_SEEDS,
          named: urls.length,
        });
      for (const url of urls.slice(0, MAX_WEB_SEEDS)) {
        try {
          webSeeds.push(
            new WebSeed(
              {
                url,
                meta,
                ...(opts.webSeedMinPeers !== undefined ? { minPeers: opts.webSeedMinPeers } : {}),
                ...(opts.webSeedRetryMs !== undefined ? { retryMs: opts.webSeedRetryMs } : {}),
              },
              { downloader, logger: this.log },
            ),
          );
        } catch (err) {
          this.log.warn('web seed not used', { url: url.slice(0, 200), error: errorText(err) });
        }
      }
    }
    const policy = new SeedPolicy({
      pieceCount: meta.pieceCount,
      pieceSize: (i) => picker.pieceSize(i),
      spread: picker.complete && opts.mode === 'seed' && (opts.seedPolicy ?? 'spread') === 'spread',
    });
    const uploader = new Uploader(
      this.core,
      { picker, store, policy },
      { chokerMode: this.chokerMode, maxUnchoked: this.maxUnchoked, bucket: this.uploadBucket },
    );
    return { store, picker, announcer, downloader, uploader, webSeeds };
  }

  private readonly onAbort = () => {
    this.stop().catch((err: unknown) => this.log.error('stopping failed', { error: errorText(err) }));
  };

  /**
   * A fault in the session itself (a timer, a write, a continuation): it is
   * logged and ends this torrent's session, never the process (issue #14).
   * whenComplete() rejects with it.
   */
  private fail(where: string, err: unknown): void {
    if (this.stopped) return;
    const error = err instanceof Error ? err : new Error(String(err));
    this.failure = new BootTorrentError(
      'BT_ERR_SWARM',
      `torrent session failed in ${where}: ${error.message}`,
      {
        cause: error,
      },
    );
    this.log.error('torrent session failed; stopping it', { in: where, error: error.message });
    this.emit('warning', this.failure.message);
    this.emit('failed', this.failure);
    this.stop().catch((e: unknown) => this.log.error('stopping failed', { error: errorText(e) }));
  }

  /**
   * Runs one peer's part of a handler or timer. A throw there is that
   * peer's fault or ours about it: logged with its address, and that one
   * connection is closed (issue #14 containment).
   */
  private guard(peer: Peer, where: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.log.warn('error handling peer; closing its connection', {
        peer: peer.address,
        in: where,
        error: errorText(err),
      });
      peer.conn.destroy();
    }
  }

  /** A peer address from anywhere (tracker, LSD, PEX, the user). */
  addPeerAddress(address: string, source: CandidateSource = { kind: 'user' }): void {
    this.pool.addAddress(address, source);
  }

  /** Candidates held, for tests and status. */
  get candidateCount(): number {
    return this.pool.dialer.size;
  }

  /** Dials in progress, for tests and status. */
  get dialingCount(): number {
    return this.pool.dialer.dialing;
  }

  /** Dials started since the session began, for tests and status. */
  get dialsStarted(): number {
    return this.pool.dialer.started;
  }

  /** Peer input dropped over a limit (see PEER_LIMITS), for tests and status. */
  get droppedInput(): number {
    return this.core.drops.total;
  }

  /**
   * Speaks the peer wire over any duplex stream (an in-memory pair in tests,
   * STYLE.md lesson 6). `label` stands in for the peer's address.
   */
  connectStream(stream: Duplex, label: string, initiator: boolean): PeerConnection {
    return this.pool.connectStream(stream, label, initiator);
  }

  /**
   * Takes an incoming connection whose handshake named this torrent (the
   * listener checked the infohash). Returns false if refused.
   */
  acceptIncoming(conn: PeerConnection, ip: string, remotePort: number): boolean {
    return this.pool.acceptIncoming(conn, ip, remotePort);
  }

  /** A peer the pool took (handshake done, not banned, not a duplicate): wires up what it says. */
  private attached(peer: Peer): void {
    const { conn, ip } = peer;
    const { downloader, uploader } = this.run!;
    this.emit('peer', { address: peer.address, event: 'connect' });
    this.log.debug('peer connected', { peer: peer.address, client: clientName(conn) });

    conn.on('error', (err) => this.log.debug('peer error', { peer: peer.address, error: err.message }));
    // Every handler below runs guarded: its throw closes this peer only.
    const on = <E extends keyof PeerConnectionEvents>(
      event: E,
      fn: (...args: PeerConnectionEvents[E]) => void,
    ): void => {
      const guarded = (...args: PeerConnectionEvents[E]) => this.guard(peer, event, () => fn(...args));
      (conn.on as (e: E, l: (...args: PeerConnectionEvents[E]) => void) => PeerConnection)(event, guarded);
    };
    // On close the connection is gone already; a throw there is the session's.
    conn.on('close', () => {
      try {
        this.detach(peer);
      } catch (err) {
        this.fail('peer close', err);
      }
    });
    on('extended-handshake', (h) => {
      if (typeof h.p === 'number' && h.p > 0 && h.p <= 65535) {
        peer.listenPort = h.p;
        peer.address = `${ip}:${h.p}`;
      }
      if (typeof h.reqq === 'number' && h.reqq > 0) peer.remoteQueue = Math.min(h.reqq, this.maxQueue);
    });
    on('bitfield', () => downloader.onPieceSet(peer));
    on('have-all', () => downloader.onPieceSet(peer));
    on('have-none', () => downloader.onPieceSet(peer));
    on('have', ({ index }) => downloader.onHave(peer, index));
    on('choke', () => downloader.onChoke(peer));
    on('unchoke', () => downloader.fill(peer));
    on('interested', () => uploader.rechokeSoon());
    on('not-interested', () => uploader.rechokeSoon());
    on('request', (r) => uploader.onRequest(peer, r));
    on('cancel', (r) => peer.uploads.cancel(r));
    on('reject', (r) => downloader.onReject(peer, r));
    on('suggest', (m) => downloader.onSuggest(peer, m.index));
    on('piece', (m) => downloader.onBlock(peer, m.index, m.begin, m.block));
    on('pex', (msg) => this.pexExchange?.received(peer, msg));
    on('extended', ({ id, payload }) => {
      if (id === UT_METADATA_ID) answerMetadataRequest(conn, this.meta.infoBuffer, payload);
    });

    conn.announcePieces(this.ourBitfield());
    if (conn.extended) {
      conn.sendExtendedHandshake({
        m: new Map([...(this.pex ? [['ut_pex', 1] as const] : []), ['ut_metadata', UT_METADATA_ID] as const]),
        p: this.opts.listenPort,
        v: 'BootTorrent 0.1',
        reqq: MAX_UPLOAD_QUEUE,
        metadataSize: this.meta.infoBuffer.length,
      });
    }
  }

  private ourBitfield(): Bitfield {
    const picker = this.run!.picker;
    if (picker.complete) return Bitfield.full(this.meta.pieceCount);
    const bf = new Bitfield(this.meta.pieceCount);
    for (let i = 0; i < this.meta.pieceCount; i++) if (picker.hasPiece(i)) bf.set(i);
    return bf;
  }

  /** Bans a peer that sent corrupt data (see PeerPool.ban) and closes it. */
  private ban(peer: Peer, reason: string): void {
    if (!this.pool.ban(peer)) return;
    this.log.warn('banned peer', { peer: peer.address, reason });
    this.emit('banned', { address: peer.address, reason });
    peer.conn.destroy();
  }

  private detach(peer: Peer): void {
    if (!this.pool.remove(peer)) return;
    const { downloader } = this.run!;
    downloader.peerGone(peer);
    peer.uploads.clear();
    this.emit('peer', { address: peer.address, event: 'close' });
    this.log.debug('peer closed', { peer: peer.address });
    downloader.fillAll();
  }

  private tick(): void {
    if (this.stopped) return;
    const { downloader, announcer, webSeeds } = this.run!;
    const now = Date.now();
    for (const p of [...this.peers.values()]) this.guard(p, 'tick', () => downloader.tick(p, now));
    for (const w of webSeeds) w.tick(now);
    announcer.tick();
    this.pool.makeRoomForCandidates();
    this.pool.connectMore();
  }

  stats(): SessionStats {
    const run = this.run;
    const picker = run?.picker;
    const have = picker?.piecesHave ?? 0;
    let left = 0;
    if (picker) {
      for (let i = 0; i < this.meta.pieceCount; i++) if (!picker.hasPiece(i)) left += picker.pieceSize(i);
    } else {
      left = this.meta.length;
    }
    const uploaded = run?.uploader.up.total ?? 0;
    const downloaded = run?.downloader.down.total ?? 0;
    return {
      infoHash: this.meta.infoHashHex,
      name: this.meta.name,
      length: this.meta.length,
      pieceCount: this.meta.pieceCount,
      piecesHave: have,
      downloaded,
      uploaded,
      downloadRate: run?.downloader.down.rate() ?? 0,
      uploadRate: run?.uploader.up.rate() ?? 0,
      left,
      complete: picker?.complete ?? false,
      ratio: uploaded / this.meta.length,
      peers: [...this.peers.values()].map((p) => ({
        address: p.address,
        client: clientName(p.conn),
        downloaded: p.down.total,
        uploaded: p.up.total,
        downloadRate: p.down.rate(),
        uploadRate: p.up.rate(),
        pieces: p.seed ? this.meta.pieceCount : p.has.count(),
        amChoking: p.conn.amChoking,
        peerChoking: p.conn.peerChoking,
        interested: p.conn.peerInterested,
        outstanding: p.outstanding.size,
        local: p.local,
      })),
      wasted: run?.downloader.wasted ?? 0,
      hashFailures: run?.downloader.hashFailures ?? 0,
      webSeeds: run?.webSeeds.map((w) => w.stats()) ?? [],
    };
  }

  /** Where the data lives on disk. */
  get paths(): string[] {
    return this.run?.store.paths ?? [];
  }

  /** Resolves when every piece is verified and stored (at once for a seed). */
  whenComplete(): Promise<void> {
    if (this.complete) return Promise.resolve();
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        this.off('failed', onFailed);
        reject(this.signal ? abortError(this.signal) : new Error('stopped'));
      };
      const onFailed = (err: BootTorrentError) => {
        this.signal?.removeEventListener('abort', onAbort);
        reject(err);
      };
      this.signal?.addEventListener('abort', onAbort, { once: true });
      this.once('failed', onFailed);
      this.once('complete', () => {
        this.signal?.removeEventListener('abort', onAbort);
        this.off('failed', onFailed);
        resolve();
      });
    });
  }

  /** Announces `stopped`, closes every connection and the storage. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.run?.announcer.stopLsd();
    this.signal?.removeEventListener('abort', this.onAbort);
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    for (const w of this.run?.webSeeds ?? []) w.stop();
    this.uploadBucket?.release();
    for (const p of [...this.peers.values()]) p.conn.destroy();
    if (this.run) await this.run.announcer.announce('stopped').catch(() => undefined);
    if (this.ownTracker) this.tracker.close();
    await this.run?.store.close();
  }
}
