/**
 * Peer exchange (BEP 11) for one torrent session: addresses peers send us
 * become dial candidates (within the limits), and every interval each peer
 * that speaks ut_pex is told which connected peers it has not heard of and
 * which are gone.
 */
import type { PexMessage } from '../wire/codec.js';
import type { CandidateSource } from './dialer.js';
import type { Peer, SessionCore } from './peer.js';

/** Addresses per list (added, dropped) in one message we send (BEP 11). */
const MAX_PER_MESSAGE = 50;

export class PexExchange {
  private readonly core: SessionCore;
  private readonly maxAdded: number;
  private readonly addCandidate: (ip: string, port: number, source: CandidateSource) => void;

  constructor(
    core: SessionCore,
    maxAddedPerMessage: number,
    addCandidate: (ip: string, port: number, source: CandidateSource) => void,
  ) {
    this.core = core;
    this.maxAdded = maxAddedPerMessage;
    this.addCandidate = addCandidate;
  }

  /**
   * BEP 11: at most 50 added peers per message; more is abuse, so the rest
   * are dropped (counted, logged once a minute per peer). Each address costs
   * O(1) (PeerDialer.add), and the dialer caps what one peer may add.
   */
  received(peer: Peer, msg: PexMessage): void {
    const max = this.maxAdded;
    if (msg.added.length > max) {
      this.core.drops.drop(peer.address, 'PEX message over the limit; extra peers ignored', {
        added: msg.added.length,
        limit: max,
      });
    }
    const n = Math.min(max, msg.added.length);
    for (let i = 0; i < n; i++) {
      const p = msg.added[i]!;
      this.addCandidate(p.host, p.port, { kind: 'pex', from: peer.address });
    }
  }

  /** Sends each peer what changed since its last message (nothing if nothing did). */
  send(): void {
    const peers = this.core.peers;
    const known = new Set<string>();
    for (const p of peers.values()) if (p.listenPort !== undefined) known.add(p.address);
    const toPeer = (a: string) => {
      const i = a.lastIndexOf(':');
      return { host: a.slice(0, i), port: Number(a.slice(i + 1)), flags: 0 };
    };
    for (const p of [...peers.values()]) {
      // BEP 10: an id of 0 (or none) means the peer disabled ut_pex.
      if (!p.conn.isOpen || !p.conn.supportsExtension('ut_pex')) continue;
      this.core.guard(p, 'pex', () => {
        const added: string[] = [];
        for (const a of known) {
          if (added.length >= MAX_PER_MESSAGE) break;
          if (a !== p.address && !p.pexSent.has(a)) added.push(a);
        }
        const dropped: string[] = [];
        for (const a of p.pexSent) {
          if (dropped.length >= MAX_PER_MESSAGE) break;
          if (!known.has(a)) dropped.push(a);
        }
        if (added.length === 0 && dropped.length === 0) return;
        for (const a of added) p.pexSent.add(a);
        for (const a of dropped) p.pexSent.delete(a);
        p.conn.sendPex({ added: added.map(toPeer), dropped: dropped.map(toPeer) });
      });
    }
  }
}
