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
   * phase 1 serves only iPXE (about 1 MB).
   */
  transferDeadlineMs: 600_000,
});

/** Peer wire and swarm sessions (src/swarm/, src/wire/). */
export const PEER_LIMITS = Object.freeze({
  // filled in by the peer work
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
  // filled in by the HTTP work
});

/** DHCP server state (src/dhcp/). */
export const DHCP_LIMITS = Object.freeze({
  // filled in by the DHCP work
});
