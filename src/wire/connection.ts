/**
 * One peer wire connection (BEP 3, 6, 10, 11) over any Node duplex stream: a
 * net.Socket in production, an in-memory pair in tests (STYLE.md lesson 6).
 * It owns the handshake, framing, keep-alives, the idle timeout and the
 * choke/interest/bitfield state; what to request, whom to unchoke and when
 * to send PEX are the swarm's decisions, made through the methods here.
 *
 * Errors: a malformed message, a timeout or a refused infohash destroys this
 * connection only and emits `error` with a BootTorrentError, then `close`.
 * Attach an `error` listener (EventEmitter throws otherwise).
 */
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { BootTorrentError } from '../errors.js';
import { PEER_LIMITS } from '../limits.js';
import { Bitfield } from './bitfield.js';
import {
  FAST_MESSAGE_TYPES,
  HANDSHAKE_HEAD_LENGTH,
  HANDSHAKE_LENGTH,
  MessageDecoder,
  MessageId,
  decodeExtendedHandshake,
  decodeHandshakeHead,
  decodePex,
  encodeExtendedHandshake,
  encodeHandshake,
  encodeMessage,
  encodePex,
  encodePieceHeader,
  reservedBytes,
  supportsExtended,
  supportsFast,
  type BlockRef,
  type DecodedExtendedHandshake,
  type ExtendedHandshake,
  type PexMessage,
  type WireMessage,
  type WireMessageType,
} from './codec.js';

/** A running byte count several connections add to. */
export interface ByteTally {
  bytes: number;
}

export interface PeerConnectionOptions {
  /** Our 20-byte peer id. */
  peerId: Buffer;
  /** True if we opened the connection: BEP 3 has the initiator send its handshake first. */
  initiator: boolean;
  /**
   * The torrent. Required for an initiator. A responder without it must
   * pass onInfoHash; with it (and no onInfoHash) it accepts only this one.
   */
  infoHash?: Buffer;
  /**
   * Responder only: decides from the peer's infohash whether we serve that
   * torrent, before we send our handshake, so one listener serves many.
   */
  onInfoHash?: (infoHash: Buffer) => boolean | Promise<boolean>;
  /** Offer BEP 6 Fast Extension (default true). */
  fast?: boolean;
  /** Offer BEP 10 extension protocol (default true). */
  extended?: boolean;
  /** Pieces in the torrent, if known; else call setPieceCount() once metadata arrives. */
  pieceCount?: number;
  /** Send a keep-alive after this long without sending anything (ms, default 75 s; BEP 3 suggests 2 min). */
  keepAliveInterval?: number;
  /** Close after this long without receiving anything (ms, default 180 s). */
  idleTimeout?: number;
  /** Close if the handshake is not complete this long after construction (ms, default 30 s); data does not extend it. */
  handshakeTimeout?: number;
  /** Largest message accepted (see DEFAULT_MAX_MESSAGE_LENGTH). */
  maxMessageLength?: number;
  /** Adds every byte this connection sends, for an owner's total over many connections (#16). */
  tally?: ByteTally;
  /**
   * Bytes queued to a peer that does not read, past which the connection
   * is closed (default PEER_LIMITS.maxWriteBacklogBytes): a peer that sends
   * requests and never reads would have each answered (a reject, a
   * metadata piece) into memory without end.
   */
  maxWriteBacklog?: number;
  /** Aborting destroys the connection (a `close` without an `error`). */
  signal?: AbortSignal;
}

/** What the peer said in its handshake. */
export interface RemoteHandshake {
  infoHash: Buffer;
  peerId: Buffer;
  reserved: Buffer;
  /** Both sides offered BEP 6. */
  fast: boolean;
  /** Both sides offered BEP 10. */
  extended: boolean;
}

type MessageEvents = { [K in WireMessageType]: [Extract<WireMessage, { type: K }>] };

/** Each message type is an event carrying that message; plus these. */
export interface PeerConnectionEvents extends MessageEvents {
  handshake: [RemoteHandshake];
  /** Any message, after its own event. */
  message: [WireMessage];
  /** BEP 10 id 0, decoded. Also emitted as `extended`. */
  'extended-handshake': [DecodedExtendedHandshake];
  /** BEP 11 ut_pex, decoded, when it arrives under the id we advertised. */
  pex: [PexMessage];
  /** The stream accepted all buffered writes (see writableNeedDrain). */
  drain: [];
  error: [BootTorrentError];
  close: [];
}

type State = 'handshake' | 'checking' | 'open' | 'closed';

const KEEP_ALIVE = encodeMessage({ type: 'keep-alive' });
/**
 * Extension names kept per peer (BEP 10 `m`). Real clients name a handful;
 * since a later handshake only adds to the names, a peer sending handshake
 * after handshake of new names grew this map (and the copy made per
 * handshake) without bound.
 */
const MAX_REMOTE_EXTENSIONS = 128;
/** Haves held while the piece count is unknown; a real peer sends at most one per piece. */
const MAX_PENDING_HAVES = 1 << 20;

/** A message that keeps no bytes of a reused read buffer, except a piece's block (see feed()). */
function detach(msg: WireMessage): WireMessage {
  switch (msg.type) {
    case 'bitfield':
      return { ...msg, bits: Buffer.from(msg.bits) };
    case 'extended':
    case 'unknown':
      return { ...msg, payload: Buffer.from(msg.payload) };
    default:
      return msg;
  }
}

export class PeerConnection extends EventEmitter<PeerConnectionEvents> {
  /** We are choking the peer (BEP 3: both sides start choked and not interested). */
  amChoking = true;
  amInterested = false;
  peerChoking = true;
  peerInterested = false;
  /** The peer's pieces; null while the piece count is unknown. */
  remoteBitfield: Bitfield | null = null;
  /** The peer's handshake, once received. */
  remote: RemoteHandshake | null = null;
  /**
   * The peer's extended handshake, once received. Its `m` holds only the
   * extensions the peer has enabled: BEP 10 lets a later handshake change
   * single entries, and an id of 0 means disabled, so a name mapped to 0 is
   * left out (sending under id 0 would be a second extended handshake).
   */
  remoteExtensions: DecodedExtendedHandshake | null = null;
  /** Extension name -> id we advertised in our extended handshake. */
  localExtensions = new Map<string, number>();

  private readonly stream: Duplex;
  private readonly opts: PeerConnectionOptions;
  private infoHashValue: Buffer | null;
  private state: State = 'handshake';
  private hsBuf: Buffer = Buffer.alloc(0);
  private headDone = false;
  private readonly decoder: MessageDecoder;
  private pieceCountValue: number | null;
  /** Bitfield-type message held until the piece count is known. */
  private pendingPieces: Buffer | 'all' | 'none' | null = null;
  private pendingHaves = new Set<number>();
  private keepAliveTimer: NodeJS.Timeout | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
  private readonly onAbort = () => this.destroy();

  constructor(stream: Duplex, options: PeerConnectionOptions) {
    super();
    if (options.peerId.length !== 20) throw new RangeError('peerId must be 20 bytes');
    if (options.initiator && !options.infoHash) {
      throw new BootTorrentError('BT_ERR_WIRE_STATE', 'an initiating PeerConnection needs infoHash');
    }
    if (!options.initiator && !options.infoHash && !options.onInfoHash) {
      throw new BootTorrentError(
        'BT_ERR_WIRE_STATE',
        'a responding PeerConnection needs infoHash or onInfoHash',
      );
    }
    this.stream = stream;
    this.opts = options;
    this.infoHashValue = options.initiator ? options.infoHash! : null;
    this.decoder = new MessageDecoder(
      options.maxMessageLength === undefined ? {} : { maxLength: options.maxMessageLength },
    );
    this.pieceCountValue = options.pieceCount ?? null;
    if (this.pieceCountValue !== null) this.remoteBitfield = new Bitfield(this.pieceCountValue);

    stream.on('data', this.onData);
    stream.on('end', this.onEnd);
    stream.on('error', this.onStreamError);
    stream.on('close', this.onStreamClose);
    stream.on('drain', this.onDrain);
    this.idleTimer = setTimeout(
      () => this.destroy(new BootTorrentError('BT_ERR_WIRE_TIMEOUT', 'no complete handshake in time')),
      options.handshakeTimeout ?? 30_000,
    );
    if (options.signal) {
      if (options.signal.aborted) {
        queueMicrotask(() => this.destroy());
      } else {
        options.signal.addEventListener('abort', this.onAbort, { once: true });
      }
    }
    if (options.initiator) this.sendHandshake();
  }

  /** The torrent's infohash (a responder learns it from the peer). */
  get infoHash(): Buffer | null {
    return this.infoHashValue;
  }

  get pieceCount(): number | null {
    return this.pieceCountValue;
  }

  /** Handshake done and not closed. */
  get isOpen(): boolean {
    return this.state === 'open';
  }

  get destroyed(): boolean {
    return this.state === 'closed';
  }

  /** BEP 6 negotiated by both sides. */
  get fast(): boolean {
    return this.remote?.fast ?? false;
  }

  /** BEP 10 negotiated by both sides. */
  get extended(): boolean {
    return this.remote?.extended ?? false;
  }

  /** True when the stream holds more than its high-water mark: wait for `drain` before sending blocks. */
  get writableNeedDrain(): boolean {
    return this.stream.writableNeedDrain;
  }

  /** Bytes queued in the stream, not yet handed to the OS. */
  get bufferedAmount(): number {
    return this.stream.writableLength;
  }

  /** Resolves when writes are no longer buffered; rejects if the connection closes first. */
  drained(): Promise<void> {
    if (this.destroyed) {
      return Promise.reject(new BootTorrentError('BT_ERR_WIRE_CLOSED', 'connection is closed'));
    }
    if (!this.stream.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = () => {
        this.off('drain', done);
        this.off('close', closed);
        resolve();
      };
      const closed = () => {
        this.off('drain', done);
        reject(new BootTorrentError('BT_ERR_WIRE_CLOSED', 'connection closed while waiting for drain'));
      };
      this.once('drain', done);
      this.once('close', closed);
    });
  }

  /** Stops reading (messages already decoded from the current chunk are still emitted). */
  pause(): void {
    this.stream.pause();
  }

  resume(): void {
    if (this.state !== 'checking') this.stream.resume();
  }

  /**
   * Sets the piece count once known (e.g. after BEP 9 metadata), and
   * applies a bitfield and haves that arrived before. A bitfield that does
   * not fit the count destroys the connection, as on arrival.
   */
  setPieceCount(count: number): void {
    if (this.pieceCountValue !== null) {
      if (count === this.pieceCountValue) return;
      throw new BootTorrentError('BT_ERR_WIRE_STATE', `piece count already set to ${this.pieceCountValue}`);
    }
    this.pieceCountValue = count;
    try {
      const pending = this.pendingPieces;
      this.remoteBitfield =
        pending === 'all'
          ? Bitfield.full(count)
          : pending === null || pending === 'none'
            ? new Bitfield(count)
            : Bitfield.fromBytes(pending, count);
      for (const i of this.pendingHaves) this.applyHave(i);
    } catch (err) {
      this.destroy(err as BootTorrentError);
    } finally {
      this.pendingPieces = null;
      this.pendingHaves.clear();
    }
  }

  /** Closes the connection and its timers; with `err`, emits `error` first. Idempotent. */
  destroy(err?: BootTorrentError): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    if (this.keepAliveTimer) clearTimeout(this.keepAliveTimer);
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.keepAliveTimer = this.idleTimer = null;
    this.opts.signal?.removeEventListener('abort', this.onAbort);
    this.stream.off('data', this.onData);
    this.stream.off('end', this.onEnd);
    this.stream.off('close', this.onStreamClose);
    this.stream.off('drain', this.onDrain);
    // Keep a no-op error listener: a destroyed socket may still report ECONNRESET.
    this.stream.off('error', this.onStreamError);
    this.stream.on('error', () => {});
    this.stream.destroy();
    if (err) this.emit('error', err);
    this.emit('close');
  }

  // ------------------------------------------------------------- sending

  keepAlive(): boolean {
    return this.send(KEEP_ALIVE);
  }

  choke(): boolean {
    this.amChoking = true;
    return this.sendMsg({ type: 'choke' });
  }

  unchoke(): boolean {
    this.amChoking = false;
    return this.sendMsg({ type: 'unchoke' });
  }

  interested(): boolean {
    this.amInterested = true;
    return this.sendMsg({ type: 'interested' });
  }

  notInterested(): boolean {
    this.amInterested = false;
    return this.sendMsg({ type: 'not-interested' });
  }

  have(index: number): boolean {
    return this.sendMsg({ type: 'have', index });
  }

  /** Several `have` messages in one write (one TCP segment instead of one each). */
  haveMany(indices: readonly number[]): boolean {
    if (indices.length === 0) return !this.writableNeedDrain;
    return this.send(Buffer.concat(indices.map((index) => encodeMessage({ type: 'have', index }))));
  }

  /** Sends a BEP 3 bitfield. BEP 3 allows it only as the first message after the handshake. */
  bitfield(bits: Bitfield): boolean {
    return this.sendMsg({ type: 'bitfield', bits: bits.toBytes() });
  }

  /**
   * Announces our pieces the cheapest legal way: BEP 6 have-all/have-none
   * when negotiated, else a bitfield (omitted when empty, as BEP 3 allows).
   */
  announcePieces(bits: Bitfield): boolean {
    if (this.fast && bits.hasAll()) return this.haveAll();
    if (this.fast && bits.hasNone()) return this.haveNone();
    if (bits.hasNone()) return !this.writableNeedDrain;
    return this.bitfield(bits);
  }

  request(index: number, begin: number, length: number): boolean {
    return this.sendMsg({ type: 'request', index, begin, length });
  }

  /**
   * Several requests in one write: a leecher tops up hundreds at a time,
   * and one small write (a syscall and a TCP segment) per request was its
   * largest cost on a fast link.
   */
  requestMany(blocks: readonly BlockRef[]): boolean {
    if (blocks.length === 0) return !this.writableNeedDrain;
    const out = Buffer.allocUnsafe(17 * blocks.length);
    let at = 0;
    for (const b of blocks) {
      out.writeUInt32BE(13, at);
      out[at + 4] = MessageId.request;
      out.writeUInt32BE(b.index, at + 5);
      out.writeUInt32BE(b.begin, at + 9);
      out.writeUInt32BE(b.length, at + 13);
      at += 17;
    }
    return this.send(out);
  }

  cancel(index: number, begin: number, length: number): boolean {
    return this.sendMsg({ type: 'cancel', index, begin, length });
  }

  /**
   * Sends a block without copying it: header and block go out as one writev.
   * `onSent` runs once the stream is done with `block` (written, or dropped
   * because the connection closed), so its memory can be reused.
   */
  piece(index: number, begin: number, block: Buffer, onSent?: () => void): boolean {
    this.assertOpen();
    if (this.destroyed) {
      onSent?.();
      return false;
    }
    this.corkUntilNextTick();
    const header = encodePieceHeader(index, begin, block.length);
    this.count(header.length + block.length);
    this.stream.write(header);
    if (onSent) this.stream.write(block, () => onSent());
    else this.stream.write(block);
    this.keepAliveTimer?.refresh();
    this.overBacklog(0);
    return !this.stream.writableNeedDrain;
  }

  /** BEP 5 DHT port. */
  port(port: number): boolean {
    return this.sendMsg({ type: 'port', port });
  }

  suggest(index: number): boolean {
    return this.sendFast({ type: 'suggest', index });
  }

  haveAll(): boolean {
    return this.sendFast({ type: 'have-all' });
  }

  haveNone(): boolean {
    return this.sendFast({ type: 'have-none' });
  }

  reject(index: number, begin: number, length: number): boolean {
    return this.sendFast({ type: 'reject', index, begin, length });
  }

  allowedFast(index: number): boolean {
    return this.sendFast({ type: 'allowed-fast', index });
  }

  /** A raw BEP 10 message; `id` is the peer's id for the extension (0 = handshake). */
  extendedMessage(id: number, payload: Buffer): boolean {
    if (!this.extended) throw new BootTorrentError('BT_ERR_WIRE_STATE', 'BEP 10 was not negotiated');
    return this.sendMsg({ type: 'extended', id, payload });
  }

  /** Sends our extended handshake and remembers its `m` to route incoming extension messages. */
  sendExtendedHandshake(h: ExtendedHandshake): boolean {
    const payload = encodeExtendedHandshake(h);
    this.localExtensions = new Map(h.m);
    return this.extendedMessage(0, payload);
  }

  /** True when the peer's extended handshakes leave `name` enabled (BEP 10: a nonzero id). */
  supportsExtension(name: string): boolean {
    return this.remoteExtensions?.m.has(name) ?? false;
  }

  /**
   * Sends an extension message by name, under the id the peer advertised.
   * Returns false and sends nothing when the peer has not enabled it: what
   * the peer enables is remote input and may change between our check and
   * a timer's send (issue #14: a PEX tick threw here and ended the process).
   */
  sendExtension(name: string, payload: Buffer): boolean {
    const id = this.remoteExtensions?.m.get(name);
    if (!id || !this.extended) return false;
    return this.extendedMessage(id, payload);
  }

  sendPex(msg: PexMessage): boolean {
    return this.sendExtension('ut_pex', encodePex(msg));
  }

  private sendHandshake(): void {
    const reserved = reservedBytes({ fast: this.opts.fast ?? true, extended: this.opts.extended ?? true });
    const hs = encodeHandshake({ reserved, infoHash: this.infoHashValue!, peerId: this.opts.peerId });
    this.count(hs.length);
    this.stream.write(hs);
  }

  private assertOpen(): void {
    if (this.state === 'handshake' || this.state === 'checking') {
      throw new BootTorrentError('BT_ERR_WIRE_STATE', 'cannot send messages before the handshake completes');
    }
  }

  private sendFast(msg: WireMessage): boolean {
    if (!this.fast) throw new BootTorrentError('BT_ERR_WIRE_STATE', `${msg.type}: BEP 6 was not negotiated`);
    return this.sendMsg(msg);
  }

  private sendMsg(msg: WireMessage): boolean {
    return this.send(encodeMessage(msg));
  }

  private corked = false;
  /** Every byte handed to the stream: handshake, messages, blocks with their headers (#16's honest figures). */
  private sentBytes = 0;

  get bytesSent(): number {
    return this.sentBytes;
  }

  /** Our end's address when the stream is a socket (undefined for other streams). */
  get localAddress(): string | undefined {
    const a = (this.stream as { localAddress?: unknown }).localAddress;
    return typeof a === 'string' ? a.replace(/^::ffff:(?=\d+\.)/i, '') : undefined;
  }

  private count(bytes: number): void {
    this.sentBytes += bytes;
    if (this.opts.tally) this.opts.tally.bytes += bytes;
  }

  /**
   * Everything written in one tick goes out as one writev: the swarm answers
   * each block it receives with a request or two, and the blocks of one read
   * arrive in one tick, so without this every block cost a syscall and a
   * small TCP segment of its own (bench:swarm, N = 32: the CPU was the limit).
   */
  private corkUntilNextTick(): void {
    if (this.corked) return;
    this.corked = true;
    this.stream.cork();
    process.nextTick(this.uncork);
  }

  private readonly uncork = (): void => {
    this.corked = false;
    this.stream.uncork();
  };

  private overflowing = false;

  /**
   * Writes after close are dropped (false): the swarm may race a close,
   * which is not a bug. So are writes past the write backlog limit; the
   * connection is then closed on the next tick, outside the caller's loop.
   */
  private send(bytes: Buffer): boolean {
    this.assertOpen();
    if (this.destroyed || this.overflowing) return false;
    if (this.overBacklog(bytes.length)) return false;
    this.keepAliveTimer?.refresh();
    this.corkUntilNextTick();
    this.count(bytes.length);
    return this.stream.write(bytes);
  }
  /**
   * True, and the connection closed on the next tick (outside the caller's
   * loop), once what is queued to the peer plus `adding` bytes passes the
   * write backlog limit: a peer that sends requests and never reads.
   * Uploads wait for a drain, so an honest peer stays far below it.
   */
  private overBacklog(adding: number): boolean {
    if (this.overflowing) return true;
    const limit = this.opts.maxWriteBacklog ?? PEER_LIMITS.maxWriteBacklogBytes;
    if (this.stream.writableLength + adding <= limit) return false;
    this.overflowing = true;
    const queued = this.stream.writableLength;
    process.nextTick(() =>
      this.destroy(
        new BootTorrentError('BT_ERR_WIRE_PROTOCOL', `peer does not read: ${queued} bytes queued to it`),
      ),
    );
    return true;
  }

  // ----------------------------------------------------------- receiving

  /**
   * Bytes the owner read from the stream itself, e.g. a socket made with
   * net's `onread` option, which reads into one reused buffer instead of
   * allocating one per read (at hundreds of MB/s those buffers are garbage
   * V8 frees late: tens of MB of RSS). `chunk` may be overwritten once this
   * returns, so nothing of it is kept: `piece` blocks are views that
   * listeners must copy at once (the swarm does), other payloads are copied.
   */
  feed(chunk: Buffer): void {
    this.transient = true;
    this.decoder.reuseBodies = true;
    this.onData(chunk);
  }

  private transient = false;

  private readonly onData = (chunk: Buffer): void => {
    // Only the idle timer restarts on data: the handshake deadline counts
    // from the start, or a peer trickling a byte at a time keeps it forever.
    if (this.state === 'open') this.idleTimer?.refresh();
    try {
      if (this.state === 'open') {
        this.receive(chunk);
      } else if (this.state === 'handshake' || this.state === 'checking') {
        this.hsBuf = this.hsBuf.length === 0 && !this.transient ? chunk : Buffer.concat([this.hsBuf, chunk]);
        if (this.state === 'handshake') this.advanceHandshake();
      }
    } catch (err) {
      this.destroy(
        err instanceof BootTorrentError
          ? err
          : new BootTorrentError(
              'BT_ERR_WIRE_PROTOCOL',
              `internal error handling peer data: ${String(err)}`,
              {
                cause: err,
              },
            ),
      );
    }
  };

  private advanceHandshake(): void {
    if (!this.headDone) {
      if (this.hsBuf.length < HANDSHAKE_HEAD_LENGTH) return;
      const head = decodeHandshakeHead(this.hsBuf);
      this.headDone = true;
      if (this.opts.initiator) {
        if (!head.infoHash.equals(this.infoHashValue!)) {
          throw new BootTorrentError('BT_ERR_WIRE_PROTOCOL', 'peer answered with a different infohash');
        }
      } else {
        this.checkInfoHash(head.infoHash);
        return;
      }
    }
    if (this.hsBuf.length < HANDSHAKE_LENGTH) return;
    this.finishHandshake();
  }

  /** Responder: asks onInfoHash (maybe asynchronously), pausing input meanwhile. */
  private checkInfoHash(infoHash: Buffer): void {
    const accept = (ok: boolean) => {
      if (this.destroyed) return;
      if (!ok) {
        this.destroy(
          new BootTorrentError(
            'BT_ERR_WIRE_UNKNOWN_TORRENT',
            `peer asked for unknown infohash ${infoHash.toString('hex')}`,
          ),
        );
        return;
      }
      this.infoHashValue = infoHash;
      this.sendHandshake();
      if (this.state === 'checking') {
        this.state = 'handshake';
        this.stream.resume();
      }
      if (this.hsBuf.length >= HANDSHAKE_LENGTH) this.finishHandshake();
    };
    const cb = this.opts.onInfoHash;
    if (!cb) {
      accept(infoHash.equals(this.opts.infoHash!));
      return;
    }
    const verdict = cb(infoHash);
    if (typeof verdict === 'boolean') {
      accept(verdict);
      return;
    }
    this.state = 'checking';
    this.stream.pause();
    verdict.then(
      (ok) => {
        try {
          accept(ok);
        } catch (err) {
          this.destroy(err as BootTorrentError);
        }
      },
      (err: unknown) =>
        this.destroy(new BootTorrentError('BT_ERR_WIRE_STATE', 'onInfoHash callback failed', { cause: err })),
    );
  }

  private finishHandshake(): void {
    const buf = this.hsBuf;
    const reserved = Buffer.from(buf.subarray(20, 28));
    const localFast = this.opts.fast ?? true;
    const localExt = this.opts.extended ?? true;
    this.remote = {
      infoHash: this.infoHashValue!,
      peerId: Buffer.from(buf.subarray(48, 68)),
      reserved,
      fast: localFast && supportsFast(reserved),
      extended: localExt && supportsExtended(reserved),
    };
    const rest = buf.subarray(HANDSHAKE_LENGTH);
    this.hsBuf = Buffer.alloc(0);
    this.state = 'open';
    if (this.idleTimer) clearTimeout(this.idleTimer);
    const idleMs = this.opts.idleTimeout ?? 180_000;
    this.idleTimer = setTimeout(
      () => this.destroy(new BootTorrentError('BT_ERR_WIRE_TIMEOUT', `nothing received for ${idleMs} ms`)),
      idleMs,
    );
    this.keepAliveTimer = setTimeout(() => {
      if (this.state === 'open') this.keepAlive();
    }, this.opts.keepAliveInterval ?? 75_000);
    this.emit('handshake', this.remote);
    if (rest.length > 0 && this.state === 'open') this.receive(rest);
  }

  private receive(chunk: Buffer): void {
    for (const decoded of this.decoder.push(chunk)) {
      const msg = this.transient ? detach(decoded) : decoded;
      const derived = this.handle(msg);
      // The typed map cannot follow a union key to its payload; the pair is consistent by construction.
      (this.emit as (event: string, msg: WireMessage) => boolean)(msg.type, msg);
      if (this.state !== 'open') return;
      this.emit('message', msg);
      if (this.state !== 'open') return;
      derived?.();
      if (this.state !== 'open') return;
    }
  }

  /**
   * State updates and the rules BEP 3 and BEP 6 put on incoming messages,
   * done before any listener runs. Returns the emit of a derived event
   * (decoded extended handshake or PEX), which follows the message's own.
   */
  private handle(msg: WireMessage): (() => void) | undefined {
    if (FAST_MESSAGE_TYPES.has(msg.type) && !this.fast) {
      // BEP 6: a peer that receives these without the extension negotiated MUST close.
      throw new BootTorrentError('BT_ERR_WIRE_PROTOCOL', `${msg.type} received but BEP 6 was not negotiated`);
    }
    switch (msg.type) {
      case 'choke':
        this.peerChoking = true;
        return undefined;
      case 'unchoke':
        this.peerChoking = false;
        return undefined;
      case 'interested':
        this.peerInterested = true;
        return undefined;
      case 'not-interested':
        this.peerInterested = false;
        return undefined;
      case 'have':
        if (this.remoteBitfield) this.applyHave(msg.index);
        else if (this.pendingHaves.size < MAX_PENDING_HAVES) this.pendingHaves.add(msg.index);
        else
          throw new BootTorrentError(
            'BT_ERR_WIRE_PROTOCOL',
            'too many have messages before the piece count is known',
          );
        return undefined;
      case 'bitfield':
      case 'have-all':
      case 'have-none':
        this.applyPieceSet(msg);
        return undefined;
      case 'extended':
        return this.handleExtended(msg.id, msg.payload);
      default:
        return undefined;
    }
  }

  private handleExtended(id: number, payload: Buffer): (() => void) | undefined {
    if (!this.extended) {
      // BEP 10 gives no rule; a peer sending extensions it never offered is broken, as in BEP 6.
      throw new BootTorrentError(
        'BT_ERR_WIRE_PROTOCOL',
        'extended message received but BEP 10 was not negotiated',
      );
    }
    if (id === 0) {
      const h = decodeExtendedHandshake(payload);
      // BEP 10: a later handshake updates only the entries it names, and
      // id 0 disables an extension; only enabled ones are kept in `m`.
      const m = new Map(this.remoteExtensions?.m ?? []);
      for (const [name, extId] of h.m) {
        if (extId === 0) m.delete(name);
        else if (m.has(name) || m.size < MAX_REMOTE_EXTENSIONS) m.set(name, extId);
      }
      this.remoteExtensions = { ...h, m };
      return () => this.emit('extended-handshake', h);
    }
    const pexId = this.localExtensions.get('ut_pex');
    if (pexId && id === pexId) {
      const pex = decodePex(payload);
      return () => this.emit('pex', pex);
    }
    return undefined;
  }

  private applyHave(index: number): void {
    const bf = this.remoteBitfield!;
    if (index >= bf.length) {
      throw new BootTorrentError('BT_ERR_WIRE_PROTOCOL', `have for piece ${index}, torrent has ${bf.length}`);
    }
    bf.set(index);
  }

  /**
   * BEP 3 sends a bitfield only as the first message, but real peers do not
   * keep to it: aria2c 1.36 opens with its extended handshake, sends
   * have-none, and later a bitfield instead of a `have` (see
   * test/interop/wire-aria2c.test.ts). So any bitfield, have-all or
   * have-none is accepted at any time; the swarm re-reads remoteBitfield on
   * these events. They add to what we knew and never take away: BEP 3 has
   * no way for a peer to lose a piece, and a peer that alternated have-all
   * and have-none had us rebuild the field and recount every piece per
   * 5-byte message.
   */
  private applyPieceSet(msg: Extract<WireMessage, { type: 'bitfield' | 'have-all' | 'have-none' }>): void {
    const n = this.pieceCountValue;
    if (n === null) {
      this.pendingHaves.clear();
      this.pendingPieces =
        msg.type === 'bitfield' ? Buffer.from(msg.bits) : msg.type === 'have-all' ? 'all' : 'none';
      return;
    }
    const known = (this.remoteBitfield ??= new Bitfield(n));
    if (msg.type === 'bitfield') known.addFrom(Bitfield.fromBytes(msg.bits, n));
    else if (msg.type === 'have-all' && !known.hasAll()) this.remoteBitfield = Bitfield.full(n);
  }

  private readonly onEnd = (): void => {
    this.destroy(
      this.state === 'open'
        ? undefined
        : new BootTorrentError('BT_ERR_WIRE_CLOSED', 'peer closed the connection during the handshake'),
    );
  };

  private readonly onStreamClose = (): void => {
    this.onEnd();
  };

  private readonly onStreamError = (err: Error): void => {
    this.destroy(
      new BootTorrentError('BT_ERR_WIRE_CLOSED', `connection failed: ${err.message}`, { cause: err }),
    );
  };

  private readonly onDrain = (): void => {
    this.emit('drain');
  };
}
