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
  // filled in by the peer work
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
