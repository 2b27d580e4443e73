/**
 * HTTP tracker protocol (BEP 3, compact peers BEP 23, IPv6 peers BEP 7,
 * scrape BEP 48), pure: URLs and query strings in and out, bencoded bodies
 * in and out. No sockets here; client.ts and server.ts own those.
 *
 * info_hash and peer_id are raw bytes, so they travel percent-encoded byte by
 * byte and must be decoded to bytes, never through a UTF-8 string (a decoder
 * that goes through text turns invalid UTF-8 into U+FFFD and loses the hash).
 */
import { decode, encode, isBytes, isDict, isInt, isList } from '../bencode/index.js';
import type { BValue, BDict } from '../bencode/index.js';
import { BootTorrentError } from '../errors.js';
import type {
  AnnounceRequest,
  AnnounceResponse,
  PeerAddress,
  ScrapeFile,
  ScrapeRequest,
  ScrapeResponse,
} from './types.js';
import { decodeCompactPeers, encodeCompactPeers, isIpv4 } from './udp-codec.js';

function codecError(what: string, cause?: unknown): BootTorrentError {
  return new BootTorrentError('BT_ERR_TRACKER_CODEC', what, cause === undefined ? undefined : { cause });
}

// RFC 3986 section 2.3 unreserved characters stay literal; every other byte
// becomes %XX, which every tracker decodes.
function isUnreserved(b: number): boolean {
  return (
    (b >= 0x30 && b <= 0x39) ||
    (b >= 0x41 && b <= 0x5a) ||
    (b >= 0x61 && b <= 0x7a) ||
    b === 0x2d ||
    b === 0x2e ||
    b === 0x5f ||
    b === 0x7e
  );
}

/** Percent-encodes raw bytes byte by byte (for info_hash and peer_id). */
export function percentEncodeBytes(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) {
    s += isUnreserved(b) ? String.fromCharCode(b) : '%' + b.toString(16).toUpperCase().padStart(2, '0');
  }
  return s;
}

/**
 * Percent-decodes to bytes. `+` stays a literal plus (RFC 3986): BitTorrent
 * clients escape a space in a hash as %20, so reading `+` as space would
 * corrupt a hash byte 0x2B sent unescaped.
 */
export function percentDecodeBytes(s: string): Buffer {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x25) {
      const hex = s.slice(i + 1, i + 3);
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) throw codecError(`bad percent-escape "%${hex}" in query string`);
      out.push(parseInt(hex, 16));
      i += 2;
    } else if (c > 0xff) {
      throw codecError('non-ASCII character in query string');
    } else {
      out.push(c);
    }
  }
  return Buffer.from(out);
}

function appendQuery(base: string, query: string): string {
  const hash = base.indexOf('#');
  const head = hash >= 0 ? base.slice(0, hash) : base;
  if (!head.includes('?')) return `${head}?${query}`;
  return head.endsWith('?') || head.endsWith('&') ? head + query : `${head}&${query}`;
}

/** The GET URL for an announce; `announceUrl` may already carry a query (e.g. a passkey). */
export function buildAnnounceUrl(announceUrl: string, req: AnnounceRequest): string {
  if (req.infoHash.length !== 20) throw codecError(`info_hash must be 20 bytes, got ${req.infoHash.length}`);
  if (req.peerId.length !== 20) throw codecError(`peer_id must be 20 bytes, got ${req.peerId.length}`);
  const parts = [
    `info_hash=${percentEncodeBytes(req.infoHash)}`,
    `peer_id=${percentEncodeBytes(req.peerId)}`,
    `port=${req.port}`,
    `uploaded=${req.uploaded}`,
    `downloaded=${req.downloaded}`,
    `left=${req.left}`,
    `compact=${req.compact === false ? 0 : 1}`,
  ];
  if (req.event !== 'none') parts.push(`event=${req.event}`);
  if (req.numWant !== undefined) parts.push(`numwant=${req.numWant}`);
  if (req.ip !== undefined) parts.push(`ip=${encodeURIComponent(req.ip)}`);
  if (req.key !== undefined) parts.push(`key=${(req.key >>> 0).toString(16).padStart(8, '0')}`);
  return appendQuery(announceUrl, parts.join('&'));
}

/**
 * The scrape URL by the BEP 48 convention: the last path segment must start
 * with "announce", which becomes "scrape". Null when the tracker has none.
 */
export function scrapeUrlFor(announceUrl: string): string | null {
  const q = announceUrl.search(/[?#]/);
  const path = q >= 0 ? announceUrl.slice(0, q) : announceUrl;
  const rest = q >= 0 ? announceUrl.slice(q) : '';
  const slash = path.lastIndexOf('/');
  if (slash < 0 || !path.startsWith('announce', slash + 1)) return null;
  return `${path.slice(0, slash + 1)}scrape${path.slice(slash + 1 + 'announce'.length)}${rest}`;
}

export function buildScrapeUrl(scrapeUrl: string, req: ScrapeRequest): string {
  if (req.infoHashes.length === 0) return scrapeUrl;
  for (const h of req.infoHashes) {
    if (h.length !== 20) throw codecError(`info_hash must be 20 bytes, got ${h.length}`);
  }
  return appendQuery(scrapeUrl, req.infoHashes.map((h) => `info_hash=${percentEncodeBytes(h)}`).join('&'));
}

/** Splits a raw query string (without `?`) into byte values per key. */
export function parseQuery(query: string): Map<string, Buffer[]> {
  const out = new Map<string, Buffer[]>();
  for (const pair of query.split('&')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    const key = percentDecodeBytes(eq >= 0 ? pair.slice(0, eq) : pair).toString('latin1');
    const value = percentDecodeBytes(eq >= 0 ? pair.slice(eq + 1) : '');
    const list = out.get(key);
    if (list) list.push(value);
    else out.set(key, [value]);
  }
  return out;
}

function field(q: Map<string, Buffer[]>, name: string): Buffer | undefined {
  return q.get(name)?.[0];
}

function requiredHash(q: Map<string, Buffer[]>, name: string): Buffer {
  const v = field(q, name);
  if (v === undefined) throw codecError(`announce is missing ${name}`);
  if (v.length !== 20) throw codecError(`${name} must be 20 bytes after percent-decoding, got ${v.length}`);
  return v;
}

function intField(q: Map<string, Buffer[]>, name: string, max: number, dflt?: number): number {
  const v = field(q, name);
  if (v === undefined) {
    if (dflt !== undefined) return dflt;
    throw codecError(`announce is missing ${name}`);
  }
  const s = v.toString('latin1');
  if (!/^\d{1,16}$/.test(s) || Number(s) > max)
    throw codecError(`${name} must be an integer 0..${max}, got "${s}"`);
  return Number(s);
}

/** Server side: a GET /announce query string (without `?`) to an AnnounceRequest. */
export function parseAnnounceQuery(query: string): AnnounceRequest {
  const q = parseQuery(query);
  const req: AnnounceRequest = {
    infoHash: requiredHash(q, 'info_hash'),
    peerId: requiredHash(q, 'peer_id'),
    port: intField(q, 'port', 0xffff),
    uploaded: intField(q, 'uploaded', Number.MAX_SAFE_INTEGER),
    downloaded: intField(q, 'downloaded', Number.MAX_SAFE_INTEGER),
    left: intField(q, 'left', Number.MAX_SAFE_INTEGER),
    event: 'none',
  };
  const ev = field(q, 'event')?.toString('latin1') ?? '';
  // BEP 21's "paused" is a regular announce for counting purposes.
  if (ev === '' || ev === 'paused') req.event = 'none';
  else if (ev === 'started' || ev === 'completed' || ev === 'stopped') req.event = ev;
  else throw codecError(`unknown announce event "${ev}"`);
  if (q.has('numwant')) req.numWant = intField(q, 'numwant', 0x7fffffff);
  const compact = field(q, 'compact')?.toString('latin1');
  if (compact !== undefined) req.compact = compact !== '0';
  const ip = field(q, 'ip')?.toString('latin1');
  if (ip !== undefined && isIpv4(ip)) req.ip = ip;
  const key = field(q, 'key')?.toString('latin1');
  // Clients send `key` as free text; keep it only in the hex form we send.
  if (key !== undefined && /^[0-9a-fA-F]{1,8}$/.test(key)) req.key = parseInt(key, 16);
  return req;
}

/** Server side: a GET /scrape query string; no info_hash means every swarm (BEP 48). */
export function parseScrapeQuery(query: string): ScrapeRequest {
  const hashes = parseQuery(query).get('info_hash') ?? [];
  for (const h of hashes) {
    if (h.length !== 20)
      throw codecError(`info_hash must be 20 bytes after percent-decoding, got ${h.length}`);
  }
  return { infoHashes: hashes };
}

function encodeCompactPeers6(peers: readonly PeerAddress[]): Buffer {
  const chunks: Buffer[] = [];
  for (const p of peers) {
    const bytes = ipv6ToBytes(p.ip);
    if (!bytes) continue;
    const port = Buffer.alloc(2);
    port.writeUInt16BE(p.port);
    chunks.push(bytes, port);
  }
  return Buffer.concat(chunks);
}

function ipv6ToBytes(ip: string): Buffer | null {
  if (!ip.includes(':') || ip.includes('.')) return null;
  const [head = '', tail] = ip.split('::');
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const fill = tail === undefined ? 0 : 8 - h.length - t.length;
  const groups = [...h, ...Array<string>(Math.max(0, fill)).fill('0'), ...t];
  if (groups.length !== 8 || !groups.every((g) => /^[0-9a-fA-F]{1,4}$/.test(g))) return null;
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => b.writeUInt16BE(parseInt(g, 16), i * 2));
  return b;
}

function decodeCompactPeers6(buf: Buffer): PeerAddress[] {
  if (buf.length % 18 !== 0) throw codecError(`peers6 length ${buf.length} is not a multiple of 18`);
  const peers: PeerAddress[] = [];
  for (let o = 0; o < buf.length; o += 18) {
    const groups: string[] = [];
    for (let i = 0; i < 8; i++) groups.push(buf.readUInt16BE(o + i * 2).toString(16));
    peers.push({ ip: groups.join(':'), port: buf.readUInt16BE(o + 16) });
  }
  return peers;
}

/**
 * Server side: the bencoded announce reply. Compact (BEP 23) puts IPv4 peers
 * in `peers` and IPv6 peers in `peers6` (BEP 7); otherwise a list of dicts
 * with `peer id` (BEP 3).
 */
export function encodeAnnounceResponse(resp: AnnounceResponse, opts: { compact: boolean }): Buffer {
  const dict = new Map<string, BValue | Buffer>();
  dict.set('interval', resp.interval);
  if (resp.minInterval !== undefined) dict.set('min interval', resp.minInterval);
  dict.set('complete', resp.complete);
  dict.set('incomplete', resp.incomplete);
  if (opts.compact) {
    dict.set('peers', encodeCompactPeers(resp.peers));
    const six = encodeCompactPeers6(resp.peers);
    if (six.length > 0) dict.set('peers6', six);
  } else {
    dict.set(
      'peers',
      resp.peers.map((p) => {
        const d = new Map<string, BValue>([
          ['ip', Buffer.from(p.ip, 'latin1')],
          ['port', p.port],
        ]);
        if (p.peerId) d.set('peer id', p.peerId);
        return d;
      }),
    );
  }
  if (resp.warning !== undefined) dict.set('warning message', Buffer.from(resp.warning, 'utf8'));
  return encode(dict);
}

/** Server side: a BEP 3 error reply; HTTP status stays 200 so clients read it. */
export function encodeFailure(reason: string): Buffer {
  return encode({ 'failure reason': reason });
}

function decodeBody(body: Buffer, what: string): BDict {
  let v: BValue;
  try {
    // Some trackers emit unsorted keys; reading them is harmless.
    v = decode(body, { strictKeyOrder: false });
  } catch (err) {
    throw codecError(`tracker ${what} reply is not bencode: ${(err as Error).message}`, err);
  }
  if (!isDict(v)) throw codecError(`tracker ${what} reply is not a dictionary`);
  const failure = v.get('failure reason');
  if (failure !== undefined) {
    const reason = isBytes(failure)
      ? failure.toString('utf8')
      : isInt(failure)
        ? String(failure)
        : '(no text)';
    throw new BootTorrentError('BT_ERR_TRACKER_FAILURE', `tracker refused the ${what}: ${reason}`);
  }
  return v;
}

function optInt(d: BDict, key: string, what: string): number | undefined {
  const v = d.get(key);
  if (v === undefined) return undefined;
  if (!isInt(v) || v < 0) throw codecError(`tracker ${what} reply: "${key}" is not a non-negative integer`);
  return v;
}

/** Client side: a bencoded announce reply to an AnnounceResponse; `failure reason` throws BT_ERR_TRACKER_FAILURE. */
export function decodeAnnounceResponse(body: Buffer): AnnounceResponse {
  const d = decodeBody(body, 'announce');
  const interval = optInt(d, 'interval', 'announce');
  if (interval === undefined) throw codecError('tracker announce reply has no "interval"');
  const resp: AnnounceResponse = {
    interval,
    complete: optInt(d, 'complete', 'announce') ?? 0,
    incomplete: optInt(d, 'incomplete', 'announce') ?? 0,
    peers: [],
  };
  const minInterval = optInt(d, 'min interval', 'announce');
  if (minInterval !== undefined) resp.minInterval = minInterval;
  const warning = d.get('warning message');
  if (isBytes(warning)) resp.warning = warning.toString('utf8');
  const peers = d.get('peers');
  if (isBytes(peers)) {
    // Assigned, not spread into push(): a 1 MiB compact list is 174,000
    // peers, more arguments than a call may take (RangeError).
    resp.peers = decodeCompactPeers(peers);
  } else if (isList(peers)) {
    for (const p of peers) {
      if (!isDict(p)) throw codecError('tracker announce reply: a peer is not a dictionary');
      const ip = p.get('ip');
      const port = p.get('port');
      if (!isBytes(ip) || !isInt(port) || port < 0 || port > 0xffff) {
        throw codecError('tracker announce reply: a peer lacks a valid "ip" or "port"');
      }
      const peer: PeerAddress = { ip: ip.toString('latin1'), port };
      const id = p.get('peer id');
      if (isBytes(id)) peer.peerId = Buffer.from(id);
      resp.peers.push(peer);
    }
  } else if (peers !== undefined) {
    throw codecError('tracker announce reply: "peers" is neither a string nor a list');
  }
  const peers6 = d.get('peers6');
  if (isBytes(peers6)) for (const p of decodeCompactPeers6(peers6)) resp.peers.push(p);
  return resp;
}

/** Server side: the bencoded scrape reply (`files` keyed by raw 20-byte infohash). */
export function encodeScrapeResponse(resp: ScrapeResponse): Buffer {
  const files = new Map<string, BValue>();
  for (const [hex, f] of resp.files) {
    files.set(
      Buffer.from(hex, 'hex').toString('latin1'),
      new Map<string, BValue>([
        ['complete', f.complete],
        ['downloaded', f.downloaded],
        ['incomplete', f.incomplete],
      ]),
    );
  }
  return encode(new Map([['files', files]]));
}

/** Client side: a bencoded scrape reply to a ScrapeResponse. */
export function decodeScrapeResponse(body: Buffer): ScrapeResponse {
  const d = decodeBody(body, 'scrape');
  const files = d.get('files');
  const out: ScrapeResponse = { files: new Map() };
  if (files === undefined) return out;
  if (!isDict(files)) throw codecError('tracker scrape reply: "files" is not a dictionary');
  for (const [key, v] of files) {
    const hash = Buffer.from(key, 'latin1');
    if (hash.length !== 20)
      throw codecError(`tracker scrape reply: key of ${hash.length} bytes is not an infohash`);
    if (!isDict(v)) throw codecError('tracker scrape reply: a file entry is not a dictionary');
    const f: ScrapeFile = {
      complete: optInt(v, 'complete', 'scrape') ?? 0,
      downloaded: optInt(v, 'downloaded', 'scrape') ?? 0,
      incomplete: optInt(v, 'incomplete', 'scrape') ?? 0,
    };
    out.files.set(hash.toString('hex'), f);
  }
  return out;
}
