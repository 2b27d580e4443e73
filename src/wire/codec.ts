/**
 * Peer wire codec: BEP 3 handshake and messages, BEP 6 (Fast Extension),
 * BEP 10 (extension protocol) and BEP 11 (ut_pex payloads). Pure: bytes in,
 * typed messages out, and back. No sockets, timers or logging; the
 * connection in ./connection.ts owns those.
 *
 * Decisions a reader might otherwise undo:
 * - Unknown message ids decode to `{ type: 'unknown' }` and are not an error:
 *   BEP 3 lets new ids appear (BEP 6 and BEP 10 did exactly that), and a
 *   peer that speaks an extension we lack must not lose its connection. A
 *   known id with the wrong payload size is an error: the peer is broken.
 * - A `piece` block is a view into the bytes it was decoded from, never a
 *   copy, so OS image data streams through without piling up in the heap.
 */
import { isIP } from 'node:net';
import { decode, encode, isBytes, isDict, isInt, type BDict, type BValue } from '../bencode/index.js';
import { BootTorrentError } from '../errors.js';

// ---------------------------------------------------------------- handshake

/** BEP 3: the handshake starts with byte 19 and this string. */
export const PROTOCOL_NAME = 'BitTorrent protocol';
const PROTOCOL_BYTES = Buffer.from(PROTOCOL_NAME, 'latin1');
/** 1 + 19 + 8 reserved + 20 infohash + 20 peer id. */
export const HANDSHAKE_LENGTH = 68;
/** Bytes up to the end of the infohash: enough for a listener to pick the torrent. */
export const HANDSHAKE_HEAD_LENGTH = 48;

export interface Handshake {
  /** 8 reserved bytes announcing extensions (see reservedBytes()). */
  reserved: Buffer;
  infoHash: Buffer;
  peerId: Buffer;
}

export interface ReservedFlags {
  /** BEP 6 Fast Extension: reserved[7] & 0x04. */
  fast?: boolean;
  /** BEP 10 extension protocol: reserved[5] & 0x10. */
  extended?: boolean;
}

/**
 * Builds the 8 reserved bytes. The BEP 5 DHT bit (reserved[7] & 0x01) is
 * never set: we run no DHT node, and setting it invites `port` messages.
 */
export function reservedBytes(flags: ReservedFlags): Buffer {
  const r = Buffer.alloc(8);
  if (flags.fast) r[7]! |= 0x04;
  if (flags.extended) r[5]! |= 0x10;
  return r;
}

export function supportsFast(reserved: Uint8Array): boolean {
  return (reserved[7]! & 0x04) !== 0;
}

export function supportsExtended(reserved: Uint8Array): boolean {
  return (reserved[5]! & 0x10) !== 0;
}

function check20(buf: Uint8Array, what: string): void {
  if (buf.length !== 20) throw new RangeError(`${what} must be 20 bytes, got ${buf.length}`);
}

export function encodeHandshake(h: Handshake): Buffer {
  if (h.reserved.length !== 8) throw new RangeError(`reserved must be 8 bytes, got ${h.reserved.length}`);
  check20(h.infoHash, 'infoHash');
  check20(h.peerId, 'peerId');
  const out = Buffer.allocUnsafe(HANDSHAKE_LENGTH);
  out[0] = PROTOCOL_BYTES.length;
  PROTOCOL_BYTES.copy(out, 1);
  out.set(h.reserved, 20);
  out.set(h.infoHash, 28);
  out.set(h.peerId, 48);
  return out;
}

/**
 * Decodes the first 48 bytes of a handshake (protocol string, reserved,
 * infohash). BEP 3 lets the receiving side answer once it has seen the
 * infohash, before the peer id, so a listener can serve many torrents.
 */
export function decodeHandshakeHead(bytes: Uint8Array): Omit<Handshake, 'peerId'> {
  if (bytes.length < HANDSHAKE_HEAD_LENGTH) {
    throw new RangeError(`handshake head needs ${HANDSHAKE_HEAD_LENGTH} bytes, got ${bytes.length}`);
  }
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  if (buf[0] !== PROTOCOL_BYTES.length || !buf.subarray(1, 20).equals(PROTOCOL_BYTES)) {
    throw new BootTorrentError(
      'BT_ERR_WIRE_PROTOCOL',
      `not a BitTorrent handshake (encrypted BEP 8 MSE/PE connections are not supported; first bytes ${buf.subarray(0, 20).toString('hex')})`,
    );
  }
  return { reserved: Buffer.from(buf.subarray(20, 28)), infoHash: Buffer.from(buf.subarray(28, 48)) };
}

/** Decodes a complete 68-byte handshake. Bytes past 68 are not looked at. */
export function decodeHandshake(bytes: Uint8Array): Handshake {
  if (bytes.length < HANDSHAKE_LENGTH) {
    throw new RangeError(`handshake needs ${HANDSHAKE_LENGTH} bytes, got ${bytes.length}`);
  }
  const head = decodeHandshakeHead(bytes);
  return { ...head, peerId: Buffer.from(bytes.subarray(48, 68)) };
}

// ----------------------------------------------------------------- messages

/** Message ids: BEP 3, BEP 6 (0x0D-0x11) and BEP 10 (20). */
export const MessageId = {
  choke: 0,
  unchoke: 1,
  interested: 2,
  notInterested: 3,
  have: 4,
  bitfield: 5,
  request: 6,
  piece: 7,
  cancel: 8,
  port: 9,
  suggest: 0x0d,
  haveAll: 0x0e,
  haveNone: 0x0f,
  reject: 0x10,
  allowedFast: 0x11,
  extended: 20,
} as const;

export interface BlockRef {
  index: number;
  begin: number;
  length: number;
}

export type KeepAliveMessage = { type: 'keep-alive' };
export type ChokeMessage = { type: 'choke' };
export type UnchokeMessage = { type: 'unchoke' };
export type InterestedMessage = { type: 'interested' };
export type NotInterestedMessage = { type: 'not-interested' };
export type HaveMessage = { type: 'have'; index: number };
/** `bits` is the raw BEP 3 payload; Bitfield.fromBytes() validates it against the piece count. */
export type BitfieldMessage = { type: 'bitfield'; bits: Buffer };
export type RequestMessage = { type: 'request' } & BlockRef;
/** `block` shares memory with the decoder's input; copy it to keep it past the chunk's life. */
export type PieceMessage = { type: 'piece'; index: number; begin: number; block: Buffer };
export type CancelMessage = { type: 'cancel' } & BlockRef;
/** BEP 5: the sender's DHT port. */
export type PortMessage = { type: 'port'; port: number };
export type SuggestMessage = { type: 'suggest'; index: number };
export type HaveAllMessage = { type: 'have-all' };
export type HaveNoneMessage = { type: 'have-none' };
export type RejectMessage = { type: 'reject' } & BlockRef;
export type AllowedFastMessage = { type: 'allowed-fast'; index: number };
/** BEP 10: `id` 0 is the extended handshake, others are the receiver's ids from its `m` dict. */
export type ExtendedMessage = { type: 'extended'; id: number; payload: Buffer };
/** A message id we do not know; ignored by design (see the file comment). */
export type UnknownMessage = { type: 'unknown'; id: number; payload: Buffer };

export type WireMessage =
  | KeepAliveMessage
  | ChokeMessage
  | UnchokeMessage
  | InterestedMessage
  | NotInterestedMessage
  | HaveMessage
  | BitfieldMessage
  | RequestMessage
  | PieceMessage
  | CancelMessage
  | PortMessage
  | SuggestMessage
  | HaveAllMessage
  | HaveNoneMessage
  | RejectMessage
  | AllowedFastMessage
  | ExtendedMessage
  | UnknownMessage;

export type WireMessageType = WireMessage['type'];

/** BEP 6 messages: only legal when both sides set the Fast bit. */
export const FAST_MESSAGE_TYPES: ReadonlySet<WireMessageType> = new Set([
  'suggest',
  'have-all',
  'have-none',
  'reject',
  'allowed-fast',
]);

/**
 * Default cap on a message's length prefix: a bitfield for 8 Mi pieces or a
 * piece message carrying a 1 MiB block (the 13 is the piece header plus
 * prefix). Real traffic stays far below: blocks are 16 KiB (128 KiB at most
 * in any client we know), a 2^20-piece bitfield is 128 KiB.
 */
export const DEFAULT_MAX_MESSAGE_LENGTH = (1 << 20) + 13;

function protocolError(message: string): BootTorrentError {
  return new BootTorrentError('BT_ERR_WIRE_PROTOCOL', message);
}

function frame(id: number, payloadLength: number): Buffer {
  const out = Buffer.allocUnsafe(5 + payloadLength);
  out.writeUInt32BE(1 + payloadLength, 0);
  out[4] = id;
  return out;
}

function blockFrame(id: number, ref: BlockRef): Buffer {
  const out = frame(id, 12);
  out.writeUInt32BE(ref.index, 5);
  out.writeUInt32BE(ref.begin, 9);
  out.writeUInt32BE(ref.length, 13);
  return out;
}

function indexFrame(id: number, index: number): Buffer {
  const out = frame(id, 4);
  out.writeUInt32BE(index, 5);
  return out;
}

/**
 * The 13 bytes that precede a block in a `piece` message. Writing this and
 * then the block itself sends a piece without copying the block.
 */
export function encodePieceHeader(index: number, begin: number, blockLength: number): Buffer {
  const out = Buffer.allocUnsafe(13);
  out.writeUInt32BE(9 + blockLength, 0);
  out[4] = MessageId.piece;
  out.writeUInt32BE(index, 5);
  out.writeUInt32BE(begin, 9);
  return out;
}

/** Encodes one message with its 4-byte length prefix. */
export function encodeMessage(msg: WireMessage): Buffer {
  switch (msg.type) {
    case 'keep-alive':
      return Buffer.alloc(4);
    case 'choke':
      return frame(MessageId.choke, 0);
    case 'unchoke':
      return frame(MessageId.unchoke, 0);
    case 'interested':
      return frame(MessageId.interested, 0);
    case 'not-interested':
      return frame(MessageId.notInterested, 0);
    case 'have':
      return indexFrame(MessageId.have, msg.index);
    case 'bitfield': {
      const out = frame(MessageId.bitfield, msg.bits.length);
      out.set(msg.bits, 5);
      return out;
    }
    case 'request':
      return blockFrame(MessageId.request, msg);
    case 'piece':
      return Buffer.concat([encodePieceHeader(msg.index, msg.begin, msg.block.length), msg.block]);
    case 'cancel':
      return blockFrame(MessageId.cancel, msg);
    case 'port': {
      const out = frame(MessageId.port, 2);
      out.writeUInt16BE(msg.port, 5);
      return out;
    }
    case 'suggest':
      return indexFrame(MessageId.suggest, msg.index);
    case 'have-all':
      return frame(MessageId.haveAll, 0);
    case 'have-none':
      return frame(MessageId.haveNone, 0);
    case 'reject':
      return blockFrame(MessageId.reject, msg);
    case 'allowed-fast':
      return indexFrame(MessageId.allowedFast, msg.index);
    case 'extended': {
      if (!Number.isInteger(msg.id) || msg.id < 0 || msg.id > 255) {
        throw new RangeError(`extended message id ${msg.id} is not a byte`);
      }
      const out = frame(MessageId.extended, 1 + msg.payload.length);
      out[5] = msg.id;
      out.set(msg.payload, 6);
      return out;
    }
    case 'unknown': {
      const out = frame(msg.id, msg.payload.length);
      out.set(msg.payload, 5);
      return out;
    }
  }
}

/** Payload sizes of the fixed-size messages (bytes after the id). */
const FIXED_SIZE: ReadonlyMap<number, number> = new Map([
  [MessageId.choke, 0],
  [MessageId.unchoke, 0],
  [MessageId.interested, 0],
  [MessageId.notInterested, 0],
  [MessageId.have, 4],
  [MessageId.request, 12],
  [MessageId.cancel, 12],
  [MessageId.port, 2],
  [MessageId.suggest, 4],
  [MessageId.haveAll, 0],
  [MessageId.haveNone, 0],
  [MessageId.reject, 12],
  [MessageId.allowedFast, 4],
]);

const ID_NAMES = new Map<number, string>(Object.entries(MessageId).map(([k, v]) => [v, k]));

/**
 * Decodes a message body: the bytes after the length prefix (id and
 * payload). An empty body is a keep-alive. Returned buffers are views into
 * `body`.
 */
export function decodeMessageBody(body: Buffer): WireMessage {
  if (body.length === 0) return { type: 'keep-alive' };
  const id = body[0]!;
  const payloadLength = body.length - 1;
  const fixed = FIXED_SIZE.get(id);
  if (fixed !== undefined && payloadLength !== fixed) {
    throw protocolError(`${ID_NAMES.get(id)} message with ${payloadLength} payload bytes, expected ${fixed}`);
  }
  const u32 = (at: number) => body.readUInt32BE(at);
  switch (id) {
    case MessageId.choke:
      return { type: 'choke' };
    case MessageId.unchoke:
      return { type: 'unchoke' };
    case MessageId.interested:
      return { type: 'interested' };
    case MessageId.notInterested:
      return { type: 'not-interested' };
    case MessageId.have:
      return { type: 'have', index: u32(1) };
    case MessageId.bitfield:
      return { type: 'bitfield', bits: body.subarray(1) };
    case MessageId.request:
      return { type: 'request', index: u32(1), begin: u32(5), length: u32(9) };
    case MessageId.piece:
      if (payloadLength < 8)
        throw protocolError(`piece message with ${payloadLength} payload bytes, need at least 8`);
      return { type: 'piece', index: u32(1), begin: u32(5), block: body.subarray(9) };
    case MessageId.cancel:
      return { type: 'cancel', index: u32(1), begin: u32(5), length: u32(9) };
    case MessageId.port:
      return { type: 'port', port: body.readUInt16BE(1) };
    case MessageId.suggest:
      return { type: 'suggest', index: u32(1) };
    case MessageId.haveAll:
      return { type: 'have-all' };
    case MessageId.haveNone:
      return { type: 'have-none' };
    case MessageId.reject:
      return { type: 'reject', index: u32(1), begin: u32(5), length: u32(9) };
    case MessageId.allowedFast:
      return { type: 'allowed-fast', index: u32(1) };
    case MessageId.extended:
      if (payloadLength < 1) throw protocolError('extended message without a sub-id');
      return { type: 'extended', id: body[1]!, payload: body.subarray(2) };
    default:
      return { type: 'unknown', id, payload: body.subarray(1) };
  }
}

/** Decodes exactly one framed message (length prefix included). */
export function decodeMessage(bytes: Uint8Array): WireMessage {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  if (buf.length < 4) throw protocolError(`message of ${buf.length} bytes has no length prefix`);
  const len = buf.readUInt32BE(0);
  if (len !== buf.length - 4) throw protocolError(`length prefix ${len} but ${buf.length - 4} bytes follow`);
  return decodeMessageBody(buf.subarray(4));
}

export interface MessageDecoderOptions {
  /** Largest length prefix accepted (default DEFAULT_MAX_MESSAGE_LENGTH). */
  maxLength?: number;
}

/**
 * Splits a byte stream (after the handshake) into messages. Handles messages
 * split across chunks and many messages per chunk. A message that lies
 * wholly inside one chunk is decoded in place (its buffers are views of the
 * chunk); one split across chunks is assembled once into a buffer of its
 * exact size, so feeding a stream byte by byte stays linear.
 *
 * After an error the decoder is spent: the stream position is lost, so
 * every later push() throws the same error.
 */
/** Largest straddling message whose buffer is kept for reuse (a 128 KiB block and header). */
const MAX_SPARE_BODY = 128 * 1024 + 9;

export class MessageDecoder {
  readonly maxLength: number;
  private readonly prefix = Buffer.alloc(4);
  private prefixFilled = 0;
  private body: Buffer | null = null;
  private bodyFilled = 0;
  /**
   * When set, the buffer of a message that straddled two chunks is reused
   * for the next one: its messages are views that die when iteration moves
   * on (the caller copies what it keeps), and a fresh 16 KiB per straddling
   * block is garbage V8 frees late.
   */
  reuseBodies = false;
  private spare: Buffer | null = null;
  private failure: BootTorrentError | null = null;

  constructor(options: MessageDecoderOptions = {}) {
    this.maxLength = options.maxLength ?? DEFAULT_MAX_MESSAGE_LENGTH;
  }

  /** Bytes held for a message not yet complete. */
  get buffered(): number {
    return this.body ? this.bodyFilled + 4 : this.prefixFilled;
  }

  /**
   * Feeds a chunk and yields each complete message in order. A malformed
   * message throws at its place in the sequence, after the good messages
   * before it were yielded. Iterate the result to the end.
   */
  *push(chunk: Buffer): Generator<WireMessage, void, undefined> {
    if (this.failure) throw this.failure;
    try {
      yield* this.run(chunk);
    } catch (err) {
      if (err instanceof BootTorrentError) this.failure = err;
      throw err;
    }
  }

  private *run(chunk: Buffer): Generator<WireMessage, void, undefined> {
    let pos = 0;
    while (pos < chunk.length) {
      if (this.body === null) {
        let len: number;
        if (this.prefixFilled === 0 && chunk.length - pos >= 4) {
          len = chunk.readUInt32BE(pos);
          pos += 4;
        } else {
          const n = Math.min(4 - this.prefixFilled, chunk.length - pos);
          chunk.copy(this.prefix, this.prefixFilled, pos, pos + n);
          this.prefixFilled += n;
          pos += n;
          if (this.prefixFilled < 4) return;
          this.prefixFilled = 0;
          len = this.prefix.readUInt32BE(0);
        }
        if (len > this.maxLength) {
          throw protocolError(`message length ${len} exceeds the limit of ${this.maxLength} bytes`);
        }
        if (chunk.length - pos >= len) {
          const body = chunk.subarray(pos, pos + len);
          pos += len;
          yield decodeMessageBody(body);
          continue;
        }
        const spare = this.reuseBodies ? this.spare : null;
        this.body = spare && spare.length >= len ? spare.subarray(0, len) : Buffer.allocUnsafe(len);
        this.bodyFilled = 0;
      }
      const n = Math.min(this.body.length - this.bodyFilled, chunk.length - pos);
      chunk.copy(this.body, this.bodyFilled, pos, pos + n);
      this.bodyFilled += n;
      pos += n;
      if (this.bodyFilled === this.body.length) {
        const body = this.body;
        this.body = null;
        yield decodeMessageBody(body);
        if (this.reuseBodies && body.length <= MAX_SPARE_BODY && body.length > (this.spare?.length ?? 0)) {
          this.spare = Buffer.from(body.buffer, body.byteOffset, body.length);
        }
      }
    }
  }
}

// ---------------------------------------------------------- BEP 10 handshake

/** The extended handshake (BEP 10 message id 0) fields we use. */
export interface ExtendedHandshake {
  /** Extension name -> the id the sender wants to receive it under; 0 disables. */
  m: Map<string, number>;
  /** The sender's listening TCP port. */
  p?: number;
  /** Client name and version, UTF-8. */
  v?: string;
  /** Outstanding requests the sender queues without dropping. */
  reqq?: number;
  /** Our address as the sender sees it, dotted IPv4 or IPv6 text. */
  yourip?: string;
  /** BEP 9: size of the info dictionary in bytes. */
  metadataSize?: number;
}

/** A decoded extended handshake, with the whole dict for keys we do not model. */
export interface DecodedExtendedHandshake extends ExtendedHandshake {
  raw: BDict;
}

export function encodeExtendedHandshake(h: ExtendedHandshake): Buffer {
  const dict = new Map<string, BValue | Map<string, BValue>>();
  dict.set('m', new Map(h.m));
  if (h.p !== undefined) dict.set('p', h.p);
  if (h.v !== undefined) dict.set('v', Buffer.from(h.v, 'utf8'));
  if (h.reqq !== undefined) dict.set('reqq', h.reqq);
  if (h.yourip !== undefined) dict.set('yourip', ipToBytes(h.yourip));
  if (h.metadataSize !== undefined) dict.set('metadata_size', h.metadataSize);
  return encode(dict);
}

function intField(dict: BDict, key: string, min: number, max: number): number | undefined {
  const v = dict.get(key);
  if (v === undefined) return undefined;
  if (!isInt(v) || v < min || v > max)
    throw protocolError(`extended handshake: "${key}" is not an integer in ${min}..${max}`);
  return v;
}

/**
 * Decodes an extended handshake payload. Keys out of order are tolerated
 * (BEP 10 payloads come from many clients); a known key of the wrong type
 * is a protocol error.
 */
export function decodeExtendedHandshake(payload: Uint8Array): DecodedExtendedHandshake {
  let root: BValue;
  try {
    root = decode(payload, { strictKeyOrder: false });
  } catch (err) {
    throw new BootTorrentError('BT_ERR_WIRE_PROTOCOL', 'extended handshake is not valid bencode', {
      cause: err,
    });
  }
  if (!isDict(root)) throw protocolError('extended handshake is not a dictionary');
  const m = new Map<string, number>();
  const rawM = root.get('m');
  if (rawM !== undefined) {
    if (!isDict(rawM)) throw protocolError('extended handshake: "m" is not a dictionary');
    for (const [name, id] of rawM) {
      if (!isInt(id) || id < 0 || id > 255)
        throw protocolError(`extended handshake: id of "${name}" is not a byte`);
      m.set(name, id);
    }
  }
  const out: DecodedExtendedHandshake = { m, raw: root };
  const p = intField(root, 'p', 0, 65535);
  if (p !== undefined) out.p = p;
  const reqq = intField(root, 'reqq', 0, Number.MAX_SAFE_INTEGER);
  if (reqq !== undefined) out.reqq = reqq;
  const size = intField(root, 'metadata_size', 0, Number.MAX_SAFE_INTEGER);
  if (size !== undefined) out.metadataSize = size;
  const v = root.get('v');
  if (v !== undefined) {
    if (!isBytes(v)) throw protocolError('extended handshake: "v" is not a string');
    out.v = v.toString('utf8');
  }
  const yourip = root.get('yourip');
  if (yourip !== undefined) {
    if (!isBytes(yourip) || (yourip.length !== 4 && yourip.length !== 16)) {
      throw protocolError('extended handshake: "yourip" is not a 4- or 16-byte address');
    }
    out.yourip = bytesToIp(yourip);
  }
  return out;
}

// -------------------------------------------------------------- BEP 11 PEX

/** BEP 11 `added.f` flag bits. */
export const PexFlags = {
  prefersEncryption: 0x01,
  seed: 0x02,
  utp: 0x04,
  holepunch: 0x08,
  reachable: 0x10,
} as const;

export interface PexPeer {
  /** Dotted IPv4 or IPv6 text. */
  host: string;
  port: number;
  /** PexFlags bits; only meaningful for added peers (default 0). */
  flags?: number;
}

/**
 * A ut_pex payload. IPv4 and IPv6 peers share one list each way; the codec
 * splits them into `added`/`added6` and `dropped`/`dropped6` on the wire.
 */
export interface PexMessage {
  added: PexPeer[];
  dropped: PexPeer[];
}

function compactPeers(peers: readonly PexPeer[], family: 4 | 6): { bytes: Buffer; flags: Buffer } {
  const size = family === 4 ? 6 : 18;
  const list = peers.filter((p) => isIP(p.host) === family);
  const bytes = Buffer.allocUnsafe(list.length * size);
  const flags = Buffer.alloc(list.length);
  list.forEach((p, i) => {
    bytes.set(ipToBytes(p.host), i * size);
    bytes.writeUInt16BE(p.port, i * size + size - 2);
    flags[i] = p.flags ?? 0;
  });
  return { bytes, flags };
}

export function encodePex(msg: PexMessage): Buffer {
  for (const p of [...msg.added, ...msg.dropped]) {
    if (isIP(p.host) === 0) throw new RangeError(`PEX peer host "${p.host}" is not an IP address`);
  }
  const added4 = compactPeers(msg.added, 4);
  const added6 = compactPeers(msg.added, 6);
  const dropped4 = compactPeers(msg.dropped, 4);
  const dropped6 = compactPeers(msg.dropped, 6);
  const dict = new Map<string, Buffer>([
    ['added', added4.bytes],
    ['added.f', added4.flags],
    ['dropped', dropped4.bytes],
  ]);
  if (added6.bytes.length > 0) {
    dict.set('added6', added6.bytes);
    dict.set('added6.f', added6.flags);
  }
  if (dropped6.bytes.length > 0) dict.set('dropped6', dropped6.bytes);
  return encode(dict);
}

function parsePeers(dict: BDict, key: string, family: 4 | 6, flagsKey?: string): PexPeer[] {
  const v = dict.get(key);
  if (v === undefined) return [];
  const size = family === 4 ? 6 : 18;
  if (!isBytes(v) || v.length % size !== 0)
    throw protocolError(`ut_pex: "${key}" is not a list of ${size}-byte peers`);
  const f = flagsKey === undefined ? undefined : dict.get(flagsKey);
  // Flags are advisory; a missing or short `added.f` leaves peers at 0 rather than failing.
  const flags = isBytes(f) ? f : undefined;
  const out: PexPeer[] = [];
  for (let i = 0; i < v.length / size; i++) {
    const at = i * size;
    const peer: PexPeer = {
      host: bytesToIp(v.subarray(at, at + size - 2)),
      port: v.readUInt16BE(at + size - 2),
    };
    if (flagsKey !== undefined) peer.flags = flags?.[i] ?? 0;
    out.push(peer);
  }
  return out;
}

export function decodePex(payload: Uint8Array): PexMessage {
  let root: BValue;
  try {
    root = decode(payload, { strictKeyOrder: false });
  } catch (err) {
    throw new BootTorrentError('BT_ERR_WIRE_PROTOCOL', 'ut_pex payload is not valid bencode', { cause: err });
  }
  if (!isDict(root)) throw protocolError('ut_pex payload is not a dictionary');
  return {
    added: [...parsePeers(root, 'added', 4, 'added.f'), ...parsePeers(root, 'added6', 6, 'added6.f')],
    dropped: [...parsePeers(root, 'dropped', 4), ...parsePeers(root, 'dropped6', 6)],
  };
}

// ---------------------------------------------------------- address helpers

/** Text form of a 4- or 16-byte address; IPv6 per RFC 5952 (lowercase, longest zero run as ::). */
export function bytesToIp(b: Uint8Array): string {
  if (b.length === 4) return `${b[0]}.${b[1]}.${b[2]}.${b[3]}`;
  if (b.length !== 16) throw new RangeError(`address of ${b.length} bytes`);
  // RFC 5952 section 5: IPv4-mapped addresses keep the dotted tail.
  if (b.subarray(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff) {
    return `::ffff:${bytesToIp(b.subarray(12))}`;
  }
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((b[i]! << 8) | b[i + 1]!);
  let bestAt = -1;
  let bestLen = 1; // RFC 5952 4.2.2: a single zero group is not shortened.
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) [bestAt, bestLen] = [i, j - i];
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestAt < 0) return hex.join(':');
  return `${hex.slice(0, bestAt).join(':')}::${hex.slice(bestAt + bestLen).join(':')}`;
}

/** Bytes of a dotted IPv4 or IPv6 text address (IPv4-suffixed IPv6 accepted). */
export function ipToBytes(host: string): Buffer {
  const family = isIP(host);
  if (family === 4) return Buffer.from(host.split('.').map(Number));
  if (family !== 6) throw new RangeError(`"${host}" is not an IP address`);
  let text = host.replace(/%.*$/, ''); // a zone id has no place in 16 bytes
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.', lastColon)) {
    const v4 = ipToBytes(text.slice(lastColon + 1));
    text = `${text.slice(0, lastColon + 1)}${v4.readUInt16BE(0).toString(16)}:${v4.readUInt16BE(2).toString(16)}`;
  }
  const parse = (s: string) => (s === '' ? [] : s.split(':').map((g) => parseInt(g, 16)));
  const [left = '', right] = text.split('::');
  const l = parse(left);
  const r = right === undefined ? [] : parse(right);
  const groups =
    right === undefined ? l : [...l, ...new Array<number>(8 - l.length - r.length).fill(0), ...r];
  const out = Buffer.allocUnsafe(16);
  groups.forEach((g, i) => out.writeUInt16BE(g, i * 2));
  return out;
}
