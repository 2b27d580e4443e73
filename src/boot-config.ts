/**
 * The contract between the server and the agent (phase 2): what
 * GET /api/v1/boot/<mac> returns (BootConfig) and what the agent POSTs to
 * `reportUrl` as it goes (AgentReport). Both sides import this file; the
 * agent parses what it receives with `parseBootConfig`, so a broken or
 * hostile reply is a clear error on the client's screen, never a crash or
 * a booted image that was not verified.
 */
import { verify, type KeyObject } from 'node:crypto';
import { BootTorrentError } from './errors.js';

export const BOOT_CONFIG_VERSION = 1;

/** One file of an OS folder, as the agent must find it after the download. */
export interface BootFile {
  /** Path relative to the OS folder, '/'-separated, never absolute, never `..`. */
  readonly path: string;
  readonly length: number;
  /** SHA-256 of the whole file, lower-case hex (64 chars). */
  readonly sha256: string;
}

interface BootOsBase {
  /** Folder name under oss/ (also the torrent's name). */
  readonly id: string;
  /** What the menu shows. */
  readonly name: string;
  /** Where the agent fetches the .torrent (absolute http URL). */
  readonly torrentUrl: string;
  /** Lower-case hex SHA-1 infohash; the agent checks the fetched torrent against it. */
  readonly infoHash: string;
  /** Every file of the folder; the agent verifies each before it loads anything. */
  readonly files: readonly BootFile[];
}

export interface KexecBootOs extends BootOsBase {
  readonly method: 'kexec';
  readonly kernel: string;
  readonly initrd: readonly string[];
  readonly cmdline: string;
}

export interface QemuBootOs extends BootOsBase {
  readonly method: 'qemu';
  /** qemu-system-x86_64 arguments, run with the OS folder as working directory. */
  readonly args: readonly string[];
}

export interface BinBootOs extends BootOsBase {
  readonly method: 'bin';
  /** Program path relative to the OS folder. */
  readonly bin: string;
  readonly args: readonly string[];
}

export type BootOs = KexecBootOs | QemuBootOs | BinBootOs;

export interface BootConfig {
  readonly version: typeof BOOT_CONFIG_VERSION;
  /** The client's MAC, lower-case colon form. */
  readonly mac: string;
  /** The server's base URL (http://ip[:port]). */
  readonly server: string;
  /** Menu: the OS ids in display order are `oss`; default boots after `timeout` seconds (0: at once; negative: wait forever). */
  readonly menu: { readonly timeout: number; readonly default: string | null };
  /** Seconds to keep seeding before loading the OS (0: load at once). */
  readonly seedTime: number;
  readonly peers: {
    /** Announce URLs (http:// or udp://) of the server's tracker; may be empty. */
    readonly trackers: readonly string[];
    /** "ip:port" of the server's seeder: the agent connects directly, so a dead tracker is not fatal. */
    readonly seeds: readonly string[];
    readonly lsd: boolean;
    readonly pex: boolean;
  };
  /** Where the agent POSTs AgentReport JSON. */
  readonly reportUrl: string;
  /**
   * Sent back in the `x-boottorrent-token` header of each report (per-MAC,
   * from the server's secret). Empty when the server could not tie the
   * requester to the MAC: the agent then does not report.
   */
  readonly reportToken: string;
  readonly oss: readonly BootOs[];
  /**
   * The agent's nonce, echoed inside the signed body (the agent asks with
   * ?nonce=): a signed config recorded earlier cannot be replayed to it.
   */
  readonly nonce?: string;
  /** The machine's name in the environment (hosts: <MAC>: {name}), for its screen. */
  readonly name?: string;
  /**
   * Its overlay (src/boot/overlay.ts): a cpio archive of files rendered for
   * this machine, fetched from `url` and checked against `sha256` and
   * `length` before the OS gets it. Only in a config sent to the MAC's own
   * requester (as its report token).
   */
  readonly overlay?: { readonly url: string; readonly sha256: string; readonly length: number };
  /**
   * Why the machine's overlay was not sent though it has one (the requester
   * could not be tied to the MAC, or it could not be built): the agent says
   * so on the screen and boots without it.
   */
  readonly overlayWithheld?: string;
}

/** Largest overlay archive the server builds and the agent accepts. */
export const OVERLAY_MAX_BYTES = 16 * 1024 * 1024;

/**
 * Phase 1 served by peers (#16): stage 0 keeps the payload it fetched and
 * checked here, and the agent serves this file to later clients at
 * http://<its address>:PHASE1_SHARE_PORT/phase1/payload while it runs.
 */
export const PHASE1_PAYLOAD_PATH = '/run/boottorrent/phase1.img';
export const PHASE1_SHARE_PORT = 8470;
/** Stage 0 relays the blocks it has checked with busybox httpd; the agent stops it (this PID) and serves on. */
export const STAGE0_HTTPD_PID = '/run/boottorrent/stage0-httpd.pid';

/** The agent's stages, in the order a boot goes through them ('failed' can come at any point). */
export const AGENT_STAGES = [
  'network',
  'config',
  'menu',
  'downloading',
  'verifying',
  'seeding',
  'booting',
  'running',
  'failed',
] as const;
export type AgentStage = (typeof AGENT_STAGES)[number];

/** What the agent POSTs to `reportUrl`; every field but `stage` is optional. */
export interface AgentReport {
  readonly stage: AgentStage;
  /** The chosen OS id. */
  readonly os?: string;
  /** 0..1 of the chosen OS downloaded and verified. */
  readonly progress?: number;
  readonly downloaded?: number;
  readonly uploaded?: number;
  /** Bytes per second. */
  readonly downloadRate?: number;
  readonly uploadRate?: number;
  readonly peers?: number;
  /** Human-readable failure, when stage is 'failed'. */
  readonly error?: string;
  /** The agent's own peak RSS in bytes so far (VmHWM). */
  readonly peakRss?: number;
  /** TCP port on which the agent serves its phase-1 payload to later clients (#16), while it does. */
  readonly phase1Port?: number;
  /** On phase1Port it also serves the kernel and stage 0 with their signatures (the GRUB loader, #16). */
  readonly phase1Loader?: boolean;
  /** The firmware enforces UEFI Secure Boot (phase 1's kernel is then locked down); absent when unknown. */
  readonly secureBoot?: boolean;
}

// ---------------------------------------------------------------------------
// Parsing (agent side) and checking (server side, in tests)

const HEX40 = /^[0-9a-f]{40}$/;
const HEX64 = /^[0-9a-f]{64}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const METHODS = new Set(['kexec', 'qemu', 'bin']);
const STAGES = new Set<string>(AGENT_STAGES);

function bad(field: string, why: string): never {
  throw new BootTorrentError('BT_ERR_BOOT_CONFIG', `boot config: ${field} ${why}`);
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function obj(v: unknown, field: string): Obj {
  return isObj(v) ? v : bad(field, 'must be an object');
}
function str(o: Obj, key: string, field: string, max = 4096): string {
  const v = o[key];
  if (typeof v !== 'string') bad(`${field}.${key}`, 'must be a string');
  if (v.length > max) bad(`${field}.${key}`, `is longer than ${max} characters`);
  return v;
}
function num(o: Obj, key: string, field: string): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isFinite(v)) bad(`${field}.${key}`, 'must be a finite number');
  return v;
}
function bool(o: Obj, key: string, field: string): boolean {
  const v = o[key];
  if (typeof v !== 'boolean') bad(`${field}.${key}`, 'must be true or false');
  return v;
}
function strList(o: Obj, key: string, field: string, max = 256): string[] {
  const v = o[key];
  if (!Array.isArray(v)) bad(`${field}.${key}`, 'must be a list');
  if (v.length > max) bad(`${field}.${key}`, `has more than ${max} entries`);
  return v.map((x, i) => {
    if (typeof x !== 'string' || x.length > 4096) bad(`${field}.${key}[${i}]`, 'must be a string');
    return x;
  });
}
function httpUrl(o: Obj, key: string, field: string): string {
  const v = str(o, key, field);
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    return bad(`${field}.${key}`, `is not a URL: ${JSON.stringify(v)}`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') bad(`${field}.${key}`, 'must be an http(s) URL');
  return v;
}

/**
 * True for a relative '/'-separated path that stays inside its folder: no
 * empty, `.` or `..` component, no backslash or NUL. Paths from the server
 * are joined onto the download folder, so this is what keeps them there.
 */
export function isSafeRelativePath(p: string): boolean {
  if (p.length === 0 || p.length > 4096 || p.startsWith('/') || /[\\\0]/.test(p)) return false;
  return p.split('/').every((c) => c !== '' && c !== '.' && c !== '..');
}

function relPath(o: Obj, key: string, field: string): string {
  const v = str(o, key, field);
  if (!isSafeRelativePath(v))
    bad(`${field}.${key}`, `must be a relative path inside the OS folder: ${JSON.stringify(v)}`);
  return v;
}

function parseOs(v: unknown, i: number): BootOs {
  const f = `oss[${i}]`;
  const o = obj(v, f);
  const id = str(o, 'id', f, 255);
  if (!isSafeRelativePath(id) || id.includes('/'))
    bad(`${f}.id`, `must be a plain folder name: ${JSON.stringify(id)}`);
  const infoHash = str(o, 'infoHash', f);
  if (!HEX40.test(infoHash)) bad(`${f}.infoHash`, 'must be 40 lower-case hex digits');
  const filesRaw = o.files;
  if (!Array.isArray(filesRaw) || filesRaw.length === 0) bad(`${f}.files`, 'must be a non-empty list');
  if (filesRaw.length > 100_000) bad(`${f}.files`, 'has too many entries');
  const files = filesRaw.map((x, j): BootFile => {
    const ff = `${f}.files[${j}]`;
    const fo = obj(x, ff);
    const sha256 = str(fo, 'sha256', ff);
    if (!HEX64.test(sha256)) bad(`${ff}.sha256`, 'must be 64 lower-case hex digits');
    const length = num(fo, 'length', ff);
    if (!Number.isSafeInteger(length) || length < 0) bad(`${ff}.length`, 'must be a whole number >= 0');
    return { path: relPath(fo, 'path', ff), length, sha256 };
  });
  const listed = new Set(files.map((x) => x.path));
  if (listed.size !== files.length) bad(`${f}.files`, 'lists one path twice');
  const mustList = (p: string, field: string) => {
    if (!listed.has(p)) bad(field, `names ${JSON.stringify(p)}, which is not in ${f}.files`);
  };
  const base = { id, name: str(o, 'name', f, 200), torrentUrl: httpUrl(o, 'torrentUrl', f), infoHash, files };
  const method = str(o, 'method', f);
  if (!METHODS.has(method)) bad(`${f}.method`, `must be kexec, qemu or bin, not ${JSON.stringify(method)}`);
  if (method === 'kexec') {
    const kernel = relPath(o, 'kernel', f);
    mustList(kernel, `${f}.kernel`);
    const initrd = strList(o, 'initrd', f).map((p, j) => {
      if (!isSafeRelativePath(p)) bad(`${f}.initrd[${j}]`, `must be a relative path inside the OS folder`);
      mustList(p, `${f}.initrd[${j}]`);
      return p;
    });
    return { ...base, method, kernel, initrd, cmdline: str(o, 'cmdline', f) };
  }
  if (method === 'qemu') return { ...base, method, args: strList(o, 'args', f, 1024) };
  const bin = relPath(o, 'bin', f);
  mustList(bin, `${f}.bin`);
  return { ...base, method: 'bin', bin, args: strList(o, 'args', f, 1024) };
}

/** The overlay field of a boot config: its URL, SHA-256 and length (at most OVERLAY_MAX_BYTES). */
function parseOverlay(raw: unknown): NonNullable<BootConfig['overlay']> {
  const o = obj(raw, 'overlay');
  const sha256 = str(o, 'sha256', 'overlay');
  if (!HEX64.test(sha256)) bad('overlay.sha256', 'must be 64 lower-case hex digits');
  const length = num(o, 'length', 'overlay');
  if (!Number.isInteger(length) || length < 0 || length > OVERLAY_MAX_BYTES)
    bad('overlay.length', `must be a whole number of bytes up to ${OVERLAY_MAX_BYTES}`);
  return { url: httpUrl(o, 'url', 'overlay'), sha256, length };
}

/** The JSON object `text` holds, or BT_ERR_BOOT_CONFIG naming `field`. */
function jsonObject(text: string, field: string): Obj {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return bad(field, `is not JSON: ${(err as Error).message}`);
  }
  return obj(raw, field);
}

/** An OS list (boot config or catalog): at most 1000, each checked, each id once. */
function osList(raw: unknown): BootOs[] {
  if (!Array.isArray(raw)) bad('oss', 'must be a list');
  if (raw.length > 1000) bad('oss', 'has more than 1000 entries');
  const oss = raw.map(parseOs);
  const ids = new Set<string>();
  for (const os of oss) {
    if (ids.has(os.id)) bad('oss', `lists ${JSON.stringify(os.id)} twice`);
    ids.add(os.id);
  }
  return oss;
}

/** Parses and checks the JSON text of a boot config; throws BT_ERR_BOOT_CONFIG naming the field. */
export function parseBootConfig(text: string): BootConfig {
  const o = jsonObject(text, '(the reply)');
  if (o.version !== BOOT_CONFIG_VERSION)
    bad('version', `is ${JSON.stringify(o.version)}; this agent reads version ${BOOT_CONFIG_VERSION}`);
  const mac = str(o, 'mac', '(config)');
  if (!MAC.test(mac)) bad('mac', 'must be a lower-case colon MAC');
  const menu = obj(o.menu, 'menu');
  const def = menu.default;
  if (def !== null && typeof def !== 'string') bad('menu.default', 'must be an OS id or null');
  const peers = obj(o.peers, 'peers');
  const oss = osList(o.oss);
  const ids = new Set(oss.map((os) => os.id));
  const timeout = num(menu, 'timeout', 'menu');
  if (def !== null && !ids.has(def)) bad('menu.default', `is ${JSON.stringify(def)}, which is not in oss`);
  if (def === null && timeout >= 0 && oss.length > 0)
    bad('menu.default', 'is null but menu.timeout is not negative');
  const seedTime = num(o, 'seedTime', '(config)');
  if (seedTime < 0) bad('seedTime', 'must be >= 0');
  return {
    version: BOOT_CONFIG_VERSION,
    mac,
    server: httpUrl(o, 'server', '(config)'),
    menu: { timeout, default: def },
    seedTime,
    peers: {
      trackers: strList(peers, 'trackers', 'peers'),
      seeds: strList(peers, 'seeds', 'peers'),
      lsd: bool(peers, 'lsd', 'peers'),
      pex: bool(peers, 'pex', 'peers'),
    },
    reportUrl: httpUrl(o, 'reportUrl', '(config)'),
    reportToken: str(o, 'reportToken', '(config)', 256),
    oss,
    ...(o.nonce !== undefined ? { nonce: str(o, 'nonce', '(config)', 64) } : {}),
    ...(o.name !== undefined ? { name: str(o, 'name', '(config)', 64) } : {}),
    ...(o.overlay !== undefined ? { overlay: parseOverlay(o.overlay) } : {}),
    ...(o.overlayWithheld !== undefined
      ? { overlayWithheld: str(o, 'overlayWithheld', '(config)', 300) }
      : {}),
  };
}

/** Parses a report body (server side); throws BT_ERR_BOOT_CONFIG naming the field. */
export function parseAgentReport(text: string): AgentReport {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    return bad('(report)', `is not JSON: ${(err as Error).message}`);
  }
  const o = obj(raw, '(report)');
  const stage = str(o, 'stage', '(report)');
  if (!STAGES.has(stage)) bad('stage', `is not a known stage: ${JSON.stringify(stage)}`);
  const out: Record<string, unknown> = { stage };
  for (const k of ['progress', 'downloaded', 'uploaded', 'downloadRate', 'uploadRate', 'peers', 'peakRss']) {
    if (o[k] !== undefined) {
      const v = num(o, k, '(report)');
      if (v < 0) bad(k, 'must be >= 0');
      out[k] = k === 'progress' ? Math.min(1, v) : v;
    }
  }
  if (o.phase1Port !== undefined) {
    const v = num(o, 'phase1Port', '(report)');
    if (!Number.isInteger(v) || v < 1 || v > 65535) bad('phase1Port', 'must be a TCP port (1-65535)');
    out.phase1Port = v;
  }
  if (o.phase1Loader !== undefined) {
    if (typeof o.phase1Loader !== 'boolean') bad('phase1Loader', 'must be true or false');
    out.phase1Loader = o.phase1Loader;
  }
  if (o.secureBoot !== undefined) {
    if (typeof o.secureBoot !== 'boolean') bad('secureBoot', 'must be true or false');
    out.secureBoot = o.secureBoot;
  }
  if (o.os !== undefined) out.os = str(o, 'os', '(report)', 255);
  if (o.error !== undefined) out.error = str(o, 'error', '(report)', 2000);
  return out as unknown as AgentReport;
}

/** What GET /api/v1/catalog returns (#21 item 2): a server's OSs, for its satellites. */
export const CATALOG_KIND = 'boottorrent-catalog';
export const CATALOG_VERSION = 1;
/** Largest catalog body a satellite reads. */
export const CATALOG_MAX_BYTES = 4 * 1024 * 1024;

export interface Catalog {
  readonly kind: typeof CATALOG_KIND;
  readonly version: typeof CATALOG_VERSION;
  /** The upstream's base URL (http://ip[:port]). */
  readonly server: string;
  /**
   * When the upstream made this reply (its clock, ms): a satellite refuses
   * one older than the newest it has, so an old signed catalog replayed on
   * the wire cannot bring back an OS the upstream replaced.
   */
  readonly issued: number;
  /** The upstream's boot.default_os (a satellite without its own uses it). */
  readonly defaultOs: string | null;
  /** Announce URLs of the upstream's tracker (satellites and their clients announce there too). */
  readonly trackers: readonly string[];
  /** "ip:port" of the upstream's seeder. */
  readonly seeds: readonly string[];
  /** Every OS, as a boot config lists it (no per-machine command line). */
  readonly oss: readonly BootOs[];
}

/**
 * Parses and checks a catalog's JSON text (what a satellite fetched, after
 * its signature was checked): the same rules as a boot config's OS list,
 * each id once; throws BT_ERR_BOOT_CONFIG naming the field.
 */
export function parseCatalog(text: string): Catalog {
  const o = jsonObject(text, '(catalog)');
  if (o.kind !== CATALOG_KIND) bad('kind', `is ${JSON.stringify(o.kind)}, not ${CATALOG_KIND}`);
  if (o.version !== CATALOG_VERSION)
    bad('version', `is ${JSON.stringify(o.version)}; this server reads catalog version ${CATALOG_VERSION}`);
  const issued = num(o, 'issued', '(catalog)');
  if (!Number.isSafeInteger(issued) || issued < 0) bad('issued', 'must be a whole number of ms');
  const def = o.defaultOs;
  if (def !== null && typeof def !== 'string') bad('defaultOs', 'must be an OS id or null');
  const oss = osList(o.oss);
  const ids = new Set(oss.map((os) => os.id));
  return {
    kind: CATALOG_KIND,
    version: CATALOG_VERSION,
    server: httpUrl(o, 'server', '(catalog)'),
    issued,
    defaultOs: def !== null && ids.has(def) ? def : null,
    trackers: strList(o, 'trackers', '(catalog)', 16),
    seeds: strList(o, 'seeds', '(catalog)', 16),
    oss,
  };
}

/** Where phase 1 holds the server's public key (the last initramfs archive the iPXE script loads). */
export const PHASE1_SERVER_KEY_PATH = '/etc/boottorrent/server-key.pem';
/** The boot config response header with its Ed25519 signature: `ed25519=<base64>`. */
export const BOOT_CONFIG_SIGNATURE_HEADER = 'x-boottorrent-signature';

/**
 * True when `header` (BOOT_CONFIG_SIGNATURE_HEADER's value) is `key`'s
 * Ed25519 signature of `body`, the exact bytes received.
 */
export function bootConfigSignatureValid(body: Buffer, header: string | null, key: KeyObject): boolean {
  const m = /^ed25519=([A-Za-z0-9+/]{86}==)$/.exec(header ?? '');
  if (!m) return false;
  try {
    return verify(null, body, key, Buffer.from(m[1]!, 'base64'));
  } catch {
    return false;
  }
}
