/**
 * UDP tracker protocol (BEP 15), pure: bytes in, typed message out, and back.
 * No sockets, timers or logging here; client.ts and server.ts own those.
 *
 * Requests (client -> tracker) and responses (tracker -> client) are decoded
 * by separate functions because their layouts overlap: a response starts with
 * the action, a request (except connect) with the 64-bit connection id.
 * Every decode error is a BootTorrentError 'BT_ERR_TRACKER_CODEC'.
 */
import { BootTorrentError } from '../errors.js';
import type { AnnounceEvent, AnnounceRequest, PeerAddress, ScrapeFile } from './types.js';

/** BEP 15 "connect request": the magic constant that marks the protocol. */
export const PROTOCOL_ID = 0x41727101980n;

export const ACTION_CONNECT = 0;
export const ACTION_ANNOUNCE = 1;
export const ACTION_SCRAPE = 2;
export const ACTION_ERROR = 3;

/** BEP 15 puts up to about 74 infohashes in one scrape (fits a 1500-byte MTU). */
export const MAX_SCRAPE_HASHES = 74;

const CONNECT_REQUEST_LEN = 16;
const CONNECT_RESPONSE_LEN = 16;
const ANNOUNCE_REQUEST_LEN = 98;
const ANNOUNCE_RESPONSE_HEADER = 20;
const SCRAPE_REQUEST_HEADER = 16;
const RESPONSE_HEADER = 8;

// BEP 15 announce: "event: 0: none; 1: completed; 2: started; 3: stopped".
const EVENT_CODES: Record<AnnounceEvent, number> = { none: 0, completed: 1, started: 2, stopped: 3 };
const EVENTS: readonly AnnounceEvent[] = ['none', 'completed', 'started', 'stopped'];

export interface UdpConnectRequest {
  action: 'connect';
  transactionId: number;
}
export interface UdpAnnounceRequest {
  action: 'announce';
  connectionId: bigint;
  transactionId: number;
  request: AnnounceRequest;
}
export interface UdpScrapeRequest {
  action: 'scrape';
  connectionId: bigint;
  transactionId: number;
  infoHashes: Buffer[];
}
export type UdpRequest = UdpConnectRequest | UdpAnnounceRequest | UdpScrapeRequest;

export interface UdpConnectResponse {
  action: 'connect';
  transactionId: number;
  connectionId: bigint;
}
export interface UdpAnnounceResponse {
  action: 'announce';
  transactionId: number;
  interval: number;
  /** Leechers. */
  incomplete: number;
  /** Seeders. */
  complete: number;
  peers: PeerAddress[];
}
export interface UdpScrapeResponse {
  action: 'scrape';
  transactionId: number;
  /** In the order of the request's infohashes. */
  files: ScrapeFile[];
}
export interface UdpErrorResponse {
  action: 'error';
  transactionId: number;
  message: string;
}
export type UdpResponse = UdpConnectResponse | UdpAnnounceResponse | UdpScrapeResponse | UdpErrorResponse;

function fail(what: string): never {
  throw new BootTorrentError('BT_ERR_TRACKER_CODEC', `invalid UDP tracker packet: ${what}`);
}

function need(buf: Buffer, len: number, what: string): void {
  if (buf.length < len) fail(`${what} needs at least ${len} bytes, got ${buf.length}`);
}

/** Reads a BEP 15 int64 counter that must be a non-negative safe integer. */
function readCounter(buf: Buffer, offset: number, name: string): number {
  const v = buf.readBigInt64BE(offset);
  if (v < 0n || v > BigInt(Number.MAX_SAFE_INTEGER)) fail(`${name} out of range (${v})`);
  return Number(v);
}

function writeCounter(buf: Buffer, offset: number, v: number, name: string): void {
  if (!Number.isSafeInteger(v) || v < 0) {
    throw new BootTorrentError('BT_ERR_TRACKER_CODEC', `${name} must be a non-negative integer, got ${v}`);
  }
  buf.writeBigInt64BE(BigInt(v), offset);
}

function checkU32(v: number, name: string): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new BootTorrentError('BT_ERR_TRACKER_CODEC', `${name} must be a uint32, got ${v}`);
  }
}

function checkHash(b: Buffer, name: string): void {
  if (b.length !== 20)
    throw new BootTorrentError('BT_ERR_TRACKER_CODEC', `${name} must be 20 bytes, got ${b.length}`);
}

/** Dotted-quad IPv4 to uint32; throws on anything else. */
export function ipv4ToUint32(ip: string): number {
  const parts = ip.split('.');
  if (parts.length !== 4) throw new BootTorrentError('BT_ERR_TRACKER_CODEC', `not an IPv4 address: ${ip}`);
  let n = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) {
      throw new BootTorrentError('BT_ERR_TRACKER_CODEC', `not an IPv4 address: ${ip}`);
    }
    n = n * 256 + Number(p);
  }
  return n;
}

export function uint32ToIpv4(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

/** BEP 23 compact peers: 4 bytes IPv4 + 2 bytes port each. Shared with HTTP. */
export function encodeCompactPeers(peers: readonly PeerAddress[]): Buffer {
  const v4 = peers.filter((p) => isIpv4(p.ip));
  const out = Buffer.alloc(v4.length * 6);
  v4.forEach((p, i) => {
    out.writeUInt32BE(ipv4ToUint32(p.ip), i * 6);
    out.writeUInt16BE(p.port, i * 6 + 4);
  });
  return out;
}

export function decodeCompactPeers(buf: Buffer): PeerAddress[] {
  if (buf.length % 6 !== 0) {
    throw new BootTorrentError(
      'BT_ERR_TRACKER_CODEC',
      `compact peer list length ${buf.length} is not a multiple of 6`,
    );
  }
  const peers: PeerAddress[] = [];
  for (let o = 0; o < buf.length; o += 6) {
    peers.push({ ip: uint32ToIpv4(buf.readUInt32BE(o)), port: buf.readUInt16BE(o + 4) });
  }
  return peers;
}

export function isIpv4(ip: string): boolean {
  return (
    /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.test(ip) && ip.split('.').every((p) => Number(p) <= 255)
  );
}

/** Encodes a client -> tracker packet. */
export function encodeUdpRequest(msg: UdpRequest): Buffer {
  checkU32(msg.transactionId, 'transaction id');
  if (msg.action === 'connect') {
    const b = Buffer.alloc(CONNECT_REQUEST_LEN);
    b.writeBigUInt64BE(PROTOCOL_ID, 0);
    b.writeUInt32BE(ACTION_CONNECT, 8);
    b.writeUInt32BE(msg.transactionId, 12);
    return b;
  }
  if (msg.action === 'announce') {
    const r = msg.request;
    checkHash(r.infoHash, 'info_hash');
    checkHash(r.peerId, 'peer_id');
    if (!Number.isInteger(r.port) || r.port < 0 || r.port > 0xffff) {
      throw new BootTorrentError('BT_ERR_TRACKER_CODEC', `port must be 0..65535, got ${r.port}`);
    }
    const b = Buffer.alloc(ANNOUNCE_REQUEST_LEN);
    b.writeBigUInt64BE(BigInt.asUintN(64, msg.connectionId), 0);
    b.writeUInt32BE(ACTION_ANNOUNCE, 8);
    b.writeUInt32BE(msg.transactionId, 12);
    r.infoHash.copy(b, 16);
    r.peerId.copy(b, 36);
    writeCounter(b, 56, r.downloaded, 'downloaded');
    writeCounter(b, 64, r.left, 'left');
    writeCounter(b, 72, r.uploaded, 'uploaded');
    b.writeUInt32BE(EVENT_CODES[r.event], 80);
    b.writeUInt32BE(r.ip === undefined ? 0 : ipv4ToUint32(r.ip), 84);
    const key = r.key ?? 0;
    checkU32(key, 'key');
    b.writeUInt32BE(key, 88);
    // BEP 15: num_want -1 means "default".
    b.writeInt32BE(
      r.numWant === undefined ? -1 : Math.min(Math.max(0, Math.trunc(r.numWant)), 0x7fffffff),
      92,
    );
    b.writeUInt16BE(r.port, 96);
    return b;
  }
  if (msg.infoHashes.length > MAX_SCRAPE_HASHES) {
    throw new BootTorrentError(
      'BT_ERR_TRACKER_CODEC',
      `at most ${MAX_SCRAPE_HASHES} infohashes per UDP scrape`,
    );
  }
  const b = Buffer.alloc(SCRAPE_REQUEST_HEADER + 20 * msg.infoHashes.length);
  b.writeBigUInt64BE(BigInt.asUintN(64, msg.connectionId), 0);
  b.writeUInt32BE(ACTION_SCRAPE, 8);
  b.writeUInt32BE(msg.transactionId, 12);
  msg.infoHashes.forEach((h, i) => {
    checkHash(h, 'info_hash');
    h.copy(b, SCRAPE_REQUEST_HEADER + 20 * i);
  });
  return b;
}

/** Decodes a client -> tracker packet (the server side). */
export function decodeUdpRequest(input: Uint8Array): UdpRequest {
  const buf = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  need(buf, CONNECT_REQUEST_LEN, 'request');
  const action = buf.readUInt32BE(8);
  const transactionId = buf.readUInt32BE(12);
  if (action === ACTION_CONNECT) {
    if (buf.readBigUInt64BE(0) !== PROTOCOL_ID) {
      fail(
        `connect request without protocol id 0x41727101980 (got 0x${buf.readBigUInt64BE(0).toString(16)})`,
      );
    }
    return { action: 'connect', transactionId };
  }
  const connectionId = buf.readBigUInt64BE(0);
  if (action === ACTION_ANNOUNCE) {
    // Longer packets are allowed: BEP 41 appends options after byte 98.
    need(buf, ANNOUNCE_REQUEST_LEN, 'announce request');
    const eventCode = buf.readUInt32BE(80);
    const event = EVENTS[eventCode];
    if (event === undefined) fail(`unknown announce event ${eventCode}`);
    const ipN = buf.readUInt32BE(84);
    const numWant = buf.readInt32BE(92);
    const request: AnnounceRequest = {
      infoHash: Buffer.from(buf.subarray(16, 36)),
      peerId: Buffer.from(buf.subarray(36, 56)),
      downloaded: readCounter(buf, 56, 'downloaded'),
      left: readCounter(buf, 64, 'left'),
      uploaded: readCounter(buf, 72, 'uploaded'),
      event,
      key: buf.readUInt32BE(88),
      port: buf.readUInt16BE(96),
    };
    if (ipN !== 0) request.ip = uint32ToIpv4(ipN);
    if (numWant >= 0) request.numWant = numWant;
    return { action: 'announce', connectionId, transactionId, request };
  }
  if (action === ACTION_SCRAPE) {
    const n = (buf.length - SCRAPE_REQUEST_HEADER) / 20;
    if (!Number.isInteger(n)) fail(`scrape request length ${buf.length} is not 16 + 20*n`);
    if (n === 0) fail('scrape request without infohashes');
    if (n > MAX_SCRAPE_HASHES) fail(`scrape request with ${n} infohashes (max ${MAX_SCRAPE_HASHES})`);
    const infoHashes: Buffer[] = [];
    for (let i = 0; i < n; i++) {
      const o = SCRAPE_REQUEST_HEADER + 20 * i;
      infoHashes.push(Buffer.from(buf.subarray(o, o + 20)));
    }
    return { action: 'scrape', connectionId, transactionId, infoHashes };
  }
  fail(`unknown request action ${action}`);
}

/** Encodes a tracker -> client packet. */
export function encodeUdpResponse(msg: UdpResponse): Buffer {
  checkU32(msg.transactionId, 'transaction id');
  const head = (action: number, len: number): Buffer => {
    const b = Buffer.alloc(len);
    b.writeUInt32BE(action, 0);
    b.writeUInt32BE(msg.transactionId, 4);
    return b;
  };
  switch (msg.action) {
    case 'connect': {
      const b = head(ACTION_CONNECT, CONNECT_RESPONSE_LEN);
      b.writeBigUInt64BE(BigInt.asUintN(64, msg.connectionId), 8);
      return b;
    }
    case 'announce': {
      checkU32(msg.interval, 'interval');
      checkU32(msg.incomplete, 'leechers');
      checkU32(msg.complete, 'seeders');
      const peers = encodeCompactPeers(msg.peers);
      const b = head(ACTION_ANNOUNCE, ANNOUNCE_RESPONSE_HEADER + peers.length);
      b.writeUInt32BE(msg.interval, 8);
      b.writeUInt32BE(msg.incomplete, 12);
      b.writeUInt32BE(msg.complete, 16);
      peers.copy(b, ANNOUNCE_RESPONSE_HEADER);
      return b;
    }
    case 'scrape': {
      const b = head(ACTION_SCRAPE, RESPONSE_HEADER + 12 * msg.files.length);
      msg.files.forEach((f, i) => {
        const o = RESPONSE_HEADER + 12 * i;
        checkU32(f.complete, 'seeders');
        checkU32(f.downloaded, 'completed');
        checkU32(f.incomplete, 'leechers');
        // BEP 15 scrape response order: seeders, completed, leechers.
        b.writeUInt32BE(f.complete, o);
        b.writeUInt32BE(f.downloaded, o + 4);
        b.writeUInt32BE(f.incomplete, o + 8);
      });
      return b;
    }
    case 'error': {
      const text = Buffer.from(msg.message, 'utf8');
      const b = head(ACTION_ERROR, RESPONSE_HEADER + text.length);
      text.copy(b, RESPONSE_HEADER);
      return b;
    }
  }
}

/** Decodes a tracker -> client packet (the client side). */
export function decodeUdpResponse(input: Uint8Array): UdpResponse {
  const buf = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  need(buf, RESPONSE_HEADER, 'response');
  const action = buf.readUInt32BE(0);
  const transactionId = buf.readUInt32BE(4);
  switch (action) {
    case ACTION_CONNECT:
      need(buf, CONNECT_RESPONSE_LEN, 'connect response');
      return { action: 'connect', transactionId, connectionId: buf.readBigUInt64BE(8) };
    case ACTION_ANNOUNCE: {
      need(buf, ANNOUNCE_RESPONSE_HEADER, 'announce response');
      const rest = buf.subarray(ANNOUNCE_RESPONSE_HEADER);
      if (rest.length % 6 !== 0) fail(`announce response peer list of ${rest.length} bytes is not 6*n`);
      return {
        action: 'announce',
        transactionId,
        interval: buf.readUInt32BE(8),
        incomplete: buf.readUInt32BE(12),
        complete: buf.readUInt32BE(16),
        peers: decodeCompactPeers(rest),
      };
    }
    case ACTION_SCRAPE: {
      const rest = buf.length - RESPONSE_HEADER;
      if (rest % 12 !== 0) fail(`scrape response of ${buf.length} bytes is not 8 + 12*n`);
      const files: ScrapeFile[] = [];
      for (let o = RESPONSE_HEADER; o < buf.length; o += 12) {
        files.push({
          complete: buf.readUInt32BE(o),
          downloaded: buf.readUInt32BE(o + 4),
          incomplete: buf.readUInt32BE(o + 8),
        });
      }
      return { action: 'scrape', transactionId, files };
    }
    case ACTION_ERROR:
      return { action: 'error', transactionId, message: buf.subarray(RESPONSE_HEADER).toString('utf8') };
    default:
      fail(`unknown response action ${action}`);
  }
}
