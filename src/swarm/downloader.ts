/**
 * A torrent session's downloading: what each peer has (bitfields, haves),
 * our interest, the request pipeline to each peer (sized from its measured
 * rate), blocks as they arrive, finished pieces (hash check through the
 * PieceAssembler, written through the PieceStore) and the batched haves we
 * send. Which blocks to ask for is the pure PiecePicker's decision.
 */
import type { PieceStore } from './storage.js';
import { BLOCK_SIZE, type BlockRequest, type PiecePicker } from './picker.js';
import type { PieceAssembler } from './assembler.js';
import { RateMeter } from './rate.js';
import { ipToInt } from '../util/address.js';
import { blockKey, type Peer, type SessionCore } from './peer.js';

export interface DownloaderOptions {
  /** Outstanding requests per peer: lower and upper bounds. */
  readonly minQueue: number;
  readonly maxQueue: number;
  /** Piece-set messages (bitfield, have-all, have-none) a peer may send before it is closed. */
  readonly maxPieceSetMessages: number;
}

export interface DownloaderHooks {
  /** A piece was verified and written. */
  piece(index: number): void;
  /** A piece failed its hash check; `peers` sent blocks of it. */
  pieceFailed(index: number, peers: string[]): void;
  /** A piece could not be written. */
  writeFailed(index: number, err: Error): void;
  /** Bans a peer that sent corrupt data too often (and closes it). */
  ban(peer: Peer, reason: string): void;
  /** A web seed (BEP 19) sent blocks of a piece that failed its hash check. */
  webFailed(pid: string, index: number): void;
  /** Every piece is verified and on disk. */
  complete(): void;
}

const REQUEST_TIMEOUT_MS = 30_000;
/**
 * Verified pieces waiting for the disk, in bytes (at least two pieces),
 * beyond which no more blocks are asked for: a disk slower than the link
 * holds the download back instead of piling pieces up in memory.
 */
const WRITE_BACKLOG_BYTES = 16 << 20;
/** Failed pieces shared with other sources after which a web seed is dropped anyway. */
const WEB_STRIKES = 4;
/**
 * How long a piece a peer rejected is asked of others instead. Short: a
 * spreading seed rejects only until every piece has left it once (a few
 * seconds on a LAN); after that a mark only delays asking it again.
 */
const REFUSED_MS = 1000;
/** Seconds of data at a peer's measured rate we keep requested from it. */
const QUEUE_SECONDS = 0.5;
/** Requests in flight to a peer below which it gets endgame duplicates. */
const ENDGAME_QUEUE = 2;
interface LocalView {
  readonly avail: Uint8Array | 'all' | undefined;
  readonly share: { readonly of: number; readonly mine: number } | undefined;
}

/** Addresses in numeric order for IPv4 (every client of a subnet ranks them alike), else as text. */
const byAddress = (a: string, b: string): number => {
  const x = ipToInt(a);
  const y = ipToInt(b);
  if (!Number.isNaN(x) && !Number.isNaN(y)) return x - y;
  return a < b ? -1 : a > b ? 1 : 0;
};

/** A local peer with a request older than this (ms) counts as giving nothing (see localView). */
const LOCAL_STALL_MS = 5000;
/** Bytes/s below which a local peer counts as giving nothing (16 KiB/s: a block a second). */
const LOCAL_MIN_RATE = 16384;
/** How long the picture of what local peers can give us is reused (ms). */
const LOCAL_MS = 250;
/** Suggestions kept per peer; more are ignored (a peer cannot grow our memory). */
const MAX_SUGGESTED = 64;

export class Downloader {
  /** Bytes of blocks we asked for, received from every peer. */
  readonly down = new RateMeter();
  /** Bytes received that we had not asked for (late after a cancel) or no longer wanted. */
  wasted = 0;
  /** Web seeds taking part (BEP 19), by their source id: label for logs. */
  private readonly web = new Map<string, string>();
  /** Failed pieces each web seed took part in with others (see finishPiece). */
  private readonly webStrikes = new Map<string, number>();
  /** See localView. */
  private localCache: LocalView = { avail: undefined, share: undefined };
  private localAt = -Infinity;
  private readonly core: SessionCore;
  private readonly picker: PiecePicker;
  private readonly store: PieceStore;
  private readonly assembler: PieceAssembler;
  private readonly opts: DownloaderOptions;
  private readonly hooks: DownloaderHooks;

  constructor(
    core: SessionCore,
    parts: { picker: PiecePicker; store: PieceStore; assembler: PieceAssembler },
    options: DownloaderOptions,
    hooks: DownloaderHooks,
  ) {
    this.core = core;
    this.picker = parts.picker;
    this.store = parts.store;
    this.assembler = parts.assembler;
    this.opts = options;
    this.hooks = hooks;
  }

  get hashFailures(): number {
    return this.assembler.hashFailures;
  }

  /**
   * A bitfield, have-all or have-none. BEP 3 and 6 allow one, as the first
   * message (aria2c sends a second, see PeerConnection.applyPieceSet); a
   * peer that keeps sending them is closed.
   */
  onPieceSet(peer: Peer): void {
    if (++peer.pieceSets > this.opts.maxPieceSetMessages) {
      this.core.drops.drop(peer.address, 'peer keeps resending its piece set; closing it', {
        limit: this.opts.maxPieceSetMessages,
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
    const picker = this.picker;
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

  onHave(peer: Peer, index: number): void {
    if (index >= this.core.meta.pieceCount || peer.has.get(index)) return;
    peer.has.set(index);
    if (peer.has.hasAll()) {
      this.picker.peerBitfield(peer.has, -1);
      peer.has.set(index, false);
      peer.has.set(index);
      peer.seed = true;
      this.picker.peerSeed(1);
    } else {
      this.picker.peerHasPiece(index);
    }
    if (!peer.conn.amInterested && !this.picker.hasPiece(index)) {
      peer.conn.interested();
    }
    if (peer.conn.amInterested && !peer.conn.peerChoking) this.fill(peer);
  }

  private updateInterest(peer: Peer): void {
    const want = this.picker.isInteresting({ id: peer.pid, has: (i) => peer.seed || peer.has.get(i) });
    if (want && !peer.conn.amInterested) peer.conn.interested();
    else if (!want && peer.conn.amInterested) peer.conn.notInterested();
    if (want && !peer.conn.peerChoking) this.fill(peer);
  }

  /** The peer choked us. BEP 6: with the Fast extension a choke does not cancel requests; rejects will. */
  onChoke(peer: Peer): void {
    if (!peer.conn.fast) this.dropOutstanding(peer);
  }

  onReject(peer: Peer, r: BlockRequest): void {
    // Only a reject of a request still outstanding says anything; others
    // (late after a cancel, or made up) would each add an entry to
    // `refused`, keyed by any uint32 the peer likes.
    if (!peer.outstanding.delete(blockKey(r.index, r.begin))) return;
    // Rejects that follow a choke (BEP 6) say nothing about the piece.
    if (!peer.conn.peerChoking) peer.refused.set(r.index, Date.now() + REFUSED_MS);
    this.picker.requestDropped(r.index, r.begin, peer.pid);
    this.fill(peer);
  }

  /** BEP 6 Suggest Piece: asked of that peer first, if we lack it. */
  onSuggest(peer: Peer, index: number): void {
    if (index >= this.core.meta.pieceCount || this.picker.hasPiece(index)) return;
    if (peer.suggested.size >= MAX_SUGGESTED) return;
    peer.suggested.add(index);
    this.fill(peer);
  }

  private queueTarget(peer: Peer): number {
    // About half a second of data at the measured rate, within bounds: with
    // a second (and at least 32 blocks) a client on a 10 Mbit/s LAN link
    // had ~4 MiB in flight over its peers when the endgame began, and got
    // 2-6 MB of it twice (bench:swarm, N = 8); loopback speed is unchanged.
    const byRate = Math.ceil((peer.down.rate() * QUEUE_SECONDS) / BLOCK_SIZE);
    return Math.min(peer.remoteQueue, this.opts.maxQueue, Math.max(this.opts.minQueue, byRate));
  }

  /** Tops up our requests to a peer that unchoked us. */
  fill(peer: Peer): void {
    const picker = this.picker;
    if (
      this.core.isStopped() ||
      picker.complete ||
      peer.conn.peerChoking ||
      !peer.conn.amInterested ||
      !peer.conn.isOpen ||
      this.diskBehind()
    ) {
      return;
    }
    const target = this.queueTarget(peer);
    const want = target - peer.outstanding.size;
    // Batch: refill when a quarter of the pipeline has drained.
    if (want < Math.max(1, target / 4) && peer.outstanding.size > 0) return;
    const now = Date.now();
    const view = peer.local ? undefined : this.localView(now);
    if (view?.avail === 'all') return;
    const nearby = view?.avail;
    const share = view?.share;
    const reqs = picker.pick(
      {
        id: peer.pid,
        has: (i) =>
          (peer.seed || peer.has.get(i)) &&
          !((peer.refused.get(i) ?? 0) > now) &&
          !(nearby !== undefined && nearby[i] === 1) &&
          (share === undefined || i % share.of === share.mine),
      },
      want,
      // Endgame duplicates go only to a peer with (almost) nothing in flight.
      Math.max(0, ENDGAME_QUEUE - peer.outstanding.size),
      peer.suggested,
    );
    for (const r of reqs) peer.outstanding.set(blockKey(r.index, r.begin), { req: r, at: now });
    peer.conn.requestMany(reqs);
    if (
      reqs.length === 0 &&
      peer.outstanding.size === 0 &&
      !picker.isInteresting({ id: peer.pid, has: (i) => peer.seed || peer.has.get(i) })
    ) {
      peer.conn.notInterested();
    }
  }

  /**
   * What local peers can give us (locality, issue #21), rebuilt at most
   * every LOCAL_MS (a remote peer's fill runs on each block it sends; a
   * picture a moment old only means a piece is asked a moment late):
   *
   * - `avail`: 'all' when a local peer that unchokes us is a seed, else a
   *   byte per piece (1: some local peer that unchokes us has it), or
   *   undefined when none unchokes us. Remote peers are not asked for those.
   * - `share`: with other local peers connected, our share of what the
   *   subnet fetches from outside: the pieces whose index is `mine` modulo
   *   `of` (our rank among the local addresses, ours included). At the
   *   start nobody local has anything, and without shares every client of
   *   a subnet fetched the same rarest pieces from the server at once
   *   (bench:campus: 2.3 copies per subnet). Undefined once our share is
   *   all had or available locally: then anything not available locally.
   */
  private localView(now: number): LocalView {
    if (now - this.localAt < LOCAL_MS) return this.localCache;
    this.localAt = now;
    let bits: Uint8Array | undefined;
    let avail: Uint8Array | 'all' | undefined;
    const addresses: string[] = [];
    let ours: string | undefined;
    for (const p of this.core.peers.values()) {
      if (!p.local || !p.conn.isOpen) continue;
      addresses.push(p.ip);
      ours ??= p.conn.localAddress;
      // A local peer sitting on our requests is no supply: a neighbour that
      // claims every piece, unchokes and never sends would otherwise keep
      // us from asking anyone else (until the 30-s snub).
      // So is one that delivers below LOCAL_MIN_RATE once past its first
      // LOCAL_STALL_MS: rejecting everything, flapping choke and unchoke, or
      // answering just inside the timeout must not cut us off from others.
      const oldest = p.outstanding.values().next().value;
      const sitting = oldest !== undefined && now - oldest.at > LOCAL_STALL_MS;
      const delivering = now - p.connectedAt < LOCAL_STALL_MS || p.down.rate() >= LOCAL_MIN_RATE;
      if (p.conn.peerChoking || avail === 'all' || sitting || !delivering) continue;
      if (p.seed) {
        avail = 'all';
        continue;
      }
      bits ??= new Uint8Array(this.core.meta.pieceCount);
      for (let i = 0; i < bits.length; i++) if (bits[i] === 0 && p.has.get(i)) bits[i] = 1;
    }
    avail ??= bits;
    let share: LocalView['share'];
    if (ours !== undefined && addresses.length > 0 && avail !== 'all') {
      const ranked = [...new Set([...addresses, ours])].sort(byAddress);
      const of = ranked.length;
      const mine = ranked.indexOf(ours);
      for (let i = mine; i < this.core.meta.pieceCount; i += of) {
        if (!this.picker.hasPiece(i) && !(avail !== undefined && avail[i] === 1)) {
          share = { of, mine };
          break;
        }
      }
    }
    this.localCache = { avail, share };
    return this.localCache;
  }

  /** True while the disk is behind (see WRITE_BACKLOG_BYTES); asking resumes once it caught up. */
  private diskBehind(): boolean {
    const behind = this.store.writeBacklog >= Math.max(WRITE_BACKLOG_BYTES, 2 * this.core.meta.pieceLength);
    if (behind) this.heldBack = true;
    return behind;
  }

  /** Asking was held back for the disk (diskBehind). */
  private heldBack = false;

  /** Tops up every peer, each guarded (a throw closes that peer only). */
  fillAll(): void {
    for (const p of [...this.core.peers.values()]) this.core.guard(p, 'fill', () => this.fill(p));
  }

  private dropOutstanding(peer: Peer): void {
    this.picker.peerGone(peer.pid);
    peer.outstanding.clear();
  }

  /** Every tick: a peer sitting on requests for long gets them taken back (snubbed); then top up. */
  tick(peer: Peer, now: number): void {
    let oldest = Infinity;
    for (const o of peer.outstanding.values()) oldest = Math.min(oldest, o.at);
    if (oldest !== Infinity && now - oldest > REQUEST_TIMEOUT_MS) {
      this.core.log.debug('peer snubbed us; re-requesting elsewhere', { peer: peer.address });
      for (const o of peer.outstanding.values()) peer.conn.cancel(o.req.index, o.req.begin, o.req.length);
      this.dropOutstanding(peer);
    }
    this.fill(peer);
  }

  /** A peer closed: what it had and what we asked of it go. */
  peerGone(peer: Peer): void {
    if (peer.seed) this.picker.peerSeed(-1);
    else this.picker.peerBitfield(peer.has, -1);
    this.dropOutstanding(peer);
    this.assembler.peerGone(peer.pid);
  }

  onBlock(peer: Peer, index: number, begin: number, block: Buffer): void {
    const picker = this.picker;
    const k = blockKey(index, begin);
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
      for (const p of this.core.peers.values()) {
        if (p.pid === other && p.outstanding.delete(k)) p.conn.cancel(index, begin, block.length);
      }
    }
    if (res.pieceDone) this.finishPiece(index).catch((err: unknown) => this.core.fail('piece write', err));
    this.fill(peer);
  }

  private async finishPiece(index: number): Promise<void> {
    const picker = this.picker;
    const list = [...this.core.peers.values()];
    const v = this.assembler.finish(index, [...list.map((p) => p.pid), ...this.web.keys()]);
    if (!v.ok) {
      picker.pieceFailed(index);
      const byPid = new Map(list.map((p) => [p.pid, p]));
      const who = v.contributors.map((pid) => byPid.get(pid)?.address ?? this.web.get(pid) ?? pid);
      this.core.log.warn('piece failed its hash check; fetching it again', {
        piece: index,
        from: who.join(','),
      });
      this.hooks.pieceFailed(index, who);
      // A web seed holds the very file: one wrong piece it sent alone means a wrong file,
      // not a line error. With others in the piece, which one lied is not known: a good
      // seed beside a bad one must not go with it (both gone, nothing left to fetch from),
      // so a shared failure is a strike and WEB_STRIKES of them drop the seed.
      for (const pid of v.contributors) {
        if (!this.web.has(pid)) continue;
        const strikes = (this.webStrikes.get(pid) ?? 0) + 1;
        this.webStrikes.set(pid, strikes);
        if (v.contributors.length === 1 || strikes >= WEB_STRIKES) this.hooks.webFailed(pid, index);
      }
      for (const pid of v.ban) {
        const peer = byPid.get(pid);
        if (peer) this.hooks.ban(peer, `sent corrupt data (piece ${index})`);
      }
      for (const p of this.core.peers.values()) this.fill(p);
      return;
    }
    let back: Buffer | undefined;
    try {
      back = await this.store.writePiece(index, v.data, { move: true });
    } catch (err) {
      // Stopped meanwhile: the store refused what was still queued; nothing failed.
      if (this.core.isStopped()) return;
      picker.pieceFailed(index);
      this.hooks.writeFailed(index, err as Error);
      return;
    } finally {
      v.release(back);
    }
    if (this.core.isStopped()) return;
    if (this.heldBack && !this.diskBehind()) {
      this.heldBack = false;
      this.fillAll();
    }
    picker.pieceVerified(index);
    this.hooks.piece(index);
    for (const p of this.core.peers.values()) {
      if (!p.seed && !p.has.get(index)) p.pendingHaves.push(index);
    }
    if (picker.complete) {
      this.flushHaves();
      this.core.log.info('download complete', { bytes: this.core.meta.length });
      await this.store.sync().catch(() => undefined);
      await this.store.finishWriting();
      for (const p of this.core.peers.values()) {
        if (p.conn.amInterested) p.conn.notInterested();
        p.outstanding.clear();
        // Two seeds have nothing to say to each other.
        if (p.seed) p.conn.destroy();
      }
      this.hooks.complete();
    }
  }

  // ---- web seeds (BEP 19): sources that have every piece and no connection ----

  /** A web seed joins; `label` names it in logs (its URL). */
  webJoin(pid: string, label: string): void {
    if (this.web.has(pid)) return;
    this.web.set(pid, label);
    this.picker.peerSeed(1);
  }

  /** A web seed leaves: what it was asked goes back to the others. */
  webGone(pid: string): void {
    if (!this.web.delete(pid)) return;
    this.picker.peerSeed(-1);
    this.picker.peerGone(pid);
    this.assembler.peerGone(pid);
  }

  /** Up to `max` blocks for a web seed to fetch (no endgame duplicates: peers finish those). */
  webPick(pid: string, max: number): BlockRequest[] {
    if (!this.web.has(pid) || this.core.isStopped() || this.picker.complete || this.diskBehind()) return [];
    return this.picker.pick({ id: pid, has: () => true }, max, 0);
  }

  /** Blocks a web seed could not fetch: asked of others (or of it again) later. */
  webDropped(pid: string, reqs: readonly BlockRequest[]): void {
    for (const r of reqs) this.picker.requestDropped(r.index, r.begin, pid);
  }

  /** A block a web seed fetched, as asked (the caller checked its length). */
  webBlock(pid: string, r: BlockRequest, block: Buffer): void {
    if (!this.web.has(pid) || this.core.isStopped()) return;
    this.down.add(block.length);
    const res = this.picker.blockReceived(r.index, r.begin, pid);
    if (!res.wanted) {
      this.wasted += block.length;
      return;
    }
    this.assembler.add(r.index, r.begin, block, pid);
    const k = blockKey(r.index, r.begin);
    for (const other of res.cancelFrom) {
      for (const p of this.core.peers.values()) {
        if (p.pid === other && p.outstanding.delete(k)) p.conn.cancel(r.index, r.begin, block.length);
      }
    }
    if (res.pieceDone) this.finishPiece(r.index).catch((err: unknown) => this.core.fail('piece write', err));
  }

  /** Connected peers that unchoke us: what a web seed weighs against. */
  unchokingPeers(): number {
    let n = 0;
    for (const p of this.core.peers.values()) if (!p.conn.peerChoking && p.conn.isOpen) n++;
    return n;
  }

  /**
   * Tells every peer of the pieces verified since the last flush, in one
   * write each. One `have` per piece per peer was one TCP segment (and its
   * ACK) each: at N = 32 about a fifth of all packets on the emulated LAN,
   * each paid for in veth, bridge and tbf (bench:swarm).
   */
  flushHaves(): void {
    for (const p of this.core.peers.values()) {
      if (p.pendingHaves.length === 0) continue;
      const news = p.seed ? [] : p.pendingHaves.filter((i) => !p.has.get(i));
      p.pendingHaves = [];
      if (news.length > 0 && p.conn.isOpen) p.conn.haveMany(news);
    }
  }
}
