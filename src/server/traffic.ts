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

/** Which stage each part of ServerSent belongs to (its `parts`): written once, for the sums and /metrics. */
export const SENT_STAGE_OF_PART = {
  dhcp: 'phase1',
  tftp: 'phase1',
  ipxeHttp: 'phase1',
  scripts: 'phase1',
  phase1Files: 'phase1',
  configs: 'os',
  api: 'os',
  tracker: 'os',
  seeder: 'os',
  httpFiles: 'other',
  httpOther: 'other',
} as const satisfies Record<string, 'phase1' | 'os' | 'other'>;
export type SentPart = keyof typeof SENT_STAGE_OF_PART;

export function groupSent(c: SentCounters): ServerSent {
  const parts: Record<SentPart, number> = {
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
  const by = { phase1: 0, os: 0, other: 0 };
  for (const [part, n] of Object.entries(parts)) by[SENT_STAGE_OF_PART[part as SentPart]] += n;
  return { total: by.phase1 + by.os + by.other, ...by, parts };
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
