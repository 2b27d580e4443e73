/**
 * The `hosts:` and `groups:` sections (issue #17): checked with a problem
 * per mistake (file, line, field, fix), then built into the Environment's
 * hosts and groups. The schema has already checked the shapes (a MAC is
 * six hex pairs, a timeout an integer); this file checks what needs the
 * rest: OS ids, names that clash, groups that share a machine and
 * disagree, overlay folders and their files.
 */
import { isAbsolute, join, normalize, relative, sep } from 'node:path';
import { existsSync } from 'node:fs';
import { OVERLAY_MAX_BYTES } from '../boot-config.js';
import {
  MERGED_USR_LINKS,
  PLACEHOLDERS,
  insideRoot,
  readOverlay,
  unknownPlaceholders,
} from '../boot/overlay.js';
import { normalizeMac } from '../util/address.js';
import { disagreements, machineOf, parseMacPattern, parseMacRange, sharedMac } from './room.js';
import type { Group, HostOverride, MachineSettings, Problem } from './types.js';

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : {});
const list = (v: unknown): string[] =>
  typeof v === 'string' ? [v] : Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];

export interface RoomContext {
  /** Absolute environment folder, and as the user gave it (for messages). */
  readonly dir: string;
  readonly envDir: string;
  readonly mainFile: string;
  /** A problem at a field of the main file (its line when known). */
  readonly at: (path: string, message: string, fix: string) => Problem;
  /** Position of a mapping key (for a bad key itself). */
  readonly keyAt: (path: string, message: string, fix: string) => Problem;
  readonly known: (osId: string) => boolean;
  /** True when the schema already found a problem at this field (its value was left out). */
  readonly bad: (field: string) => boolean;
  readonly osFix: (osId: string) => string;
  readonly boot: { readonly defaultOs: string | null; readonly timeout: number; readonly seedTime: number };
}

const GROUP_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** Settings of a host or group entry as written (shapes already checked by the schema). */
function settingsOf(o: Obj, dir: string): MachineSettings {
  return {
    ...(Array.isArray(o.oss) ? { oss: list(o.oss) } : {}),
    ...(typeof o.default_os === 'string' ? { defaultOs: o.default_os } : {}),
    ...(typeof o.timeout === 'number' ? { timeout: o.timeout } : {}),
    ...(typeof o.seed_time === 'number' ? { seedTime: o.seed_time } : {}),
    ...(typeof o.cmdline === 'string' ? { cmdline: o.cmdline } : {}),
    ...(typeof o.overlay === 'string' ? { overlay: join(dir, o.overlay) } : {}),
  };
}

export function buildHosts(hosts: Obj, dir: string): Map<string, HostOverride> {
  const out = new Map<string, HostOverride>();
  for (const [mac, h] of Object.entries(hosts)) {
    const o = obj(h);
    const m = normalizeMac(mac);
    if (!m) continue;
    out.set(m, { ...settingsOf(o, dir), ...(typeof o.name === 'string' ? { name: o.name } : {}) });
  }
  return out;
}

export function buildGroups(groups: Obj, dir: string): Group[] {
  return Object.entries(groups).map(([name, g]) => {
    const o = obj(g);
    return {
      name,
      ...settingsOf(o, dir),
      macs: list(o.macs).flatMap((m) => normalizeMac(m) ?? []),
      broadcasts: list(o.broadcast),
      ranges: list(o.range).flatMap((r) => {
        const x = parseMacRange(r);
        return x ? [x] : [];
      }),
      patterns: list(o.pattern).flatMap((p) => {
        const x = parseMacPattern(p);
        return x ? [x] : [];
      }),
    };
  });
}

/** Problems (and warnings: overlay files others can read) of hosts: and groups:. */
export function checkRoom(
  hostsRaw: Obj,
  groupsRaw: Obj,
  c: RoomContext,
): { problems: Problem[]; warnings: Problem[] } {
  const problems: Problem[] = [];
  const warnings: Problem[] = [];
  const overlaysChecked = new Set<string>();
  /** Bytes of each overlay folder checked, for the sum a machine gets. */
  const overlayBytes = new Map<string, number>();

  const checkSettings = (path: string, o: Obj): void => {
    const oss = Array.isArray(o.oss) ? list(o.oss) : undefined;
    const seen = new Set<string>();
    for (const id of oss ?? []) {
      if (!c.known(id)) problems.push(c.at(`${path}.oss`, `'${id}' is not a folder of oss/`, c.osFix(id)));
      if (seen.has(id)) problems.push(c.at(`${path}.oss`, `'${id}' is listed twice`, 'list each OS once'));
      seen.add(id);
    }
    if (oss && oss.length === 0)
      problems.push(
        c.at(`${path}.oss`, 'offers no OS', 'list at least one OS folder, or leave oss out (every OS)'),
      );
    const def = o.default_os;
    if (typeof def === 'string') {
      if (!c.known(def))
        problems.push(c.at(`${path}.default_os`, `'${def}' is not a folder of oss/`, c.osFix(def)));
      else if (oss && !oss.includes(def))
        problems.push(
          c.at(`${path}.default_os`, `'${def}' is not in this entry's oss list`, `add ${def} to ${path}.oss`),
        );
    }
    if (typeof o.overlay === 'string') checkOverlay(`${path}.overlay`, o.overlay);
  };

  const checkOverlay = (field: string, written: string): void => {
    const abs = normalize(join(c.dir, written));
    const rel = relative(c.dir, abs);
    if (isAbsolute(written) || rel === '' || rel === '..' || rel.startsWith(`..${sep}`)) {
      problems.push(
        c.at(
          field,
          `'${written}' is not a folder inside the environment`,
          'give a path relative to the environment folder, e.g. overlays/room-b',
        ),
      );
      return;
    }
    if (overlaysChecked.has(abs)) return;
    overlaysChecked.add(abs);
    const shown = join(c.envDir, rel);
    if (existsSync(abs) && !insideRoot(c.dir, abs)) {
      problems.push(
        c.at(
          field,
          `'${written}' leads out of the environment through a symbolic link`,
          'make the overlay a real folder inside the environment',
        ),
      );
      return;
    }
    const { files, dirs, problems: found } = readOverlay(abs);
    for (const d of dirs)
      if (MERGED_USR_LINKS.includes(d.path))
        warnings.push({
          file: join(shown, d.path),
          field: `(overlay of ${field})`,
          message: `on a merged-/usr OS /${d.path} is a link to usr/${d.path}: this folder replaces the link in the booted root`,
          fix: `put its files under usr/${d.path} instead`,
        });
    let bytes = 0;
    for (const f of files) bytes += f.data.length;
    overlayBytes.set(abs, bytes);
    for (const p of found)
      problems.push({
        file: join(c.envDir, relative(c.dir, p.file)) || shown,
        field: `(overlay of ${field})`,
        message: p.message,
        fix: p.fix,
      });
    for (const f of files) {
      const file = join(shown, f.path);
      const unknown = unknownPlaceholders(f.data);
      if (unknown.length > 0)
        problems.push({
          file,
          field: `(overlay of ${field})`,
          message: `unknown placeholder ${unknown.map((u) => `{{${u}}}`).join(', ')}`,
          fix: `use ${PLACEHOLDERS.map((p) => `{{${p}}}`).join(', ')}`,
        });
      if (f.mode & 0o044)
        warnings.push({
          file,
          field: `(overlay of ${field})`,
          message: `readable by other users of the server (mode ${f.mode.toString(8).padStart(4, '0')}); keys and secrets should not be`,
          fix: `chmod go-rw ${file} (the booted machine keeps the mode you set)`,
        });
    }
  };

  // --- hosts ---
  const hostNames = new Map<string, string>();
  const seen = new Map<string, string>();
  for (const [mac, h] of Object.entries(hostsRaw)) {
    const path = `hosts.${mac}`;
    const norm = normalizeMac(mac);
    if (!norm || !/^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$/i.test(mac)) {
      problems.push(
        c.keyAt(
          path,
          `'${mac}' is not a MAC address`,
          'write six hex pairs like 52:54:00:12:34:56 (quote it if YAML reads it as a number)',
        ),
      );
      continue;
    }
    const dup = seen.get(norm);
    if (dup) problems.push(c.at(path, `same machine as hosts.${dup}`, 'merge the two entries'));
    seen.set(norm, mac);
    const o = obj(h);
    if (typeof o.name === 'string') {
      const key = o.name.toLowerCase();
      const other = hostNames.get(key);
      if (other)
        problems.push(
          c.at(
            `${path}.name`,
            `name '${o.name}' is also the name of hosts.${other}`,
            'give each machine its own name',
          ),
        );
      else {
        if (normalizeMac(o.name))
          problems.push(
            c.at(
              `${path}.name`,
              `name '${o.name}' reads as a MAC address`,
              'use a name with a letter other than a-f, e.g. pc-07',
            ),
          );
        hostNames.set(key, mac);
      }
    }
    checkSettings(path, o);
  }

  // --- groups ---
  const groupNames = new Set<string>();
  for (const [name, g] of Object.entries(groupsRaw)) {
    const path = `groups.${name}`;
    const o = obj(g);
    if (!GROUP_NAME.test(name) || normalizeMac(name))
      problems.push(
        c.keyAt(
          path,
          `'${name}' is not a usable group name`,
          "use letters, digits, '-', '_' or '.', starting with a letter or digit (e.g. room-b)",
        ),
      );
    const clash = hostNames.get(name.toLowerCase());
    if (clash)
      problems.push(
        c.keyAt(
          path,
          `'${name}' is also the name of hosts.${clash}`,
          'give the group and the machine different names: wake and next-boot take either',
        ),
      );
    if (groupNames.has(name.toLowerCase()))
      problems.push(c.keyAt(path, `'${name}' differs from another group only in case`, 'rename one of them'));
    groupNames.add(name.toLowerCase());
    for (const p of list(o.pattern))
      if (!parseMacPattern(p))
        problems.push(
          c.at(
            `${path}.pattern`,
            `'${p}' names fewer than six pairs and does not end in ':*'`,
            `write six pairs (with ? for any digit) or end it with ':*', e.g. ${p.replace(/:?\*?$/, '')}:*`,
          ),
        );
    for (const r of list(o.range))
      if (!parseMacRange(r))
        problems.push(
          c.at(`${path}.range`, `'${r}' ends before it starts`, 'write the lower MAC first: FIRST-LAST'),
        );
    if (
      o.macs === undefined &&
      o.range === undefined &&
      o.pattern === undefined &&
      !['macs', 'range', 'pattern'].some((f) => c.bad(`${path}.${f}`))
    )
      problems.push(c.at(path, 'matches no machine', `add macs:, range: or pattern: to ${path}`));
    checkSettings(path, o);
  }

  // --- groups that share a machine must agree ---
  const groups = buildGroups(groupsRaw, c.dir);
  for (let i = 0; i < groups.length; i++)
    for (let j = i + 1; j < groups.length; j++) {
      const a = groups[i]!;
      const b = groups[j]!;
      const fields = disagreements(a, b);
      const mac = sharedMac(a, b);
      if (!mac) continue;
      if (fields.length === 0) {
        // Agreeing field by field, they may still combine into a default their menu lacks.
        const m = machineOf({ hosts: new Map(), groups: [a, b], boot: c.boot }, mac);
        if (m.oss && m.defaultOs !== null && !m.oss.includes(m.defaultOs) && c.known(m.defaultOs))
          problems.push(
            c.at(
              `groups.${b.name}`,
              `shares machine ${mac} with groups.${a.name}: together they boot '${m.defaultOs}', which their menu (oss: ${m.oss.join(', ')}) does not offer`,
              `set oss and default_os in the same group, or add ${m.defaultOs} to oss`,
            ),
          );
        continue;
      }
      problems.push(
        c.at(
          `groups.${b.name}`,
          `shares machine ${mac} with groups.${a.name} and sets ${fields.join(', ')} differently`,
          `give both groups the same ${fields.join(', ')}, or make their MACs not overlap (set it per machine under hosts: to differ)`,
        ),
      );
    }

  // --- what each listed machine ends up with ---
  const hosts = buildHosts(hostsRaw, c.dir);
  for (const mac of hosts.keys()) {
    const own = hosts.get(mac)!;
    const all = machineOf({ hosts, groups, boot: c.boot }, mac).overlays;
    const sum = all.reduce((n, d) => n + (overlayBytes.get(normalize(d)) ?? 0), 0);
    if (sum > OVERLAY_MAX_BYTES)
      problems.push(
        c.at(
          `hosts.${[...seen].find(([n]) => n === mac)?.[1] ?? mac}`,
          `its overlays (${all.length} folders) hold ${sum} bytes, more than the ${OVERLAY_MAX_BYTES} one machine is sent`,
          'put large files in the OS folder instead',
        ),
      );
    if (own.oss && own.defaultOs) continue; // checked above, at the host's own fields
    const m = machineOf({ hosts, groups, boot: c.boot }, mac);
    if (m.oss && m.defaultOs !== null && !m.oss.includes(m.defaultOs) && c.known(m.defaultOs))
      problems.push(
        c.at(
          `hosts.${[...seen].find(([n]) => n === mac)?.[1] ?? mac}`,
          `boots '${m.defaultOs}' by default, which its menu (oss: ${m.oss.join(', ')}) does not offer`,
          `set default_os to one of ${m.oss.join(', ')}, or add ${m.defaultOs} to oss`,
        ),
      );
  }
  for (const g of groups) {
    if (
      g.oss &&
      g.oss.every(c.known) &&
      g.defaultOs === undefined &&
      c.boot.defaultOs !== null &&
      !g.oss.includes(c.boot.defaultOs)
    )
      problems.push(
        c.at(
          `groups.${g.name}`,
          `offers ${g.oss.join(', ')} but not boot.default_os '${c.boot.defaultOs}'`,
          `add default_os: ${g.oss[0]} to groups.${g.name}`,
        ),
      );
  }
  return { problems, warnings };
}
