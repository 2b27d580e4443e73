/**
 * A torrent session's uploading: peers' requests (decided by the pure
 * SeedPolicy), serving them from the PieceStore with backpressure and the
 * upload cap, choking (decided by the pure choker), and the info
 * dictionary for magnet links (BEP 9).
 */
import { BootTorrentError } from '../errors.js';
import type { PeerConnection } from '../wire/connection.js';
import {
  METADATA_PIECE_SIZE,
  decodeMetadataMessage,
  encodeMetadataMessage,
  type MetadataMessage,
} from '../wire/metadata.js';
import type { PieceStore } from './storage.js';
import type { BlockRequest, PiecePicker } from './picker.js';
import { chooseUnchoked, pickOptimistic, type ChokerMode } from './choker.js';
import { RateMeter } from './rate.js';
import type { SeedPolicy, UploadBucket } from './seed-policy.js';
import type { Peer, SessionCore } from './peer.js';

export interface UploaderOptions {
  readonly chokerMode: ChokerMode;
  /** Most peers unchoked at once. */
  readonly maxUnchoked: number;
  /** The upload cap, if any. */
  readonly bucket: UploadBucket | undefined;
}

export class Uploader {
  /** Bytes of blocks we sent to every peer. */
  readonly up = new RateMeter();
  private readonly core: SessionCore;
  private readonly picker: PiecePicker;
  private readonly store: PieceStore;
  private readonly policy: SeedPolicy;
  private readonly opts: UploaderOptions;
  private optimistic: string | undefined;
  private chokeRounds = 0;
  private rechokeQueued = false;

  constructor(
    core: SessionCore,
    parts: { picker: PiecePicker; store: PieceStore; policy: SeedPolicy },
    options: UploaderOptions,
  ) {
    this.core = core;
    this.picker = parts.picker;
    this.store = parts.store;
    this.policy = parts.policy;
    this.opts = options;
  }

  onRequest(peer: Peer, r: BlockRequest): void {
    const d = this.policy.request(peer.uploads, r, {
      amChoking: peer.conn.amChoking,
      fast: peer.conn.fast,
      havePiece: r.index < this.core.meta.pieceCount && this.picker.hasPiece(r.index),
      peerHas: (i) => peer.has.get(i),
    });
    switch (d.action) {
      case 'close':
        this.core.log.debug('invalid request; closing', { peer: peer.address, ...r });
        peer.conn.destroy(new BootTorrentError('BT_ERR_WIRE_PROTOCOL', 'request outside the piece'));
        return;
      case 'reject':
        peer.conn.reject(r.index, r.begin, r.length);
        if (d.suggest !== undefined) peer.conn.suggest(d.suggest);
        return;
      case 'ignore':
        return;
      case 'queued':
        void this.serve(peer);
    }
  }

  /** Sends queued blocks to a peer, one read at a time, respecting backpressure. */
  private async serve(peer: Peer): Promise<void> {
    if (peer.serving) return;
    peer.serving = true;
    try {
      while (peer.uploads.length > 0 && peer.conn.isOpen && !this.core.isStopped()) {
        if (peer.conn.amChoking) {
          peer.uploads.clear();
          break;
        }
        const r = peer.uploads.shift()!;
        if (this.opts.bucket) await this.opts.bucket.take(r.length);
        const lease = await this.store.leaseBlock(r.index, r.begin, r.length);
        if (!peer.conn.isOpen) {
          lease.release();
          break;
        }
        peer.conn.piece(r.index, r.begin, lease.block, lease.release);
        peer.lastUseful = Date.now();
        peer.up.add(r.length);
        this.up.add(r.length);
        if (peer.conn.writableNeedDrain) await peer.conn.drained();
      }
    } catch (err) {
      if (!(err instanceof BootTorrentError && err.code === 'BT_ERR_WIRE_CLOSED')) {
        this.core.log.debug('upload stopped', { peer: peer.address, error: (err as Error).message });
      }
    } finally {
      peer.serving = false;
    }
  }

  /**
   * Rechokes once after the messages at hand: interest changes rechoke at
   * once (see the session's file comment), but a peer flipping interested
   * and not interested in one burst made each flip a full rechoke and a
   * choke or unchoke message back.
   */
  rechokeSoon(): void {
    if (this.rechokeQueued) return;
    this.rechokeQueued = true;
    setImmediate(() => {
      this.rechokeQueued = false;
      try {
        this.rechoke(false);
      } catch (err) {
        this.core.fail('rechoke', err);
      }
    });
  }

  /** Chooses whom to unchoke; `round` is the regular 10-s round (a new optimistic unchoke every third). */
  rechoke(round: boolean): void {
    if (this.core.isStopped()) return;
    const list = [...this.core.peers.values()];
    const chokerPeers = list.map((p) => ({
      id: p.pid,
      interested: p.conn.peerInterested,
      downloadRate: p.down.rate(),
      uploadRate: p.up.rate(),
      uploaded: p.up.total,
      tiebreak: p.tiebreak,
      local: p.local,
    }));
    const { chokerMode, maxUnchoked } = this.opts;
    if (round && chokerMode === 'standard' && this.chokeRounds++ % 3 === 0) {
      const regular = chooseUnchoked({
        mode: 'standard',
        peers: chokerPeers,
        seeding: this.picker.complete,
        maxUnchoked,
      });
      this.optimistic = pickOptimistic(chokerPeers, regular);
    }
    const unchoke = chooseUnchoked({
      mode: chokerMode,
      peers: chokerPeers,
      seeding: this.picker.complete,
      maxUnchoked,
      ...(this.optimistic !== undefined ? { optimistic: this.optimistic } : {}),
    });
    for (const p of list) {
      if (!p.conn.isOpen) continue;
      this.core.guard(p, 'rechoke', () => {
        if (unchoke.has(p.pid)) {
          if (p.conn.amChoking) p.conn.unchoke();
        } else if (!p.conn.amChoking) {
          p.conn.choke();
          const dropped = p.uploads.clear();
          if (p.conn.fast) for (const r of dropped) p.conn.reject(r.index, r.begin, r.length);
        }
      });
    }
  }
}

/** BEP 9: hands out the info dictionary, so magnet links work against us. */
export function answerMetadataRequest(conn: PeerConnection, info: Buffer, payload: Buffer): void {
  let m;
  try {
    m = decodeMetadataMessage(payload);
  } catch (err) {
    conn.destroy(err as BootTorrentError);
    return;
  }
  if (m.type !== 'request' || !conn.supportsExtension('ut_metadata')) return;
  const start = m.piece * METADATA_PIECE_SIZE;
  const reply: MetadataMessage =
    start < info.length
      ? {
          type: 'data',
          piece: m.piece,
          totalSize: info.length,
          data: info.subarray(start, start + METADATA_PIECE_SIZE),
        }
      : { type: 'reject', piece: m.piece };
  conn.sendExtension('ut_metadata', encodeMetadataMessage(reply));
}
