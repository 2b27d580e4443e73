/**
 * Loads an environment folder (Boottorrent.yaml + oss/<name>/config.yaml),
 * version 0 (the older Python tool's) or version 1, into one frozen
 * `Environment`, collecting every problem on the way instead of stopping at
 * the first: a person fixing a lab wants the whole list in one run.
 */
import { inSubnet, intToIp, ipToInt, normalizeMac, parseSubnet, subnetText } from '../util/address.js';
import type { Subnet } from '../util/address.js';
import { createPublicKey } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { isAbsolute, join, normalize, resolve, sep } from 'node:path';
import { LineCounter, isMap, isScalar, parseDocument, type Node } from 'yaml';
import { BootTorrentError } from '../errors.js';
import { checkDocument, loadSchema, suggest, type Checked, type SchemaName } from './schema.js';
import { machineProblems, type MachineOptions } from './machine.js';
import { labKeyProblem } from '../boot/uki.js';
import { buildGroups, buildHosts, checkRoom } from './room-check.js';
import type { UefiChain } from '../boot/grub.js';
import type { DhcpMode, Environment, LogLevel, OsEntry, Problem } from './types.js';
import { parseTorrent, type Metainfo } from '../torrent/metainfo.js';

export const ENV_FILE = 'Boottorrent.yaml';
export const OS_CONFIG = 'config.yaml';

export interface ValidateOptions extends MachineOptions {
  /**
   * Run the checks that depend on this machine (interface and address, ports
   * free, iPXE binaries). Default true; unit tests turn them off to stay
   * deterministic, `boottorrent validate` runs them.
   */
  readonly machineChecks?: boolean;
}

export interface Inspection {
  /** The environment, or null when there is any problem. */
  readonly env: Environment | null;
  readonly problems: readonly Problem[];
  /** What was accepted but ignored or changed (version 0 files: unknown fields, quoted numbers). */
  readonly warnings: readonly Problem[];
}

/** Every problem of the environment in `envDir` (empty when it is fine). */
export async function validate(envDir: string, opts: ValidateOptions = {}): Promise<Problem[]> {
  return [...(await inspectEnvironment(envDir, opts)).problems];
}

/** The environment, or a BootTorrentError('BT_ERR_ENV') whose `problems` lists everything wrong. */
export async function loadEnvironment(envDir: string, opts: ValidateOptions = {}): Promise<Environment> {
  const { env, problems } = await inspectEnvironment(envDir, opts);
  if (env) return env;
  throw new EnvironmentError(problems);
}

export class EnvironmentError extends BootTorrentError {
  constructor(readonly problems: readonly Problem[]) {
    super(
      'BT_ERR_ENV',
      `environment has ${problems.length} problem(s):\n${problems.map(formatProblem).join('\n')}`,
    );
  }
}

/** `file:line:col: field: message (fix: ...)`, the line every tool and editor understands. */
export function formatProblem(p: Problem): string {
  const where = p.line === undefined ? p.file : `${p.file}:${p.line}:${p.column ?? 1}`;
  return `${where}: ${p.field}: ${p.message} (fix: ${p.fix})`;
}

interface Parsed {
  readonly root: Node | null;
  readonly lines: LineCounter;
}

/** Parses YAML, turning syntax errors into problems (null when there were any). */
function parseYaml(file: string, text: string, problems: Problem[], version?: '1.1'): Parsed | null {
  const lines = new LineCounter();
  const doc = parseDocument(text, {
    lineCounter: lines,
    prettyErrors: false,
    uniqueKeys: true,
    version: version ?? '1.2',
  });
  if (doc.errors.length > 0) {
    for (const e of doc.errors) {
      const pos = e.linePos?.[0] ?? lines.linePos(e.pos[0]);
      problems.push({
        file,
        line: pos?.line,
        column: pos?.col,
        field: '(syntax)',
        message: `YAML syntax error: ${e.message.split('\n')[0]}`,
        fix:
          e.code === 'DUPLICATE_KEY'
            ? 'keep one of the two keys'
            : 'correct the indentation, colon or quotes here',
      });
    }
    return null;
  }
  return { root: doc.contents as Node | null, lines };
}

/** Reads a file, turning an I/O error (permissions, a folder in its place) into a problem. */
function readText(file: string, full: string, problems: Problem[]): string | null {
  try {
    return readFileSync(full, 'utf8');
  } catch (err) {
    problems.push({
      file,
      field: '(file)',
      message: `cannot read it: ${(err as Error).message}`,
      fix: 'make it a readable file',
    });
    return null;
  }
}

function hasKey(root: Node | null, key: string): boolean {
  return isMap(root) && root.items.some((p) => isScalar(p.key) && p.key.value === key);
}

function getScalar(root: Node | null, key: string): unknown {
  if (!isMap(root)) return undefined;
  const pair = root.items.find((p) => isScalar(p.key) && p.key.value === key);
  return isScalar(pair?.value) ? pair.value.value : undefined;
}

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : {});

/** The v1 model before cross-checks; any field may be missing when its value was invalid. */
interface Draft {
  version: 0 | 1;
  interface: string | null;
  address?: string;
  httpPort: number;
  tftp: boolean;
  ipxeDir: string;
  uefiChain: UefiChain;
  uefiLoader: 'ipxe.efi' | 'snponly.efi';
  /** Set in the file (a warning when the chain ignores it). */
  uefiLoaderSet: boolean;
  ukiKey?: string;
  ukiCert?: string;
  /** server.upstream and server.upstream_key as written (v1 only). */
  upstream?: string;
  upstreamKey?: string;
  dhcpMode?: DhcpMode;
  range?: string;
  lease?: string | number;
  router: string | null;
  dns: string[];
  /** dhcp.subnets as written (v1 only); checked by checkSubnets. */
  subnets: unknown[];
  trackerEnabled?: boolean;
  trackerPort: number;
  lsd?: boolean;
  pex: boolean;
  phase1Peers: boolean;
  phase1Loader: 'ipxe' | 'grub';
  defaultOs?: string;
  timeout?: number;
  seedTime: number;
  hosts: Obj;
  groups: Obj;
  allowMacs: string[] | null;
  logLevel: LogLevel;
  /** The field names as written in this file's version, for messages. */
  names: Record<
    | 'interface'
    | 'address'
    | 'httpPort'
    | 'range'
    | 'lease'
    | 'tracker'
    | 'trackerPort'
    | 'lsd'
    | 'defaultOs'
    | 'timeout'
    | 'dhcpMode',
    string
  >;
}

function mapV1(v: Obj, bad: (field: string) => boolean): Draft {
  const server = obj(v.server);
  const dhcp = obj(v.dhcp);
  const tracker = obj(v.tracker);
  const peers = obj(v.peers);
  const boot = obj(v.boot);
  const dns = dhcp.dns;
  return {
    version: 1,
    interface: typeof server.interface === 'string' ? server.interface : null,
    address: server.address as string | undefined,
    httpPort: (server.http_port as number | undefined) ?? 80,
    tftp: (server.tftp as boolean | undefined) ?? true,
    ipxeDir: (server.ipxe_dir as string | undefined) ?? '/usr/lib/ipxe',
    uefiChain: (server.uefi_chain as UefiChain | undefined) ?? 'ipxe',
    uefiLoader: (server.uefi_loader as 'ipxe.efi' | 'snponly.efi' | undefined) ?? 'ipxe.efi',
    uefiLoaderSet: server.uefi_loader !== undefined,
    ...(typeof server.uki_key === 'string' ? { ukiKey: server.uki_key } : {}),
    ...(typeof server.uki_cert === 'string' ? { ukiCert: server.uki_cert } : {}),
    ...(typeof server.upstream === 'string' && !bad('server.upstream') ? { upstream: server.upstream } : {}),
    ...(typeof server.upstream_key === 'string' ? { upstreamKey: server.upstream_key } : {}),
    dhcpMode: bad('dhcp.mode') ? undefined : ((dhcp.mode as DhcpMode | undefined) ?? 'proxy'),
    range: dhcp.range as string | undefined,
    lease: (dhcp.lease_time as string | number | undefined) ?? '12h',
    router: (dhcp.router as string | undefined) ?? null,
    dns: typeof dns === 'string' ? [dns] : Array.isArray(dns) ? (dns as string[]) : [],
    subnets: Array.isArray(dhcp.subnets) && !bad('dhcp.subnets') ? (dhcp.subnets as unknown[]) : [],
    trackerEnabled: bad('tracker.enabled') ? undefined : ((tracker.enabled as boolean | undefined) ?? true),
    trackerPort: (tracker.port as number | undefined) ?? 6969,
    lsd: bad('peers.lsd') ? undefined : ((peers.lsd as boolean | undefined) ?? false),
    pex: (peers.pex as boolean | undefined) ?? true,
    phase1Peers: (peers.phase1 as boolean | undefined) ?? false,
    phase1Loader: bad('peers.phase1_loader')
      ? 'ipxe'
      : ((peers.phase1_loader as 'ipxe' | 'grub' | undefined) ?? 'ipxe'),
    defaultOs: boot.default_os as string | undefined,
    timeout: bad('boot.timeout') ? undefined : ((boot.timeout as number | undefined) ?? 30),
    seedTime: (boot.seed_time as number | undefined) ?? 30,
    hosts: obj(v.hosts),
    groups: obj(v.groups),
    allowMacs: Array.isArray(v.allow_macs) ? (v.allow_macs as string[]) : null,
    logLevel: (v.log_level as LogLevel | undefined) ?? 'info',
    names: {
      interface: 'server.interface',
      address: 'server.address',
      httpPort: 'server.http_port',
      range: 'dhcp.range',
      lease: 'dhcp.lease_time',
      dhcpMode: 'dhcp.mode',
      tracker: 'tracker.enabled',
      trackerPort: 'tracker.port',
      lsd: 'peers.lsd',
      defaultOs: 'boot.default_os',
      timeout: 'boot.timeout',
    },
  };
}

/**
 * v0 -> v1. dnsmasq's `dhcp_range` is "first,last[,lease]" or
 * "network,proxy[,...]" (dnsmasq's proxy form); `enable_dhcp: False` means
 * another DHCP server points clients at us, which is v1's mode off. aria2's
 * `notice` level has no v1 counterpart and becomes info.
 */
function mapV0(v: Obj, bad: (field: string) => boolean): Draft {
  const bt = obj(v.boottorrent);
  const dm = obj(v.dnsmasq);
  const ot = obj(v.opentracker);
  const ar = obj(v.aria2);
  let range: string | undefined;
  let lease: string | number | undefined = '12h';
  let mode: DhcpMode | undefined = bad('dnsmasq.enable_dhcp')
    ? undefined
    : dm.enable_dhcp === false
      ? 'off'
      : 'full';
  if (typeof dm.dhcp_range === 'string') {
    const [first, last, l] = dm.dhcp_range.split(',').map((s) => s.trim());
    if (last === 'proxy') {
      if (mode === 'full') mode = 'proxy';
    } else range = `${first}-${last}`;
    if (l) lease = l === 'infinite' ? 0 : l;
  }
  const level = ar.console_log_level as string | undefined;
  return {
    version: 0,
    interface: typeof dm.interface === 'string' ? dm.interface : null,
    address: bt.host_ip as string | undefined,
    httpPort: 80,
    tftp: (dm.enable_tftp as boolean | undefined) ?? true,
    ipxeDir: '/usr/lib/ipxe',
    uefiChain: 'ipxe',
    uefiLoader: 'ipxe.efi',
    uefiLoaderSet: false,
    dhcpMode: mode,
    range,
    lease,
    router: null,
    dns: [],
    subnets: [],
    trackerEnabled: bad('opentracker.enable') ? undefined : ((ot.enable as boolean | undefined) ?? true),
    trackerPort: (ot.port as number | undefined) ?? 6969,
    lsd: bad('aria2.bt_enable_lpd') ? undefined : ((ar.bt_enable_lpd as boolean | undefined) ?? false),
    pex: (ar.enable_peer_exchange as boolean | undefined) ?? true,
    phase1Peers: false,
    phase1Loader: 'ipxe',
    defaultOs: bt.default_os as string | undefined,
    timeout: bad('boottorrent.timeout') ? undefined : ((bt.timeout as number | undefined) ?? 30),
    seedTime: (bt.seed_time as number | undefined) ?? 30,
    hosts: {},
    groups: {},
    allowMacs: null,
    logLevel:
      level === 'notice' || level === undefined
        ? level === undefined
          ? 'error'
          : 'info'
        : (level as LogLevel),
    names: {
      interface: 'dnsmasq.interface',
      address: 'boottorrent.host_ip',
      httpPort: 'boottorrent.host_ip',
      range: 'dnsmasq.dhcp_range',
      lease: 'dnsmasq.dhcp_range',
      dhcpMode: 'dnsmasq.enable_dhcp',
      tracker: 'opentracker.enable',
      trackerPort: 'opentracker.port',
      lsd: 'aria2.bt_enable_lpd',
      defaultOs: 'boottorrent.default_os',
      timeout: 'boottorrent.timeout',
    },
  };
}

/** Splits a command line like a POSIX shell would (quotes and backslashes; no expansion). */
export function splitArgs(s: string): string[] | null {
  const out: string[] = [];
  let cur = '';
  let inWord = false;
  let quote: '"' | "'" | null = null;
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (quote) {
      if (c === quote) quote = null;
      else if (c === '\\' && quote === '"' && i + 1 < s.length) cur += s[++i];
      else cur += c;
    } else if (c === '"' || c === "'") {
      quote = c;
      inWord = true;
    } else if (c === '\\' && i + 1 < s.length) {
      cur += s[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) out.push(cur);
      cur = '';
      inWord = false;
    } else {
      cur += c;
      inWord = true;
    }
  }
  if (quote) return null;
  if (inWord) out.push(cur);
  return out;
}

/** Config MACs are checked by the schema's MAC pattern first, so normalizeMac always has an answer. */
const normMac = (m: string) => normalizeMac(m) ?? m.toLowerCase();

/** "12h" / "90m" / 3600 -> seconds. */
export function durationSeconds(v: string | number): number {
  if (typeof v === 'number') return v;
  const m = /^(\d+)([smhd]?)$/.exec(v);
  if (!m) return NaN;
  return Number(m[1]) * ({ '': 1, s: 1, m: 60, h: 3600, d: 86400 } as Record<string, number>)[m[2]!]!;
}

/** QEMU options whose next argument is a file of the OS folder. */
const QEMU_FILE_OPTS = new Set([
  '-cdrom',
  '-fda',
  '-fdb',
  '-hda',
  '-hdb',
  '-hdc',
  '-hdd',
  '-kernel',
  '-initrd',
  '-bios',
]);

export async function inspectEnvironment(envDir: string, opts: ValidateOptions = {}): Promise<Inspection> {
  const problems: Problem[] = [];
  const dir = resolve(envDir);
  const mainFile = join(envDir, ENV_FILE);
  if (!existsSync(join(dir, ENV_FILE))) {
    const other = existsSync(dir)
      ? readdirSync(dir).find((n) => n.toLowerCase() === ENV_FILE.toLowerCase())
      : undefined;
    problems.push({
      file: mainFile,
      field: '(file)',
      message: existsSync(dir) ? `no ${ENV_FILE} in ${envDir}` : `folder ${envDir} does not exist`,
      fix: other
        ? `rename ${other} to ${ENV_FILE} (the name is case-sensitive)`
        : `run \`boottorrent init ${envDir}\`, or point --env at an environment folder`,
    });
    return { env: null, problems, warnings: [] };
  }

  const warnings: Problem[] = [];
  let draft: Draft | null = null;
  let checked: Checked | null = null;
  const mainText = readText(mainFile, join(dir, ENV_FILE), problems);
  let parsed = mainText === null ? null : parseYaml(mainFile, mainText, problems);
  if (parsed) {
    let name: SchemaName = 'boottorrent.v1';
    if (!hasKey(parsed.root, 'version') && hasKey(parsed.root, 'boottorrent')) {
      // The older tool read its files with PyYAML, a YAML 1.1 parser.
      name = 'boottorrent.v0';
      parsed = parseYaml(mainFile, mainText!, problems, '1.1');
    } else if (!hasKey(parsed.root, 'version') && isMap(parsed.root)) {
      problems.push({
        file: mainFile,
        line: 1,
        column: 1,
        field: 'version',
        message:
          "missing version (neither version 1 nor the older tool's version 0 with a `boottorrent:` section)",
        fix: 'add `version: 1` as the first line',
      });
    } else if (getScalar(parsed.root, 'version') === 0) {
      problems.push({
        file: mainFile,
        line: 1,
        column: 1,
        field: 'version',
        message: 'version 0 files keep their version inside the `boottorrent:` section',
        fix: 'write `version: 1` and the version 1 fields (docs/environment.md), or move version under boottorrent:',
      });
    }
    if (parsed && parsed.root === null) {
      problems.push({
        file: mainFile,
        field: '(document)',
        message: 'the file is empty',
        fix: 'write `version: 1` and the fields (`boottorrent init` writes a documented example)',
      });
    } else if (parsed) {
      checked = checkDocument(parsed.root, loadSchema(name), parsed.lines, '', {
        lenient: name === 'boottorrent.v0',
      });
      problems.push(...checked.problems.map((p) => ({ file: mainFile, ...p })));
      warnings.push(...checked.warnings.map((p) => ({ file: mainFile, ...p })));
      const found = checked.problems;
      const bad = (field: string) => found.some((p) => p.field === field);
      draft = name === 'boottorrent.v0' ? mapV0(obj(checked.value), bad) : mapV1(obj(checked.value), bad);
    }
  }
  const at = (path: string, message: string, fix: string): Problem => {
    // A field left out is reported at its section, or at the top of the file.
    const pos = checked?.positions.get(path) ??
      checked?.positions.get(path.split('.')[0]!) ?? { line: 1, column: 1 };
    return { file: mainFile, line: pos?.line, column: pos?.column, field: path, message, fix };
  };

  // --- the operating systems -------------------------------------------------
  const oss: OsEntry[] = [];
  const ossDir = join(dir, 'oss');
  const osProblemsBefore = problems.length;
  /** A satellite (server.upstream) takes its OSs from its upstream. */
  const satellite = draft?.upstream !== undefined;
  if (satellite) {
    const here =
      existsSync(ossDir) && statSync(ossDir).isDirectory()
        ? readdirSync(ossDir).filter((n) => !n.startsWith('.') && statSync(join(ossDir, n)).isDirectory())
        : [];
    if (here.length > 0)
      problems.push(
        at(
          'server.upstream',
          `this server is a satellite (it serves its upstream's OSs), but oss/ holds ${here.join(', ')}`,
          "move those folders to the upstream's environment (its satellites get them from there), or remove server.upstream",
        ),
      );
  } else if (!existsSync(ossDir) || !statSync(ossDir).isDirectory()) {
    problems.push({
      file: join(envDir, 'oss'),
      field: '(folder)',
      message: 'no oss/ folder: there is nothing to boot',
      fix: 'create oss/<name>/config.yaml for each operating system (see oss/README.md written by `boottorrent init`)',
    });
  } else {
    const names = readdirSync(ossDir)
      .filter((n) => !n.startsWith('.') && statSync(join(ossDir, n)).isDirectory())
      .sort();
    const byName = new Map<string, { file: string }>();
    for (const id of names) {
      const entry = loadOs(envDir, dir, id, problems, warnings);
      if (!entry) continue;
      const prev = byName.get(entry.os.name);
      if (prev) {
        problems.push({
          file: entry.os.configFile,
          line: entry.namePos?.line,
          column: entry.namePos?.column,
          field: entry.os.sourceVersion === 0 ? 'dispname' : 'name',
          message: `display name '${entry.os.name}' is also used by ${prev.file}; the menu could not tell them apart`,
          fix: 'give each operating system its own name',
        });
      } else byName.set(entry.os.name, { file: entry.os.configFile });
      oss.push(entry.os);
    }
  }
  const osIds = oss.map((o) => o.id);
  const folders =
    existsSync(ossDir) && statSync(ossDir).isDirectory()
      ? readdirSync(ossDir).filter((f) => !f.startsWith('.') && statSync(join(ossDir, f)).isDirectory())
      : [];
  const osProblems = problems.length > osProblemsBefore;

  // --- cross-checks --------------------------------------------------------------
  if (draft && checked && isMap(parsed?.root)) {
    const n = draft.names;
    // A satellite's OS ids are its upstream's, known only once it runs (start warns about unknown ones).
    const known = (id: string) =>
      satellite || osIds.includes(id) || (osProblems && existsSync(join(ossDir, id)));
    const osFix = (id: string) => {
      const byDisplay = oss.find((o) => o.name === id);
      if (byDisplay) return `use the folder name '${byDisplay.id}' (its display name is '${id}')`;
      const guess = suggest(id, folders);
      if (guess) return `did you mean '${guess}'?`;
      return folders.length ? `use one of: ${folders.join(', ')}` : `create oss/${id}/config.yaml`;
    };
    if (draft.defaultOs === undefined) {
      if (
        !satellite &&
        draft.timeout !== undefined &&
        draft.timeout >= 0 &&
        !checked.problems.some((p) => p.field === n.defaultOs)
      )
        problems.push(
          at(
            n.defaultOs,
            `no default_os, but timeout ${draft.timeout} boots one`,
            osIds.length ? `add default_os: ${osIds[0]}` : 'add an OS under oss/ and name it in default_os',
          ),
        );
    } else if (!known(draft.defaultOs)) {
      problems.push(at(n.defaultOs, `'${draft.defaultOs}' is not a folder of oss/`, osFix(draft.defaultOs)));
    }
    const room = checkRoom(draft.hosts, draft.groups, {
      dir,
      envDir,
      mainFile,
      at,
      keyAt: (path, message, fix) => {
        const pos = checked.positions.get(`${path}#key`) ?? checked.positions.get(path);
        return { file: mainFile, line: pos?.line, column: pos?.column, field: path, message, fix };
      },
      known,
      osFix,
      bad: (field) => checked.problems.some((p) => p.field === field || p.field.startsWith(`${field}[`)),
      boot: { defaultOs: draft.defaultOs ?? null, timeout: draft.timeout ?? 30, seedTime: draft.seedTime },
    });
    problems.push(...room.problems);
    warnings.push(...room.warnings);
    if (draft.trackerEnabled === false && draft.lsd === false) {
      problems.push(
        at(
          n.tracker,
          'neither the tracker nor local peer discovery is enabled: clients have no way to find peers',
          `set ${n.tracker}: true (or ${n.lsd}: true)`,
        ),
      );
    }
    if (
      draft.dhcpMode === 'full' &&
      draft.version === 0 &&
      draft.range === undefined &&
      !checked.problems.length
    ) {
      problems.push(
        at(
          n.range.split('.')[0]!,
          'enable_dhcp is on but there is no dhcp_range',
          'add dhcp_range: "FIRST,LAST,12h" or set enable_dhcp: False',
        ),
      );
    }
    if (draft.range !== undefined) {
      const [first, last] = draft.range.split('-').map((s) => s.trim()) as [string, string];
      const bad = [first, last].find((ip) => ip.split('.').some((o) => Number(o) > 255));
      if (bad)
        problems.push(
          at(n.range, `'${bad}' is not an IPv4 address`, 'write FIRST-LAST with dotted addresses'),
        );
      else if (ipToInt(first) > ipToInt(last))
        problems.push(
          at(n.range, `range ${first}-${last} is reversed (first > last)`, `write ${last}-${first}`),
        );
      else if (
        draft.address &&
        ipToInt(draft.address) >= ipToInt(first) &&
        ipToInt(draft.address) <= ipToInt(last)
      )
        problems.push(
          at(
            n.range,
            `the server's own address ${draft.address} lies inside the range`,
            'make the range leave out the server address',
          ),
        );
    }
    problems.push(...checkSubnets(draft, at));
    if (
      draft.dhcpMode !== 'full' &&
      draft.version === 1 &&
      draft.range !== undefined &&
      draft.dhcpMode !== undefined
    ) {
      problems.push(
        at(
          n.range,
          `dhcp.range is only used in mode full (mode is ${draft.dhcpMode})`,
          'remove range or set mode: full',
        ),
      );
    }
    if (draft.trackerEnabled && draft.trackerPort === draft.httpPort) {
      problems.push(
        at(
          n.trackerPort,
          `port ${draft.trackerPort} is also the HTTP port`,
          'give the tracker its own port (6969)',
        ),
      );
    }
  }

  // Our DHCP sends PXE firmware to this server's TFTP for iPXE: with TFTP
  // off nothing would answer (the firmware times out with no reason).
  if (draft && !draft.tftp && draft.dhcpMode !== undefined && draft.dhcpMode !== 'off') {
    const field = draft.version === 1 ? 'server.tftp' : 'dnsmasq.enable_tftp';
    problems.push(
      at(
        field,
        `TFTP is off but ${draft.names.dhcpMode} is ${draft.dhcpMode}: our DHCP would send PXE firmware here for iPXE over TFTP (port 69) and nothing would answer`,
        `turn TFTP on, or set ${draft.names.dhcpMode} to off and have the site's DHCP send firmware to a TFTP server with iPXE (docs/deployment.md, "dhcp.mode: off")`,
      ),
    );
  }

  // The signed chain's GRUB loads its script and phase 1 over TFTP (it has no HTTP).
  if (draft && !draft.tftp && draft.uefiChain === 'signed') {
    problems.push(
      at(
        'server.tftp',
        "TFTP is off but server.uefi_chain is signed: Debian's signed GRUB loads phase 1 over TFTP only",
        'turn TFTP on (server.tftp: true), or set server.uefi_chain: ipxe',
      ),
    );
  }
  // The lab-key path: PXE firmware fetches the signed phase-1 image over TFTP.
  if (draft && draft.uefiChain === 'uki') {
    if (!draft.tftp)
      problems.push(
        at(
          'server.tftp',
          'TFTP is off but server.uefi_chain is uki: PXE firmware fetches the signed phase-1 image over TFTP',
          'turn TFTP on (server.tftp: true)',
        ),
      );
    for (const [field, value, kind] of [
      ['server.uki_key', draft.ukiKey, 'key'],
      ['server.uki_cert', draft.ukiCert, 'cert'],
    ] as const) {
      if (value === undefined) {
        problems.push(
          at(
            field,
            `server.uefi_chain is uki but ${field} is not set`,
            kind === 'key'
              ? 'name the lab\'s private key (PEM; docs/deployment.md, "Secure Boot with the lab\'s key")'
              : "name the lab's certificate (PEM), the one the machines have enrolled",
          ),
        );
        continue;
      }
      const file = resolve(dir, value);
      const bad = labKeyProblem(file, kind);
      if (bad) problems.push(at(field, bad.message, bad.fix));
      else if (kind === 'key' && (statSync(file).mode & 0o077) !== 0)
        warnings.push(
          at(
            field,
            `${file} is readable by other users of the server: anyone who has it can sign what your machines run`,
            `chmod 600 ${file}`,
          ),
        );
    }
  } else if (draft && (draft.ukiKey !== undefined || draft.ukiCert !== undefined))
    warnings.push(
      at(
        draft.ukiKey !== undefined ? 'server.uki_key' : 'server.uki_cert',
        `ignored: server.uefi_chain is ${draft.uefiChain}, not uki`,
        'set server.uefi_chain: uki to serve the lab-signed phase 1, or remove it',
      ),
    );

  if (draft) problems.push(...upstreamProblems(draft, dir, at));
  if (draft && draft.upstream === undefined && draft.upstreamKey !== undefined)
    warnings.push(
      at(
        'server.upstream_key',
        'ignored: server.upstream is not set (this server is not a satellite)',
        "set server.upstream to the upstream server's URL, or remove upstream_key",
      ),
    );

  if (draft?.uefiLoaderSet && draft.uefiChain === 'uki')
    warnings.push(
      at(
        'server.uefi_loader',
        'ignored: with server.uefi_chain: uki UEFI firmware gets the lab-signed phase 1, not iPXE',
        'remove uefi_loader, or set server.uefi_chain: ipxe',
      ),
    );

  if (draft?.phase1Loader === 'grub' && !draft.phase1Peers)
    warnings.push(
      at(
        'peers.phase1_loader',
        'ignored: peers.phase1 is off, so no client serves phase 1 to another',
        'set peers.phase1: true (and keep phase1_loader: grub), or remove phase1_loader',
      ),
    );

  // --- this machine ----------------------------------------------------------------
  if (draft && opts.machineChecks !== false && draft.address !== undefined) {
    const mp = await machineProblems(
      {
        interface: draft.interface,
        address: draft.address,
        httpPort: draft.httpPort,
        tftp: draft.tftp,
        ipxeDir: draft.ipxeDir,
        uefiChain: draft.uefiChain,
        uefiLoader: draft.uefiLoader,
        dhcpMode: draft.dhcpMode ?? 'off',
        range: draft.range,
        tracker: draft.trackerEnabled ? draft.trackerPort : null,
        ipxeConfigured: draft.version === 1 && obj(obj(checked?.value).server).ipxe_dir !== undefined,
        names: {
          interface: draft.names.interface,
          address: draft.names.address,
          httpPort: draft.version === 1 ? draft.names.httpPort : '(http port 80)',
          range: draft.names.range,
          trackerPort: draft.names.trackerPort,
          tftp: draft.version === 1 ? 'server.tftp' : 'dnsmasq.enable_tftp',
          dhcpMode: draft.names.dhcpMode,
          ipxeDir: draft.version === 1 ? 'server.ipxe_dir' : '(iPXE)',
        },
      },
      opts,
    );
    for (const p of mp) problems.push(at(p.field, p.message, p.fix));
  }

  if (problems.length > 0 || !draft) return { env: null, problems, warnings };
  return { env: freeze(build(dir, draft, oss, warnings)), problems, warnings };
}

function build(dir: string, d: Draft, oss: OsEntry[], warnings: Problem[]): Environment {
  let range: Environment['dhcp']['range'] = null;
  if (d.range !== undefined && d.dhcpMode === 'full') {
    const [first, last] = d.range.split('-').map((s) => s.trim()) as [string, string];
    range = { first, last };
  }
  return {
    dir,
    sourceVersion: d.version,
    warnings: [...warnings],
    server: {
      interface: d.interface,
      address: d.address!,
      httpPort: d.httpPort,
      tftp: d.tftp,
      ipxeDir: d.ipxeDir,
      uefiChain: d.uefiChain,
      uefiLoader: d.uefiLoader,
      uki:
        d.uefiChain === 'uki' && d.ukiKey !== undefined && d.ukiCert !== undefined
          ? { key: resolve(dir, d.ukiKey), cert: resolve(dir, d.ukiCert) }
          : null,
      upstream:
        d.upstream !== undefined
          ? {
              url: d.upstream.replace(/\/+$/, ''),
              key: d.upstreamKey !== undefined ? resolve(dir, d.upstreamKey) : null,
            }
          : null,
    },
    dhcp: {
      mode: d.dhcpMode!,
      range,
      leaseSeconds: durationSeconds(d.lease ?? '12h'),
      router: d.router,
      dns: d.dns,
      subnets: d.dhcpMode === 'off' ? [] : d.subnets.map((raw) => buildSubnet(obj(raw), d.dhcpMode!)),
    },
    tracker: { enabled: d.trackerEnabled!, port: d.trackerPort },
    peers: { lsd: d.lsd!, pex: d.pex, phase1: d.phase1Peers, phase1Loader: d.phase1Loader },
    boot: { defaultOs: d.defaultOs ?? null, timeout: d.timeout!, seedTime: d.seedTime },
    hosts: buildHosts(d.hosts, dir),
    groups: buildGroups(d.groups, dir),
    allowMacs: d.allowMacs ? d.allowMacs.map(normMac) : null,
    logLevel: d.logLevel,
    oss,
  };
}

/**
 * server.upstream (#21 item 2): not this server itself (a loop), and its
 * key, if named, an Ed25519 public key in PEM (what the upstream's
 * .boottorrent/signing-key.pub.pem holds).
 */
function upstreamProblems(
  d: Draft,
  dir: string,
  at: (path: string, message: string, fix: string) => Problem,
): Problem[] {
  if (d.upstream === undefined) return [];
  const out: Problem[] = [];
  let url: URL | undefined;
  try {
    url = new URL(d.upstream);
  } catch {
    out.push(at('server.upstream', `'${d.upstream}' is not a URL`, 'write http://ADDRESS[:PORT]'));
  }
  const port = url ? Number(url.port || 80) : 0;
  if (url && url.hostname === d.address && port === d.httpPort)
    out.push(
      at(
        'server.upstream',
        `${d.upstream} is this server itself (server.address and http_port)`,
        "name the other server's address: a satellite takes its catalog from there",
      ),
    );
  if (d.upstreamKey !== undefined) {
    const file = resolve(dir, d.upstreamKey);
    let why: string | undefined;
    try {
      const key = createPublicKey(readFileSync(file, 'utf8'));
      if (key.asymmetricKeyType !== 'ed25519') why = `is a ${key.asymmetricKeyType} key, not Ed25519`;
    } catch (err) {
      why =
        (err as NodeJS.ErrnoException).code === 'ENOENT'
          ? 'does not exist'
          : `is not a public key in PEM (${(err as Error).message})`;
    }
    if (why)
      out.push(
        at(
          'server.upstream_key',
          `${file} ${why}`,
          "copy the upstream's <env>/.boottorrent/signing-key.pub.pem here and name it",
        ),
      );
  }
  return out;
}

/**
 * dhcp.subnets (#21): each a relayed subnet written as its network, not
 * overlapping another or holding the server's own address (the server's
 * subnet uses dhcp.range), with a range inside it in full mode and none in
 * proxy mode, and a router inside it and outside the range.
 */
function checkSubnets(d: Draft, at: (path: string, message: string, fix: string) => Problem): Problem[] {
  const out: Problem[] = [];
  if (d.subnets.length === 0) return out;
  if (d.dhcpMode === 'off') {
    out.push(
      at(
        'dhcp.subnets',
        'dhcp.subnets is only used in mode full or proxy (mode is off)',
        'remove subnets, or set dhcp.mode to full or proxy',
      ),
    );
    return out;
  }
  const seen: { sub: Subnet; field: string }[] = [];
  d.subnets.forEach((raw, i) => {
    const e = obj(raw);
    const f = `dhcp.subnets[${i}]`;
    if (typeof e.subnet !== 'string') return; // the schema reported it
    const sub = parseSubnet(e.subnet);
    if (!sub) {
      out.push(at(`${f}.subnet`, `'${e.subnet}' is not an IPv4 subnet`, 'write it as 10.1.0.0/24'));
      return;
    }
    const text = subnetText(sub);
    if (!sub.exact)
      out.push(
        at(`${f}.subnet`, `${e.subnet} is an address, not a network (host bits are set)`, `write ${text}`),
      );
    if (sub.bits > 30)
      out.push(
        at(
          `${f}.subnet`,
          `${text} has no room for a relay and clients`,
          'give the subnet a prefix of /30 or less',
        ),
      );
    const clash = seen.find((o) => overlapping(o.sub, sub));
    if (clash)
      out.push(
        at(
          `${f}.subnet`,
          `${text} overlaps ${subnetText(clash.sub)} (${clash.field})`,
          'list each relayed subnet once; subnets must not overlap',
        ),
      );
    seen.push({ sub, field: f });
    if (d.address && inSubnet(d.address, sub))
      out.push(
        at(
          `${f}.subnet`,
          `the server's own address ${d.address} lies in ${text}`,
          "list only subnets a router relays to this server; the server's own subnet uses dhcp.range and dhcp.router",
        ),
      );
    const inner = (ip: string): boolean => {
      const n = ipToInt(ip);
      return inSubnet(ip, sub) && n !== sub.base && n !== (sub.base | ~sub.mask) >>> 0;
    };
    let range: [number, number] | undefined;
    if (d.dhcpMode === 'full') {
      if (typeof e.range !== 'string') {
        out.push(
          at(
            f,
            `no range for ${text}: full mode hands out addresses on every subnet it serves`,
            `add range: FIRST-LAST inside ${text}`,
          ),
        );
      } else {
        const [first, last] = e.range.split('-').map((x) => x.trim()) as [string, string];
        const a = ipToInt(first);
        const b = ipToInt(last);
        if (Number.isNaN(a) || Number.isNaN(b))
          out.push(
            at(`${f}.range`, `'${e.range}' is not FIRST-LAST of IPv4 addresses`, 'write dotted addresses'),
          );
        else if (a > b)
          out.push(
            at(`${f}.range`, `range ${first}-${last} is reversed (first > last)`, `write ${last}-${first}`),
          );
        else if (!inner(first) || !inner(last))
          out.push(
            at(
              `${f}.range`,
              `range ${first}-${last} is not inside ${text} (between its network and broadcast addresses)`,
              `pick addresses from ${intToIp(sub.base + 1)}-${intToIp(((sub.base | ~sub.mask) >>> 0) - 1)}`,
            ),
          );
        else range = [a, b];
      }
    } else {
      for (const key of ['range', 'router', 'dns'] as const)
        if (e[key] !== undefined)
          out.push(
            at(
              `${f}.${key}`,
              `${key} is only given in mode full (mode is ${d.dhcpMode}: the site's DHCP server gives addresses)`,
              `remove ${key}, or set dhcp.mode: full`,
            ),
          );
    }
    if (d.dhcpMode === 'full' && typeof e.router === 'string') {
      const r = ipToInt(e.router);
      if (!inner(e.router))
        out.push(
          at(
            `${f}.router`,
            `router ${e.router} is not an address in ${text}`,
            `give the router's address on ${text} (normally the relay's)`,
          ),
        );
      else if (range && r >= range[0] && r <= range[1])
        out.push(
          at(
            `${f}.router`,
            `router ${e.router} lies inside the range`,
            'make the range leave out the router',
          ),
        );
    }
  });
  return out;
}

function overlapping(a: Subnet, b: Subnet): boolean {
  const wide = a.bits <= b.bits ? a : b;
  const narrow = wide === a ? b : a;
  return (narrow.base & wide.mask) >>> 0 === wide.base;
}

function buildSubnet(e: Obj, mode: DhcpMode): Environment['dhcp']['subnets'][number] {
  const sub = parseSubnet(e.subnet as string)!;
  const dns = e.dns;
  const [first, last] =
    mode === 'full' ? ((e.range as string).split('-').map((x) => x.trim()) as [string, string]) : [];
  return {
    subnet: subnetText(sub),
    range: first !== undefined && last !== undefined ? { first, last } : null,
    router: typeof e.router === 'string' ? e.router : null,
    dns: typeof dns === 'string' ? [dns] : Array.isArray(dns) ? (dns as string[]) : null,
  };
}

/** Deep freeze; a Map is frozen by replacing its mutators (Object.freeze leaves a Map's contents writable). */
function freeze<T>(v: T): T {
  if (v instanceof Map) {
    for (const x of v.values()) freeze(x);
    const fail = () => {
      throw new TypeError('Environment is read-only');
    };
    Object.assign(v, { set: fail, delete: fail, clear: fail });
    return Object.freeze(v);
  }
  if (v !== null && typeof v === 'object' && !Object.isFrozen(v)) {
    for (const x of Object.values(v)) freeze(x);
    Object.freeze(v);
  }
  return v;
}

/**
 * An OS config's `torrent:` (v1): a .torrent in the folder, of a folder
 * named like the OS (agents check the name), with somewhere to fetch from
 * (its url-list or the config's web_seeds). Its file paths, or null when
 * it is unusable (the problem is recorded).
 */
function remoteTorrent(
  v: Obj,
  osDir: string,
  id: string,
  at: (field: string, message: string, fix: string) => void,
): { file: string; files: Set<string> } | null {
  const rel = v.torrent as string;
  const file = normalize(join(osDir, rel));
  if (isAbsolute(rel) || !file.startsWith(osDir + sep) || !existsSync(file) || !statSync(file).isFile()) {
    at(
      'torrent',
      `'${rel}' is not a file in oss/${id}/`,
      `put the .torrent in oss/${id}/ and name it relative to that folder`,
    );
    return null;
  }
  let meta: Metainfo;
  try {
    meta = parseTorrent(readFileSync(file), file);
  } catch (err) {
    at(
      'torrent',
      `${rel} is not a torrent: ${(err as Error).message}`,
      'make it again (boottorrent torrent, mktorrent)',
    );
    return null;
  }
  if (meta.singleFile || meta.name !== id) {
    at(
      'torrent',
      `${rel} is of ${meta.singleFile ? `one file (${meta.name})` : `a folder named '${meta.name}'`}; clients need a folder named like this OS's folder ('${id}')`,
      meta.singleFile
        ? `make the torrent from a folder named ${id}`
        : `rename oss/${id}/ to oss/${meta.name}/, or make the torrent from a folder named ${id}`,
    );
    return null;
  }
  const seeds = Array.isArray(v.web_seeds) ? v.web_seeds.length : 0;
  if (seeds === 0 && meta.urlList.length === 0) {
    at(
      'torrent',
      `${rel} has no web seed (url-list) and web_seeds is empty: start would have nowhere to fetch the files from`,
      'add web_seeds: [http://mirror/path/] (a folder URL holding ' +
        `${id}/<files>), or put the files in oss/${id}/ and remove torrent`,
    );
    return null;
  }
  return { file, files: new Set(meta.files.map((f) => f.path.join('/'))) };
}

interface LoadedOs {
  readonly os: OsEntry;
  readonly namePos?: { line: number; column: number };
}

/** Reads oss/<id>/config.yaml (v0 or v1, told apart by its keys) and checks its files. */
function loadOs(
  envDir: string,
  dir: string,
  id: string,
  problems: Problem[],
  warnings: Problem[],
): LoadedOs | null {
  const osDir = join(dir, 'oss', id);
  const file = join(envDir, 'oss', id, OS_CONFIG);
  if (!existsSync(join(osDir, OS_CONFIG))) {
    problems.push({
      file,
      field: '(file)',
      message: `oss/${id}/ has no ${OS_CONFIG}`,
      fix: `add ${OS_CONFIG} with name and method (see oss/README.md), or move the folder out of oss/`,
    });
    return null;
  }
  const before = problems.length;
  const text = readText(file, join(osDir, OS_CONFIG), problems);
  if (text === null) return null;
  let parsed = parseYaml(file, text, problems);
  if (!parsed) return null;
  if (parsed.root === null) {
    problems.push({
      file,
      field: '(document)',
      message: 'the file is empty',
      fix: 'write at least name, method and the fields of the method (see oss/README.md)',
    });
    return null;
  }
  const method = getScalar(parsed.root, 'method');
  const v0 = hasKey(parsed.root, 'dispname') || method === 'bin-qemu-x86_64';
  if (v0) parsed = parseYaml(file, text, problems, '1.1');
  if (!parsed) return null;
  const checked = checkDocument(parsed.root, loadSchema(v0 ? 'os.v0' : 'os.v1'), parsed.lines, '', {
    lenient: v0,
  });
  problems.push(...checked.problems.map((p) => ({ file, ...p })));
  warnings.push(...checked.warnings.map((p) => ({ file, ...p })));
  const v = obj(checked.value);
  const at = (field: string, message: string, fix: string) => {
    const pos = checked.positions.get(field);
    problems.push({ file, line: pos?.line, column: pos?.column, field, message, fix });
  };
  // With `torrent:` the files are not here: they are named inside the torrent.
  const remote = !v0 && typeof v.torrent === 'string' ? remoteTorrent(v, osDir, id, at) : undefined;
  const fileIn = (field: string, rel: string, what: string) => {
    if (remote !== undefined) {
      if (remote && !remote.files.has(rel))
        at(
          field,
          `${what} '${rel}' is not a file of ${v.torrent as string}`,
          `name one of its files: ${[...remote.files].slice(0, 5).join(', ')}${remote.files.size > 5 ? ', ...' : ''}`,
        );
      return;
    }
    const full = normalize(join(osDir, rel));
    if (isAbsolute(rel) || !full.startsWith(osDir + sep)) {
      at(
        field,
        `${what} '${rel}' is outside the OS folder (only the folder is shared by torrent)`,
        `put the file in oss/${id}/ and name it relative to that folder`,
      );
    } else if (!existsSync(full) || !statSync(full).isFile()) {
      at(
        field,
        `${what} '${rel}' is not a file in oss/${id}/`,
        `copy the file to oss/${id}/${rel}, or correct the name`,
      );
    }
  };
  const args = (field: string, val: unknown): string[] => {
    if (Array.isArray(val)) return val as string[];
    if (typeof val !== 'string') return [];
    const a = splitArgs(val);
    if (a === null) {
      at(field, 'unterminated quote', 'close the quote, or write the arguments as a YAML list');
      return [];
    }
    return a;
  };
  const m = v.method === 'bin-qemu-x86_64' ? 'qemu' : (v.method as string | undefined);
  // v1 refuses fields the method ignores (a likely mistake); v0 read them silently, so we do too.
  if (!v0 && m) {
    const usedBy: Record<string, string> = {
      kernel: 'kexec',
      initrd: 'kexec',
      cmdline: 'kexec',
      args: 'qemu',
      bin: 'bin',
      binargs: 'bin',
    };
    for (const [k, owner] of Object.entries(usedBy)) {
      if (k in v && owner !== m)
        at(
          k,
          `${k} is only used by method ${owner}, this OS uses ${m}`,
          `remove ${k} or set method: ${owner}`,
        );
    }
  }
  let os: OsEntry | null = null;
  const base = {
    id,
    dir: osDir,
    name: v[v0 ? 'dispname' : 'name'] as string,
    configFile: file,
    sourceVersion: v0 ? (0 as const) : (1 as const),
    webSeeds: !v0 && Array.isArray(v.web_seeds) ? (v.web_seeds as string[]) : [],
    ...(remote ? { torrent: remote.file } : {}),
  };
  if (m === 'kexec' && typeof v.kernel === 'string') {
    fileIn('kernel', v.kernel, 'kernel');
    const initrd =
      typeof v.initrd === 'string' ? [v.initrd] : Array.isArray(v.initrd) ? (v.initrd as string[]) : [];
    initrd.forEach((f, i) => fileIn(Array.isArray(v.initrd) ? `initrd[${i}]` : 'initrd', f, 'initrd'));
    os = { ...base, method: 'kexec', kernel: v.kernel, initrd, cmdline: (v.cmdline as string | null) ?? '' };
  } else if (m === 'qemu' && v.args !== undefined) {
    const a = args('args', v.args);
    a.forEach((arg, i) => {
      const next = a[i + 1];
      if (QEMU_FILE_OPTS.has(arg) && next !== undefined) fileIn('args', next, `${arg} file`);
    });
    os = { ...base, method: 'qemu', args: a };
  } else if (m === 'bin' && typeof v.bin === 'string') {
    fileIn('bin', v.bin, 'program');
    os = { ...base, method: 'bin', bin: v.bin, args: args('binargs', v.binargs) };
  }
  if (!os || typeof base.name !== 'string' || problems.length > before) return null;
  return { os, namePos: checked.positions.get(v0 ? 'dispname' : 'name') };
}
