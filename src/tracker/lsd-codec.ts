/**
 * Local Service Discovery (BEP 14) announce codec: pure bytes <-> message,
 * no sockets, timers or logging (STYLE.md lesson 1). The socket owner is
 * `lsd.ts`.
 *
 * Wire format (BEP 14 §Protocol), an HTTP-like request in one UDP datagram:
 *
 *     BT-SEARCH * HTTP/1.1\r\n
 *     Host: 239.192.152.143:6771\r\n
 *     Port: <port>\r\n
 *     Infohash: <40 hex>\r\n          (one or more, consecutive)
 *     cookie: <opaque token>\r\n      (optional)
 *     \r\n
 *     \r\n
 *
 * `encode` writes exactly that (the trailing blank lines as aria2 and
 * libtorrent send them). `decode` is lenient where deployed clients differ
 * (header-name case, bare `\n` line endings, extra headers, upper-case hex)
 * and strict where leniency would let a damaged datagram through (the header
 * block must be terminated, so a truncated datagram is rejected rather than
 * yielding a half-read infohash). It is bounded: datagram size, line count
 * and infohash count are capped before any per-line work.
 */

import { BootTorrentError } from '../errors.js';

/** BEP 14 IPv4 multicast group (org-local scope). */
export const LSD_IPV4_GROUP = '239.192.152.143';
/** BEP 14 multicast port, shared by the IPv4 and IPv6 groups. */
export const LSD_PORT = 6771;
/** BEP 14 IPv6 group (site-local). Not used by lsd.ts, which is IPv4-only. */
export const LSD_IPV6_GROUP = 'ff15::efc0:988f';

/**
 * BEP 14: "the packet length should not exceed 1400 bytes to avoid
 * MTU/fragmentation problems". `encode` refuses to produce more.
 */
export const MAX_ENCODED_BYTES = 1400;
/**
 * Largest datagram `decode` looks at. Above BEP 14's 1400 so that a sender
 * who ignored that advice is still understood, but small enough that a
 * hostile datagram costs little.
 */
export const MAX_DECODED_BYTES = 8192;
/** Most Infohash headers accepted in one announce (decode) or written (encode). */
export const MAX_INFOHASHES = 64;
/** Most header lines accepted, known or not, so parsing work stays bounded. */
export const MAX_HEADER_LINES = 128;

/** One LSD announce. Infohashes are 40-character lower-case hex strings. */
export interface LsdAnnounce {
  /** TCP/uTP port the announcing client listens on for BitTorrent peers. */
  port: number;
  /** Torrents the sender participates in; at least one, no duplicates. */
  infoHashes: string[];
  /** Opaque token the sender uses to recognise its own announces, if sent. */
  cookie?: string;
  /** The Host header as received (the group the sender addressed), if any. */
  host?: string;
}

/** Input to `encode`. Infohashes may be hex strings or 20-byte buffers. */
export interface LsdAnnounceInput {
  port: number;
  infoHashes: ReadonlyArray<string | Uint8Array>;
  cookie?: string;
  /** Host header value; defaults to the IPv4 group `239.192.152.143:6771`. */
  host?: string;
}

const HEX40 = /^[0-9a-fA-F]{40}$/;
// Cookie and host are written into a header line: no whitespace, no
// controls, no non-ASCII, so they cannot break the framing or be trimmed.
const TOKEN = /^[\x21-\x7e]+$/;
const DECIMAL = /^[0-9]{1,5}$/;

function codecError(message: string): BootTorrentError {
  return new BootTorrentError('BT_ERR_LSD_CODEC', message);
}

/** Normalises one infohash (hex string or 20 bytes) to lower-case hex. */
export function normalizeInfoHash(value: string | Uint8Array): string {
  if (typeof value === 'string') {
    if (!HEX40.test(value)) {
      throw codecError(`infohash must be 40 hex characters, got ${JSON.stringify(value.slice(0, 60))}`);
    }
    return value.toLowerCase();
  }
  if (value.length !== 20) {
    throw codecError(`infohash must be 20 bytes, got ${value.length}`);
  }
  return Buffer.from(value.buffer, value.byteOffset, value.length).toString('hex');
}

function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw codecError(`port must be an integer 1..65535, got ${String(port)}`);
  }
}

/** Encodes one announce. Throws BT_ERR_LSD_CODEC on invalid input or > 1400 bytes. */
export function encode(msg: LsdAnnounceInput): Buffer {
  checkPort(msg.port);
  if (msg.infoHashes.length === 0) throw codecError('an announce needs at least one infohash');
  if (msg.infoHashes.length > MAX_INFOHASHES) {
    throw codecError(`at most ${MAX_INFOHASHES} infohashes per announce, got ${msg.infoHashes.length}`);
  }
  const host = msg.host ?? `${LSD_IPV4_GROUP}:${LSD_PORT}`;
  if (!TOKEN.test(host)) throw codecError(`host must be printable ASCII without spaces`);
  if (msg.cookie !== undefined && !TOKEN.test(msg.cookie)) {
    throw codecError('cookie must be printable ASCII without spaces');
  }
  const seen = new Set<string>();
  let text = `BT-SEARCH * HTTP/1.1\r\nHost: ${host}\r\nPort: ${msg.port}\r\n`;
  for (const ih of msg.infoHashes) {
    const hex = normalizeInfoHash(ih);
    if (seen.has(hex)) continue;
    seen.add(hex);
    text += `Infohash: ${hex}\r\n`;
  }
  if (msg.cookie !== undefined) text += `cookie: ${msg.cookie}\r\n`;
  text += '\r\n\r\n';
  const out = Buffer.from(text, 'latin1');
  if (out.length > MAX_ENCODED_BYTES) {
    throw codecError(
      `announce is ${out.length} bytes, over BEP 14's ${MAX_ENCODED_BYTES}; send fewer infohashes per datagram`,
    );
  }
  return out;
}

/**
 * Decodes one datagram. Throws BT_ERR_LSD_CODEC if it is not a well-formed
 * BT-SEARCH announce: oversized, wrong method, unterminated header block, a
 * header line without a colon, missing or invalid Port, no Infohash, an
 * infohash that is not 40 hex digits, or too many lines/infohashes.
 * Unknown headers are ignored (BEP 14: "additional headers that [are] not
 * understood by a client should be ignored").
 */
export function decode(datagram: Uint8Array): LsdAnnounce {
  if (datagram.length > MAX_DECODED_BYTES) {
    throw codecError(`datagram of ${datagram.length} bytes exceeds ${MAX_DECODED_BYTES}`);
  }
  // latin1 maps each byte to one char, so no decoding step can fail or grow.
  const text = Buffer.from(datagram.buffer, datagram.byteOffset, datagram.length).toString('latin1');

  // Header block ends at the first empty line; accept CRLF or bare LF.
  const end = /\r?\n\r?\n/.exec(text);
  if (end === null) throw codecError('header block is not terminated by an empty line (truncated datagram?)');
  const lines = text.slice(0, end.index).split(/\r?\n/);
  if (lines.length > MAX_HEADER_LINES) {
    throw codecError(`more than ${MAX_HEADER_LINES} header lines`);
  }

  const requestLine = lines[0] ?? '';
  // Method is matched case-insensitively as libtorrent does; the request
  // target and version are not checked, since no client varies them and
  // nothing depends on them.
  const method = requestLine.split(/[ \t]+/, 1)[0] ?? '';
  if (method.toUpperCase() !== 'BT-SEARCH') {
    throw codecError(`not a BT-SEARCH request: ${JSON.stringify(requestLine.slice(0, 60))}`);
  }

  let port: number | undefined;
  let cookie: string | undefined;
  let host: string | undefined;
  const infoHashes: string[] = [];
  const seen = new Set<string>();
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i] ?? '';
    const colon = line.indexOf(':');
    if (colon <= 0) throw codecError(`malformed header line ${JSON.stringify(line.slice(0, 60))}`);
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    switch (name) {
      case 'port': {
        // First Port wins, as in HTTP parsers that keep the first value.
        if (port !== undefined) break;
        if (!DECIMAL.test(value)) throw codecError(`invalid Port ${JSON.stringify(value.slice(0, 20))}`);
        const n = Number(value);
        if (n < 1 || n > 65535) throw codecError(`Port ${n} out of range 1..65535`);
        port = n;
        break;
      }
      case 'infohash': {
        if (!HEX40.test(value)) {
          throw codecError(`invalid Infohash ${JSON.stringify(value.slice(0, 60))}: need 40 hex digits`);
        }
        const hex = value.toLowerCase();
        if (seen.has(hex)) break;
        if (infoHashes.length >= MAX_INFOHASHES) {
          throw codecError(`more than ${MAX_INFOHASHES} infohashes in one announce`);
        }
        seen.add(hex);
        infoHashes.push(hex);
        break;
      }
      case 'cookie':
        if (cookie === undefined && value !== '') cookie = value;
        break;
      case 'host':
        if (host === undefined) host = value;
        break;
      default:
        break;
    }
  }
  if (port === undefined) throw codecError('announce has no Port header');
  if (infoHashes.length === 0) throw codecError('announce has no Infohash header');

  const msg: LsdAnnounce = { port, infoHashes };
  if (cookie !== undefined) msg.cookie = cookie;
  if (host !== undefined) msg.host = host;
  return msg;
}
