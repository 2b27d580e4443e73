/**
 * What a torrent session is given and what it tells: its options and
 * services, its statistics and its events (src/swarm/session.ts).
 */
import type { Logger } from '../util/logger.js';
import type { PEER_LIMITS } from '../limits.js';
import type { Metainfo } from '../torrent/metainfo.js';
import type { BootTorrentError } from '../errors.js';
import type { ByteTally } from '../wire/connection.js';
import type { TrackerClient } from '../tracker/client.js';
import type { ChokerMode } from './choker.js';
import type { StorageMode } from './storage.js';
import type { WebSeedStats } from './web-seed.js';

export interface SessionOptions {
  meta: Metainfo;
  /** Folder that holds (or will hold) the torrent's data. */
  dir: string;
  mode: StorageMode;
  peerId: Buffer;
  /** TCP port we accept peers on (announced to trackers and in PEX/extended handshakes). */
  listenPort: number;
  choker?: ChokerMode;
  /** Most connections for this torrent (default 80). */
  maxPeers?: number;
  /** Connections one IP may hold in this torrent; more incoming ones are refused (default PEER_LIMITS.establishedPerIp). */
  establishedPerIp?: number;
  /** Slots full: an incoming peer replaces the one that moved no block for longest, if for this long (ms, default PEER_LIMITS.uselessPeerMs). */
  uselessPeerMs?: number;
  /**
   * Locality (issue #21): peers whose IPv4 address shares this many leading
   * bits with our end of the connection (IPv6: 64) are local. A remote
   * peer is asked only for pieces no local peer that unchokes us has, and
   * in lan mode local peers are unchoked first, so on a campus each piece
   * crosses a router about once per subnet. Default: the prefix of our
   * interface that holds the connection's address (24 if none found);
   * false: every peer is treated alike.
   */
  locality?: number | false;
  /** Most peers unchoked at once (default in lan mode: 64 for a seed, 8 while downloading; 4 in standard). */
  maxUnchoked?: number;
  /** Trackers to use instead of the torrent's own. */
  trackers?: readonly string[];
  /** Peers to connect to at start ("ip:port"), e.g. the server's seeder. */
  peers?: readonly string[];
  /** Exchange peers with peers (BEP 11); never for private torrents (default true). */
  pex?: boolean;
  /** Check data already on disk at start (default true; false trusts it: seed mode only). */
  verify?: boolean;
  /** Per-piece priority (higher first). */
  priority?: (index: number) => number;
  /** Outstanding requests per peer: lower and upper bounds (default 4, 256: 4 MiB in flight covers a 1 Gbit/s link with 30 ms of RTT, and every partly received piece holds a piece-sized buffer; between them, half a second of data at the peer's rate). */
  minQueue?: number;
  maxQueue?: number;
  /** Upload cap in bytes/s across all peers of this torrent (default none). */
  uploadLimit?: number;
  /** Tracker client overrides, e.g. quick UDP retransmission in tests. */
  trackerRetryBaseMs?: number;
  /**
   * IPv4 address of the LAN interface to run Local Service Discovery on
   * (BEP 14), so peers find each other with no tracker. Never for private
   * torrents. Undefined: no LSD.
   */
  lsdInterface?: string;
  /** LSD announce interval in ms (default 5 minutes; BEP 14 allows one a minute at most). */
  lsdIntervalMs?: number;
  /**
   * How a seed answers requests while some pieces have never left it:
   * `spread` rejects (BEP 6) a request for a piece it already sent to
   * another peer, so its upload goes to pieces the swarm lacks and peers
   * fetch the others from each other (the aim of BEP 16 super-seeding,
   * without hiding pieces); `plain` serves every request. Default spread.
   */
  seedPolicy?: 'spread' | 'plain';
  /** How often peers get PEX messages (ms, default 60 s; BEP 11 allows one a minute). */
  pexIntervalMs?: number;
  /** Overrides of PEER_LIMITS (src/limits.ts), e.g. small values in tests. */
  limits?: Partial<Record<keyof typeof PEER_LIMITS, number>>;
  /** Web seeds (BEP 19) to use instead of the torrent's url-list (at most MAX_WEB_SEEDS are used). */
  webSeeds?: readonly string[];
  /** A web seed fetches while fewer peers than this unchoke us (default 2). */
  webSeedMinPeers?: number;
  /** First back-off of a failed web seed request, ms (default 5 s); tests shorten it. */
  webSeedRetryMs?: number;
}

export interface SessionServices {
  logger?: Logger;
  signal?: AbortSignal;
  trackerClient?: TrackerClient;
  /** Progress of the start-up check of existing data. */
  onVerifyProgress?: (bytes: number, total: number) => void;
  /** Adds the bytes of every connection this session dials (the client's wire total). */
  tally?: ByteTally;
}

export interface PeerStats {
  readonly address: string;
  readonly client: string;
  readonly downloaded: number;
  readonly uploaded: number;
  readonly downloadRate: number;
  readonly uploadRate: number;
  readonly pieces: number;
  readonly amChoking: boolean;
  readonly peerChoking: boolean;
  readonly interested: boolean;
  readonly outstanding: number;
  /** On our subnet (SessionOptions.locality). */
  readonly local: boolean;
}

export interface SessionStats {
  readonly infoHash: string;
  readonly name: string;
  readonly length: number;
  readonly pieceCount: number;
  readonly piecesHave: number;
  readonly downloaded: number;
  readonly uploaded: number;
  readonly downloadRate: number;
  readonly uploadRate: number;
  /** Bytes still missing. */
  readonly left: number;
  readonly complete: boolean;
  readonly ratio: number;
  readonly peers: readonly PeerStats[];
  readonly wasted: number;
  readonly hashFailures: number;
  /** Web seeds of this session (BEP 19): URL, state, bytes fetched. */
  readonly webSeeds: readonly WebSeedStats[];
}

export interface SessionEvents {
  piece: [number];
  complete: [];
  'piece-failed': [{ index: number; peers: string[] }];
  banned: [{ address: string; reason: string }];
  peer: [{ address: string; event: 'connect' | 'close' }];
  warning: [string];
  /** The session hit a fault of its own and stopped (logged; the process goes on). */
  failed: [BootTorrentError];
}
