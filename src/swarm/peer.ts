/**
 * One connected peer as a torrent session keeps it, and what the session's
 * parts (PeerPool, Downloader, Uploader, PexExchange) share of the session.
 */
import type { Logger } from '../util/logger.js';
import type { DropLog } from '../util/drop-log.js';
import type { Metainfo } from '../torrent/metainfo.js';
import { Bitfield } from '../wire/bitfield.js';
import type { PeerConnection } from '../wire/connection.js';
import type { BlockRequest } from './picker.js';
import { RateMeter } from './rate.js';
import { UploadQueue } from './seed-policy.js';

export interface Peer {
  readonly conn: PeerConnection;
  /** Stable id for the picker and choker (the address can change on the extended handshake). */
  readonly pid: string;
  /** ip:port we know the peer by (its listen port when known). */
  address: string;
  readonly ip: string;
  /**
   * On our own subnet (SessionOptions.localityPrefix): asked first for
   * pieces and unchoked first, so traffic stays off routers where it can.
   */
  readonly local: boolean;
  listenPort: number | undefined;
  readonly has: Bitfield;
  seed: boolean;
  /** Our requests to it, by "index:begin". */
  readonly outstanding: Map<string, { req: BlockRequest; at: number }>;
  /** Its requests to us, and the seed policy's notes on it. */
  readonly uploads: UploadQueue;
  serving: boolean;
  readonly down: RateMeter;
  readonly up: RateMeter;
  /** Bitfield, have-all and have-none messages taken from it (see maxPieceSetMessages). */
  pieceSets: number;
  /** Their reqq (BEP 10), capping our pipeline to them. */
  remoteQueue: number;
  /** Pieces this peer refused us (BEP 6 reject), until a time: ask others meanwhile. */
  readonly refused: Map<number, number>;
  /** Pieces this peer suggested (BEP 6 Suggest Piece) that we have not started: asked of it first. */
  readonly suggested: Set<number>;
  /** Random, drawn once: the choker's tie-break (see ChokerPeer.tiebreak). */
  readonly tiebreak: number;
  /** Pieces we verified that this peer has not been told of yet (sent in batches). */
  pendingHaves: number[];
  /** Addresses already sent to this peer in PEX. */
  readonly pexSent: Set<string>;
  connectedAt: number;
  /** Last time a block moved either way (connectedAt until then): see PeerPool.replaceUseless. */
  lastUseful: number;
}

export function newPeer(
  conn: PeerConnection,
  pid: string,
  ip: string,
  listenPort: number | undefined,
  remotePort: number,
  pieceCount: number,
  local = false,
): Peer {
  const now = Date.now();
  return {
    conn,
    pid,
    address: `${ip}:${listenPort ?? remotePort}`,
    ip,
    local,
    listenPort,
    has: new Bitfield(pieceCount),
    seed: false,
    outstanding: new Map(),
    uploads: new UploadQueue(),
    serving: false,
    down: new RateMeter(),
    up: new RateMeter(),
    pieceSets: 0,
    remoteQueue: 250,
    pexSent: new Set(),
    refused: new Map(),
    suggested: new Set(),
    pendingHaves: [],
    tiebreak: Math.random(),
    connectedAt: now,
    lastUseful: now,
  };
}

/** The first 8 bytes of the peer's id, printable (the client's name by convention). */
export function clientName(conn: PeerConnection): string {
  const id = conn.remote?.peerId;
  if (!id) return '?';
  let s = '';
  for (const b of id.subarray(0, 8)) s += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.';
  return s;
}

/** A block's key in Peer.outstanding. */
export const blockKey = (index: number, begin: number) => `${index}:${begin}`;

/**
 * A peer id as bans know it: with the IP it came from. Peer ids are no
 * secret (every handshake shows one), so a bare-id ban let anyone get an
 * honest peer banned by sending corrupt data under its id.
 */
export const idKey = (ip: string, peerId: Buffer) => `${ip}/${peerId.toString('hex')}`;

/** What the session's parts share of it. */
export interface SessionCore {
  readonly meta: Metainfo;
  readonly log: Logger;
  /** The connected peers (handshake done), by connection. */
  readonly peers: ReadonlyMap<PeerConnection, Peer>;
  /** Peer input dropped over a limit, logged once per source per minute. */
  readonly drops: DropLog;
  /** True once stop() began. */
  isStopped(): boolean;
  /** A fault of the session's own: logged, and the session stops (issue #14). */
  fail(where: string, err: unknown): void;
  /** Runs one peer's part of a handler or timer: a throw closes that peer only. */
  guard(peer: Peer, where: string, fn: () => void): void;
}
