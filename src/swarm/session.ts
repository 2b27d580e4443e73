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
import { connect } from 'node:net';
import type { Duplex } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { BootTorrentError, abortError, errorText } from '../errors.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { DropLog } from '../util/drop-log.js';
import { PEER_LIMITS } from '../limits.js';
import type { Metainfo } from '../torrent/metainfo.js';
import { Bitfield } from '../wire/bitfield.js';
import { PeerConnection, type ByteTally, type PeerConnectionEvents } from '../wire/connection.js';
import type { PexMessage } from '../wire/codec.js';
import {
  METADATA_PIECE_SIZE,
  decodeMetadataMessage,
  encodeMetadataMessage,
  type MetadataMessage,
} from '../wire/metadata.js';
import { TrackerClient } from '../tracker/client.js';
import { BLOCK_SIZE, PiecePicker, type BlockRequest } from './picker.js';
import { chooseUnchoked, pickOptimistic, type ChokerMode } from './choker.js';
import { PieceStore, pieceMatches, type StorageMode } from './storage.js';
import { PieceAssembler } from './assembler.js';
import { Announcer } from './announcer.js';
import { RateMeter } from './rate.js';
import { PeerDialer, type CandidateSource, type DialCandidate } from './dialer.js';
import { MAX_UPLOAD_QUEUE, SeedPolicy, UploadBucket, UploadQueue } from './seed-policy.js';

export interface SessionOptions {
  meta: Metainfo;
  /** Folder that holds (or will hold) the torrent's data. */
  dir: string;
  mode: StorageMode;
  peerId: Buffer;
  /** TCP port we accept peers on (announced to trackers and in PEX/extended handshakes). */
  listenPort: number;
  choker?: ChokerMode;
  /** Most connections for this torrent (default 80). */
  maxPeers?: number;
  /** Connections one IP may hold in this torrent; more incoming ones are refused (default PEER_LIMITS.establishedPerIp). */
  establishedPerIp?: number;
  /** Slots full: an incoming peer replaces the one that moved no block for longest, if for this long (ms, default PEER_LIMITS.uselessPeerMs). */
  uselessPeerMs?: number;
  /** Most peers unchoked at once (default in lan mode: 64 for a seed, 8 while downloading; 4 in standard). */
  maxUnchoked?: number;
  /** Trackers to use instead of the torrent's own. */
  trackers?: readonly string[];
  /** Peers to connect to at start ("ip:port"), e.g. the server's seeder. */
  peers?: readonly string[];
  /** Exchange peers with peers (BEP 11); never for private torrents (default true). */
  pex?: boolean;
  /** Check data already on disk at start (default true; false trusts it: seed mode only). */
  verify?: boolean;
  /** Per-piece priority (higher first). */
  priority?: (index: number) => number;
  /** Outstanding requests per peer: lower and upper bounds (default 4, 256: 4 MiB in flight covers a 1 Gbit/s link with 30 ms of RTT, and every partly received piece holds a piece-sized buffer; between them, half a second of data at the peer's rate). */
  minQueue?: number;
  maxQueue?: number;
  /** Upload cap in bytes/s across all peers of this torrent (default none). */
  uploadLimit?: number;
  /** Tracker client overrides, e.g. quick UDP retransmission in tests. */
  trackerRetryBaseMs?: number;
  /**
   * IPv4 address of the LAN interface to run Local Service Discovery on
   * (BEP 14), so peers find each other with no tracker. Never for private
   * torrents. Undefined: no LSD.
   */
  lsdInterface?: string;
  /** LSD announce interval in ms (default 5 minutes; BEP 14 allows one a minute at most). */
  lsdIntervalMs?: number;
  /**
   * How a seed answers requests while some pieces have never left it:
   * `spread` rejects (BEP 6) a request for a piece it already sent to
   * another peer, so its upload goes to pieces the swarm lacks and peers
   * fetch the others from each other (the aim of BEP 16 super-seeding,
   * without hiding pieces); `plain` serves every request. Default spread.
   */
  seedPolicy?: 'spread' | 'plain';
  /** How often peers get PEX messages (ms, default 60 s; BEP 11 allows one a minute). */
  pexIntervalMs?: number;
  /** Overrides of PEER_LIMITS (src/limits.ts), e.g. small values in tests. */
  limits?: Partial<Record<keyof typeof PEER_LIMITS, number>>;
}

export interface SessionServices {
  logger?: Logger;
  signal?: AbortSignal;
  trackerClient?: TrackerClient;
  /** Progress of the start-up check of existing data. */
  onVerifyProgress?: (bytes: number, total: number) => void;
  /** Adds the bytes of every connection this session dials (the client's wire total). */
  tally?: ByteTally;
}

export interface PeerStats {
  readonly address: string;
  readonly client: string;
  readonly downloaded: number;
  readonly uploaded: number;
  readonly downloadRate: number;
  readonly uploadRate: number;
  readonly pieces: number;
  readonly amChoking: boolean;
  readonly peerChoking: boolean;
  readonly interested: boolean;
  readonly outstanding: number;
}

export interface SessionStats {
  readonly infoHash: string;
  readonly name: string;
  readonly length: number;
  readonly pieceCount: number;
  readonly piecesHave: number;
  readonly downloaded: number;
  readonly uploaded: number;
  readonly downloadRate: number;
  readonly uploadRate: number;
  /** Bytes still missing. */
  readonly left: number;
  readonly complete: boolean;
  readonly ratio: number;
  readonly peers: readonly PeerStats[];
  readonly wasted: number;
  readonly hashFailures: number;
}

export interface SessionEvents {
  piece: [number];
  complete: [];
  'piece-failed': [{ index: number; peers: string[] }];
  banned: [{ address: string; reason: string }];
  peer: [{ address: string; event: 'connect' | 'close' }];
  warning: [string];
  /** The session hit a fault of its own and stopped (logged; the process goes on). */
  failed: [BootTorrentError];
}

interface Peer {
  readonly conn: PeerConnection;
  /** Stable id for the picker and choker (the address can change on the extended handshake). */
  readonly pid: string;
  /** ip:port we know the peer by (its listen port when known). */
  address: string;
  readonly ip: string;
  listenPort: number | undefined;
  readonly has: Bitfield;
  seed: boolean;
  /** Our requests to it, by "index:begin". */
  readonly outstanding: Map<string, { req: BlockRequest; at: number }>;
  /** Its requests to us, and the seed policy's notes on it. */
  readonly uploads: UploadQueue;
  serving: boolean;
  readonly down: RateMeter;
  readonly up: RateMeter;
  /** Bitfield, have-all and have-none messages taken from it (see maxPieceSetMessages). */
  pieceSets: number;
  /** Their reqq (BEP 10), capping our pipeline to them. */
  remoteQueue: number;
  /** Pieces this peer refused us (BEP 6 reject), until a time: ask others meanwhile. */
  readonly refused: Map<number, number>;
  /** Pieces this peer suggested (BEP 6 Suggest Piece) that we have not started: asked of it first. */
  readonly suggested: Set<number>;
  /** Random, drawn once: the choker's tie-break (see ChokerPeer.tiebreak). */
  readonly tiebreak: number;
  /** Pieces we verified that this peer has not been told of yet (sent in batches). */
  pendingHaves: number[];
  /** Addresses already sent to this peer in PEX. */
  readonly pexSent: Set<string>;
  connectedAt: number;
  /** Last time a block moved either way (connectedAt until then): see replaceUseless. */
  lastUseful: number;
}

const REQUEST_TIMEOUT_MS = 30_000;
const CHOKE_INTERVAL_MS = 10_000;
const TICK_MS = 1000;
const PEX_INTERVAL_MS = 60_000;
const CONNECT_TIMEOUT_MS = 5000;
/** The id we ask peers to send ut_metadata (BEP 9) messages under. */
const UT_METADATA_ID = 2;
/**
 * How long a piece a peer rejected is asked of others instead. Short: a
 * spreading seed rejects only until every piece has left it once (a few
 * seconds on a LAN); after that a mark only delays asking it again.
 */
const REFUSED_MS = 1000;
/** How often verified pieces are announced to peers (`have`, batched per peer). */
const HAVE_BATCH_MS = 250;
/** Seconds of data at a peer's measured rate we keep requested from it. */
const QUEUE_SECONDS = 0.5;
/** Requests in flight to a peer below which it gets endgame duplicates. */
const ENDGAME_QUEUE = 2;
/** Suggestions kept per peer; more are ignored (a peer cannot grow our memory). */
const MAX_SUGGESTED = 64;
/** Read buffer of each connection we open. */
const READ_BUFFER_BYTES = 128 * 1024;

const key = (index: number, begin: number) => `${index}:${begin}`;
/**
 * A peer id as bans know it: with the IP it came from. Peer ids are no
 * secret (every handshake shows one), so a bare-id ban let anyone get an
 * honest peer banned by sending corrupt data under its id.
 */
const idKey = (ip: string, peerId: Buffer) => `${ip}/${peerId.toString('hex')}`;

export class TorrentSession extends EventEmitter<SessionEvents> {
  readonly meta: Metainfo;
  private readonly opts: SessionOptions;
  private readonly log: Logger;
  /** Incoming peers refused by the per-IP and slot limits, logged once per IP per minute. */
  private readonly admissionDrops: DropLog;
  private readonly signal: AbortSignal | undefined;
  private store: PieceStore | undefined;
  private picker: PiecePicker | undefined;
  private readonly peers = new Map<PeerConnection, Peer>();
  /** Candidates, backoff, bans and dial limits (also holds banned peer ids). */
  private readonly dialer: PeerDialer;
  /** Dropped peer input (PEX beyond the limits), logged once per peer per minute. */
  private readonly drops: DropLog;
  private readonly limits: {
    maxPexAddedPerMessage: number;
    maxWriteBacklogBytes: number;
    maxPieceSetMessages: number;
  };
  /** Why the session ended itself (a fault in a timer or continuation), if it did. */
  private failure: BootTorrentError | undefined;
  /** Pieces being received: buffers, hash check, strikes. */
  private readonly assembler: PieceAssembler;
  private readonly tracker: TrackerClient;
  private readonly ownTracker: boolean;
  private readonly down = new RateMeter();
  private readonly up = new RateMeter();
  private wasted = 0;
  private readonly tally: ByteTally | undefined;
  private timers: NodeJS.Timeout[] = [];
  private optimistic: string | undefined;
  private chokeRounds = 0;
  private rechokeQueued = false;
  private started = false;
  private stopped = false;
  /** Trackers and LSD; set at start. */
  private announcer: Announcer | undefined;
  private readonly verifying = new Set<number>();
  private peerSeq = 0;
  /** Decides peers' requests (the `spread` policy); set at start. */
  private seedPolicy: SeedPolicy | undefined;
  /** The uploadLimit, if any. */
  private readonly uploadBucket: UploadBucket | undefined;
  private readonly chokerMode: ChokerMode;
  private readonly maxPeers: number;
  private readonly maxUnchoked: number;
  private readonly pex: boolean;
  private readonly minQueue: number;
  private readonly maxQueue: number;

  constructor(options: SessionOptions, services: SessionServices = {}) {
    super();
    this.meta = options.meta;
    this.opts = options;
    this.tally = services.tally;
    this.log = (services.logger ?? silentLogger).child(`swarm ${options.meta.infoHashHex.slice(0, 8)}`);
    this.admissionDrops = new DropLog(this.log);
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
    this.maxPeers = options.maxPeers ?? 80;
    // lan: a seed (the server, on the fast link) serves everyone who asks; a
    // downloader uploads to at most 8 at once: each unchoke is one more TCP
    // flow on a client's uplink, and dozens of flows in a small queue mostly
    // drop and retransmit (bench:swarm, N=32: 58.8 s with 64, 48.6 s with 8).
    this.maxUnchoked =
      options.maxUnchoked ?? (this.chokerMode === 'lan' ? (options.mode === 'seed' ? 64 : 8) : 4);
    this.pex = (options.pex ?? true) && !options.meta.private;
    this.minQueue = options.minQueue ?? 4;
    this.maxQueue = options.maxQueue ?? 256;
    this.onVerifyProgress = services.onVerifyProgress;
    this.uploadBucket = options.uploadLimit ? new UploadBucket(options.uploadLimit) : undefined;
    const meta = options.meta;
    this.assembler = new PieceAssembler({
      pieceLength: meta.pieceLength,
      // Blocks arrive only after start, when the picker exists.
      pieceSize: (i) => this.picker!.pieceSize(i),
      check: (i, data) => pieceMatches(meta, i, data),
    });
    const l = options.limits ?? {};
    this.dialer = new PeerDialer({
      ...(l.maxCandidates !== undefined ? { maxCandidates: l.maxCandidates } : {}),
      ...(l.maxCandidatesPerPeer !== undefined ? { maxCandidatesPerPeer: l.maxCandidatesPerPeer } : {}),
      ...(l.maxConcurrentDials !== undefined ? { maxConcurrentDials: l.maxConcurrentDials } : {}),
      ...(l.maxDialsPerSecond !== undefined ? { maxDialsPerSecond: l.maxDialsPerSecond } : {}),
      ...(l.maxPexDialFailures !== undefined ? { maxPexDialFailures: l.maxPexDialFailures } : {}),
    });
    this.limits = {
      maxPexAddedPerMessage: l.maxPexAddedPerMessage ?? PEER_LIMITS.maxPexAddedPerMessage,
      maxWriteBacklogBytes: l.maxWriteBacklogBytes ?? PEER_LIMITS.maxWriteBacklogBytes,
      maxPieceSetMessages: l.maxPieceSetMessages ?? PEER_LIMITS.maxPieceSetMessages,
    };
    this.drops = new DropLog(this.log);
  }

  private readonly onVerifyProgress: ((bytes: number, total: number) => void) | undefined;

  get infoHash(): Buffer {
    return this.meta.infoHash;
  }

  get complete(): boolean {
    return this.picker?.complete ?? false;
  }

  /** Opens storage, checks existing data, starts announcing and connecting. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    const { meta } = this;
    this.store = await PieceStore.open(meta, this.opts.dir, { mode: this.opts.mode });
    let have: Bitfield;
    if (this.opts.verify === false && this.opts.mode === 'seed') {
      have = Bitfield.full(meta.pieceCount);
    } else {
      have = await this.store.verify({
        ...(this.signal ? { signal: this.signal } : {}),
        onProgress: (b) => this.onVerifyProgress?.(b, meta.length),
      });
    }
    if (this.opts.mode === 'seed' && !have.hasAll()) {
      const bad = meta.pieceCount - have.count();
      await this.store.close();
      throw new BootTorrentError(
        'BT_ERR_STORAGE',
        `${this.store.root}: ${bad} of ${meta.pieceCount} pieces do not match the torrent; this is not the data it was made from`,
      );
    }
    if (this.signal?.aborted) throw abortError(this.signal);
    this.picker = new PiecePicker(
      {
        pieceCount: meta.pieceCount,
        pieceLength: meta.pieceLength,
        totalLength: meta.length,
        ...(this.opts.priority ? { priority: this.opts.priority } : {}),
      },
      have,
    );
    this.announcer = new Announcer(
      {
        infoHash: meta.infoHash,
        infoHashHex: meta.infoHashHex,
        peerId: this.opts.peerId,
        port: this.opts.listenPort,
        trackers: this.opts.trackers ? [...this.opts.trackers] : meta.announce.flat(),
        lsdInterface: this.opts.lsdInterface,
        lsdIntervalMs: this.opts.lsdIntervalMs,
        key: randomBytes(4).readUInt32BE(0),
        startedComplete: this.picker.complete,
      },
      {
        logger: this.log,
        tracker: this.tracker,
        signal: this.signal,
        progress: () => this.stats(),
        onPeer: (ip, port, source) => this.addCandidate(ip, port, source),
        onWarning: (message) => this.emit('warning', message),
        stopped: () => this.stopped,
      },
    );
    const picker = this.picker;
    this.seedPolicy = new SeedPolicy({
      pieceCount: meta.pieceCount,
      pieceSize: (i) => picker.pieceSize(i),
      spread: picker.complete && this.opts.mode === 'seed' && (this.opts.seedPolicy ?? 'spread') === 'spread',
    });
    this.log.info(this.picker.complete ? 'seeding' : 'downloading', {
      have: this.picker.piecesHave,
      pieces: meta.pieceCount,
    });
    for (const p of this.opts.peers ?? []) this.addPeerAddress(p, { kind: 'user' });
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
    every(CHOKE_INTERVAL_MS, 'rechoke', () => this.rechoke(true));
    if (!this.picker.complete) every(HAVE_BATCH_MS, 'haves', () => this.flushHaves());
    if (this.pex) every(this.opts.pexIntervalMs ?? PEX_INTERVAL_MS, 'pex', () => this.sendPex());
    this.signal?.addEventListener('abort', this.onAbort, { once: true });
    this.announcer.announceSoon('started');
    await this.announcer.startLsd(meta.private);
    this.connectMore();
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
    const m = /^(.+):(\d+)$/.exec(address);
    if (!m) return;
    this.addCandidate(m[1]!.replace(/^\[|\]$/g, ''), Number(m[2]), source);
  }

  /** Candidates held, for tests and status. */
  get candidateCount(): number {
    return this.dialer.size;
  }

  /** Dials in progress, for tests and status. */
  get dialingCount(): number {
    return this.dialer.dialing;
  }

  /** Dials started since the session began, for tests and status. */
  get dialsStarted(): number {
    return this.dialer.started;
  }

  /** Peer input dropped over a limit (see PEER_LIMITS), for tests and status. */
  get droppedInput(): number {
    return this.drops.total;
  }

  private addCandidate(ip: string, port: number, source: CandidateSource): void {
    // Bounded: at most maxPeers + 10 peers, and a PEX message adds at most 50.
    const address = `${ip}:${port}`;
    for (const p of this.peers.values()) if (p.address === address) return;
    const refused = this.dialer.add(ip, port, source);
    if (refused === 'full' || refused === 'source-full') {
      this.drops.drop(source.kind === 'pex' ? source.from : source.kind, 'peer address ignored', {
        reason: refused === 'full' ? 'candidate table full' : 'too many candidates from this peer',
      });
    }
    if (refused === undefined && this.started && !this.stopped) this.connectSoon();
  }

  private connectQueued = false;

  /**
   * Dials once after the addresses at hand: a PEX message or tracker reply
   * adds many, and a pass over the candidates after each one made a flood
   * of known addresses cost O(candidates) per address.
   */
  private connectSoon(): void {
    if (this.connectQueued) return;
    this.connectQueued = true;
    setImmediate(() => {
      this.connectQueued = false;
      try {
        this.connectMore();
      } catch (err) {
        this.fail('connect', err);
      }
    });
  }

  /** Listen addresses of the connected peers (so they are not dialed twice). */
  private connectedAddresses(): Set<string> {
    const out = new Set<string>();
    for (const p of this.peers.values()) out.add(p.address);
    return out;
  }

  private connectMore(): void {
    if (this.stopped || !this.picker) return;
    // A seed does not dial out: leechers find it through the tracker.
    const seeding = this.picker.complete;
    let connected: Set<string> | undefined;
    const due = this.dialer.next(this.maxPeers - this.peers.size, {
      seeding,
      connected: (a) => (connected ??= this.connectedAddresses()).has(a),
    });
    for (const c of due) {
      try {
        this.dial(c);
      } catch (err) {
        this.dialer.failed(c.address);
        this.log.debug('connect failed', { peer: c.address, error: errorText(err) });
      }
    }
  }

  private dial(c: DialCandidate): void {
    const k = c.address;
    let conn: PeerConnection | undefined;
    // Reads land in one buffer per connection, handed to the connection
    // before the next read (PeerConnection.feed): no garbage per read. Node
    // starts reading only after 'connect', when `conn` exists.
    const readBuf = Buffer.allocUnsafe(READ_BUFFER_BYTES);
    const socket = connect({
      host: c.ip,
      port: c.port,
      onread: {
        buffer: readBuf,
        callback: (n) => {
          conn?.feed(readBuf.subarray(0, n));
          return true;
        },
      },
    });
    socket.setNoDelay(true);
    const timer = setTimeout(() => socket.destroy(new Error('connect timeout')), CONNECT_TIMEOUT_MS);
    const failed = (err: Error) => {
      clearTimeout(timer);
      this.dialer.failed(k);
      this.log.debug('connect failed', { peer: k, error: err.message });
    };
    socket.once('error', failed);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.off('error', failed);
      this.dialer.dialEnded(k);
      if (this.stopped) {
        socket.destroy();
        return;
      }
      try {
        const pc = new PeerConnection(socket, {
          peerId: this.opts.peerId,
          initiator: true,
          infoHash: this.meta.infoHash,
          pieceCount: this.meta.pieceCount,
          maxWriteBacklog: this.limits.maxWriteBacklogBytes,
          ...(this.tally ? { tally: this.tally } : {}),
        });
        conn = pc;
        pc.on('error', (err) => this.log.debug('peer error', { peer: k, error: err.message }));
        pc.once('handshake', () => this.attach(pc, c.ip, c.port, c.port));
        pc.once('close', () => {
          if (!this.peers.has(pc)) this.dialer.failed(k);
        });
      } catch (err) {
        this.log.warn('error setting up a peer connection; closing it', { peer: k, error: errorText(err) });
        socket.destroy();
      }
    });
  }

  /**
   * Speaks the peer wire over any duplex stream (an in-memory pair in tests,
   * STYLE.md lesson 6). `label` stands in for the peer's address.
   */
  connectStream(stream: Duplex, label: string, initiator: boolean): PeerConnection {
    const conn = new PeerConnection(stream, {
      peerId: this.opts.peerId,
      initiator,
      infoHash: this.meta.infoHash,
      pieceCount: this.meta.pieceCount,
      maxWriteBacklog: this.limits.maxWriteBacklogBytes,
    });
    conn.on('error', (err) => this.log.debug('peer error', { peer: label, error: err.message }));
    conn.once('handshake', () => this.attach(conn, label, undefined, 0));
    return conn;
  }

  /**
   * Takes an incoming connection whose handshake named this torrent (the
   * listener checked the infohash). Returns false if refused.
   */
  acceptIncoming(conn: PeerConnection, ip: string, remotePort: number): boolean {
    if (this.stopped || !this.picker) {
      conn.destroy();
      return false;
    }
    const perIp = this.opts.establishedPerIp ?? PEER_LIMITS.establishedPerIp;
    let fromIp = 0;
    for (const p of this.peers.values()) if (p.ip === ip) fromIp++;
    if (fromIp >= perIp) {
      conn.destroy();
      this.admissionDrops.drop(ip, 'peer refused: too many connections from this address', { limit: perIp });
      return false;
    }
    if (this.peers.size >= this.maxPeers + 10 && !this.replaceUseless()) {
      conn.destroy();
      this.admissionDrops.drop(ip, 'peer refused: every slot of this torrent is in use', {
        limit: this.maxPeers + 10,
      });
      return false;
    }
    conn.setPieceCount(this.meta.pieceCount);
    this.attach(conn, ip, undefined, remotePort);
    return true;
  }

  /**
   * Frees a slot for a newcomer (an incoming peer, or a candidate to dial
   * while downloading) by closing the peer that has moved no block either
   * way for longest, if that is at least uselessPeerMs. Keep-alives
   * and interest are free to fake; a block is not, so only blocks count.
   * A peer that has only just connected keeps its slot for that long too.
   * Returns false if every peer has been useful lately (the newcomer waits).
   */
  private replaceUseless(): boolean {
    const cutoff = Date.now() - (this.opts.uselessPeerMs ?? PEER_LIMITS.uselessPeerMs);
    let victim: Peer | undefined;
    for (const p of this.peers.values()) {
      if (p.lastUseful <= cutoff && (!victim || p.lastUseful < victim.lastUseful)) victim = p;
    }
    if (!victim) return false;
    this.log.debug('peer replaced: no block moved lately and a newcomer wants its slot', {
      peer: victim.address,
      idleMs: Date.now() - victim.lastUseful,
    });
    victim.conn.destroy();
    return true;
  }

  /**
   * Takes a peer whose handshake is done. A throw while wiring it up closes
   * that connection only (it may come from the listener's or the stream's
   * callbacks, where nothing else would catch it).
   */
  private attach(conn: PeerConnection, ip: string, listenPort: number | undefined, remotePort: number): void {
    try {
      this.attachPeer(conn, ip, listenPort, remotePort);
    } catch (err) {
      this.log.warn('error taking a peer; closing its connection', {
        peer: `${ip}:${listenPort ?? remotePort}`,
        error: errorText(err),
      });
      conn.destroy();
    }
  }

  private attachPeer(
    conn: PeerConnection,
    ip: string,
    listenPort: number | undefined,
    remotePort: number,
  ): void {
    const remoteId = conn.remote!.peerId;
    if (this.dialer.isBanned(idKey(ip, remoteId))) {
      conn.destroy();
      return;
    }
    if (remoteId.equals(this.opts.peerId)) {
      // Ourselves, through an address of our own in the peer list.
      conn.destroy();
      return;
    }
    // The same peer reached twice (we dialed it as it dialed us). Only from
    // the same IP: anyone can claim any peer id, and a claim from elsewhere
    // must not keep the real peer out.
    for (const other of this.peers.values()) {
      if (other.ip === ip && other.conn.remote!.peerId.equals(remoteId)) {
        conn.destroy();
        return;
      }
    }
    const picker = this.picker!;
    const peer: Peer = {
      conn,
      pid: String(++this.peerSeq),
      address: `${ip}:${listenPort ?? remotePort}`,
      ip,
      listenPort,
      has: new Bitfield(this.meta.pieceCount),
      seed: false,
      outstanding: new Map(),
      uploads: new UploadQueue(),
      serving: false,
      down: new RateMeter(),
      up: new RateMeter(),
      pieceSets: 0,
      remoteQueue: 250,
      pexSent: new Set(),
      refused: new Map(),
      suggested: new Set(),
      pendingHaves: [],
      tiebreak: Math.random(),
      connectedAt: Date.now(),
      lastUseful: Date.now(),
    };
    if (listenPort !== undefined) this.dialer.remove(`${ip}:${listenPort}`);
    this.peers.set(conn, peer);
    this.emit('peer', { address: peer.address, event: 'connect' });
    this.log.debug('peer connected', { peer: peer.address, client: this.clientName(conn) });

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
    on('bitfield', () => this.onPieceSet(peer));
    on('have-all', () => this.onPieceSet(peer));
    on('have-none', () => this.onPieceSet(peer));
    on('have', ({ index }) => this.onHave(peer, index));
    on('choke', () => {
      // BEP 6: with the Fast extension a choke does not cancel requests; rejects will.
      if (!conn.fast) this.dropOutstanding(peer);
    });
    on('unchoke', () => this.fill(peer));
    on('interested', () => this.rechokeSoon());
    on('not-interested', () => this.rechokeSoon());
    on('request', (r) => this.onRequest(peer, r));
    on('cancel', (r) => peer.uploads.cancel(r));
    on('reject', (r) => {
      // Only a reject of a request still outstanding says anything; others
      // (late after a cancel, or made up) would each add an entry to
      // `refused`, keyed by any uint32 the peer likes.
      if (!peer.outstanding.delete(key(r.index, r.begin))) return;
      // Rejects that follow a choke (BEP 6) say nothing about the piece.
      if (!peer.conn.peerChoking) peer.refused.set(r.index, Date.now() + REFUSED_MS);
      picker.requestDropped(r.index, r.begin, peer.pid);
      this.fill(peer);
    });
    on('suggest', (m) => {
      if (m.index >= this.meta.pieceCount || picker.hasPiece(m.index)) return;
      if (peer.suggested.size >= MAX_SUGGESTED) return;
      peer.suggested.add(m.index);
      this.fill(peer);
    });
    on('piece', (m) => this.onBlock(peer, m.index, m.begin, m.block));
    on('pex', (msg) => this.onPex(peer, msg));
    on('extended', ({ id, payload }) => {
      if (id === UT_METADATA_ID) this.onMetadataMessage(peer, payload);
    });

    const ours = this.ourBitfield();
    conn.announcePieces(ours);
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

  private clientName(conn: PeerConnection): string {
    const id = conn.remote?.peerId;
    if (!id) return '?';
    let s = '';
    for (const b of id.subarray(0, 8)) s += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.';
    return s;
  }

  private ourBitfield(): Bitfield {
    const picker = this.picker!;
    if (picker.complete) return Bitfield.full(this.meta.pieceCount);
    const bf = new Bitfield(this.meta.pieceCount);
    for (let i = 0; i < this.meta.pieceCount; i++) if (picker.hasPiece(i)) bf.set(i);
    return bf;
  }

  /**
   * A bitfield, have-all or have-none. BEP 3 and 6 allow one, as the first
   * message (aria2c sends a second, see PeerConnection.applyPieceSet); a
   * peer that keeps sending them is closed.
   */
  private onPieceSet(peer: Peer): void {
    if (++peer.pieceSets > this.limits.maxPieceSetMessages) {
      this.drops.drop(peer.address, 'peer keeps resending its piece set; closing it', {
        limit: this.limits.maxPieceSetMessages,
      });
      peer.conn.destroy();
      return;
    }
    this.syncPeerPieces(peer);
  }

  /**
   * Takes in what the connection now knows the peer has (a bitfield,
   * have-all or have-none; aria2c re-sends a bitfield late). Pieces only
   * ever get added (see PeerConnection.applyPieceSet), so only the new ones
   * are counted: a peer repeating these messages costs no scan of every
   * piece each time.
   */
  private syncPeerPieces(peer: Peer): void {
    const picker = this.picker!;
    const bits = peer.conn.remoteBitfield;
    if (peer.seed || !bits) return;
    if (bits.hasAll()) {
      picker.peerBitfield(peer.has, -1);
      peer.has.addFrom(bits);
      peer.seed = true;
      picker.peerSeed(1);
      // Two seeds have nothing to say to each other.
      if (picker.complete) {
        peer.conn.destroy();
        return;
      }
      this.updateInterest(peer);
      return;
    }
    const added = peer.has.addFrom(bits);
    let wanted = false;
    for (const i of added) {
      picker.peerHasPiece(i);
      if (!picker.hasPiece(i)) wanted = true;
    }
    if (wanted && !peer.conn.amInterested) peer.conn.interested();
    if (wanted && !peer.conn.peerChoking) this.fill(peer);
  }

  private onHave(peer: Peer, index: number): void {
    if (index >= this.meta.pieceCount || peer.has.get(index)) return;
    peer.has.set(index);
    if (peer.has.hasAll()) {
      this.picker!.peerBitfield(peer.has, -1);
      peer.has.set(index, false);
      peer.has.set(index);
      peer.seed = true;
      this.picker!.peerSeed(1);
    } else {
      this.picker!.peerHasPiece(index);
    }
    if (!peer.conn.amInterested && !this.picker!.hasPiece(index)) {
      peer.conn.interested();
    }
    if (peer.conn.amInterested && !peer.conn.peerChoking) this.fill(peer);
  }

  private updateInterest(peer: Peer): void {
    const want = this.picker!.isInteresting({ id: peer.pid, has: (i) => peer.seed || peer.has.get(i) });
    if (want && !peer.conn.amInterested) peer.conn.interested();
    else if (!want && peer.conn.amInterested) peer.conn.notInterested();
    if (want && !peer.conn.peerChoking) this.fill(peer);
  }

  private queueTarget(peer: Peer): number {
    // About half a second of data at the measured rate, within bounds: with
    // a second (and at least 32 blocks) a client on a 10 Mbit/s LAN link
    // had ~4 MiB in flight over its peers when the endgame began, and got
    // 2-6 MB of it twice (bench:swarm, N = 8); loopback speed is unchanged.
    const byRate = Math.ceil((peer.down.rate() * QUEUE_SECONDS) / BLOCK_SIZE);
    return Math.min(peer.remoteQueue, this.maxQueue, Math.max(this.minQueue, byRate));
  }

  /** Tops up our requests to a peer that unchoked us. */
  private fill(peer: Peer): void {
    const picker = this.picker!;
    if (
      this.stopped ||
      picker.complete ||
      peer.conn.peerChoking ||
      !peer.conn.amInterested ||
      !peer.conn.isOpen
    ) {
      return;
    }
    const target = this.queueTarget(peer);
    const want = target - peer.outstanding.size;
    // Batch: refill when a quarter of the pipeline has drained.
    if (want < Math.max(1, target / 4) && peer.outstanding.size > 0) return;
    const now = Date.now();
    const reqs = picker.pick(
      { id: peer.pid, has: (i) => (peer.seed || peer.has.get(i)) && !((peer.refused.get(i) ?? 0) > now) },
      want,
      // Endgame duplicates go only to a peer with (almost) nothing in flight.
      Math.max(0, ENDGAME_QUEUE - peer.outstanding.size),
      peer.suggested,
    );
    for (const r of reqs) peer.outstanding.set(key(r.index, r.begin), { req: r, at: now });
    peer.conn.requestMany(reqs);
    if (
      reqs.length === 0 &&
      peer.outstanding.size === 0 &&
      !picker.isInteresting({ id: peer.pid, has: (i) => peer.seed || peer.has.get(i) })
    ) {
      peer.conn.notInterested();
    }
  }

  private dropOutstanding(peer: Peer): void {
    this.picker?.peerGone(peer.pid);
    peer.outstanding.clear();
  }

  private onBlock(peer: Peer, index: number, begin: number, block: Buffer): void {
    const picker = this.picker!;
    const k = key(index, begin);
    const mine = peer.outstanding.get(k);
    if (!mine || mine.req.length !== block.length) {
      // Not asked of this peer (late after a cancel, or unsolicited).
      this.wasted += block.length;
      return;
    }
    peer.outstanding.delete(k);
    peer.lastUseful = Date.now();
    peer.down.add(block.length);
    this.down.add(block.length);
    const res = picker.blockReceived(index, begin, peer.pid);
    if (!res.wanted) {
      this.wasted += block.length;
      this.fill(peer);
      return;
    }
    this.assembler.add(index, begin, block, peer.pid);
    for (const other of res.cancelFrom) {
      for (const p of this.peers.values()) {
        if (p.pid === other && p.outstanding.delete(k)) p.conn.cancel(index, begin, block.length);
      }
    }
    if (res.pieceDone) this.finishPiece(index).catch((err: unknown) => this.fail('piece write', err));
    this.fill(peer);
  }

  private async finishPiece(index: number): Promise<void> {
    const picker = this.picker!;
    const list = [...this.peers.values()];
    const v = this.assembler.finish(
      index,
      list.map((p) => p.pid),
    );
    if (!v.ok) {
      picker.pieceFailed(index);
      const byPid = new Map(list.map((p) => [p.pid, p]));
      const who = v.contributors.map((pid) => byPid.get(pid)!.address);
      this.log.warn('piece failed its hash check; fetching it again', { piece: index, from: who.join(',') });
      this.emit('piece-failed', { index, peers: who });
      for (const pid of v.ban) this.ban(byPid.get(pid)!, `sent corrupt data (piece ${index})`);
      for (const p of this.peers.values()) this.fill(p);
      return;
    }
    this.verifying.add(index);
    try {
      await this.store!.writePiece(index, v.data);
    } catch (err) {
      this.verifying.delete(index);
      picker.pieceFailed(index);
      this.emit('warning', `cannot write piece ${index}: ${(err as Error).message}`);
      this.log.error('cannot write piece', { piece: index, error: (err as Error).message });
      return;
    } finally {
      this.verifying.delete(index);
      v.release();
    }
    if (this.stopped) return;
    picker.pieceVerified(index);
    this.emit('piece', index);
    for (const p of this.peers.values()) {
      if (!p.seed && !p.has.get(index)) p.pendingHaves.push(index);
    }
    if (picker.complete) {
      this.flushHaves();
      this.log.info('download complete', { bytes: this.meta.length });
      await this.store!.sync().catch(() => undefined);
      await this.store!.finishWriting();
      for (const p of this.peers.values()) {
        if (p.conn.amInterested) p.conn.notInterested();
        p.outstanding.clear();
        // Two seeds have nothing to say to each other.
        if (p.seed) p.conn.destroy();
      }
      this.emit('complete');
      this.announcer!.announceSoon('completed');
    }
  }

  /**
   * Tells every peer of the pieces verified since the last flush, in one
   * write each. One `have` per piece per peer was one TCP segment (and its
   * ACK) each: at N = 32 about a fifth of all packets on the emulated LAN,
   * each paid for in veth, bridge and tbf (bench:swarm).
   */
  private flushHaves(): void {
    for (const p of this.peers.values()) {
      if (p.pendingHaves.length === 0) continue;
      const news = p.seed ? [] : p.pendingHaves.filter((i) => !p.has.get(i));
      p.pendingHaves = [];
      if (news.length > 0 && p.conn.isOpen) p.conn.haveMany(news);
    }
  }

  /**
   * Bans by listen address and by peer id from that IP (idKey), not by IP
   * alone: on loopback and behind NAT several honest peers share an IP with
   * the bad one.
   */
  private ban(peer: Peer, reason: string): void {
    const id = idKey(peer.ip, peer.conn.remote!.peerId);
    if (this.dialer.isBanned(id)) return;
    this.dialer.ban(id);
    this.dialer.ban(peer.address);
    this.log.warn('banned peer', { peer: peer.address, reason });
    this.emit('banned', { address: peer.address, reason });
    peer.conn.destroy();
  }

  /** BEP 9: hand out the info dictionary, so magnet links work against us. */
  private onMetadataMessage(peer: Peer, payload: Buffer): void {
    let m;
    try {
      m = decodeMetadataMessage(payload);
    } catch (err) {
      peer.conn.destroy(err as BootTorrentError);
      return;
    }
    if (m.type !== 'request' || !peer.conn.supportsExtension('ut_metadata')) return;
    const info = this.meta.infoBuffer;
    const start = m.piece * METADATA_PIECE_SIZE;
    const reply: MetadataMessage =
      start < info.length
        ? {
            type: 'data',
            piece: m.piece,
            totalSize: info.length,
            data: info.subarray(start, start + METADATA_PIECE_SIZE),
          }
        : { type: 'reject', piece: m.piece };
    peer.conn.sendExtension('ut_metadata', encodeMetadataMessage(reply));
  }

  private onRequest(peer: Peer, r: BlockRequest): void {
    const picker = this.picker!;
    const d = this.seedPolicy!.request(peer.uploads, r, {
      amChoking: peer.conn.amChoking,
      fast: peer.conn.fast,
      havePiece: r.index < this.meta.pieceCount && picker.hasPiece(r.index),
      peerHas: (i) => peer.has.get(i),
    });
    switch (d.action) {
      case 'close':
        this.log.debug('invalid request; closing', { peer: peer.address, ...r });
        peer.conn.destroy(new BootTorrentError('BT_ERR_WIRE_PROTOCOL', 'request outside the piece'));
        return;
      case 'reject':
        peer.conn.reject(r.index, r.begin, r.length);
        if (d.suggest !== undefined) peer.conn.suggest(d.suggest);
        return;
      case 'ignore':
        return;
      case 'queued':
        void this.serve(peer);
    }
  }

  /** Sends queued blocks to a peer, one read at a time, respecting backpressure. */
  private async serve(peer: Peer): Promise<void> {
    if (peer.serving) return;
    peer.serving = true;
    try {
      while (peer.uploads.length > 0 && peer.conn.isOpen && !this.stopped) {
        if (peer.conn.amChoking) {
          peer.uploads.clear();
          break;
        }
        const r = peer.uploads.shift()!;
        if (this.uploadBucket) await this.uploadBucket.take(r.length);
        const lease = await this.store!.leaseBlock(r.index, r.begin, r.length);
        if (!peer.conn.isOpen) {
          lease.release();
          break;
        }
        peer.conn.piece(r.index, r.begin, lease.block, lease.release);
        peer.lastUseful = Date.now();
        peer.up.add(r.length);
        this.up.add(r.length);
        if (peer.conn.writableNeedDrain) await peer.conn.drained();
      }
    } catch (err) {
      if (!(err instanceof BootTorrentError && err.code === 'BT_ERR_WIRE_CLOSED')) {
        this.log.debug('upload stopped', { peer: peer.address, error: (err as Error).message });
      }
    } finally {
      peer.serving = false;
    }
  }

  /**
   * Rechokes once after the messages at hand: interest changes rechoke at
   * once (see the file comment), but a peer flipping interested and not
   * interested in one burst made each flip a full rechoke and a choke or
   * unchoke message back.
   */
  private rechokeSoon(): void {
    if (this.rechokeQueued) return;
    this.rechokeQueued = true;
    setImmediate(() => {
      this.rechokeQueued = false;
      try {
        this.rechoke(false);
      } catch (err) {
        this.fail('rechoke', err);
      }
    });
  }

  private rechoke(round: boolean): void {
    if (this.stopped || !this.picker) return;
    const list = [...this.peers.values()];
    const chokerPeers = list.map((p) => ({
      id: p.pid,
      interested: p.conn.peerInterested,
      downloadRate: p.down.rate(),
      uploadRate: p.up.rate(),
      uploaded: p.up.total,
      tiebreak: p.tiebreak,
    }));
    if (round && this.chokerMode === 'standard' && this.chokeRounds++ % 3 === 0) {
      const regular = chooseUnchoked({
        mode: 'standard',
        peers: chokerPeers,
        seeding: this.picker.complete,
        maxUnchoked: this.maxUnchoked,
      });
      this.optimistic = pickOptimistic(chokerPeers, regular);
    }
    const unchoke = chooseUnchoked({
      mode: this.chokerMode,
      peers: chokerPeers,
      seeding: this.picker.complete,
      maxUnchoked: this.maxUnchoked,
      ...(this.optimistic !== undefined ? { optimistic: this.optimistic } : {}),
    });
    for (const p of list) {
      if (!p.conn.isOpen) continue;
      this.guard(p, 'rechoke', () => {
        if (unchoke.has(p.pid)) {
          if (p.conn.amChoking) p.conn.unchoke();
        } else if (!p.conn.amChoking) {
          p.conn.choke();
          const dropped = p.uploads.clear();
          if (p.conn.fast) for (const r of dropped) p.conn.reject(r.index, r.begin, r.length);
        }
      });
    }
  }

  private tick(): void {
    if (this.stopped) return;
    const now = Date.now();
    for (const p of [...this.peers.values()]) {
      this.guard(p, 'tick', () => {
        // A peer sitting on requests for long gets them taken back (snubbed).
        let oldest = Infinity;
        for (const o of p.outstanding.values()) oldest = Math.min(oldest, o.at);
        if (oldest !== Infinity && now - oldest > REQUEST_TIMEOUT_MS) {
          this.log.debug('peer snubbed us; re-requesting elsewhere', { peer: p.address });
          for (const o of p.outstanding.values()) p.conn.cancel(o.req.index, o.req.begin, o.req.length);
          this.dropOutstanding(p);
        }
        this.fill(p);
      });
    }
    this.announcer!.tick();
    // Downloading with every slot taken, and someone new to dial: peers that
    // moved nothing for long must not keep us from the ones that might.
    if (!this.picker!.complete && this.peers.size >= this.maxPeers) {
      const connected = this.connectedAddresses();
      if (this.dialer.hasDue((a) => connected.has(a))) this.replaceUseless();
    }
    this.connectMore();
  }

  /**
   * BEP 11: at most 50 added peers per message; more is abuse, so the rest
   * are dropped (counted, logged once a minute per peer). Each address costs
   * O(1) (PeerDialer.add), and the dialer caps what one peer may add.
   */
  private onPex(peer: Peer, msg: PexMessage): void {
    if (!this.pex) return;
    const max = this.limits.maxPexAddedPerMessage;
    if (msg.added.length > max) {
      this.drops.drop(peer.address, 'PEX message over the limit; extra peers ignored', {
        added: msg.added.length,
        limit: max,
      });
    }
    const n = Math.min(max, msg.added.length);
    for (let i = 0; i < n; i++) {
      const p = msg.added[i]!;
      this.addCandidate(p.host, p.port, { kind: 'pex', from: peer.address });
    }
  }

  private sendPex(): void {
    if (!this.pex) return;
    const known = new Set<string>();
    for (const p of this.peers.values()) if (p.listenPort !== undefined) known.add(p.address);
    const toPeer = (a: string) => {
      const i = a.lastIndexOf(':');
      return { host: a.slice(0, i), port: Number(a.slice(i + 1)), flags: 0 };
    };
    for (const p of [...this.peers.values()]) {
      // BEP 10: an id of 0 (or none) means the peer disabled ut_pex.
      if (!p.conn.isOpen || !p.conn.supportsExtension('ut_pex')) continue;
      this.guard(p, 'pex', () => {
        const added: string[] = [];
        for (const a of known) {
          if (added.length >= 50) break;
          if (a !== p.address && !p.pexSent.has(a)) added.push(a);
        }
        const dropped: string[] = [];
        for (const a of p.pexSent) {
          if (dropped.length >= 50) break;
          if (!known.has(a)) dropped.push(a);
        }
        if (added.length === 0 && dropped.length === 0) return;
        for (const a of added) p.pexSent.add(a);
        for (const a of dropped) p.pexSent.delete(a);
        p.conn.sendPex({ added: added.map(toPeer), dropped: dropped.map(toPeer) });
      });
    }
  }

  private detach(peer: Peer): void {
    if (!this.peers.delete(peer.conn)) return;
    const picker = this.picker!;
    if (peer.seed) picker.peerSeed(-1);
    else picker.peerBitfield(peer.has, -1);
    this.dropOutstanding(peer);
    peer.uploads.clear();
    this.assembler.peerGone(peer.pid);
    this.emit('peer', { address: peer.address, event: 'close' });
    this.log.debug('peer closed', { peer: peer.address });
    if (!this.stopped && peer.listenPort !== undefined) {
      // Keep it as a candidate: a restart of that peer should find us again.
      this.dialer.keep(peer.ip, peer.listenPort);
    }
    for (const p of [...this.peers.values()]) this.guard(p, 'fill', () => this.fill(p));
  }

  stats(): SessionStats {
    const picker = this.picker;
    const have = picker?.piecesHave ?? 0;
    let left = 0;
    if (picker) {
      for (let i = 0; i < this.meta.pieceCount; i++) if (!picker.hasPiece(i)) left += picker.pieceSize(i);
    } else {
      left = this.meta.length;
    }
    const uploaded = this.up.total;
    const downloaded = this.down.total;
    return {
      infoHash: this.meta.infoHashHex,
      name: this.meta.name,
      length: this.meta.length,
      pieceCount: this.meta.pieceCount,
      piecesHave: have,
      downloaded,
      uploaded,
      downloadRate: this.down.rate(),
      uploadRate: this.up.rate(),
      left,
      complete: picker?.complete ?? false,
      ratio: uploaded / this.meta.length,
      peers: [...this.peers.values()].map((p) => ({
        address: p.address,
        client: this.clientName(p.conn),
        downloaded: p.down.total,
        uploaded: p.up.total,
        downloadRate: p.down.rate(),
        uploadRate: p.up.rate(),
        pieces: p.seed ? this.meta.pieceCount : p.has.count(),
        amChoking: p.conn.amChoking,
        peerChoking: p.conn.peerChoking,
        interested: p.conn.peerInterested,
        outstanding: p.outstanding.size,
      })),
      wasted: this.wasted,
      hashFailures: this.assembler.hashFailures,
    };
  }

  /** Where the data lives on disk. */
  get paths(): string[] {
    return this.store?.paths ?? [];
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
    await this.announcer?.stopLsd();
    this.signal?.removeEventListener('abort', this.onAbort);
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    this.uploadBucket?.release();
    for (const p of [...this.peers.values()]) p.conn.destroy();
    if (this.picker && this.started) await this.announcer?.announce('stopped').catch(() => undefined);
    if (this.ownTracker) this.tracker.close();
    await this.store?.close();
  }
}
