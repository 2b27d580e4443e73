/**
 * Every limit that keeps one hostile client from taking the room down, named
 * and with its default in one place (issue #14). docs/deployment.md lists
 * them with what each protects. A limit is per source IP unless its name
 * says total; deadlines count from the start of the thing they bound, so a
 * client that trickles one byte at a time cannot extend them.
 */

/** TFTP (src/tftp/server.ts). */
export const TFTP_LIMITS = Object.freeze({
  /** Transfers at once from all clients: each holds a socket, an open file and a window of blocks. */
  transfersTotal: 128,
  /**
   * Transfers at once from one IP, so one host cannot take every slot. PXE
   * firmware and iPXE fetch one file at a time (two while a retry overlaps).
   */
  transfersPerIp: 4,
  /**
   * Largest RFC 2349 `timeout` (seconds) accepted; a larger one is left out of
   * the OACK and ours is used, so a client cannot make its slot wait 255 s per
   * retransmission (6 x 255 s = 25 min with our 5 retries).
   */
  maxTimeoutS: 10,
  /**
   * A transfer still running this long after it started is ended with an
   * ERROR, so a client that ACKs just often enough to dodge the retry limit
   * cannot keep its slot. 10 min is 300 MB at 512-byte lock-step with 1 ms RTT;
   * TFTP serves iPXE (about 1 MB), or with the signed chain shim, GRUB and
   * phase 1 (about 30 MB).
   */
  transferDeadlineMs: 600_000,
});

/** Peer wire and swarm sessions (src/swarm/, src/wire/). */
export const PEER_LIMITS = Object.freeze({
  // Peer listener and per-torrent slots (src/swarm/client.ts, session.ts).
  /** A peer has this long from accept to finish its handshake (ms); bytes do not extend it, so a trickle cannot hold a half-open slot. */
  handshakeTimeoutMs: 10_000,
  /** Handshakes in progress at once on the listener, in total: bounds sockets and buffers before we know the torrent. */
  maxHalfOpen: 64,
  /** Handshakes in progress at once from one IP: one host cannot take all of maxHalfOpen. */
  halfOpenPerIp: 4,
  /** Connections one IP may hold in one torrent: one host cannot fill a torrent's slots. Not 1: lab clients may share a NAT address. */
  establishedPerIp: 4,
  /** When a torrent's slots are full, a newcomer takes the slot of the peer that has moved no block either way for longest, if that is at least this long (ms): useless peers cannot hold slots forever. */
  uselessPeerMs: 120_000,

  // Candidates and dialing (src/swarm/dialer.ts, session.ts).
  /** Candidate addresses held per torrent, total (PEX, LSD, tracker, user): memory and CPU a PEX flood can cost. */
  maxCandidates: 1000,
  /** Candidates one PEX source peer may hold at once: one peer cannot fill the table or choose all our dials. */
  maxCandidatesPerPeer: 100,
  /** Peers taken from one PEX message; BEP 11 allows 50 added per message, the rest are dropped and counted. */
  maxPexAddedPerMessage: 50,
  /** Dials in progress at once per torrent: sockets and connect timers an address list can make us hold. */
  maxConcurrentDials: 32,
  /** Dials started per second per torrent (burst of as many): we are no scanner for whoever feeds us addresses. */
  maxDialsPerSecond: 50,
  /** Failed dials after which an address learned through PEX is forgotten: dead made-up addresses leave the table. */
  maxPexDialFailures: 3,
  /** Bytes queued to a peer that does not read, past which its connection is closed: answers to its requests cannot grow our memory. */
  maxWriteBacklogBytes: 4 * 1024 * 1024,
  /** Bitfield, have-all and have-none messages per connection (each costs O(pieces)); past it the peer is closed. */
  maxPieceSetMessages: 16,
});

/** Tracker (src/tracker/server.ts). */
export const TRACKER_LIMITS = Object.freeze({
  /**
   * Peers one source IP has in one swarm. The client picks its peer id (a new
   * one per announce costs nothing), so the cap counts addresses. A lab
   * machine runs one client per torrent; the loopback demo runs up to 33.
   */
  peersPerIp: 64,
  /** Peers one source IP has in all swarms together (an open tracker lets it make up infohashes). */
  peersPerIpAllSwarms: 256,
  /** Peers in one swarm, all addresses together: bounds the swarm a reply samples from. */
  peersPerSwarmTotal: 4096,
  /** Peers in all swarms together: bounds memory (a few hundred bytes a peer) whatever the number of addresses. */
  peersTotal: 65_536,
  /**
   * Swarms at once. Torrents given to add() always have theirs, so this only
   * bounds the infohashes an open tracker (`--open`) accepts from announces.
   */
  swarmsTotal: 1024,
});

/** Boot HTTP server and dashboard port (src/http/). */
export const HTTP_LIMITS = Object.freeze({
  // Headers and body of one request, from its first byte: a client that
  // trickles a POST body a byte at a time cannot hold a connection past it.
  // A response (a phase-1 initrd over a slow link) is not bound by it.
  requestTimeoutMs: 15_000,
  // Headers alone, from the first byte (slowloris); at most requestTimeoutMs.
  headersTimeoutMs: 10_000,
  // An idle keep-alive connection; longer than the agents' own idle timeout
  // (undici: 4 s), so the client closes first and never reuses a socket we
  // are closing.
  keepAliveTimeoutMs: 15_000,
  // Open connections from one source IP: iPXE and the agent open a few; a
  // single host must not use up the total below.
  connectionsPerIp: 16,
  // Open connections in total per listener: bounds sockets and memory.
  maxConnections: 1024,
  // A connection where no byte moves either way this long is closed: a client
  // that asks for a large file and stops reading held its connection (and a
  // place under connectionsPerIp/maxConnections) forever, as requestTimeoutMs
  // does not bound a response. Slow readers that make progress are not cut;
  // the dashboard's event stream writes a keep-alive every 15 s.
  stalledConnectionMs: 60_000,
  // One agent report body (JSON of a few hundred bytes): bounds memory per POST.
  reportBodyBytes: 16_384,
});

/** DHCP server state (src/dhcp/). */
export const DHCP_LIMITS = Object.freeze({
  /**
   * How long an OFFERed address stays reserved for its client (ms). Protects
   * the pool from DISCOVERs that never REQUEST: offers lapse after this, and
   * when the pool is full the oldest outstanding offer is reclaimed.
   */
  offerHoldMs: 60_000,
  /**
   * How long a DECLINEd address stays out of use (ms; RFC 2131 §4.3.3 leaves
   * it to the server). Protects the pool from being emptied for good by
   * declines; the declined list holds only pool addresses, so it is bounded
   * by the pool size.
   */
  declinedHoldMs: 600_000,
  /**
   * How long a change that needs no immediate commit (renewal, RELEASE,
   * DECLINE) waits before the leases file is rewritten (ms). Protects the
   * disk and the event loop from a rewrite per packet: changes in the window
   * share one write, and at most one write is in flight.
   */
  leasesWriteDelayMs: 1_000,
});
