/**
 * Names and groups of machines (issue #17): which group a MAC belongs to,
 * what it boots once the host's, the groups' and the environment's
 * settings are layered, and which machines a name on the command line
 * means. Pure: the loader (load.ts) parses and checks the file, this
 * module answers questions about the result.
 *
 * Precedence, field by field: the host's own entry, then its groups in file
 * order (validate refuses two groups that share a machine and set one field
 * differently, so the order only matters for overlays), then `boot:`.
 */
import { normalizeMac } from '../util/address.js';
import type { Environment, Group, HostOverride, MacPattern, MachineSettings } from './types.js';

/** 52:54:00:12:34:56 -> its 48-bit value. */
export function macValue(mac: string): number {
  return parseInt(mac.replace(/[:-]/g, ''), 16);
}

/** A 48-bit value -> lower-case colon MAC. */
export function macString(v: number): string {
  return v
    .toString(16)
    .padStart(12, '0')
    .replace(/(..)(?!$)/g, '$1:');
}

/** "FIRST-LAST" -> inclusive values; null when either side is not a MAC or FIRST > LAST. */
export function parseMacRange(s: string): { first: number; last: number } | null {
  // MACs may be written with '-' too: the range's dash is the one with a MAC on each side.
  for (let i = s.indexOf('-'); i !== -1; i = s.indexOf('-', i + 1)) {
    const a = normalizeMac(s.slice(0, i).trim());
    const b = normalizeMac(s.slice(i + 1).trim());
    if (!a || !b) continue;
    const first = macValue(a);
    const last = macValue(b);
    return first <= last ? { first, last } : null;
  }
  return null;
}

/** "52:54:00:0?:*" -> 12 digits (-1 = any); null when it is not one. */
export function parseMacPattern(s: string): MacPattern | null {
  const t = s.trim().toLowerCase();
  if (t === '*') return new Array<number>(12).fill(-1);
  const m = /^([0-9a-f?]{2}(?::[0-9a-f?]{2}){0,5})(:\*)?$/.exec(t);
  if (!m) return null;
  const digits = m[1]!.replace(/:/g, '');
  if (digits.length < 12 && !m[2]) return null;
  const out = [...digits].map((c) => (c === '?' ? -1 : parseInt(c, 16)));
  while (out.length < 12) out.push(-1);
  return out;
}

function digitsOf(v: number): number[] {
  return [...v.toString(16).padStart(12, '0')].map((c) => parseInt(c, 16));
}

function fromDigits(d: readonly number[]): number {
  return d.reduce((acc, x) => acc * 16 + x, 0);
}

function patternMatches(p: MacPattern, v: number): boolean {
  const d = digitsOf(v);
  return p.every((x, i) => x === -1 || x === d[i]);
}

export function groupMatches(g: Group, mac: string): boolean {
  if (g.macs.includes(mac)) return true;
  const v = macValue(mac);
  return g.ranges.some((r) => v >= r.first && v <= r.last) || g.patterns.some((p) => patternMatches(p, v));
}

export function groupsOf(env: Pick<Environment, 'groups'>, mac: string): Group[] {
  return env.groups.filter((g) => groupMatches(g, mac));
}

/** The smallest value >= from that matches `p`, or undefined. */
function nextMatch(p: MacPattern, from: number): number | undefined {
  const a = digitsOf(from);
  if (p.every((x, i) => x === -1 || x === a[i])) return from;
  const low = (i: number) => (p[i] === -1 ? 0 : p[i]!);
  // Keep a's digits above position i, raise digit i, set the rest to their lowest:
  // the deepest i that works gives the smallest value.
  for (let i = 11; i >= 0; i--) {
    if (!p.slice(0, i).every((x, j) => x === -1 || x === a[j])) continue;
    const raised = p[i] === -1 ? a[i]! + 1 : p[i]! > a[i]! ? p[i]! : 16;
    if (raised > 15) continue;
    const d = [...a.slice(0, i), raised];
    for (let j = i + 1; j < 12; j++) d.push(low(j));
    return fromDigits(d);
  }
  return undefined;
}

type Atom = { first: number; last: number } | { pattern: MacPattern };

function atoms(g: Group): Atom[] {
  return [
    ...g.macs.map((m) => ({ first: macValue(m), last: macValue(m) })),
    ...g.ranges,
    ...g.patterns.map((pattern) => ({ pattern })),
  ];
}

function atomWitness(a: Atom, b: Atom): number | undefined {
  if ('pattern' in a && 'pattern' in b) {
    const d: number[] = [];
    for (let i = 0; i < 12; i++) {
      const x = a.pattern[i]!;
      const y = b.pattern[i]!;
      if (x !== -1 && y !== -1 && x !== y) return undefined;
      d.push(x === -1 ? (y === -1 ? 0 : y) : x);
    }
    return fromDigits(d);
  }
  if ('pattern' in a || 'pattern' in b) {
    const [p, r] =
      'pattern' in a ? [a, b as { first: number; last: number }] : [b as { pattern: MacPattern }, a];
    const v = nextMatch(p.pattern, r.first);
    return v !== undefined && v <= r.last ? v : undefined;
  }
  const first = Math.max(a.first, b.first);
  return first <= Math.min(a.last, b.last) ? first : undefined;
}

/** A MAC both groups match, or undefined when they share none. */
export function sharedMac(a: Group, b: Group): string | undefined {
  for (const x of atoms(a))
    for (const y of atoms(b)) {
      const v = atomWitness(x, y);
      if (v !== undefined) return macString(v);
    }
  return undefined;
}

/** The settings two groups must agree on, with their names in the file. */
export const SETTINGS: readonly (readonly [Exclude<keyof MachineSettings, 'overlay'>, string])[] = [
  ['oss', 'oss'],
  ['defaultOs', 'default_os'],
  ['timeout', 'timeout'],
  ['seedTime', 'seed_time'],
  ['cmdline', 'cmdline'],
];

/** The file names of the settings both groups set, differently. */
export function disagreements(a: MachineSettings, b: MachineSettings): string[] {
  const out: string[] = [];
  for (const [k, name] of SETTINGS) {
    const x = a[k];
    const y = b[k];
    if (x === undefined || y === undefined) continue;
    if (JSON.stringify(x) !== JSON.stringify(y)) out.push(name);
  }
  return out;
}

/** What one machine boots with, every layer applied. */
export interface Machine {
  readonly mac: string;
  /** Its host name, or null. */
  readonly name: string | null;
  /** The groups it belongs to, in file order. */
  readonly groups: readonly string[];
  /** OS ids its menu offers, in order; null: every OS. */
  readonly oss: readonly string[] | null;
  readonly defaultOs: string | null;
  readonly timeout: number;
  readonly seedTime: number;
  /** Extra kernel command line for kexec OSs ('' for none). */
  readonly cmdline: string;
  /** Overlay folders, applied in this order (later files win). */
  readonly overlays: readonly string[];
}

export function machineOf(env: Pick<Environment, 'hosts' | 'groups' | 'boot'>, mac: string): Machine {
  const host: HostOverride | undefined = env.hosts.get(mac);
  const groups = groupsOf(env, mac);
  const pick = <K extends keyof MachineSettings>(k: K): MachineSettings[K] =>
    host?.[k] ?? groups.find((g) => g[k] !== undefined)?.[k];
  return {
    mac,
    name: host?.name ?? null,
    groups: groups.map((g) => g.name),
    oss: pick('oss') ?? null,
    defaultOs: pick('defaultOs') ?? env.boot.defaultOs,
    timeout: pick('timeout') ?? env.boot.timeout,
    seedTime: pick('seedTime') ?? env.boot.seedTime,
    cmdline: pick('cmdline') ?? '',
    overlays: [
      ...groups.flatMap((g) => (g.overlay ? [g.overlay] : [])),
      ...(host?.overlay ? [host.overlay] : []),
    ],
  };
}

/** The host name of a MAC, or null. */
export function nameOf(env: Pick<Environment, 'hosts'>, mac: string): string | null {
  return env.hosts.get(mac)?.name ?? null;
}

/** Largest MAC range a group target wakes address by address. */
export const MAX_RANGE_TARGETS = 1024;

export interface Target {
  readonly kind: 'mac' | 'host' | 'group';
  /** The name as written in the environment (the MAC for kind mac). */
  readonly label: string;
  /** The machines it names that can be listed (for a group: its MACs, hosts, small ranges, and `known`). */
  readonly macs: readonly string[];
  /** For a group: what could not be listed (a pattern, a large range), said to the user. */
  readonly unlisted?: string;
  /** For a group: its directed broadcasts (wake sends there too). */
  readonly broadcasts?: readonly string[];
}

/**
 * What a TARGET of wake or next-boot names: a MAC, a host name or a group
 * name (names case-insensitive). `known` adds machines seen elsewhere (the
 * server's clients) that a group's pattern or range matches.
 */
export function resolveTarget(
  env: Pick<Environment, 'hosts' | 'groups'>,
  target: string,
  known: Iterable<string> = [],
): Target | undefined {
  const mac = normalizeMac(target);
  if (mac) return { kind: 'mac', label: mac, macs: [mac] };
  const t = target.toLowerCase();
  for (const [m, h] of env.hosts)
    if (h.name?.toLowerCase() === t) return { kind: 'host', label: h.name, macs: [m] };
  const g = env.groups.find((x) => x.name.toLowerCase() === t);
  if (!g) return undefined;
  const out = new Set(g.macs);
  const unlisted: string[] = [];
  for (const r of g.ranges) {
    if (r.last - r.first + 1 > MAX_RANGE_TARGETS) {
      unlisted.push(`range ${macString(r.first)}-${macString(r.last)}`);
      continue;
    }
    for (let v = r.first; v <= r.last; v++) out.add(macString(v));
  }
  if (g.patterns.length > 0) unlisted.push('pattern');
  for (const m of [...env.hosts.keys(), ...known]) if (groupMatches(g, m)) out.add(m);
  return {
    kind: 'group',
    label: g.name,
    macs: [...out].sort(),
    ...(unlisted.length > 0 ? { unlisted: unlisted.join(', ') } : {}),
    ...(g.broadcasts.length > 0 ? { broadcasts: g.broadcasts } : {}),
  };
}

/** Every name a target may be (host and group names), for "did you mean". */
export function targetNames(env: Pick<Environment, 'hosts' | 'groups'>): string[] {
  return [
    ...[...env.hosts.values()].flatMap((h) => (h.name ? [h.name] : [])),
    ...env.groups.map((g) => g.name),
  ];
}
