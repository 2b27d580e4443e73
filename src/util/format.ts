/**
 * Human-readable sizes, rates and the one-line download progress, shared by
 * the CLI and the agent (the agent must not import from src/cli/).
 */
/** What the progress line reads of a torrent session's stats (swarm/session.ts's SessionStats has them). */
export interface ProgressStats {
  readonly length: number;
  readonly left: number;
  readonly downloadRate: number;
  readonly uploadRate: number;
  readonly peers: { readonly length: number };
  readonly complete: boolean;
  readonly ratio: number;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

export function formatRate(bytesPerSecond: number): string {
  return `${formatBytes(Math.round(bytesPerSecond))}/s`;
}

function formatEta(seconds: number): string {
  if (!Number.isFinite(seconds)) return '--';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** "42.0%  12.3 MiB/s down  1.0 MiB/s up  peers 5  ETA 1m05s" */
export function progressLine(s: ProgressStats): string {
  const pct = ((100 * (s.length - s.left)) / s.length).toFixed(1);
  const parts = [
    `${pct.padStart(5)}%`,
    `${formatRate(s.downloadRate)} down`,
    `${formatRate(s.uploadRate)} up`,
    `peers ${s.peers.length}`,
  ];
  if (!s.complete) parts.push(`ETA ${formatEta(s.downloadRate > 0 ? s.left / s.downloadRate : Infinity)}`);
  else parts.push(`ratio ${s.ratio.toFixed(2)}`);
  return parts.join('  ');
}
