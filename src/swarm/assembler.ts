/**
 * Pieces being downloaded: their buffers, who sent each one's blocks, the
 * hash check when the last block is in, and who gets a strike (and a ban)
 * when it fails. Pure, like the picker (STYLE.md lesson 7): no sockets,
 * timers, storage or logging; the session writes good pieces and carries
 * out the bans.
 */

/** Strikes that ban a peer (see PieceAssembler.finish). */
export const BAN_STRIKES = 3;
/** Assembly buffers kept for reuse (pieces being written at once rarely exceed a few). */
export const SPARE_BUFFERS = 8;

export interface AssemblerOptions {
  readonly pieceLength: number;
  readonly pieceSize: (index: number) => number;
  /** True when `data` is piece `index` as the torrent has it (storage's pieceMatches: SHA-1, BEP 3). */
  readonly check: (index: number, data: Buffer) => boolean;
  /** Strikes that ban a peer (default BAN_STRIKES). */
  readonly banStrikes?: number;
  /** Buffers kept for reuse (default SPARE_BUFFERS). */
  readonly spareBuffers?: number;
}

interface Assembly {
  readonly buf: Buffer;
  /** The pooled piece-length buffer `buf` is a view of. */
  readonly backing: Buffer;
  readonly contributors: Set<string>;
}

/**
 * A piece whose hash matched: write `data`, then release() its buffer for
 * reuse. If the write moved `data`'s memory away (PieceStore.writePiece's
 * `move`), pass what came back, if anything.
 */
export interface GoodPiece {
  readonly ok: true;
  readonly data: Buffer;
  readonly release: (back?: Buffer) => void;
}

/**
 * A piece whose hash failed: `contributors` are the connected peers that
 * sent blocks of it (in the order given), `ban` those of them now at the
 * strike limit. Its buffer is already back in the pool.
 */
export interface BadPiece {
  readonly ok: false;
  readonly contributors: readonly string[];
  readonly ban: readonly string[];
}

export class PieceAssembler {
  private readonly opts: AssemblerOptions;
  private readonly banStrikes: number;
  private readonly maxSpare: number;
  private readonly assemblies = new Map<number, Assembly>();
  /**
   * Assembly buffers of finished pieces, reused: a fresh buffer per piece
   * turns into garbage V8 frees late, ~100 MB of RSS at full speed.
   */
  private readonly spare: Buffer[] = [];
  /** Strikes by peer id (the session's per-connection id). */
  private readonly strikes = new Map<string, number>();
  private failures = 0;

  constructor(options: AssemblerOptions) {
    this.opts = options;
    this.banStrikes = options.banStrikes ?? BAN_STRIKES;
    this.maxSpare = options.spareBuffers ?? SPARE_BUFFERS;
  }

  /** Pieces that failed their hash check so far. */
  get hashFailures(): number {
    return this.failures;
  }

  /** Pieces with blocks in, not finished yet. */
  get pending(): number {
    return this.assemblies.size;
  }

  /** Buffers waiting for reuse. */
  get spareCount(): number {
    return this.spare.length;
  }

  /** Strikes a peer holds. */
  strikesOf(peer: string): number {
    return this.strikes.get(peer) ?? 0;
  }

  /**
   * Copies a block the picker wanted into its piece. The picker checked
   * that it lies inside the piece (it asked for it).
   */
  add(index: number, begin: number, block: Buffer, peer: string): void {
    let a = this.assemblies.get(index);
    if (!a) {
      // Its own ArrayBuffer (never Node's shared pool): the disk writer may move it to its thread.
      const backing = this.spare.pop() ?? Buffer.from(new ArrayBuffer(this.opts.pieceLength));
      a = { buf: backing.subarray(0, this.opts.pieceSize(index)), backing, contributors: new Set() };
      this.assemblies.set(index, a);
    }
    block.copy(a.buf, begin);
    a.contributors.add(peer);
  }

  /**
   * Checks a piece whose last block is in (the picker said pieceDone). On a
   * mismatch, a sole contributor is certainly guilty and reaches the strike
   * limit at once; several share the suspicion, a strike each. `connected`:
   * the peers still connected, in the order the session knows them; only
   * they are named and struck.
   */
  finish(index: number, connected: readonly string[]): GoodPiece | BadPiece {
    const a = this.assemblies.get(index);
    if (!a) throw new Error(`piece ${index} has no blocks`);
    this.assemblies.delete(index);
    const release = (back?: Buffer) => {
      // Moved to the disk writer: `back` is its memory returned, or it is gone (empty here).
      const buf = back ?? a.backing;
      if (buf.length === this.opts.pieceLength && this.spare.length < this.maxSpare) this.spare.push(buf);
    };
    if (this.opts.check(index, a.buf)) return { ok: true, data: a.buf, release };
    release();
    this.failures++;
    const contributors = connected.filter((p) => a.contributors.has(p));
    const ban: string[] = [];
    for (const p of contributors) {
      const n = this.strikesOf(p) + (contributors.length === 1 ? this.banStrikes : 1);
      this.strikes.set(p, n);
      if (n >= this.banStrikes) ban.push(p);
    }
    return { ok: false, contributors, ban };
  }

  /** A peer is gone: its strikes go with it (the ban, if any, is the dialer's). */
  peerGone(peer: string): void {
    this.strikes.delete(peer);
  }
}
