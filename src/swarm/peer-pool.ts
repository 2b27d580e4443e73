/**
 * A torrent session's connections: whom to dial (through PeerDialer),
 * dialing, taking incoming peers within the per-address and slot limits,
 * freeing the slot of a peer that moves nothing for a newcomer, the checks
 * on a finished handshake (bans, ourselves, the same peer twice) and bans.
 * What a connected peer then says is the session's (src/swarm/session.ts).
 */
import { networkInterfaces } from 'node:os';
import type { Duplex } from 'node:stream';
import { errorText } from '../errors.js';
import { DropLog } from '../util/drop-log.js';
import type { PEER_LIMITS } from '../limits.js';
import { PeerConnection, type ByteTally } from '../wire/connection.js';
import { PeerDialer, type CandidateSource, type DialCandidate } from './dialer.js';
import { dialPeer } from './dial.js';
import { sameNetwork } from '../util/address.js';
import { idKey, newPeer, type Peer, type SessionCore } from './peer.js';

export interface PeerPoolOptions {
  readonly peerId: Buffer;
  /** Most connections for this torrent; incoming ones may take 10 more. */
  readonly maxPeers: number;
  /** Connections one IP may hold in this torrent. */
  readonly establishedPerIp: number;
  /** See replaceUseless (ms). */
  readonly uselessPeerMs: number;
  readonly maxWriteBacklogBytes: number;
  /** Overrides of the dialer's limits (PEER_LIMITS names). */
  readonly limits: Partial<Record<keyof typeof PEER_LIMITS, number>>;
  /** Adds the bytes of every connection this pool dials. */
  readonly tally?: ByteTally | undefined;
  /**
   * Prefix length (IPv4) within which a peer counts as local (Peer.local);
   * undefined: that of our interface holding the connection's address
   * (24 if none does); false: no peer is.
   */
  readonly localityPrefix?: number | false | undefined;
}

export interface PeerPoolHooks {
  /** True while the session is started and not stopped: only then are peers dialed and taken. */
  running(): boolean;
  /** True when we have every piece (a seed does not dial out). */
  seeding(): boolean;
  /** A new peer is in `peers`: the session wires up its messages. */
  attached(peer: Peer): void;
}

/** Our interfaces' prefix lengths by address, looked up once per address. */
const prefixes = new Map<string, number>();

/** The prefix length of the interface that holds `address` (IPv4: 24, IPv6: 64 if none does). */
function interfacePrefix(address: string): number {
  let bits = prefixes.get(address);
  if (bits !== undefined) return bits;
  const v4 = !address.includes(':');
  bits = v4 ? 24 : 64;
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      if (a.address === address && a.cidr) bits = Number(a.cidr.split('/')[1]);
    }
  }
  // A loopback address or an odd interface: keep the default, never "everyone is local" by /0.
  if (!Number.isInteger(bits) || bits < 8) bits = v4 ? 24 : 64;
  if (prefixes.size < 64) prefixes.set(address, bits);
  return bits;
}

export class PeerPool {
  /** The session's peers (SessionCore.peers): the pool adds and removes them. */
  private readonly peers: Map<PeerConnection, Peer>;
  /** Candidates, backoff, bans and dial limits (also holds banned peer ids). */
  readonly dialer: PeerDialer;
  private readonly core: SessionCore;
  private readonly opts: PeerPoolOptions;
  private readonly hooks: PeerPoolHooks;
  /** Incoming peers refused by the per-IP and slot limits, logged once per IP per minute. */
  private readonly admissionDrops: DropLog;
  private connectQueued = false;
  private peerSeq = 0;

  constructor(
    core: SessionCore,
    peers: Map<PeerConnection, Peer>,
    options: PeerPoolOptions,
    hooks: PeerPoolHooks,
  ) {
    this.core = core;
    this.peers = peers;
    this.opts = options;
    this.hooks = hooks;
    this.admissionDrops = new DropLog(core.log);
    const l = options.limits;
    this.dialer = new PeerDialer({
      ...(l.maxCandidates !== undefined ? { maxCandidates: l.maxCandidates } : {}),
      ...(l.maxCandidatesPerPeer !== undefined ? { maxCandidatesPerPeer: l.maxCandidatesPerPeer } : {}),
      ...(l.maxConcurrentDials !== undefined ? { maxConcurrentDials: l.maxConcurrentDials } : {}),
      ...(l.maxDialsPerSecond !== undefined ? { maxDialsPerSecond: l.maxDialsPerSecond } : {}),
      ...(l.maxPexDialFailures !== undefined ? { maxPexDialFailures: l.maxPexDialFailures } : {}),
    });
  }

  /** A peer address ("ip:port", IPv6 in brackets) from anywhere. */
  addAddress(address: string, source: CandidateSource): void {
    const m = /^(.+):(\d+)$/.exec(address);
    if (!m) return;
    this.add(m[1]!.replace(/^\[|\]$/g, ''), Number(m[2]), source);
  }

  /** A candidate from a tracker, LSD, PEX or the user. Bounded by the dialer's caps. */
  add(ip: string, port: number, source: CandidateSource): void {
    const address = `${ip}:${port}`;
    for (const p of this.peers.values()) if (p.address === address) return;
    const refused = this.dialer.add(ip, port, source);
    if (refused === 'full' || refused === 'source-full') {
      this.core.drops.drop(source.kind === 'pex' ? source.from : source.kind, 'peer address ignored', {
        reason: refused === 'full' ? 'candidate table full' : 'too many candidates from this peer',
      });
    }
    if (refused === undefined && this.hooks.running()) this.connectSoon();
  }

  /**
   * Dials once after the addresses at hand: a PEX message or tracker reply
   * adds many, and a pass over the candidates after each one made a flood
   * of known addresses cost O(candidates) per address.
   */
  connectSoon(): void {
    if (this.connectQueued) return;
    this.connectQueued = true;
    setImmediate(() => {
      this.connectQueued = false;
      try {
        this.connectMore();
      } catch (err) {
        this.core.fail('connect', err);
      }
    });
  }

  /** Listen addresses of the connected peers (so they are not dialed twice). */
  private connectedAddresses(): Set<string> {
    const out = new Set<string>();
    for (const p of this.peers.values()) out.add(p.address);
    return out;
  }

  /** Dials the candidates that are due, up to the free slots. */
  connectMore(): void {
    if (!this.hooks.running()) return;
    let connected: Set<string> | undefined;
    const due = this.dialer.next(this.opts.maxPeers - this.peers.size, {
      // A seed does not dial out: leechers find it through the tracker.
      seeding: this.hooks.seeding(),
      connected: (a) => (connected ??= this.connectedAddresses()).has(a),
    });
    for (const c of due) {
      try {
        this.dial(c);
      } catch (err) {
        this.dialer.failed(c.address);
        this.core.log.debug('connect failed', { peer: c.address, error: errorText(err) });
      }
    }
  }

  private dial(c: DialCandidate): void {
    const k = c.address;
    const { meta, log } = this.core;
    dialPeer(
      c.ip,
      c.port,
      {
        peerId: this.opts.peerId,
        infoHash: meta.infoHash,
        pieceCount: meta.pieceCount,
        maxWriteBacklog: this.opts.maxWriteBacklogBytes,
        ...(this.opts.tally ? { tally: this.opts.tally } : {}),
      },
      {
        failed: (err) => {
          this.dialer.failed(k);
          log.debug('connect failed', { peer: k, error: err.message });
        },
        connected: (pc) => {
          this.dialer.dialEnded(k);
          if (this.core.isStopped()) {
            pc.destroy();
            return;
          }
          try {
            pc.on('error', (err) => log.debug('peer error', { peer: k, error: err.message }));
            pc.once('handshake', () => this.attach(pc, c.ip, c.port, c.port));
            pc.once('close', () => {
              if (!this.peers.has(pc)) this.dialer.failed(k);
            });
          } catch (err) {
            log.warn('error setting up a peer connection; closing it', { peer: k, error: errorText(err) });
            pc.destroy();
          }
        },
      },
    );
  }

  /**
   * Speaks the peer wire over any duplex stream (an in-memory pair in tests,
   * STYLE.md lesson 6). `label` stands in for the peer's address.
   */
  connectStream(stream: Duplex, label: string, initiator: boolean): PeerConnection {
    const { meta, log } = this.core;
    const conn = new PeerConnection(stream, {
      peerId: this.opts.peerId,
      initiator,
      infoHash: meta.infoHash,
      pieceCount: meta.pieceCount,
      maxWriteBacklog: this.opts.maxWriteBacklogBytes,
    });
    conn.on('error', (err) => log.debug('peer error', { peer: label, error: err.message }));
    conn.once('handshake', () => this.attach(conn, label, undefined, 0));
    return conn;
  }

  /**
   * Takes an incoming connection whose handshake named this torrent (the
   * listener checked the infohash). Returns false if refused.
   */
  acceptIncoming(conn: PeerConnection, ip: string, remotePort: number): boolean {
    if (!this.hooks.running()) {
      conn.destroy();
      return false;
    }
    const perIp = this.opts.establishedPerIp;
    let fromIp = 0;
    for (const p of this.peers.values()) if (p.ip === ip) fromIp++;
    if (fromIp >= perIp) {
      conn.destroy();
      this.admissionDrops.drop(ip, 'peer refused: too many connections from this address', { limit: perIp });
      return false;
    }
    if (this.peers.size >= this.opts.maxPeers + 10 && !this.replaceUseless()) {
      conn.destroy();
      this.admissionDrops.drop(ip, 'peer refused: every slot of this torrent is in use', {
        limit: this.opts.maxPeers + 10,
      });
      return false;
    }
    conn.setPieceCount(this.core.meta.pieceCount);
    this.attach(conn, ip, undefined, remotePort);
    return true;
  }

  /**
   * Frees a slot for a newcomer (an incoming peer, or a candidate to dial
   * while downloading) by closing the peer that has moved no block either
   * way for longest, if that is at least uselessPeerMs. Keep-alives
   * and interest are free to fake; a block is not, so only blocks count.
   * A peer that has only just connected keeps its slot for that long too.
   * Returns false if every peer has been useful lately (the newcomer waits).
   */
  replaceUseless(): boolean {
    const cutoff = Date.now() - this.opts.uselessPeerMs;
    let victim: Peer | undefined;
    for (const p of this.peers.values()) {
      if (p.lastUseful <= cutoff && (!victim || p.lastUseful < victim.lastUseful)) victim = p;
    }
    if (!victim) return false;
    this.core.log.debug('peer replaced: no block moved lately and a newcomer wants its slot', {
      peer: victim.address,
      idleMs: Date.now() - victim.lastUseful,
    });
    victim.conn.destroy();
    return true;
  }

  /**
   * Downloading with every slot taken, and someone new to dial: peers that
   * moved nothing for long must not keep us from the ones that might.
   * Called every tick.
   */
  makeRoomForCandidates(): void {
    if (this.hooks.seeding() || this.peers.size < this.opts.maxPeers) return;
    const connected = this.connectedAddresses();
    if (this.dialer.hasDue((a) => connected.has(a))) this.replaceUseless();
  }

  /**
   * Takes a peer whose handshake is done. A throw while wiring it up closes
   * that connection only (it may come from the listener's or the stream's
   * callbacks, where nothing else would catch it).
   */
  private attach(conn: PeerConnection, ip: string, listenPort: number | undefined, remotePort: number): void {
    try {
      const peer = this.admit(conn, ip, listenPort, remotePort);
      if (peer) this.hooks.attached(peer);
    } catch (err) {
      this.core.log.warn('error taking a peer; closing its connection', {
        peer: `${ip}:${listenPort ?? remotePort}`,
        error: errorText(err),
      });
      conn.destroy();
    }
  }

  private admit(
    conn: PeerConnection,
    ip: string,
    listenPort: number | undefined,
    remotePort: number,
  ): Peer | undefined {
    const remoteId = conn.remote!.peerId;
    if (this.dialer.isBanned(idKey(ip, remoteId)) || remoteId.equals(this.opts.peerId)) {
      // Banned, or ourselves through an address of our own in the peer list.
      conn.destroy();
      return undefined;
    }
    // The same peer reached twice (we dialed it as it dialed us). Only from
    // the same IP: anyone can claim any peer id, and a claim from elsewhere
    // must not keep the real peer out.
    for (const other of this.peers.values()) {
      if (other.ip === ip && other.conn.remote!.peerId.equals(remoteId)) {
        conn.destroy();
        return undefined;
      }
    }
    const ours = conn.localAddress;
    const prefix = this.opts.localityPrefix;
    const local =
      prefix !== false && ours !== undefined && sameNetwork(ip, ours, prefix ?? interfacePrefix(ours));
    const peer = newPeer(
      conn,
      String(++this.peerSeq),
      ip,
      listenPort,
      remotePort,
      this.core.meta.pieceCount,
      local,
    );
    if (listenPort !== undefined) this.dialer.remove(`${ip}:${listenPort}`);
    this.peers.set(conn, peer);
    return peer;
  }

  /** Forgets a closed peer; returns false if it was not here. Its address stays a candidate. */
  remove(peer: Peer): boolean {
    if (!this.peers.delete(peer.conn)) return false;
    if (!this.core.isStopped() && peer.listenPort !== undefined) {
      // Keep it as a candidate: a restart of that peer should find us again.
      this.dialer.keep(peer.ip, peer.listenPort);
    }
    return true;
  }

  /**
   * Bans by listen address and by peer id from that IP (idKey), not by IP
   * alone: on loopback and behind NAT several honest peers share an IP with
   * the bad one. Returns false if it was banned already (the caller
   * closes the connection).
   */
  ban(peer: Peer): boolean {
    const id = idKey(peer.ip, peer.conn.remote!.peerId);
    if (this.dialer.isBanned(id)) return false;
    this.dialer.ban(id);
    this.dialer.ban(peer.address);
    return true;
  }
}
