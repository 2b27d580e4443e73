/**
 * The agent's steps between the menu and the load: fetch the boot config,
 * fetch and check the torrent, download with our engine, verify every file
 * by SHA-256, and plan the load. Each failure is a StepFailure that names
 * what failed and what to check, for the failure screen.
 */
import { createHash, randomBytes, type KeyObject } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { access, chmod, mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { BootTorrentError } from '../errors.js';
import { escapeLogText } from '../util/logger.js';
import { readBodyCapped } from '../util/http-body.js';
import {
  BOOT_CONFIG_SIGNATURE_HEADER,
  bootConfigSignatureValid,
  parseBootConfig,
  type BootConfig,
  type BootOs,
} from '../boot-config.js';
import { parseTorrent, type Metainfo } from '../torrent/metainfo.js';
import { decodeCpio } from '../phase1/cpio.js';
import { sha256File } from '../swarm/storage.js';
import type { BitTorrentClient } from '../swarm/client.js';
import type { SessionStats, TorrentSession } from '../swarm/session.js';

/** A failure the agent shows on screen: what failed, the error, what to check. */
export class StepFailure extends BootTorrentError {
  constructor(
    readonly what: string,
    message: string,
    readonly hint: string,
    options?: { cause?: unknown },
  ) {
    super('BT_ERR_AGENT', message, options);
  }
}

const errText = (err: unknown): string => {
  const e = err as Error & { cause?: { code?: string; message?: string } };
  const cause = e.cause?.code ?? e.cause?.message;
  return cause && !e.message.includes(cause) ? `${e.message} (${cause})` : e.message;
};

/** Largest boot config the agent reads (a real one is a few KiB). */
export const MAX_BOOT_CONFIG_BYTES = 1024 * 1024;
/** Largest .torrent the agent reads (about 2,048 pieces: tens of KiB). */
export const MAX_TORRENT_BYTES = 16 * 1024 * 1024;

export { readBodyCapped };

/**
 * Text from an unverified answer, fit for the console: control characters
 * (escape sequences could rewrite the screen) shown as escapes, at most
 * `max` characters.
 */
export function unverifiedText(text: string, max = 200): string {
  const short = text.length > max ? `${text.slice(0, max)}...` : text;
  return escapeLogText(short.trim());
}

/** GET <server>/api/v1/boot/<mac>, parsed. */
export async function fetchBootConfig(
  server: string,
  mac: string,
  signal?: AbortSignal,
  key?: KeyObject,
): Promise<BootConfig> {
  // With the server's key: a fresh nonce that the signed reply must echo.
  const nonce = key ? randomBytes(16).toString('hex') : undefined;
  const url = `${server}/api/v1/boot/${mac}${nonce ? `?nonce=${nonce}` : ''}`;
  const hint = `that the server runs and this machine reaches ${server} (cable, DHCP, firewall)`;
  let res: Response;
  try {
    res = await fetch(url, {
      signal: signal ? AbortSignal.any([signal, AbortSignal.timeout(10_000)]) : AbortSignal.timeout(10_000),
    });
  } catch (err) {
    throw new StepFailure('boot config', `cannot reach ${url}: ${errText(err)}`, hint, { cause: err });
  }
  let body: Buffer;
  try {
    body = await readBodyCapped(res, MAX_BOOT_CONFIG_BYTES, `the answer of ${url}`);
  } catch (err) {
    throw new StepFailure('boot config', errText(err), hint, { cause: err });
  }
  const text = body.toString('utf8');
  if (!res.ok) {
    // Not signed, not checked: shown escaped, and said to be the server's words.
    throw new StepFailure(
      'boot config',
      `${url} answered HTTP ${res.status}, saying (unverified): ${unverifiedText(text)}`,
      `that this MAC (${mac}) is allowed to boot in the server's environment`,
    );
  }
  const rogue =
    "that only the lab's BootTorrent server answers on this network (another DHCP or HTTP server may be pointing this machine elsewhere), and that phase 1 was loaded from that server";
  if (key && !bootConfigSignatureValid(body, res.headers.get(BOOT_CONFIG_SIGNATURE_HEADER), key)) {
    throw new StepFailure(
      'boot config',
      `the boot config from ${server} is not signed by the server this phase 1 came from; refusing it`,
      rogue,
    );
  }
  try {
    const config = parseBootConfig(text);
    if (nonce !== undefined && (config.nonce !== nonce || config.mac !== mac))
      throw new StepFailure(
        'boot config',
        `the boot config from ${server} is signed but was made for another request (${config.mac !== mac ? `MAC ${config.mac}` : 'an old nonce'}): a replay; refusing it`,
        rogue,
      );
    return config;
  } catch (err) {
    if (err instanceof StepFailure) throw err;
    throw new StepFailure(
      'boot config',
      errText(err),
      'that the server and this phase 1 are the same BootTorrent version',
      {
        cause: err,
      },
    );
  }
}

/**
 * Fetches the machine's overlay (issue #17 item 4) and checks it against
 * the length and SHA-256 of the signed boot config; saved as `file`.
 */
export async function fetchOverlay(
  overlay: NonNullable<BootConfig['overlay']>,
  file: string,
  signal?: AbortSignal,
): Promise<void> {
  const what = 'overlay of this machine';
  let res: Response;
  try {
    const timeout = AbortSignal.timeout(30_000);
    res = await fetch(overlay.url, { signal: signal ? AbortSignal.any([signal, timeout]) : timeout });
  } catch (err) {
    throw new StepFailure(
      what,
      `cannot fetch ${overlay.url}: ${errText(err)}`,
      'that the server is still running',
      {
        cause: err,
      },
    );
  }
  if (!res.ok) {
    await res.body?.cancel().catch(() => undefined);
    throw new StepFailure(
      what,
      `HTTP ${res.status} from ${overlay.url}`,
      res.status === 403
        ? 'that this machine reaches the server directly (the server sends an overlay only to the MAC it belongs to: see start --report-from)'
        : "the server's log",
    );
  }
  const bytes = await readBodyCapped(res, overlay.length, overlay.url).catch((err: unknown) => {
    throw new StepFailure(what, errText(err), "the server's log", { cause: err });
  });
  const sha = createHash('sha256').update(bytes).digest('hex');
  if (bytes.length !== overlay.length || sha !== overlay.sha256)
    throw new StepFailure(
      what,
      `the overlay from ${overlay.url} is not the one the boot config names (${bytes.length} bytes, SHA-256 ${sha.slice(0, 16)}...)`,
      'boot again (the overlay changed on the server since the config was sent), or look for another server on the network',
    );
  await writeFile(file, bytes, { mode: 0o600 });
}

/**
 * Unpacks an overlay archive into `dir` (emptied first), for qemu and bin
 * OSs: folders and plain files only, every path inside `dir`.
 */
export async function unpackOverlay(archive: string, dir: string): Promise<void> {
  try {
    await unpackInto(decodeCpio(await readFile(archive)), dir);
  } catch (err) {
    throw new StepFailure(
      'overlay of this machine',
      `cannot unpack it into ${dir}: ${errText(err)}`,
      "the overlay's files on the server (folders and plain files only)",
      {
        cause: err,
      },
    );
  }
}

async function unpackInto(entries: ReturnType<typeof decodeCpio>, dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { mode: 0o700 });
  for (const e of entries) {
    const target = insideFolder(dir, e.path);
    if (e.type === 'dir') await mkdir(target, { recursive: true, mode: e.mode | 0o700 });
    else {
      await mkdir(join(target, '..'), { recursive: true });
      await writeFile(target, e.data, { mode: e.mode, flag: 'wx' }).catch(
        async (err: NodeJS.ErrnoException) => {
          if (err.code !== 'EEXIST') throw err;
          await rm(target);
          await writeFile(target, e.data, { mode: e.mode, flag: 'wx' });
        },
      );
    }
  }
}

/** Where `{overlay}` appears in a qemu or bin OS's arguments, the overlay folder's path goes. */
export function withOverlay(args: readonly string[], dir: string | undefined): string[] {
  return args.map((a) => (dir === undefined ? a : a.split('{overlay}').join(dir)));
}

/** Fetches the OS's .torrent and checks it is the one the config names. */
export async function fetchTorrent(os: BootOs, signal?: AbortSignal): Promise<Metainfo> {
  const what = `torrent of ${os.name}`;
  let res: Response | undefined;
  // A socket error is retried: the server may close an idle keep-alive
  // connection just as it is reused (UND_ERR_SOCKET), or blip on a restart.
  for (let attempt = 0; res === undefined; attempt++) {
    try {
      const timeout = AbortSignal.timeout(30_000);
      res = await fetch(os.torrentUrl, { signal: signal ? AbortSignal.any([signal, timeout]) : timeout });
    } catch (err) {
      if (attempt >= 3 || signal?.aborted)
        throw new StepFailure(
          what,
          `cannot fetch ${os.torrentUrl}: ${errText(err)}`,
          'that the server is still running',
          {
            cause: err,
          },
        );
      await new Promise((r) => setTimeout(r, 1000 * 2 ** attempt));
    }
  }
  if (res.status === 404) {
    await res.body?.cancel().catch(() => undefined);
    throw new StepFailure(
      what,
      `the server has no torrent for ${os.id} (HTTP 404 from ${os.torrentUrl})`,
      `that the OS folder oss/${os.id} exists on the server and has been hashed`,
    );
  }
  if (!res.ok) {
    await res.body?.cancel().catch(() => undefined);
    throw new StepFailure(what, `HTTP ${res.status} from ${os.torrentUrl}`, "the server's log");
  }
  let meta: Metainfo;
  try {
    const bytes = await readBodyCapped(res, MAX_TORRENT_BYTES, os.torrentUrl);
    meta = parseTorrent(bytes, os.torrentUrl);
  } catch (err) {
    throw new StepFailure(what, errText(err), "the server's torrent cache (delete it to hash again)", {
      cause: err,
    });
  }
  if (meta.infoHashHex !== os.infoHash) {
    throw new StepFailure(
      what,
      `refused: its infohash is ${meta.infoHashHex}, the boot config says ${os.infoHash}`,
      'that the OS folder did not change on the server while machines booted (restart the boot to get the new config)',
    );
  }
  if (meta.singleFile || meta.name !== os.id) {
    throw new StepFailure(
      what,
      `refused: the torrent holds ${meta.singleFile ? 'a single file' : `folder ${meta.name}`}, expected folder ${os.id}`,
      "the server's torrent for this OS",
    );
  }
  return meta;
}

export interface DownloadOptions {
  readonly client: BitTorrentClient;
  readonly config: BootConfig;
  readonly os: BootOs;
  readonly meta: Metainfo;
  readonly dir: string;
  readonly lsdInterface?: string;
  readonly stallSeconds: number;
  readonly onStats: (s: SessionStats) => void;
  readonly say?: (line: string) => void;
  readonly signal?: AbortSignal;
}

/**
 * Downloads the OS's torrent (resuming what is already there) and resolves
 * with its session, which keeps seeding. A download that gets no data for
 * `stallSeconds` fails (no peers, or none that have the data).
 */
export async function download(opts: DownloadOptions): Promise<TorrentSession> {
  const { client, config, os, meta } = opts;
  const what = `download of ${os.name}`;
  const existing = client.torrents.find((t) => t.stats().infoHash === meta.infoHashHex);
  // Already downloaded and seeding (the OS runs again): nothing to fetch.
  if (existing?.stats().complete) return existing;
  let session = existing;
  if (!session && (await alreadyHere(os, join(opts.dir, os.id), opts.signal))) {
    // Every file is here with its SHA-256 (a retry after a failed load):
    // seed it as it is, with no re-hash of pieces (worker threads).
    opts.say?.(`${os.id} is already here, every file with its SHA-256: no download`);
    return reopenAsSeed(opts);
  }
  if (!session) {
    try {
      session = await client.add({
        meta,
        dir: opts.dir,
        mode: 'download',
        trackers: config.peers.trackers,
        peers: config.peers.seeds,
        pex: config.peers.pex,
        ...(config.peers.lsd && opts.lsdInterface !== undefined ? { lsdInterface: opts.lsdInterface } : {}),
      });
    } catch (err) {
      throw new StepFailure(what, errText(err), `free space and permissions of ${opts.dir}`, { cause: err });
    }
  }
  const s = session;
  let last = -1;
  let lastChange = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const stalled = new Promise<never>((_, reject) => {
    timer = setInterval(() => {
      const st = s.stats();
      opts.onStats(st);
      const have = st.length - st.left;
      if (have !== last) {
        last = have;
        lastChange = Date.now();
      } else if (!st.complete && Date.now() - lastChange > opts.stallSeconds * 1000) {
        reject(
          new StepFailure(
            what,
            `stalled: no data for ${opts.stallSeconds} s, ${st.peers.length} peer(s) connected, ` +
              `${(((st.length - st.left) / st.length) * 100).toFixed(1)}% done`,
            `that the server's seeder runs and is reachable at ${config.peers.seeds.join(', ') || '(no seed listed)'}` +
              (config.peers.trackers.length > 0 ? ` or through ${config.peers.trackers.join(', ')}` : ''),
          ),
        );
      }
    }, 1000);
  });
  // A stalled session stays in the client and keeps looking for peers, so
  // `retry` picks up where it was (a new session would re-hash the partial
  // data, in worker threads the phase-1 bundle does not carry).
  try {
    await Promise.race([s.whenComplete(), stalled]);
  } finally {
    clearInterval(timer);
  }
  opts.onStats(s.stats());
  // The engine reopened the finished files read-only (so a program among
  // them can run: no ETXTBSY); the same session seeds on, keeping its peers
  // and its upload counters.
  return s;
}

/** Seeds files already here and verified (read-only: nothing of ours can change them). */
async function reopenAsSeed(opts: DownloadOptions): Promise<TorrentSession> {
  const { client, config, meta } = opts;
  return client.add({
    meta,
    dir: opts.dir,
    mode: 'seed',
    verify: false,
    trackers: config.peers.trackers,
    peers: config.peers.seeds,
    pex: config.peers.pex,
    ...(config.peers.lsd && opts.lsdInterface !== undefined ? { lsdInterface: opts.lsdInterface } : {}),
  });
}

/** `p` (from the config, already checked relative) resolved inside `root`; throws if it leaves it. */
export function insideFolder(root: string, p: string): string {
  const abs = resolve(root, p);
  const rel = relative(resolve(root), abs);
  if (rel === '' || rel.startsWith('..') || isAbsolute(rel)) {
    throw new StepFailure(
      'verification',
      `path ${JSON.stringify(p)} leaves the OS folder`,
      'the boot config',
    );
  }
  return abs;
}

/**
 * Checks every file the config lists: present, that length, that SHA-256.
 * Nothing is loaded before this passes.
 */
export async function verifyFiles(os: BootOs, osDir: string, signal?: AbortSignal): Promise<number> {
  const what = `verification of ${os.name}`;
  for (const f of os.files) {
    const abs = insideFolder(osDir, f.path);
    let st;
    try {
      st = await stat(abs);
    } catch {
      throw new StepFailure(what, `${f.path} is missing`, `the OS folder oss/${os.id} on the server`);
    }
    if (!st.isFile() || st.size !== f.length) {
      throw new StepFailure(
        what,
        `${f.path} is ${st.isFile() ? `${st.size} bytes` : 'not a file'}, expected ${f.length} bytes`,
        `the OS folder oss/${os.id} on the server (did it change?)`,
      );
    }
    const sum = await sha256File(abs, signal);
    if (sum !== f.sha256) {
      throw new StepFailure(
        what,
        `SHA-256 of ${f.path} is ${sum}, the boot config says ${f.sha256}`,
        `the OS folder oss/${os.id} on the server (did it change while machines booted?); nothing was loaded`,
      );
    }
  }
  return os.files.length;
}

/** True when every listed file is already in `osDir` with its length and SHA-256. */
async function alreadyHere(os: BootOs, osDir: string, signal?: AbortSignal): Promise<boolean> {
  for (const f of os.files) {
    const st = await stat(insideFolder(osDir, f.path)).catch(() => undefined);
    if (!st?.isFile() || st.size !== f.length) return false;
  }
  return verifyFiles(os, osDir, signal).then(
    () => true,
    () => false,
  );
}

/** A command the agent runs to load the OS. */
export interface Command {
  readonly file: string;
  readonly args: readonly string[];
  readonly cwd?: string;
  /** Variables added to the agent's environment for this command. */
  readonly env?: Readonly<Record<string, string>>;
  /** A program that shows this one's screen while it runs (QEMU's VNC on the framebuffer). */
  readonly viewer?: Command;
}

/** QEMU options that choose where (or whether) the guest's screen goes. */
const DISPLAY_OPTIONS = new Set([
  '-display',
  '-nographic',
  '-curses',
  '-vnc',
  '-spice',
  '-sdl',
  '-daemonize',
]);

/** True when the qemu args already say where the guest's screen goes. */
export function hasDisplay(args: readonly string[]): boolean {
  return args.some((a) => DISPLAY_OPTIONS.has(a.startsWith('--') ? a.slice(1) : a));
}

/** True when the qemu args already choose an accelerator. */
export function hasAccel(args: readonly string[]): boolean {
  return args.some(
    (a) =>
      a === '-accel' ||
      a === '--accel' ||
      a === '-enable-kvm' ||
      a === '--enable-kvm' ||
      /(^|,)accel=/.test(a),
  );
}

/** True when /dev/kvm opens read-write (KVM is there and we may use it). */
export async function kvmUsable(path = '/dev/kvm'): Promise<boolean> {
  try {
    const fh = await open(path, 'r+');
    await fh.close();
    return true;
  } catch {
    return false;
  }
}

/**
 * Where a qemu guest whose args choose no display is shown on the client:
 * - `framebuffer`: the machine's screen is a Linux framebuffer (/dev/fb0:
 *   the firmware's, efifb or vesafb, or a DRM driver's) and the person at
 *   the machine sees it (the primary console is not a serial port): QEMU
 *   serves its screen over VNC on the client's loopback and DirectFB's VNC
 *   viewer (directvnc) draws it on the framebuffer, with keyboard and mouse
 *   from evdev; text and graphics modes both show;
 * - `curses`: QEMU's curses interface on the console (text modes only;
 *   graphics modes show a placeholder), where there is no framebuffer or the
 *   console is a serial line;
 * - `none`: not on a console (host mode): QEMU's own default.
 */
export type QemuScreen = 'framebuffer' | 'curses' | 'none';

/**
 * Where QEMU serves a framebuffer guest's screen: 127.0.0.1, port 5900 +
 * `display`, behind a VNC password only the agent and its viewer know. The
 * guest reaches the client's loopback through QEMU's user network (10.0.2.2),
 * so without the password a program in the guest could connect to its own
 * screen's server, and QEMU's monitor is one key away on a VNC console.
 */
export interface GuestVnc {
  readonly display: number;
  /** VNC authentication uses at most 8 characters. */
  readonly password: string;
}

/** True when the qemu args choose where QEMU's monitor goes. */
export function hasMonitor(args: readonly string[]): boolean {
  return args.some((a) => /^--?(monitor|mon|qmp|qmp-pretty)$/.test(a));
}

/**
 * Picks the screen from what the machine has: a framebuffer device, the
 * viewer, and the kernel command line's last `console=` (the primary one).
 */
export function qemuScreen(
  onConsole: boolean,
  facts: { framebuffer: boolean; viewer: boolean; cmdline: string },
): QemuScreen {
  if (!onConsole) return 'none';
  const consoles = [...facts.cmdline.matchAll(/(?:^|\s)console=([^\s,]+)/g)].map((m) => m[1]!);
  const primary = consoles.at(-1);
  const serialPrimary = primary !== undefined && /^ttyS|^ttyAMA|^hvc/.test(primary);
  return facts.framebuffer && facts.viewer && !serialPrimary ? 'framebuffer' : 'curses';
}

/** qemuScreen for this machine: /dev/fb0, directvnc on PATH, /proc/cmdline. */
export async function qemuScreenHere(onConsole: boolean): Promise<QemuScreen> {
  if (!onConsole) return 'none';
  const exists = (p: string) =>
    access(p).then(
      () => true,
      () => false,
    );
  const viewer = (
    await Promise.all(
      (process.env.PATH ?? '/usr/bin:/bin').split(':').map((d) => exists(join(d, 'directvnc'))),
    )
  ).some(Boolean);
  return qemuScreen(onConsole, {
    framebuffer: await exists('/dev/fb0'),
    viewer,
    cmdline: await readFile('/proc/cmdline', 'utf8').catch(() => ''),
  });
}

/**
 * qemu's command line: the configured args, plus KVM when usable and not
 * chosen already, and a screen. On a console QEMU's monitor is off unless the
 * args place it: its "human monitor" (Ctrl-Alt-2 on QEMU's screen) runs
 * commands on the client as root.
 */
export function qemuCommand(
  args: readonly string[],
  osDir: string,
  kvm: boolean,
  screen: QemuScreen = 'none',
  vnc: GuestVnc = { display: 0, password: '' },
): Command {
  const out = kvm && !hasAccel(args) ? [...args, '-accel', 'kvm'] : [...args];
  // Phase 1 has no X. Without a display of its own choosing QEMU would start a
  // VNC server on the client's loopback that nobody sees.
  if (screen === 'none') return { file: 'qemu-system-x86_64', args: out, cwd: osDir };
  if (!hasMonitor(args)) out.push('-monitor', 'none');
  // curses (chosen here or in the args) needs a UTF-8 locale to map the VGA
  // font (phase 1 carries C.UTF-8's LC_CTYPE).
  const utf8 = { LC_ALL: 'C.UTF-8' };
  if (hasDisplay(args)) return { file: 'qemu-system-x86_64', args: out, cwd: osDir, env: utf8 };
  if (screen === 'framebuffer') {
    if (!/^[A-Za-z0-9_-]{1,8}$/.test(vnc.password))
      throw new Error('a framebuffer guest needs a VNC password of 1 to 8 letters, digits, - or _');
    // The secret is on QEMU's command line: only root runs in phase 1, and the
    // guest cannot see the client's processes.
    out.push(
      '-display',
      'none',
      '-object',
      `secret,id=btvnc,data=${vnc.password}`,
      '-vnc',
      `127.0.0.1:${vnc.display},password-secret=btvnc`,
    );
    return {
      file: 'qemu-system-x86_64',
      args: out,
      cwd: osDir,
      viewer: {
        file: 'directvnc',
        args: [`127.0.0.1:${vnc.display}`, '--password', vnc.password],
        // The framebuffer as one full-screen window, no pointer of its own (the
        // guest draws one), no banner.
        env: { DFBARGS: 'system=fbdev,force-windowed,autoflip-window,no-cursor,quiet' },
      },
    };
  }
  out.push('-display', 'curses');
  return { file: 'qemu-system-x86_64', args: out, cwd: osDir, env: utf8 };
}

/**
 * kexec-tools takes one initrd; cpio archives concatenate (the kernel
 * unpacks each in turn, Documentation/driver-api/early-userspace), so
 * several become one file beside the OS folders.
 */
export async function singleInitrd(
  dir: string,
  osId: string,
  osDir: string,
  initrds: readonly string[],
  /** Absolute paths appended after the OS's own (the machine's overlay archive). */
  extra: readonly string[] = [],
): Promise<string | undefined> {
  const files = [...initrds.map((p) => insideFolder(osDir, p)), ...extra];
  if (files.length === 0) return undefined;
  if (files.length === 1) return files[0]!;
  const out = join(dir, `.boottorrent-initrd-${osId}`);
  const tmp = `${out}.tmp`;
  // It may hold the machine's overlay (keys): root's only.
  const ws = createWriteStream(tmp, { mode: 0o600 });
  let offset = 0;
  for (const f of files) {
    // An uncompressed archive must start at a multiple of 4 bytes into the
    // file; the kernel skips the zero padding between archives.
    const pad = (4 - (offset % 4)) % 4;
    if (pad > 0) ws.write(Buffer.alloc(pad));
    offset += pad + (await stat(f)).size;
    await pipeline(createReadStream(f), ws, { end: false });
  }
  await new Promise<void>((res, rej) => ws.end((err?: Error | null) => (err ? rej(err) : res())));
  await rename(tmp, out);
  return out;
}

/** The two kexec steps: load, then execute. */
export function kexecCommands(
  kernel: string,
  initrd: string | undefined,
  cmdline: string,
  signed = false,
): [Command, Command] {
  return [
    {
      file: 'kexec',
      args: [
        // Under Secure Boot the kernel is locked down: only kexec_file_load
        // (-s), which checks the new kernel's signature, is allowed.
        ...(signed ? ['-s'] : []),
        '-l',
        kernel,
        ...(initrd !== undefined ? [`--initrd=${initrd}`] : []),
        `--command-line=${cmdline}`,
      ],
    },
    { file: 'kexec', args: ['-e'] },
  ];
}

/** Offset of `secure_boot` in x86 boot_params (Documentation/arch/x86/zero-page.rst). */
const BOOT_PARAMS_SECURE_BOOT = 0x1ec;
/** enum efi_secureboot_mode: unset, unknown, disabled, enabled. */
const EFI_SECUREBOOT_ENABLED = 3;

/**
 * Whether the firmware enforces UEFI Secure Boot, as the kernel's EFI stub
 * recorded it in boot_params (exported read-only at /sys/kernel/boot_params/data);
 * undefined when that is not there to read.
 */
export async function secureBootEnforced(
  path = '/sys/kernel/boot_params/data',
): Promise<boolean | undefined> {
  try {
    const data = await readFile(path);
    if (data.length <= BOOT_PARAMS_SECURE_BOOT) return undefined;
    return data[BOOT_PARAMS_SECURE_BOOT] === EFI_SECUREBOOT_ENABLED;
  } catch {
    return undefined;
  }
}

/**
 * True when kexec's error says the new kernel's signature was not accepted:
 * no signature at all is ENODATA ("No data available"), an untrusted one
 * EKEYREJECTED or ENOKEY, a malformed one EBADMSG.
 */
export function signatureRefused(message: string): boolean {
  return /key was rejected|required key not available|no data available|signature|EKEYREJECTED|ENOKEY|ENODATA|EBADMSG|bad message|operation not permitted|EPERM/i.test(
    message,
  );
}

/** Torrents carry no file modes: the verified program is made executable before it runs. */
export async function binCommand(osDir: string, bin: string, args: readonly string[]): Promise<Command> {
  const file = insideFolder(osDir, bin);
  await chmod(file, 0o755);
  return { file, args: [...args], cwd: osDir };
}

/** A shell-like rendering of a command, for the screen and dry runs. */
export function showCommand(c: Command): string {
  const q = (s: string) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
  return [c.file, ...c.args].map(q).join(' ');
}
