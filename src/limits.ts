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
  // One agent report body (JSON of a few hundred bytes): bounds memory per POST.
  reportBodyBytes: 16_384,
});

/** DHCP server state (src/dhcp/). */
export const DHCP_LIMITS = Object.freeze({
  // filled in by the DHCP work
});
