/**
 * The tracker's requests and responses, one type per concept (STYLE.md
 * lesson 5): an HTTP announce (BEP 3/23) and a UDP announce (BEP 15) both
 * decode to one AnnounceRequest, which one server function answers.
 */

/** BEP 3 `event`; absent or empty on the wire is 'none' (BEP 15 event 0). */
export type AnnounceEvent = 'started' | 'completed' | 'stopped' | 'none';

export interface AnnounceRequest {
  /** 20-byte SHA-1 infohash (binary, not hex). */
  infoHash: Buffer;
  /** 20-byte peer id. */
  peerId: Buffer;
  /** TCP port the peer listens on for the peer wire. */
  port: number;
  uploaded: number;
  downloaded: number;
  /** Bytes still missing; 0 means the peer is a seeder. */
  left: number;
  event: AnnounceEvent;
  /** Peers wanted; absent = tracker default (UDP sends -1). */
  numWant?: number;
  /** HTTP only: ask for the BEP 23 compact peer list (default true). */
  compact?: boolean;
  /** IPv4 address the peer claims; servers ignore it unless told to trust it. */
  ip?: string;
  /** uint32 the client keeps across IP changes (BEP 15 `key`; HTTP sends it as hex). */
  key?: number;
}

export interface PeerAddress {
  ip: string;
  port: number;
  /** Only in non-compact HTTP replies. */
  peerId?: Buffer;
}

export interface AnnounceResponse {
  /** Seconds the client should wait before the next regular announce. */
  interval: number;
  minInterval?: number;
  /** Seeders. */
  complete: number;
  /** Leechers. */
  incomplete: number;
  peers: PeerAddress[];
  /** BEP 3 `warning message`: the announce worked, but read this. */
  warning?: string;
}

export interface ScrapeRequest {
  /** 20-byte infohashes; an empty list asks an HTTP tracker for every swarm. */
  infoHashes: Buffer[];
}

export interface ScrapeFile {
  /** Seeders. */
  complete: number;
  /** Finished downloads ever reported (`event=completed`). */
  downloaded: number;
  /** Leechers. */
  incomplete: number;
}

export interface ScrapeResponse {
  /** Keyed by lowercase hex infohash. */
  files: Map<string, ScrapeFile>;
}

/** What the tracker modules log through; scoped by the caller (STYLE.md lesson 9). */
export interface TrackerLogger {
  debug(msg: string): void;
  warn(msg: string): void;
}

export const silentLogger: TrackerLogger = {
  debug() {},
  warn() {},
};
