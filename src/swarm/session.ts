/**
 * One torrent in the swarm: its peers, requests, uploads, verification and
 * announces. Decisions are delegated to the pure PiecePicker and choker;
 * bytes go through PieceStore; peers speak through PeerConnection. This
 * class wires them together and owns the timers.
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
import { BootTorrentError, abortError } from '../errors.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { DropLog } from '../util/drop-log.js';
import { PEER_LIMITS } from '../limits.js';
import type { Metainfo } from '../torrent/metainfo.js';
import { Bitfield } from '../wire/bitfield.js';
import { PeerConnection } from '../wire/connection.js';
import type { PexMessage } from '../wire/codec.js';
import {
  METADATA_PIECE_SIZE,
  decodeMetadataMessage,
  encodeMetadataMessage,
  type MetadataMessage,
} from '../wire/metadata.js';
import { TrackerClient } from '../tracker/client.js';
import { LocalServiceDiscovery } from '../tracker/lsd.js';
import type { AnnounceEvent } from '../tracker/types.js';
import { BLOCK_SIZE, PiecePicker, type BlockRequest } from './picker.js';
import { chooseUnchoked, pickOptimistic, type ChokerMode } from './choker.js';
import { PieceStore, pieceMatches, type StorageMode } from './storage.js';
import { RateMeter } from './rate.js';

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
}

export interface SessionServices {
  logger?: Logger;
  signal?: AbortSignal;
  trackerClient?: TrackerClient;
  /** Progress of the start-up check of existing data. */
  onVerifyProgress?: (bytes: number, total: number) => void;
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
  /** Its requests to us. */
  readonly uploads: BlockRequest[];
  serving: boolean;
  readonly down: RateMeter;
  readonly up: RateMeter;
  strikes: number;
  /** Their reqq (BEP 10), capping our pipeline to them. */
  remoteQueue: number;
  /** Pieces this peer refused us (BEP 6 reject), until a time: ask others meanwhile. */
  readonly refused: Map<number, number>;
  /** Pieces we (as a spreading seed) began sending to this peer. */
  readonly servedPieces: Set<number>;
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

interface Candidate {
  readonly ip: string;
  readonly port: number;
  failures: number;
  nextTry: number;
  /**
   * Heard through LSD: a seed dials these too, since such a peer learns of
   * us only at our next LSD announce (BEP 14: at most one a minute).
   */
  readonly local: boolean;
}

interface Assembly {
  readonly buf: Buffer;
  /** The pooled piece-length buffer `buf` is a view of. */
  readonly backing: Buffer;
  readonly contributors: Set<string>;
}

const MAX_BLOCK = 128 * 1024;
const MAX_UPLOAD_QUEUE = 4096;
const REQUEST_TIMEOUT_MS = 30_000;
const CHOKE_INTERVAL_MS = 10_000;
const TICK_MS = 1000;
const PEX_INTERVAL_MS = 60_000;
const CONNECT_TIMEOUT_MS = 5000;
const BAN_STRIKES = 3;
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
/** Assembly buffers kept for reuse (pieces being written at once rarely exceed a few). */
const SPARE_BUFFERS = 8;

const key = (index: number, begin: number) => `${index}:${begin}`;

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
  private readonly candidates = new Map<string, Candidate>();
  private readonly connecting = new Set<string>();
  /** Banned peers, by listen address ("ip:port") and by peer id (hex). */
  private readonly banned = new Set<string>();
  private readonly assemblies = new Map<number, Assembly>();
  /**
   * Assembly buffers of written pieces, reused: a fresh buffer per piece
   * turns into garbage V8 frees late, ~100 MB of RSS at full speed.
   */
  private readonly spareBuffers: Buffer[] = [];
  private readonly tracker: TrackerClient;
  private readonly ownTracker: boolean;
  private readonly down = new RateMeter();
  private readonly up = new RateMeter();
  private wasted = 0;
  private hashFailures = 0;
  private timers: NodeJS.Timeout[] = [];
  private optimistic: string | undefined;
  private chokeRounds = 0;
  private started = false;
  private stopped = false;
  private announcing = false;
  private nextAnnounceAt = 0;
  private announceFailures = 0;
  private completedSent = false;
  private readonly key = randomBytes(4).readUInt32BE(0);
  private readonly verifying = new Set<number>();
  private peerSeq = 0;
  private lsd: LocalServiceDiscovery | undefined;
  /** `spread` seed policy: pieces sent at least once, and how many were not. */
  private sentOnce: Uint8Array | undefined;
  private unsent = 0;
  private suggestCursor = 0;
  private uploadTokens = 0;
  private uploadWaiters: (() => void)[] = [];
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
    this.completedSent = this.picker.complete;
    if (
      this.picker.complete &&
      this.opts.mode === 'seed' &&
      (this.opts.seedPolicy ?? 'spread') === 'spread'
    ) {
      this.sentOnce = new Uint8Array(meta.pieceCount);
      this.unsent = meta.pieceCount;
    }
    this.log.info(this.picker.complete ? 'seeding' : 'downloading', {
      have: this.picker.piecesHave,
      pieces: meta.pieceCount,
    });
    for (const p of this.opts.peers ?? []) this.addPeerAddress(p);
    const every = (ms: number, fn: () => void) => {
      const t = setInterval(fn, ms);
      this.timers.push(t);
    };
    every(TICK_MS, () => this.tick());
    // The upload bucket is refilled ten times a second (see refillUploadTokens).
    if (this.opts.uploadLimit) every(TICK_MS / 10, () => this.refillUploadTokens());
    every(CHOKE_INTERVAL_MS, () => this.rechoke(true));
    if (!this.picker.complete) every(HAVE_BATCH_MS, () => this.flushHaves());
    if (this.pex) every(PEX_INTERVAL_MS, () => this.sendPex());
    this.signal?.addEventListener('abort', this.onAbort, { once: true });
    void this.announce('started');
    await this.startLsd();
    this.connectMore();
  }

  private readonly onAbort = () => void this.stop();

  /** A peer address from anywhere (tracker, LSD, PEX, the user). */
  addPeerAddress(address: string): void {
    const m = /^(.+):(\d+)$/.exec(address);
    if (!m) return;
    this.addCandidate(m[1]!.replace(/^\[|\]$/g, ''), Number(m[2]));
  }

  private addCandidate(ip: string, port: number, local = false): void {
    const k = `${ip}:${port}`;
    if (port <= 0 || port > 65535 || this.banned.has(k)) return;
    if (this.candidates.has(k)) return;
    for (const p of this.peers.values()) if (p.address === k) return;
    this.candidates.set(k, { ip, port, failures: 0, nextTry: 0, local });
    if (this.started && !this.stopped) this.connectMore();
  }

  private connectMore(): void {
    if (this.stopped || !this.picker) return;
    // A seed does not dial out: leechers find it through the tracker.
    const seeding = this.picker.complete;
    const now = Date.now();
    for (const [k, c] of this.candidates) {
      if (this.peers.size + this.connecting.size >= this.maxPeers) return;
      if (seeding && !c.local) continue;
      if (this.connecting.has(k) || c.nextTry > now) continue;
      if ([...this.peers.values()].some((p) => p.address === k)) continue;
      this.dial(k, c);
    }
  }

  private dial(k: string, c: Candidate): void {
    this.connecting.add(k);
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
      this.connecting.delete(k);
      c.failures++;
      c.nextTry = Date.now() + Math.min(60_000, 1000 * 2 ** c.failures);
      this.log.debug('connect failed', { peer: k, error: err.message });
    };
    socket.once('error', failed);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.off('error', failed);
      this.connecting.delete(k);
      if (this.stopped) {
        socket.destroy();
        return;
      }
      const pc = new PeerConnection(socket, {
        peerId: this.opts.peerId,
        initiator: true,
        infoHash: this.meta.infoHash,
        pieceCount: this.meta.pieceCount,
      });
      conn = pc;
      pc.once('handshake', () => {
        c.failures = 0;
        this.attach(pc, c.ip, c.port, c.port);
      });
      pc.once('close', () => {
        if (!this.peers.has(pc)) {
          c.failures++;
          c.nextTry = Date.now() + Math.min(60_000, 1000 * 2 ** c.failures);
        }
      });
      pc.on('error', (err) => this.log.debug('peer error', { peer: k, error: err.message }));
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

  private attach(conn: PeerConnection, ip: string, listenPort: number | undefined, remotePort: number): void {
    const remoteId = conn.remote!.peerId;
    if (this.banned.has(remoteId.toString('hex'))) {
      conn.destroy();
      return;
    }
    if (remoteId.equals(this.opts.peerId)) {
      // Ourselves, through an address of our own in the peer list.
      conn.destroy();
      return;
    }
    for (const other of this.peers.values()) {
      if (other.conn.remote!.peerId.equals(remoteId)) {
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
      uploads: [],
      serving: false,
      down: new RateMeter(),
      up: new RateMeter(),
      strikes: 0,
      remoteQueue: 250,
      pexSent: new Set(),
      refused: new Map(),
      servedPieces: new Set(),
      suggested: new Set(),
      pendingHaves: [],
      tiebreak: Math.random(),
      connectedAt: Date.now(),
      lastUseful: Date.now(),
    };
    if (listenPort !== undefined) this.candidates.delete(`${ip}:${listenPort}`);
    this.peers.set(conn, peer);
    this.emit('peer', { address: peer.address, event: 'connect' });
    this.log.debug('peer connected', { peer: peer.address, client: this.clientName(conn) });

    conn.on('error', (err) => this.log.debug('peer error', { peer: peer.address, error: err.message }));
    conn.on('close', () => this.detach(peer));
    conn.on('extended-handshake', (h) => {
      if (typeof h.p === 'number' && h.p > 0 && h.p <= 65535) {
        peer.listenPort = h.p;
        peer.address = `${ip}:${h.p}`;
      }
      if (typeof h.reqq === 'number' && h.reqq > 0) peer.remoteQueue = Math.min(h.reqq, this.maxQueue);
    });
    conn.on('bitfield', () => this.setPeerPieces(peer, conn.remoteBitfield, false));
    conn.on('have-all', () => this.setPeerPieces(peer, null, true));
    conn.on('have-none', () => this.setPeerPieces(peer, new Bitfield(this.meta.pieceCount), false));
    conn.on('have', ({ index }) => this.onHave(peer, index));
    conn.on('choke', () => {
      // BEP 6: with the Fast extension a choke does not cancel requests; rejects will.
      if (!conn.fast) this.dropOutstanding(peer);
    });
    conn.on('unchoke', () => this.fill(peer));
    conn.on('interested', () => this.rechoke(false));
    conn.on('not-interested', () => this.rechoke(false));
    conn.on('request', (r) => this.onRequest(peer, r));
    conn.on('cancel', (r) => {
      const i = peer.uploads.findIndex(
        (u) => u.index === r.index && u.begin === r.begin && u.length === r.length,
      );
      if (i >= 0) peer.uploads.splice(i, 1);
    });
    conn.on('reject', (r) => {
      // Rejects that follow a choke (BEP 6) say nothing about the piece.
      if (!peer.conn.peerChoking) peer.refused.set(r.index, Date.now() + REFUSED_MS);
      if (peer.outstanding.delete(key(r.index, r.begin))) {
        picker.requestDropped(r.index, r.begin, peer.pid);
        this.fill(peer);
      }
    });
    conn.on('suggest', (m) => {
      if (m.index >= this.meta.pieceCount || picker.hasPiece(m.index)) return;
      if (peer.suggested.size >= MAX_SUGGESTED) return;
      peer.suggested.add(m.index);
      this.fill(peer);
    });
    conn.on('piece', (m) => this.onBlock(peer, m.index, m.begin, m.block));
    conn.on('pex', (msg) => this.onPex(msg));
    conn.on('extended', ({ id, payload }) => {
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

  private setPeerPieces(peer: Peer, bits: Bitfield | null, seed: boolean): void {
    const picker = this.picker!;
    // Undo what this peer counted before (aria2c re-sends a bitfield late).
    if (peer.seed) picker.peerSeed(-1);
    else picker.peerBitfield(peer.has, -1);
    for (let i = 0; i < this.meta.pieceCount; i++) peer.has.set(i, seed || bits!.get(i));
    peer.seed = seed || peer.has.hasAll();
    if (peer.seed) picker.peerSeed(1);
    else picker.peerBitfield(peer.has, 1);
    // Two seeds have nothing to say to each other.
    if (peer.seed && picker.complete) {
      peer.conn.destroy();
      return;
    }
    this.updateInterest(peer);
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
    let a = this.assemblies.get(index);
    if (!a) {
      const backing = this.spareBuffers.pop() ?? Buffer.allocUnsafe(this.meta.pieceLength);
      a = { buf: backing.subarray(0, picker.pieceSize(index)), backing, contributors: new Set() };
      this.assemblies.set(index, a);
    }
    block.copy(a.buf, begin);
    a.contributors.add(peer.pid);
    for (const other of res.cancelFrom) {
      for (const p of this.peers.values()) {
        if (p.pid === other && p.outstanding.delete(k)) p.conn.cancel(index, begin, block.length);
      }
    }
    if (res.pieceDone) void this.finishPiece(index);
    this.fill(peer);
  }

  private async finishPiece(index: number): Promise<void> {
    const a = this.assemblies.get(index)!;
    this.assemblies.delete(index);
    const picker = this.picker!;
    const spare = () => {
      if (this.spareBuffers.length < SPARE_BUFFERS) this.spareBuffers.push(a.backing);
    };
    if (!pieceMatches(this.meta, index, a.buf)) {
      spare();
      this.hashFailures++;
      picker.pieceFailed(index);
      const who = [...this.peers.values()].filter((p) => a.contributors.has(p.pid)).map((p) => p.address);
      this.log.warn('piece failed its hash check; fetching it again', { piece: index, from: who.join(',') });
      this.emit('piece-failed', { index, peers: who });
      // A sole contributor is certainly guilty; several share the suspicion.
      for (const p of [...this.peers.values()]) {
        if (!a.contributors.has(p.pid)) continue;
        p.strikes += who.length === 1 ? BAN_STRIKES : 1;
        if (p.strikes >= BAN_STRIKES) this.ban(p, `sent corrupt data (piece ${index})`);
      }
      for (const p of this.peers.values()) this.fill(p);
      return;
    }
    this.verifying.add(index);
    try {
      await this.store!.writePiece(index, a.buf);
    } catch (err) {
      this.verifying.delete(index);
      picker.pieceFailed(index);
      this.emit('warning', `cannot write piece ${index}: ${(err as Error).message}`);
      this.log.error('cannot write piece', { piece: index, error: (err as Error).message });
      return;
    } finally {
      this.verifying.delete(index);
      spare();
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
      void this.announce('completed');
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
   * Bans by listen address and peer id, not by IP alone: on loopback and
   * behind NAT several honest peers share an IP with the bad one.
   */
  private ban(peer: Peer, reason: string): void {
    const id = peer.conn.remote!.peerId.toString('hex');
    if (this.banned.has(id)) return;
    this.banned.add(id);
    this.banned.add(peer.address);
    this.candidates.delete(peer.address);
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
    if (m.type !== 'request' || !peer.conn.remoteExtensions?.m.get('ut_metadata')) return;
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
    const valid =
      r.index < this.meta.pieceCount &&
      r.length > 0 &&
      r.length <= MAX_BLOCK &&
      r.begin + r.length <= picker.pieceSize(r.index);
    if (!valid) {
      this.log.debug('invalid request; closing', { peer: peer.address, ...r });
      peer.conn.destroy(new BootTorrentError('BT_ERR_WIRE_PROTOCOL', 'request outside the piece'));
      return;
    }
    if (peer.conn.amChoking || !picker.hasPiece(r.index) || peer.uploads.length >= MAX_UPLOAD_QUEUE) {
      if (peer.conn.fast) peer.conn.reject(r.index, r.begin, r.length);
      return;
    }
    if (this.spreading(peer, r.index)) {
      peer.conn.reject(r.index, r.begin, r.length);
      this.suggestUnsent(peer);
      return;
    }
    peer.uploads.push(r);
    void this.serve(peer);
  }

  /**
   * After a `spread` reject, names a piece that has not left us yet (BEP 6
   * Suggest Piece), so the peer asks for that instead of guessing: without
   * it, leechers kept asking the seed for pieces they were already getting
   * from each other, and the server sat idle behind its rejects for ten
   * seconds and more at N = 32 (bench:swarm). Successive suggestions name
   * different pieces, so peers rejected together spread over what is left.
   */
  private suggestUnsent(peer: Peer): void {
    const sent = this.sentOnce!;
    for (let k = 0; k < sent.length; k++) {
      const i = (this.suggestCursor + k) % sent.length;
      if (sent[i] === 0 && !peer.has.get(i)) {
        this.suggestCursor = i + 1;
        peer.conn.suggest(i);
        return;
      }
    }
  }

  /**
   * The `spread` seed policy: true when this request should be rejected
   * because the piece already went to another peer while others never left
   * us. A piece already begun for this peer is always finished.
   */
  private spreading(peer: Peer, index: number): boolean {
    if (!this.sentOnce || !peer.conn.fast) return false;
    if (peer.servedPieces.has(index)) return false;
    if (this.sentOnce[index] === 1 && this.unsent > 0) return true;
    if (this.sentOnce[index] === 0) {
      this.sentOnce[index] = 1;
      this.unsent--;
    }
    peer.servedPieces.add(index);
    return false;
  }

  /** Sends queued blocks to a peer, one read at a time, respecting backpressure. */
  private async serve(peer: Peer): Promise<void> {
    if (peer.serving) return;
    peer.serving = true;
    try {
      while (peer.uploads.length > 0 && peer.conn.isOpen && !this.stopped) {
        if (peer.conn.amChoking) {
          peer.uploads.length = 0;
          break;
        }
        const r = peer.uploads.shift()!;
        if (this.opts.uploadLimit) await this.takeUploadTokens(r.length);
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

  /** A token bucket refilled every tick, for uploadLimit. */
  private takeUploadTokens(n: number): Promise<void> {
    if (this.uploadTokens >= n) {
      this.uploadTokens -= n;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      this.uploadWaiters.push(() => {
        this.uploadTokens -= n;
        resolve();
      });
    });
  }

  private refillUploadTokens(): void {
    const limit = this.opts.uploadLimit;
    if (!limit) return;
    // Ten refills a second keep bursts small.
    this.uploadTokens = Math.min(this.uploadTokens + limit / 10, limit / 2 + MAX_BLOCK);
    while (this.uploadWaiters.length > 0 && this.uploadTokens >= MAX_BLOCK / 8) {
      this.uploadWaiters.shift()!();
    }
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
      if (unchoke.has(p.pid)) {
        if (p.conn.amChoking) p.conn.unchoke();
      } else if (!p.conn.amChoking) {
        p.conn.choke();
        if (p.conn.fast) for (const r of p.uploads) p.conn.reject(r.index, r.begin, r.length);
        p.uploads.length = 0;
      }
    }
  }

  private tick(): void {
    if (this.stopped) return;
    const now = Date.now();
    for (const p of this.peers.values()) {
      // A peer sitting on requests for long gets them taken back (snubbed).
      let oldest = Infinity;
      for (const o of p.outstanding.values()) oldest = Math.min(oldest, o.at);
      if (oldest !== Infinity && now - oldest > REQUEST_TIMEOUT_MS) {
        this.log.debug('peer snubbed us; re-requesting elsewhere', { peer: p.address });
        for (const o of p.outstanding.values()) p.conn.cancel(o.req.index, o.req.begin, o.req.length);
        this.dropOutstanding(p);
      }
      this.fill(p);
    }
    if (!this.announcing && now >= this.nextAnnounceAt && this.nextAnnounceAt > 0) void this.announce('none');
    // Downloading with every slot taken, and someone new to dial: peers that
    // moved nothing for long must not keep us from the ones that might.
    if (!this.picker!.complete && this.peers.size >= this.maxPeers) {
      for (const [k, c] of this.candidates) {
        if (c.nextTry <= now && !this.connecting.has(k)) {
          this.replaceUseless();
          break;
        }
      }
    }
    this.connectMore();
  }

  private trackers(): string[] {
    return this.opts.trackers ? [...this.opts.trackers] : this.meta.announce.flat();
  }

  private async announce(event: AnnounceEvent): Promise<void> {
    const urls = this.trackers();
    if (urls.length === 0) return;
    if (event === 'completed') {
      if (this.completedSent) return;
      this.completedSent = true;
    }
    this.announcing = true;
    const s = this.stats();
    let ok = false;
    try {
      for (const url of urls) {
        try {
          const r = await this.tracker.announce(
            url,
            {
              infoHash: this.meta.infoHash,
              peerId: this.opts.peerId,
              port: this.opts.listenPort,
              uploaded: s.uploaded,
              downloaded: s.downloaded,
              left: s.left,
              event,
              numWant: event === 'stopped' ? 0 : 80,
              key: this.key,
            },
            event === 'stopped' ? { timeoutMs: 2000 } : this.signal ? { signal: this.signal } : {},
          );
          ok = true;
          if (this.announceFailures > 0) this.log.info('tracker reachable again', { tracker: url });
          this.announceFailures = 0;
          if (r.warning) this.log.warn('tracker warning', { tracker: url, warning: r.warning });
          this.nextAnnounceAt = Date.now() + Math.max(5, r.interval) * 1000;
          if (event !== 'stopped') for (const p of r.peers) this.addCandidate(p.ip, p.port);
          break;
        } catch (err) {
          if (this.stopped && event !== 'stopped') return;
          this.log.debug('announce failed', { tracker: url, error: (err as Error).message });
          if (event === 'stopped') continue;
          if (this.announceFailures === 0) {
            this.emit('warning', `tracker ${url}: ${(err as Error).message}`);
            this.log.warn('tracker unreachable; still using known peers', {
              tracker: url,
              error: (err as Error).message,
            });
          }
        }
      }
      if (!ok && event !== 'stopped') {
        this.announceFailures++;
        this.nextAnnounceAt = Date.now() + Math.min(60_000, 2000 * 2 ** this.announceFailures);
      }
    } finally {
      this.announcing = false;
    }
  }

  private onPex(msg: PexMessage): void {
    if (!this.pex) return;
    for (const p of msg.added.slice(0, 50)) this.addCandidate(p.host, p.port);
  }

  private sendPex(): void {
    if (!this.pex) return;
    const known = [...this.peers.values()].filter((p) => p.listenPort !== undefined).map((p) => p.address);
    for (const p of this.peers.values()) {
      if (!p.conn.isOpen || !p.conn.remoteExtensions?.m.has('ut_pex')) continue;
      const added = known.filter((a) => a !== p.address && !p.pexSent.has(a)).slice(0, 50);
      const dropped = [...p.pexSent].filter((a) => !known.includes(a)).slice(0, 50);
      if (added.length === 0 && dropped.length === 0) continue;
      for (const a of added) p.pexSent.add(a);
      for (const a of dropped) p.pexSent.delete(a);
      const toPeer = (a: string) => {
        const i = a.lastIndexOf(':');
        return { host: a.slice(0, i), port: Number(a.slice(i + 1)), flags: 0 };
      };
      p.conn.sendPex({ added: added.map(toPeer), dropped: dropped.map(toPeer) });
    }
  }

  private detach(peer: Peer): void {
    if (!this.peers.delete(peer.conn)) return;
    const picker = this.picker!;
    if (peer.seed) picker.peerSeed(-1);
    else picker.peerBitfield(peer.has, -1);
    this.dropOutstanding(peer);
    peer.uploads.length = 0;
    this.emit('peer', { address: peer.address, event: 'close' });
    this.log.debug('peer closed', { peer: peer.address });
    if (!this.stopped && peer.listenPort !== undefined && !this.banned.has(peer.address)) {
      // Keep it as a candidate: a restart of that peer should find us again.
      this.candidates.set(peer.address, {
        ip: peer.ip,
        port: peer.listenPort,
        failures: 1,
        nextTry: Date.now() + 2000,
        local: false,
      });
    }
    for (const p of this.peers.values()) this.fill(p);
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
      hashFailures: this.hashFailures,
    };
  }

  /** Where the data lives on disk. */
  get paths(): string[] {
    return this.store?.paths ?? [];
  }

  /** Resolves when every piece is verified and stored (at once for a seed). */
  whenComplete(): Promise<void> {
    if (this.complete) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onAbort = () => reject(this.signal ? abortError(this.signal) : new Error('stopped'));
      this.signal?.addEventListener('abort', onAbort, { once: true });
      this.once('complete', () => {
        this.signal?.removeEventListener('abort', onAbort);
        resolve();
      });
    });
  }

  /** Announces `stopped`, closes every connection and the storage. Idempotent. */
  private async startLsd(): Promise<void> {
    const address = this.opts.lsdInterface;
    if (address === undefined || this.meta.private) return;
    const lsd = new LocalServiceDiscovery(
      {
        port: this.opts.listenPort,
        interfaceAddress: address,
        infoHashes: [this.meta.infoHashHex],
        ...(this.opts.lsdIntervalMs !== undefined ? { announceIntervalMs: this.opts.lsdIntervalMs } : {}),
      },
      { logger: this.log.child('lsd') },
    );
    lsd.on('peer', (p) => {
      if (p.infoHash === this.meta.infoHashHex) this.addCandidate(p.ip, p.port, true);
    });
    lsd.on('error', (err) => this.emit('warning', `local peer discovery stopped: ${err.message}`));
    try {
      await lsd.start(this.signal ? { signal: this.signal } : {});
      this.lsd = lsd;
    } catch (err) {
      // Not fatal: trackers and known peers still work.
      this.emit('warning', `local peer discovery unavailable: ${(err as Error).message}`);
      this.log.warn('LSD unavailable', { error: (err as Error).message });
    }
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.lsd?.stop();
    this.signal?.removeEventListener('abort', this.onAbort);
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    for (const w of this.uploadWaiters.splice(0)) w();
    for (const p of [...this.peers.values()]) p.conn.destroy();
    if (this.picker && this.started) await this.announce('stopped').catch(() => undefined);
    if (this.ownTracker) this.tracker.close();
    await this.store?.close();
  }
}
