/**
 * What we do with a peer's requests: serve, reject, ignore or close, and
 * the `spread` seed policy behind it; the per-peer upload queue; the upload
 * token bucket. Pure, like the picker and the choker (STYLE.md lesson 7):
 * state in, decisions out, no sockets, timers or logging. The session asks
 * and carries the answers out on the wire.
 */
import type { BlockRequest } from './picker.js';

/** Largest block we serve; a bigger request is a protocol violation (BEP 3 peers ask for 16 KiB). */
export const MAX_BLOCK = 128 * 1024;
/** Requests queued per peer; more are rejected (BEP 6) or ignored. Also our reqq (BEP 10). */
export const MAX_UPLOAD_QUEUE = 4096;

const uploadKey = (r: BlockRequest) => `${r.index}:${r.begin}:${r.length}`;

/**
 * One peer's requests to us, in order, plus what the seed policy keeps
 * about that peer. Cancels and membership tests cost O(1) on the index:
 * a flood of cancels for requests we do not hold scanned the whole queue
 * (up to MAX_UPLOAD_QUEUE) each.
 */
export class UploadQueue {
  private readonly items: BlockRequest[] = [];
  /** The same requests by "index:begin:length", a count each. */
  private readonly keys = new Map<string, number>();
  /** Pieces we (as a spreading seed) began sending to this peer. */
  readonly servedPieces = new Set<number>();

  get length(): number {
    return this.items.length;
  }

  push(r: BlockRequest): void {
    this.items.push(r);
    const k = uploadKey(r);
    this.keys.set(k, (this.keys.get(k) ?? 0) + 1);
  }

  /** The next request to serve, taken off the queue. */
  shift(): BlockRequest | undefined {
    const r = this.items.shift();
    if (r) this.forget(r);
    return r;
  }

  /** A peer's cancel (BEP 3): true if the request was queued and is now gone. */
  cancel(r: BlockRequest): boolean {
    if (!this.keys.has(uploadKey(r))) return false;
    const i = this.items.findIndex(
      (u) => u.index === r.index && u.begin === r.begin && u.length === r.length,
    );
    if (i < 0) return false;
    this.forget(this.items.splice(i, 1)[0]!);
    return true;
  }

  /** Empties the queue; returns what was in it (to reject, BEP 6, after a choke). */
  clear(): BlockRequest[] {
    const out = this.items.splice(0);
    this.keys.clear();
    return out;
  }

  private forget(r: BlockRequest): void {
    const k = uploadKey(r);
    const n = (this.keys.get(k) ?? 1) - 1;
    if (n <= 0) this.keys.delete(k);
    else this.keys.set(k, n);
  }
}

/** What the session knows about a request when it arrives. */
export interface RequestContext {
  /** We are choking the peer. */
  readonly amChoking: boolean;
  /** The peer speaks the Fast extension (BEP 6): rejects and suggestions. */
  readonly fast: boolean;
  /** We have (verified) the piece asked for. */
  readonly havePiece: boolean;
  /** What the peer has, so a suggestion names a piece it lacks. */
  readonly peerHas: (index: number) => boolean;
}

/**
 * The answer to a request. `close`: outside the piece, a protocol
 * violation. `reject`: send a BEP 6 reject, and a suggestion if one is
 * named. `ignore`: a peer without the Fast extension gets no answer
 * (BEP 3 has no reject). `queued`: in the peer's UploadQueue, to serve.
 */
export type RequestDecision =
  | { readonly action: 'close' }
  | { readonly action: 'reject'; readonly suggest?: number }
  | { readonly action: 'ignore' }
  | { readonly action: 'queued' };

export interface SeedPolicyOptions {
  readonly pieceCount: number;
  readonly pieceSize: (index: number) => number;
  /**
   * `spread` (see SessionOptions.seedPolicy): only for a complete seed;
   * rejects a request for a piece already sent to another peer while
   * others never left us, and suggests one that has not.
   */
  readonly spread: boolean;
  /** Requests queued per peer (default MAX_UPLOAD_QUEUE). */
  readonly maxQueue?: number;
}

/** Decides each incoming request; holds the `spread` state across peers. */
export class SeedPolicy {
  private readonly opts: SeedPolicyOptions;
  private readonly maxQueue: number;
  /** `spread`: pieces sent at least once, and how many were not. */
  private readonly sentOnce: Uint8Array | undefined;
  private unsent: number;
  private suggestCursor = 0;

  constructor(options: SeedPolicyOptions) {
    this.opts = options;
    this.maxQueue = options.maxQueue ?? MAX_UPLOAD_QUEUE;
    this.sentOnce = options.spread ? new Uint8Array(options.pieceCount) : undefined;
    this.unsent = options.spread ? options.pieceCount : 0;
  }

  /** Pieces that never left us (spread only; 0 otherwise). */
  get unsentPieces(): number {
    return this.unsent;
  }

  /** Decides a request of `queue`'s peer; a `queued` request is in `queue`. */
  request(queue: UploadQueue, r: BlockRequest, ctx: RequestContext): RequestDecision {
    const valid =
      r.index < this.opts.pieceCount &&
      r.length > 0 &&
      r.length <= MAX_BLOCK &&
      r.begin + r.length <= this.opts.pieceSize(r.index);
    if (!valid) return { action: 'close' };
    if (ctx.amChoking || !ctx.havePiece || queue.length >= this.maxQueue) {
      return ctx.fast ? { action: 'reject' } : { action: 'ignore' };
    }
    if (this.spreading(queue, r.index, ctx.fast)) {
      const suggest = this.suggestUnsent(ctx.peerHas);
      return suggest === undefined ? { action: 'reject' } : { action: 'reject', suggest };
    }
    queue.push(r);
    return { action: 'queued' };
  }

  /**
   * The `spread` seed policy: true when this request should be rejected
   * because the piece already went to another peer while others never left
   * us. A piece already begun for this peer is always finished. Needs the
   * Fast extension: without rejects a peer would wait on the request.
   */
  private spreading(queue: UploadQueue, index: number, fast: boolean): boolean {
    const sent = this.sentOnce;
    if (!sent || !fast) return false;
    if (queue.servedPieces.has(index)) return false;
    if (sent[index] === 1 && this.unsent > 0) return true;
    if (sent[index] === 0) {
      sent[index] = 1;
      this.unsent--;
    }
    queue.servedPieces.add(index);
    return false;
  }

  /**
   * After a `spread` reject, names a piece that has not left us yet (BEP 6
   * Suggest Piece), so the peer asks for that instead of guessing: without
   * it, leechers kept asking the seed for pieces they were already getting
   * from each other, and the server sat idle behind its rejects for ten
   * seconds and more at N = 32 (bench:swarm). Successive suggestions name
   * different pieces, so peers rejected together spread over what is left.
   */
  private suggestUnsent(peerHas: (index: number) => boolean): number | undefined {
    const sent = this.sentOnce!;
    for (let k = 0; k < sent.length; k++) {
      const i = (this.suggestCursor + k) % sent.length;
      if (sent[i] === 0 && !peerHas(i)) {
        this.suggestCursor = i + 1;
        return i;
      }
    }
    return undefined;
  }
}

/**
 * The upload cap (SessionOptions.uploadLimit) as a token bucket. The
 * session calls refill() ten times a second; ten refills a second keep
 * bursts small. No timers here, so tests drive it refill by refill.
 */
export class UploadBucket {
  private readonly limit: number;
  private tokens = 0;
  private readonly waiters: (() => void)[] = [];

  /** `limit`: bytes per second. */
  constructor(limit: number) {
    this.limit = limit;
  }

  /** Tokens at hand (negative after a release() of waiters at stop). */
  get available(): number {
    return this.tokens;
  }

  /** Requests waiting for tokens. */
  get waiting(): number {
    return this.waiters.length;
  }

  /** Resolves when `n` bytes may be sent. */
  take(n: number): Promise<void> {
    if (this.tokens >= n) {
      this.tokens -= n;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      this.waiters.push(() => {
        this.tokens -= n;
        resolve();
      });
    });
  }

  /**
   * A tenth of a second's tokens, up to half a second's plus a block. A
   * waiter goes on once an eighth of a block is at hand; its take may leave
   * the bucket in debt, paid back by the next refills.
   */
  refill(): void {
    this.tokens = Math.min(this.tokens + this.limit / 10, this.limit / 2 + MAX_BLOCK);
    while (this.waiters.length > 0 && this.tokens >= MAX_BLOCK / 8) this.waiters.shift()!();
  }

  /** Lets every waiter go (the session is stopping; their serve loops then end). */
  release(): void {
    for (const w of this.waiters.splice(0)) w();
  }
}
