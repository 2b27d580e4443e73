/**
 * GET /metrics on the dashboard port: the server's figures as Prometheus
 * metric families, which util/prometheus.ts writes in the text format.
 * They are made from what the server already keeps: the status snapshot
 * (clients, swarms, bytes sent) plus the few counters kept for them (boots
 * and failures by OS, DHCP replies, TFTP results, errors by code).
 *
 * Labels are bounded by construction: a stage, a part, a DHCP message type,
 * a TFTP result or an error code come from fixed lists; an OS is one the
 * environment serves (or '' for a boot that named none of them). No MAC, IP
 * address or other text a client writes is a label, and no label ever
 * becomes part of a metric name.
 */
import { ERROR_CODES, type ErrorCode } from '../errors.js';
import { DHCP_REPLY_TYPES, type DhcpReplyType } from '../dhcp/server.js';
import { TRANSFER_RESULTS, type TransferResult } from '../tftp/server.js';
import { CLIENT_STAGES, type ServerSnapshot } from '../http/snapshot.js';
import { SENT_STAGE_OF_PART, type SentPart } from './traffic.js';
import type { MetricFamily, MetricSample } from '../util/prometheus.js';

/** What the server's metrics are made from: the status snapshot and the counters kept for them. */
export interface MetricsSources {
  readonly snapshot: ServerSnapshot;
  readonly version: string;
  /** Seconds since the epoch at which this process started. */
  readonly processStartSeconds: number;
  /** Boots that reached booting/running, and boots that failed, by OS id ('' for none served). */
  readonly boots: ReadonlyMap<string, number>;
  readonly failures: ReadonlyMap<string, number>;
  /** Firmware of an architecture this server does not serve, by architecture. */
  readonly unserved: ReadonlyMap<string, number>;
  /** A reply type or result missing is 0 (TFTP off, DHCP off). */
  readonly dhcp: { readonly leases: number; readonly replies: Partial<Record<DhcpReplyType, number>> };
  readonly tftp: { readonly active: number; readonly results: Partial<Record<TransferResult, number>> };
  /** Typed errors the server's listeners met, by code. */
  readonly errors: (code: ErrorCode) => number;
}

/** The series of one labelled family, one per key. */
function byLabel<K extends string>(
  label: string,
  keys: readonly K[],
  value: (k: K) => number,
): MetricSample[] {
  return keys.map((k) => ({ labels: { [label]: k }, value: value(k) }));
}

/** The server's metrics; every name, label and meaning is listed in docs/deployment.md. */
export function serverMetrics(s: MetricsSources): MetricFamily[] {
  const snap = s.snapshot;
  const stages = new Map<string, number>();
  for (const c of snap.clients) stages.set(c.stage, (stages.get(c.stage) ?? 0) + 1);
  // Every OS served now is a series from the start (at 0); a boot counted under an OS removed since stays.
  const served = snap.swarms.map((w) => w.os);
  const osKeys = (counts: ReadonlyMap<string, number>): string[] => [
    ...new Set([...served, ...counts.keys()]),
  ];
  const parts = Object.keys(SENT_STAGE_OF_PART) as SentPart[];
  return [
    {
      name: 'boottorrent_build_info',
      type: 'gauge',
      help: 'Always 1; the version label is the running BootTorrent.',
      samples: [{ labels: { version: s.version }, value: 1 }],
    },
    {
      name: 'process_start_time_seconds',
      type: 'gauge',
      help: 'Start time of the process since the Unix epoch, in seconds.',
      samples: [{ value: s.processStartSeconds }],
    },
    {
      name: 'boottorrent_clients',
      type: 'gauge',
      help: 'Clients the server knows, by the stage of their current boot (as status shows them).',
      samples: byLabel('stage', CLIENT_STAGES, (k) => stages.get(k) ?? 0),
    },
    {
      name: 'boottorrent_boots_total',
      type: 'counter',
      help: 'Boots that reached stage booting or running, by OS (empty: an OS this server does not serve).',
      samples: byLabel('os', osKeys(s.boots), (k) => s.boots.get(k) ?? 0),
    },
    {
      name: 'boottorrent_boot_failures_total',
      type: 'counter',
      help: 'Boots that ended in stage failed, by OS (empty: before an OS was chosen, or one not served).',
      samples: byLabel('os', osKeys(s.failures), (k) => s.failures.get(k) ?? 0),
    },
    {
      name: 'boottorrent_unserved_firmware_total',
      type: 'counter',
      help: 'Machines whose firmware asked to boot with an architecture this server does not serve, by architecture.',
      samples: [...s.unserved].map(([arch, n]) => ({ labels: { arch }, value: n })),
    },
    {
      name: 'boottorrent_server_sent_bytes_total',
      type: 'counter',
      help: "Bytes the server's client-facing listeners sent, by stage (phase1, os, other) and part.",
      samples: parts.map((p) => ({
        labels: { stage: SENT_STAGE_OF_PART[p], part: p },
        value: snap.totals.sent.parts[p] ?? 0,
      })),
    },
    {
      name: 'boottorrent_seeder_payload_bytes_total',
      type: 'counter',
      help: "OS data the server's seeder sent to clients, by OS.",
      samples: snap.swarms.map((w) => ({ labels: { os: w.os }, value: w.serverUploaded })),
    },
    {
      name: 'boottorrent_peer_sent_bytes_total',
      type: 'counter',
      help: 'OS data the clients sent each other, by OS, as their tracker announces report it (0 without the tracker).',
      samples: snap.swarms.map((w) => ({ labels: { os: w.os }, value: w.peerUploaded ?? 0 })),
    },
    {
      name: 'boottorrent_swarm_peers',
      type: 'gauge',
      help: "Peers in each OS's swarm as the tracker sees them, the server's seeder included.",
      samples: snap.swarms.map((w) => ({ labels: { os: w.os }, value: w.seeders + w.leechers })),
    },
    {
      name: 'boottorrent_swarm_seeders',
      type: 'gauge',
      help: "Peers in each OS's swarm that have all of it (seeders), the server's seeder included.",
      samples: snap.swarms.map((w) => ({ labels: { os: w.os }, value: w.seeders })),
    },
    {
      name: 'boottorrent_dhcp_leases',
      type: 'gauge',
      help: 'DHCP leases not expired (full mode; 0 in proxy and off mode).',
      samples: [{ value: s.dhcp.leases }],
    },
    {
      name: 'boottorrent_dhcp_replies_total',
      type: 'counter',
      help: 'DHCP replies sent, by message type (offer, ack, nak; proxy replies included).',
      samples: byLabel('type', DHCP_REPLY_TYPES, (k) => s.dhcp.replies[k] ?? 0),
    },
    {
      name: 'boottorrent_tftp_transfers_total',
      type: 'counter',
      help: 'TFTP transfers ended, by result (ok, refused, timeout, client-error, read-error, protocol-error, aborted).',
      samples: byLabel('result', TRANSFER_RESULTS, (k) => s.tftp.results[k] ?? 0),
    },
    {
      name: 'boottorrent_tftp_transfers_active',
      type: 'gauge',
      help: 'TFTP transfers in progress.',
      samples: [{ value: s.tftp.active }],
    },
    {
      name: 'boottorrent_errors_total',
      type: 'counter',
      help: "Errors the server's DHCP, TFTP, tracker and agent report handlers met in requests, by code.",
      samples: byLabel('code', ERROR_CODES, s.errors),
    },
    ...upstreamMetrics(snap),
  ];
}

/** A satellite's upstream (none on a server that is not one): alert on up == 0 for long. */
function upstreamMetrics(snap: MetricsSources['snapshot']): MetricFamily[] {
  const u = snap.server.upstream;
  if (!u) return [];
  const labels = { url: u.url };
  return [
    {
      name: 'boottorrent_upstream_up',
      type: 'gauge',
      help: "1 when this satellite's upstream answered its last catalog request with a good catalog, else 0.",
      samples: [{ labels, value: u.reachable ? 1 : 0 }],
    },
    {
      name: 'boottorrent_upstream_last_contact_timestamp_seconds',
      type: 'gauge',
      help: 'When the upstream last answered with a good catalog, since the Unix epoch (0: not since start).',
      samples: [{ labels, value: (u.lastContact ?? 0) / 1000 }],
    },
    {
      name: 'boottorrent_upstream_fetching',
      type: 'gauge',
      help: "OSs of the upstream's catalog being fetched, not yet offered to clients.",
      samples: [{ labels, value: u.fetching.length }],
    },
  ];
}
