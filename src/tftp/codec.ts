/**
 * Pure TFTP codec (RFC 1350 packets, RFC 2347 options and OACK): bytes in,
 * typed packet out, and back. No sockets, timers or logging (STYLE.md lesson
 * 1). Anything malformed throws BootTorrentError('BT_ERR_TFTP_CODEC'); the
 * server logs and drops it.
 */
import { BootTorrentError } from '../errors.js';

/** RFC 1350 §5 opcodes, plus OACK from RFC 2347. */
export const Opcode = { RRQ: 1, WRQ: 2, DATA: 3, ACK: 4, ERROR: 5, OACK: 6 } as const;

/** RFC 1350 appendix error codes, plus 8 from RFC 2347. */
export const TftpErrorCode = {
  NotDefined: 0,
  FileNotFound: 1,
  AccessViolation: 2,
  DiskFull: 3,
  IllegalOperation: 4,
  UnknownTransferId: 5,
  FileExists: 6,
  NoSuchUser: 7,
  OptionRefused: 8,
} as const;
export type TftpErrorCodeValue = (typeof TftpErrorCode)[keyof typeof TftpErrorCode];

/** Transfer modes; the wire spelling is case-insensitive (RFC 1350 §5). */
export type TftpMode = 'netascii' | 'octet' | 'mail';

/**
 * Options by lowercase name (RFC 2347: names and values are case-insensitive
 * for matching), in the order they appeared; values are kept as sent.
 */
export type TftpOptions = Map<string, string>;

export interface RequestPacket {
  type: 'RRQ' | 'WRQ';
  filename: string;
  mode: TftpMode;
  options: TftpOptions;
}
export interface DataPacket {
  type: 'DATA';
  /** 16-bit wire block number (wraps after 65535). */
  block: number;
  data: Buffer;
}
export interface AckPacket {
  type: 'ACK';
  block: number;
}
export interface ErrorPacket {
  type: 'ERROR';
  code: number;
  message: string;
}
export interface OackPacket {
  type: 'OACK';
  options: TftpOptions;
}
export type TftpPacket = RequestPacket | DataPacket | AckPacket | ErrorPacket | OackPacket;

/** RFC 2348: the block size range a client may ask for is 8..65464 octets. */
export const MAX_BLKSIZE = 65464;
export const MIN_BLKSIZE = 8;
/** RFC 1350 block size, used when blksize is not negotiated. */
export const DEFAULT_BLKSIZE = 512;
/** RFC 2347 §"Packet Formats": a request with its options must fit in 512 bytes. */
export const MAX_REQUEST_BYTES = 512;
/** The largest packet we ever decode: a DATA packet at the maximum block size. */
export const MAX_PACKET_BYTES = 4 + MAX_BLKSIZE;

function fail(message: string): never {
  throw new BootTorrentError('BT_ERR_TFTP_CODEC', `TFTP: ${message}`);
}

const MODES: readonly TftpMode[] = ['netascii', 'octet', 'mail'];

/** Splits `buf` from `start` into NUL-terminated strings; every string must be terminated. */
function cStrings(buf: Buffer, start: number, what: string): string[] {
  const out: string[] = [];
  let pos = start;
  while (pos < buf.length) {
    const nul = buf.indexOf(0, pos);
    if (nul < 0) fail(`${what}: field at byte ${pos} lacks its NUL terminator`);
    // Filenames and option strings are netascii by the RFC; in practice Linux
    // file names are UTF-8, so decode as UTF-8 rather than refuse.
    out.push(buf.toString('utf8', pos, nul));
    pos = nul + 1;
  }
  return out;
}

function parseOptions(fields: string[], what: string): TftpOptions {
  // Some clients pad requests with extra NUL bytes; trailing empty strings are
  // that padding, not an option (tftpd-hpa stops at the first empty name too).
  let end = fields.length;
  while (end > 0 && fields[end - 1] === '') end--;
  if (end % 2 !== 0) fail(`${what}: option "${fields[end - 1] ?? ''}" has no value`);
  const options: TftpOptions = new Map();
  for (let i = 0; i < end; i += 2) {
    const name = fields[i]!.toLowerCase();
    const value = fields[i + 1]!;
    if (name === '') fail(`${what}: empty option name`);
    if (options.has(name)) fail(`${what}: option "${name}" appears twice`);
    options.set(name, value);
  }
  return options;
}

/** Decodes one TFTP packet; throws BT_ERR_TFTP_CODEC on anything malformed. */
export function decode(buf: Uint8Array): TftpPacket {
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 2) fail(`packet of ${b.length} bytes is too short for an opcode`);
  if (b.length > MAX_PACKET_BYTES) fail(`packet of ${b.length} bytes exceeds ${MAX_PACKET_BYTES}`);
  const op = b.readUInt16BE(0);
  switch (op) {
    case Opcode.RRQ:
    case Opcode.WRQ: {
      const type = op === Opcode.RRQ ? 'RRQ' : 'WRQ';
      if (b.length > MAX_REQUEST_BYTES)
        fail(`${type} of ${b.length} bytes exceeds ${MAX_REQUEST_BYTES} (RFC 2347)`);
      const fields = cStrings(b, 2, type);
      if (fields.length < 2) fail(`${type} needs a filename and a mode`);
      const filename = fields[0]!;
      if (filename === '') fail(`${type} has an empty filename`);
      const mode = fields[1]!.toLowerCase() as TftpMode;
      if (!MODES.includes(mode)) fail(`${type} has unknown mode "${fields[1]!}"`);
      return { type, filename, mode, options: parseOptions(fields.slice(2), type) };
    }
    case Opcode.DATA:
      if (b.length < 4) fail('DATA shorter than 4 bytes');
      return { type: 'DATA', block: b.readUInt16BE(2), data: b.subarray(4) };
    case Opcode.ACK:
      if (b.length !== 4) fail(`ACK must be 4 bytes, got ${b.length}`);
      return { type: 'ACK', block: b.readUInt16BE(2) };
    case Opcode.ERROR: {
      if (b.length < 5) fail('ERROR shorter than 5 bytes');
      const fields = cStrings(b, 4, 'ERROR');
      // RFC 1350: exactly one NUL-terminated message; tolerate NUL padding after it.
      if (fields.slice(1).some((f) => f !== '')) fail('ERROR has bytes after its message');
      return { type: 'ERROR', code: b.readUInt16BE(2), message: fields[0] ?? '' };
    }
    case Opcode.OACK:
      return { type: 'OACK', options: parseOptions(cStrings(b, 2, 'OACK'), 'OACK') };
    default:
      return fail(`unknown opcode ${op}`);
  }
}

function checkString(s: string, what: string): Buffer {
  if (s.includes('\0')) fail(`${what} contains a NUL byte`);
  return Buffer.from(s, 'utf8');
}

function u16(n: number, what: string): Buffer {
  if (!Number.isInteger(n) || n < 0 || n > 0xffff) fail(`${what} ${n} is not a 16-bit number`);
  const out = Buffer.allocUnsafe(2);
  out.writeUInt16BE(n, 0);
  return out;
}

function encodeOptions(options: TftpOptions, what: string): Buffer[] {
  const parts: Buffer[] = [];
  for (const [name, value] of options) {
    if (name === '') fail(`${what}: empty option name`);
    parts.push(checkString(name, `${what} option name`), Buffer.of(0));
    parts.push(checkString(value, `${what} option value`), Buffer.of(0));
  }
  return parts;
}

/** Encodes one TFTP packet; throws BT_ERR_TFTP_CODEC for values the wire cannot carry. */
export function encode(p: TftpPacket): Buffer {
  switch (p.type) {
    case 'RRQ':
    case 'WRQ': {
      if (p.filename === '') fail(`${p.type} needs a filename`);
      if (!MODES.includes(p.mode)) fail(`unknown mode "${String(p.mode)}"`);
      return Buffer.concat([
        u16(p.type === 'RRQ' ? Opcode.RRQ : Opcode.WRQ, 'opcode'),
        checkString(p.filename, 'filename'),
        Buffer.of(0),
        Buffer.from(p.mode, 'latin1'),
        Buffer.of(0),
        ...encodeOptions(p.options, p.type),
      ]);
    }
    case 'DATA':
      if (p.data.length > MAX_BLKSIZE) fail(`DATA of ${p.data.length} bytes exceeds ${MAX_BLKSIZE}`);
      return Buffer.concat([u16(Opcode.DATA, 'opcode'), u16(p.block, 'block'), p.data]);
    case 'ACK':
      return Buffer.concat([u16(Opcode.ACK, 'opcode'), u16(p.block, 'block')]);
    case 'ERROR':
      return Buffer.concat([
        u16(Opcode.ERROR, 'opcode'),
        u16(p.code, 'error code'),
        checkString(p.message, 'error message'),
        Buffer.of(0),
      ]);
    case 'OACK':
      return Buffer.concat([u16(Opcode.OACK, 'opcode'), ...encodeOptions(p.options, 'OACK')]);
    default:
      return fail(`unknown packet type ${String((p as { type: unknown }).type)}`);
  }
}
