/**
 * Every limit that keeps one hostile client from taking the room down, named
 * and with its default in one place (issue #14). docs/deployment.md lists
 * them with what each protects. A limit is per source IP unless its name
 * says total; deadlines count from the start of the thing they bound, so a
 * client that trickles one byte at a time cannot extend them.
 */

/** TFTP (src/tftp/server.ts). */
export const TFTP_LIMITS = Object.freeze({
  // filled in by the TFTP work
});

/** Peer wire and swarm sessions (src/swarm/, src/wire/). */
export const PEER_LIMITS = Object.freeze({
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
  // filled in by the tracker work
});

/** Boot HTTP server and dashboard port (src/http/). */
export const HTTP_LIMITS = Object.freeze({
  // filled in by the HTTP work
});

/** DHCP server state (src/dhcp/). */
export const DHCP_LIMITS = Object.freeze({
  // filled in by the DHCP work
});
