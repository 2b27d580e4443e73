/**
 * Getting a torrent's info dictionary from peers (BEP 9), for magnet links.
 * Peers come from the magnet's x.pe addresses, extra addresses and its
 * trackers; each peer that offers ut_metadata is asked for every piece,
 * and each peer's copy is assembled apart from the others': the first copy
 * that hashes to the magnet's infohash wins, and a peer whose copy does not
 * is closed. (Pooling the first copy of each piece from anyone, with the
 * size the first peer claimed, let one lying peer stall the fetch: a wrong
 * size kept every honest peer from being asked, and a garbage piece
 * displaced the honest copy, which was never asked for again.)
 */
import { createHash, randomBytes } from 'node:crypto';
import { BootTorrentError, abortError } from '../errors.js';
import { RawBencode, encode } from '../bencode/index.js';
import { silentLogger, type Logger } from '../util/logger.js';
import type { PeerConnection } from '../wire/connection.js';
import {
  MAX_METADATA_SIZE,
  METADATA_PIECE_SIZE,
  decodeMetadataMessage,
  encodeMetadataMessage,
  metadataPieces,
} from '../wire/metadata.js';
import { TrackerClient } from '../tracker/client.js';
import type { Magnet } from '../torrent/magnet.js';
import { parseTorrent, type Metainfo } from '../torrent/metainfo.js';
import { PeerDialer, type CandidateSource, type DialerOptions } from './dialer.js';
import { dialPeer, type Dial } from './dial.js';
import { Announcer } from './announcer.js';

export interface FetchMetadataOptions {
  magnet: Magnet;
  peerId: Buffer;
  /** Our peer-wire port, announced to trackers. */
  listenPort: number;
  /** More peers to ask ("host:port"). */
  peers?: readonly string[];
  /** Connections at once (default 8). */
  maxConnections?: number;
  /** Give up after this long (default 60 s). */
  timeoutMs?: number;
  /** Overrides of the dialing limits (defaults from PEER_LIMITS). */
  limits?: Omit<DialerOptions, 'now'>;
}

export interface FetchMetadataServices {
  logger?: Logger;
  signal?: AbortSignal;
  trackerClient?: TrackerClient;
}

const OUR_ID = 2;
/** While no copy has come, the trackers are asked again this long after an answer, doubling each time (within their min interval). */
const ANNOUNCE_EAGER_MS = 3000;
/** A peer that has not finished its handshake this long after the TCP connect is dropped. */
const HANDSHAKE_TIMEOUT_MS = 10_000;

export async function fetchMetadata(
  opts: FetchMetadataOptions,
  services: FetchMetadataServices = {},
): Promise<Metainfo> {
  const { magnet } = opts;
  const log = (services.logger ?? silentLogger).child('metadata');
  const tracker =
    services.trackerClient ?? new TrackerClient({ udpRetransmitBaseMs: 2000, udpMaxRetransmits: 2 });
  const maxConns = opts.maxConnections ?? 8;
  // Addresses come from the magnet, the user and trackers; the dialer checks
  // them (a bad port from a tracker used to throw in the dial timer) and
  // bounds how many are held and dialed. Each address is asked once.
  const dialer = new PeerDialer(opts.limits);
  const tried = new Set<string>();
  const addCandidate = (addr: string, source: CandidateSource) => {
    const m = /^(.+):(\d+)$/.exec(addr);
    if (!m) return;
    const host = m[1]!.replace(/^\[|\]$/g, '');
    if (!tried.has(`${host}:${m[2]}`)) dialer.add(host, Number(m[2]), source);
  };
  for (const addr of [...magnet.peers, ...(opts.peers ?? [])]) addCandidate(addr, { kind: 'user' });
  const conns = new Set<PeerConnection>();
  const pending = new Set<Dial>();
  let done = false;
  // Set below, where the dials live; tracker answers call it.
  let dialMore: () => void = () => undefined;
  // The trackers, as a session asks them, but again every few seconds
  // until done: at the start of a boot the seeders may announce after us.
  const announcer = new Announcer(
    {
      infoHash: magnet.infoHash,
      infoHashHex: magnet.infoHashHex,
      peerId: opts.peerId,
      port: opts.listenPort,
      trackers: magnet.trackers,
      key: randomBytes(4).readUInt32BE(0),
      startedComplete: false,
      eagerMs: ANNOUNCE_EAGER_MS,
      numWant: 50,
    },
    {
      logger: log,
      tracker,
      signal: services.signal,
      // The size is not known yet; anything above 0 says "not a seed".
      progress: () => ({ uploaded: 0, downloaded: 0, left: 1 }),
      onPeer: (ip, port, source) => {
        addCandidate(`${ip}:${port}`, source);
        dialMore();
      },
      onWarning: () => undefined,
      stopped: () => done,
      wantsPeers: () => !done,
    },
  );

  return new Promise<Metainfo>((resolve, reject) => {
    const finish = (err: Error | undefined, meta?: Metainfo) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearInterval(dialTimer);
      services.signal?.removeEventListener('abort', onAbort);
      for (const d of pending) d.cancel();
      for (const c of conns) c.destroy();
      if (!services.trackerClient) tracker.close();
      if (err) reject(err);
      else resolve(meta!);
    };
    const onAbort = () => finish(abortError(services.signal!));
    if (services.signal?.aborted) return onAbort();
    services.signal?.addEventListener('abort', onAbort, { once: true });
    const timer = setTimeout(
      () =>
        finish(
          new BootTorrentError(
            'BT_ERR_SWARM',
            `no peer sent the torrent's metadata for ${magnet.infoHashHex} within ${(opts.timeoutMs ?? 60_000) / 1000} s ` +
              `(asked ${tried.size} peer(s)); check the magnet's trackers (tr=) and peers (x.pe=)`,
          ),
        ),
      opts.timeoutMs ?? 60_000,
    );

    const complete = (conn: PeerConnection, addr: string, pieces: Buffer[]) => {
      const info = Buffer.concat(pieces);
      if (!createHash('sha1').update(info).digest().equals(magnet.infoHash)) {
        log.warn('metadata from a peer did not match the infohash; closing it', { peer: addr });
        conn.destroy();
        return;
      }
      try {
        finish(undefined, torrentOf(magnet, info));
      } catch (err) {
        finish(err as Error);
      }
    };

    const dial = (addr: string, host: string, port: number) => {
      tried.add(addr);
      const d = dialPeer(
        host,
        port,
        { peerId: opts.peerId, infoHash: magnet.infoHash },
        {
          failed: (err) => {
            pending.delete(d);
            dialer.dialEnded(addr);
            dialer.remove(addr);
            log.debug('cannot dial peer', { peer: addr, error: err.message });
          },
          connected: (conn) => {
            pending.delete(d);
            if (done) {
              conn.destroy();
              return;
            }
            speak(conn, addr);
          },
        },
      );
      pending.add(d);
    };

    const speak = (conn: PeerConnection, addr: string) => {
      conns.add(conn);
      const handshakeTimer = setTimeout(() => conn.destroy(), HANDSHAKE_TIMEOUT_MS);
      askForMetadata(conn, {
        listenPort: opts.listenPort,
        isDone: () => done,
        onCopy: (pieces) => complete(conn, addr, pieces),
      });
      conn.on('error', (err) => log.debug('peer error', { peer: addr, error: err.message }));
      conn.on('close', () => {
        clearTimeout(handshakeTimer);
        conns.delete(conn);
        dialer.dialEnded(addr);
        dialer.remove(addr);
      });
      conn.once('handshake', () => clearTimeout(handshakeTimer));
    };

    dialMore = () => {
      if (done) return;
      // A dial's slot is held until its connection closes: at most maxConns at once.
      for (const c of dialer.next(maxConns, { seeding: false, connected: () => false })) {
        try {
          dial(c.address, c.ip, c.port);
        } catch (err) {
          dialer.dialEnded(c.address);
          dialer.remove(c.address);
          log.debug('cannot dial peer', { peer: c.address, error: (err as Error).message });
        }
      }
    };
    const dialTimer = setInterval(() => {
      dialMore();
      announcer.tick();
    }, 1000);
    dialMore();
    announcer.announceSoon('started');
  });
}

/**
 * Asks one peer for the whole info dictionary once its handshake is done
 * (BEP 9), keeping its copy apart from other peers' (see the file
 * comment); `onCopy` gets all pieces when the last one is in.
 */
function askForMetadata(
  conn: PeerConnection,
  ask: { listenPort: number; isDone: () => boolean; onCopy: (pieces: Buffer[]) => void },
): void {
  // This peer's copy: its claimed size and the pieces it sent.
  let size = 0;
  let pieces: (Buffer | undefined)[] = [];
  // Counted, not found with every(): every() skips the holes of a new Array(n).
  let received = 0;
  conn.once('handshake', () => {
    if (!conn.extended) return conn.destroy();
    conn.sendExtendedHandshake({ m: new Map([['ut_metadata', OUR_ID]]), p: ask.listenPort });
  });
  conn.on('extended-handshake', (h) => {
    const n = h.metadataSize;
    if (!h.m.get('ut_metadata') || n === undefined || n <= 0 || n > MAX_METADATA_SIZE) return conn.destroy();
    // A later extended handshake (BEP 10) asks nothing again.
    if (size !== 0) return;
    size = n;
    pieces = Array.from({ length: metadataPieces(n) }, (): Buffer | undefined => undefined);
    for (let i = 0; i < pieces.length; i++)
      conn.sendExtension('ut_metadata', encodeMetadataMessage({ type: 'request', piece: i }));
  });
  conn.on('extended', ({ id, payload }) => {
    if (id !== OUR_ID || ask.isDone()) return;
    let m;
    try {
      m = decodeMetadataMessage(payload);
    } catch (err) {
      return conn.destroy(err as BootTorrentError);
    }
    if (m.type !== 'data' || m.totalSize !== size || m.piece >= pieces.length) return;
    const want = Math.min(METADATA_PIECE_SIZE, size - m.piece * METADATA_PIECE_SIZE);
    if (m.data.length !== want || pieces[m.piece]) return;
    pieces[m.piece] = Buffer.from(m.data);
    if (++received === pieces.length) ask.onCopy(pieces as Buffer[]);
  });
}

/** The torrent a magnet and its verified info dictionary make (its trackers one per tier, its web seeds). */
function torrentOf(magnet: Magnet, info: Buffer): Metainfo {
  const tiers = magnet.trackers.map((t) => [t]);
  const torrent = encode({
    announce: tiers[0]?.[0],
    'announce-list': tiers.length > 1 ? tiers : undefined,
    info: new RawBencode(info),
    'url-list': magnet.webSeeds.length > 0 ? [...magnet.webSeeds] : undefined,
  });
  return parseTorrent(torrent, `metadata of ${magnet.infoHashHex}`);
}
