/**
 * The piece picker (STYLE.md lesson 7): a pure class that decides which
 * blocks to request from which peer. No sockets, no timers; the swarm tells
 * it what peers have and what arrived, and asks it for requests.
 *
 * Order of preference for a peer:
 *  1. blocks of pieces already in progress that the peer has (finish what is
 *     started: fewer partial pieces, earlier verification, earlier sharing);
 *  2. a new piece: highest priority first (a kernel before a root file
 *     system); then, for the first `randomFirst` pieces, a random one (so
 *     that clients starting at the same moment fetch different pieces and
 *     have something to trade at once); after that the rarest (BEP 3's
 *     rarest-first), ties broken at random;
 *  3. endgame: when every missing piece is fully requested, blocks already
 *     requested from another peer, at most `endgameDuplicates` copies each,
 *     so one slow peer cannot hold back the last piece.
 */
import type { Bitfield } from '../wire/bitfield.js';

export const BLOCK_SIZE = 16 * 1024;

export interface BlockRequest {
  readonly index: number;
  readonly begin: number;
  readonly length: number;
}

export interface PickerOptions {
  pieceCount: number;
  pieceLength: number;
  totalLength: number;
  blockSize?: number;
  /** Pieces picked at random before switching to rarest-first (default 4). */
  randomFirst?: number;
  /** Per-piece priority; higher is fetched first (default all 0). */
  priority?: (index: number) => number;
  /** Outstanding requests per block allowed in endgame (default 2). */
  endgameDuplicates?: number;
  /** Random source in [0, 1); injectable so tests are deterministic. */
  random?: () => number;
}

/** What a peer has, as the picker needs it. */
export interface PeerPieces {
  readonly id: string;
  has(index: number): boolean;
}

const FREE = 0;
const REQUESTED = 1;
const RECEIVED = 2;

interface Partial {
  readonly index: number;
  readonly state: Uint8Array;
  /** Peers each block is requested from (endgame can have several). */
  readonly requesters: (string[] | undefined)[];
  received: number;
  free: number;
}

export class PiecePicker {
  readonly pieceCount: number;
  private readonly pieceLength: number;
  private readonly totalLength: number;
  private readonly blockSize: number;
  private readonly randomFirst: number;
  private readonly priority: (i: number) => number;
  private readonly endgameDuplicates: number;
  private readonly random: () => number;
  private readonly have: Uint8Array;
  private haveCount = 0;
  /** How many connected peers have each piece (have-all peers counted in `seeds`). */
  private readonly availability: Uint32Array;
  private seeds = 0;
  private readonly partials = new Map<number, Partial>();
  private readonly hasPriorities: boolean;

  constructor(options: PickerOptions, have?: Bitfield) {
    this.pieceCount = options.pieceCount;
    this.pieceLength = options.pieceLength;
    this.totalLength = options.totalLength;
    this.blockSize = options.blockSize ?? BLOCK_SIZE;
    this.randomFirst = options.randomFirst ?? 4;
    this.priority = options.priority ?? (() => 0);
    this.hasPriorities = options.priority !== undefined;
    this.endgameDuplicates = options.endgameDuplicates ?? 2;
    this.random = options.random ?? Math.random;
    this.have = new Uint8Array(this.pieceCount);
    this.availability = new Uint32Array(this.pieceCount);
    if (have) {
      for (let i = 0; i < this.pieceCount; i++) {
        if (have.get(i)) {
          this.have[i] = 1;
          this.haveCount++;
        }
      }
    }
  }

  get complete(): boolean {
    return this.haveCount === this.pieceCount;
  }

  get piecesHave(): number {
    return this.haveCount;
  }

  hasPiece(index: number): boolean {
    return this.have[index] === 1;
  }

  /** Bytes in piece `index` (the last one may be short). */
  pieceSize(index: number): number {
    return index === this.pieceCount - 1 ? this.totalLength - index * this.pieceLength : this.pieceLength;
  }

  private blocksIn(index: number): number {
    return Math.ceil(this.pieceSize(index) / this.blockSize);
  }

  // --- availability -------------------------------------------------------

  peerHasPiece(index: number): void {
    this.availability[index]!++;
  }

  peerLostPiece(index: number): void {
    if (this.availability[index]! > 0) this.availability[index]!--;
  }

  /** A peer's whole bitfield joined (+1) or left (-1). */
  peerBitfield(bits: Bitfield, delta: 1 | -1): void {
    for (let i = 0; i < this.pieceCount; i++) {
      if (bits.get(i)) {
        if (delta === 1) this.availability[i]!++;
        else if (this.availability[i]! > 0) this.availability[i]!--;
      }
    }
  }

  /** A peer that has everything (BEP 6 have-all, or a full bitfield) joined or left. */
  peerSeed(delta: 1 | -1): void {
    this.seeds = Math.max(0, this.seeds + delta);
  }

  /** Peers known to have piece `index`. */
  availabilityOf(index: number): number {
    return this.availability[index]! + this.seeds;
  }

  /** True if the peer has a piece we still need. */
  isInteresting(peer: PeerPieces): boolean {
    if (this.complete) return false;
    for (let i = 0; i < this.pieceCount; i++) if (this.have[i] === 0 && peer.has(i)) return true;
    return false;
  }

  // --- picking ------------------------------------------------------------

  /** Up to `max` block requests for this peer; they are marked as requested from it. */
  pick(peer: PeerPieces, max: number, endgameMax = max, suggested?: Set<number>): BlockRequest[] {
    const out: BlockRequest[] = [];
    if (max <= 0 || this.complete) return out;
    // 0. pieces this peer suggested (BEP 6): a spreading seed names pieces
    // that have not left it yet. Spent suggestions are removed from the set.
    if (suggested) {
      for (const index of suggested) {
        if (out.length >= max) return out;
        const p =
          this.have[index] === 1 || !peer.has(index)
            ? undefined
            : (this.partials.get(index) ?? this.startPiece(index));
        if (p) this.takeFree(p, peer.id, max, out);
        if (!p || p.free === 0) suggested.delete(index);
      }
    }
    // 1. continue pieces in progress, highest priority and most complete first.
    const partials = [...this.partials.values()].filter((p) => p.free > 0 && peer.has(p.index));
    partials.sort((a, b) => this.priority(b.index) - this.priority(a.index) || b.received - a.received);
    for (const p of partials) {
      this.takeFree(p, peer.id, max, out);
      if (out.length >= max) return out;
    }
    // 2. new pieces.
    while (out.length < max) {
      const index = this.chooseNewPiece(peer);
      if (index < 0) break;
      const p = this.startPiece(index);
      this.takeFree(p, peer.id, max, out);
    }
    if (out.length > 0) return out;
    // 3. endgame: only when nothing is free anywhere this peer could serve.
    return this.pickEndgame(peer, Math.min(max, endgameMax));
  }

  private takeFree(p: Partial, peerId: string, max: number, out: BlockRequest[]): void {
    for (let b = 0; b < p.state.length && out.length < max; b++) {
      if (p.state[b] !== FREE) continue;
      p.state[b] = REQUESTED;
      p.requesters[b] = [peerId];
      p.free--;
      out.push(this.block(p.index, b));
    }
  }

  private block(index: number, b: number): BlockRequest {
    const begin = b * this.blockSize;
    return { index, begin, length: Math.min(this.blockSize, this.pieceSize(index) - begin) };
  }

  private startPiece(index: number): Partial {
    const n = this.blocksIn(index);
    const p: Partial = {
      index,
      state: new Uint8Array(n),
      requesters: new Array<string[] | undefined>(n),
      received: 0,
      free: n,
    };
    this.partials.set(index, p);
    return p;
  }

  /** A piece neither had nor started that the peer has; -1 if none. */
  private chooseNewPiece(peer: PeerPieces): number {
    const n = this.pieceCount;
    const start = Math.floor(this.random() * n);
    let best = -1;
    let bestPrio = -Infinity;
    let bestAvail = Infinity;
    const randomPhase = this.haveCount + this.partials.size < this.randomFirst;
    // One pass from a random offset: the first candidate found among equals
    // wins, which is a random tie-break without a second random draw.
    for (let k = 0; k < n; k++) {
      const i = (start + k) % n;
      if (this.have[i] === 1 || this.partials.has(i) || !peer.has(i)) continue;
      const prio = this.hasPriorities ? this.priority(i) : 0;
      if (prio < bestPrio) continue;
      if (randomPhase) {
        if (prio > bestPrio) {
          best = i;
          bestPrio = prio;
        }
        if (!this.hasPriorities) return i;
        continue;
      }
      const avail = this.availabilityOf(i);
      if (prio > bestPrio || avail < bestAvail) {
        best = i;
        bestPrio = prio;
        bestAvail = avail;
      }
    }
    return best;
  }

  private pickEndgame(peer: PeerPieces, max: number): BlockRequest[] {
    const out: BlockRequest[] = [];
    for (const p of this.partials.values()) {
      if (!peer.has(p.index)) continue;
      for (let b = 0; b < p.state.length && out.length < max; b++) {
        if (p.state[b] !== REQUESTED) continue;
        const who = p.requesters[b]!;
        if (who.includes(peer.id) || who.length >= this.endgameDuplicates) continue;
        who.push(peer.id);
        out.push(this.block(p.index, b));
      }
      if (out.length >= max) break;
    }
    return out;
  }

  /** True when every missing piece is started and none has a free block. */
  get inEndgame(): boolean {
    if (this.complete || this.haveCount + this.partials.size < this.pieceCount) return false;
    for (const p of this.partials.values()) if (p.free > 0) return false;
    return true;
  }

  // --- results ------------------------------------------------------------

  /**
   * A block arrived from `peerId`. Returns whether it was wanted, the other
   * peers it was also requested from (to cancel, in endgame), and whether
   * the piece now has every block (ready to verify).
   */
  blockReceived(
    index: number,
    begin: number,
    peerId: string,
  ): { wanted: boolean; cancelFrom: string[]; pieceDone: boolean } {
    const p = this.partials.get(index);
    const b = begin / this.blockSize;
    if (!p || !Number.isInteger(b) || b >= p.state.length || p.state[b] === RECEIVED) {
      return { wanted: false, cancelFrom: [], pieceDone: false };
    }
    if (p.state[b] === FREE) p.free--;
    const others = (p.requesters[b] ?? []).filter((id) => id !== peerId);
    p.state[b] = RECEIVED;
    p.requesters[b] = undefined;
    p.received++;
    return { wanted: true, cancelFrom: others, pieceDone: p.received === p.state.length };
  }

  /** A request to a peer will not be answered (reject, choke, disconnect). */
  requestDropped(index: number, begin: number, peerId: string): void {
    const p = this.partials.get(index);
    if (!p) return;
    const b = begin / this.blockSize;
    const who = p.requesters[b];
    if (p.state[b] !== REQUESTED || !who) return;
    const rest = who.filter((id) => id !== peerId);
    if (rest.length > 0) {
      p.requesters[b] = rest;
    } else {
      p.state[b] = FREE;
      p.requesters[b] = undefined;
      p.free++;
    }
  }

  /** Every request to this peer is dropped (it choked us or went away). */
  peerGone(peerId: string): void {
    for (const p of this.partials.values()) {
      for (let b = 0; b < p.state.length; b++) {
        if (p.state[b] === REQUESTED && p.requesters[b]?.includes(peerId)) {
          this.requestDropped(p.index, b * this.blockSize, peerId);
        }
      }
    }
  }

  /** The piece passed its hash check and is stored. */
  pieceVerified(index: number): void {
    this.partials.delete(index);
    if (this.have[index] === 0) {
      this.have[index] = 1;
      this.haveCount++;
    }
  }

  /** The piece failed its hash check: fetch it again from scratch. */
  pieceFailed(index: number): void {
    this.partials.delete(index);
  }

  /** Pieces in progress (for stats and tests). */
  get inProgress(): number {
    return this.partials.size;
  }
}
