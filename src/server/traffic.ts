/**
 * The server's "sent" figures (issue #16 item 1), grouped by stage from the
 * counters each listener keeps: phase 1 is everything a client gets before
 * its agent runs, the OS everything after. Pure: the parts in, the groups
 * out, so what goes where is written once and tested.
 */
import type { ServerSent } from '../http/snapshot.js';
import type { ByteTotals } from '../util/byte-meter.js';
import type { HttpSentKind } from '../http/server.js';

export interface SentCounters {
  /** DHCP replies (full or proxy, all sockets). */
  readonly dhcp: number;
  /** TFTP: iPXE binaries with retransmissions, OACKs, errors. */
  readonly tftp: number;
  /** The boot HTTP server, by kind. */
  readonly http: ByteTotals<HttpSentKind>;
  /** The tracker's own port (UDP and HTTP). */
  readonly tracker: number;
  /** The seeder's peer connections: every byte, not only blocks. */
  readonly seeder: number;
}

export function groupSent(c: SentCounters): ServerSent {
  const parts = {
    dhcp: c.dhcp,
    tftp: c.tftp,
    ipxeHttp: c.http.ipxe,
    scripts: c.http.script,
    phase1Files: c.http.phase1,
    configs: c.http.config,
    api: c.http.api,
    tracker: c.http.tracker + c.tracker,
    seeder: c.seeder,
    httpFiles: c.http.files,
    httpOther: c.http.other,
  };
  const phase1 = parts.dhcp + parts.tftp + parts.ipxeHttp + parts.scripts + parts.phase1Files;
  const os = parts.configs + parts.api + parts.tracker + parts.seeder;
  const other = parts.httpFiles + parts.httpOther;
  return { total: phase1 + os + other, phase1, os, other, parts };
}

/** Nothing sent yet: every part 0 (snapshots before start, test fixtures). */
export const NOTHING_SENT: ServerSent = groupSent({
  dhcp: 0,
  tftp: 0,
  http: { ipxe: 0, script: 0, phase1: 0, config: 0, api: 0, tracker: 0, files: 0, other: 0, total: 0 },
  tracker: 0,
  seeder: 0,
});

const mb = (n: number): string => `${(n / 1e6).toFixed(1)} MB`;

/** `server sent X MB (phase 1 P MB, OS O MB) for Y MB delivered`: the demo's, status's and the dashboard's words. */
export function sentSummary(sent: ServerSent, delivered: number): string {
  return `server sent ${mb(sent.total)} (phase 1 ${mb(sent.phase1)}, OS ${mb(sent.os)}) for ${mb(delivered)} delivered`;
}
