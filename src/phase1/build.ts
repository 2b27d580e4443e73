/**
 * The phase-1 builder: the Debian kernel as shipped, plus one compressed
 * newc initramfs holding busybox, kexec, the NIC drivers (resolved through
 * modules.dep), a Node runtime and the agent bundled into one file. Phase 1
 * travels from the central server to every client, so each part's size is
 * reported and recorded in the manifest.
 *
 * Builds are cached by a hash of every input byte (files, their places and
 * modes, the init script, flavor and compression): an unchanged input set
 * reuses the output folder after checking its files against the manifest.
 */
import { spawn, execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import {
  mkdir,
  mkdtemp,
  open,
  readFile,
  readdir,
  realpath,
  rename,
  rm,
  stat,
  writeFile,
} from 'node:fs/promises';
import { availableParallelism, homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { BootTorrentError, abortError } from '../errors.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { encodeCpio, type CpioEntry } from './cpio.js';
import { generateInitScript, phase1EtcFiles, UDHCPC_SCRIPT } from './init-script.js';
import { generateStage0Script } from './stage0.js';
import { findIcuPackage, trimIcuPackage } from './icu.js';
import { sharedLibraries } from './libs.js';
import {
  EFI_MODULES,
  NIC_MODULES,
  QEMU_MODULES,
  SERVER_NIC_MODULES,
  parseModulesDep,
  resolveModules,
  trimModulesDep,
} from './modules.js';
import { PINNED_NODE } from './runtime.js';

const execFileP = promisify(execFile);

/** Bumped when the image layout changes in a way the input files do not show. */
const BUILDER_VERSION = 4;

export type Phase1Flavor = 'base' | 'qemu';
export type Phase1Compression = 'xz' | 'zstd' | 'gzip';
/** `registry`: the pinned official binary (PINNED_NODE); `host`: the Node running this builder. */
export type Phase1NodeSource = 'registry' | 'host';
export type Phase1Part = 'init' | 'modules' | 'busybox' | 'kexec' | 'libs' | 'node' | 'agent' | 'qemu';

export interface Phase1Options {
  readonly outDir: string;
  readonly flavor?: Phase1Flavor;
  readonly node?: Phase1NodeSource;
  readonly compression?: Phase1Compression;
  /** Downloaded runtimes and stripped binaries (default $XDG_CACHE_HOME/boottorrent/phase1). */
  readonly cacheDir?: string;
  /** A kernel version with /boot/vmlinuz-<v> and /lib/modules/<v> (default: the newest). */
  readonly kernelVersion?: string;
  /** The agent's entry point (default src/agent/main.ts of this checkout). */
  readonly agentEntry?: string;
  /** Strip debug symbols from Node when `strip` exists (default true). */
  readonly strip?: boolean;
  /** `en` (default): keep root + English of Node's embedded ICU data; `full`: all of it. */
  readonly icu?: Phase1Icu;
  /** Add the 10G+ server NIC drivers (SERVER_NIC_MODULES; ~3 MB compressed). */
  readonly serverNics?: boolean;
}

export interface Phase1Progress {
  readonly step: 'inputs' | 'node' | 'agent' | 'cached' | 'cpio' | 'compress' | 'write';
  readonly message: string;
}

export interface Phase1Services {
  readonly logger?: Logger;
  readonly signal?: AbortSignal;
  readonly onProgress?: (p: Phase1Progress) => void;
}

export interface Phase1Sizes {
  /** The kernel image as shipped. */
  readonly kernel: number;
  /** Uncompressed bytes of each part of the initramfs. */
  readonly parts: Readonly<Record<Phase1Part, number>>;
  /** The uncompressed cpio archive. */
  readonly cpio: number;
  /** initrd.img as served. */
  readonly initrd: number;
}

export interface Phase1Manifest {
  readonly format: 'boottorrent-phase1';
  readonly builderVersion: number;
  readonly inputHash: string;
  readonly builtAt: string;
  readonly flavor: Phase1Flavor;
  readonly compression: Phase1Compression;
  readonly kernelVersion: string;
  readonly node: {
    readonly source: Phase1NodeSource;
    readonly version: string;
    readonly stripped: boolean;
    /** Whether the embedded ICU data was trimmed to root + English, and how much. */
    readonly icu: {
      readonly trimmed: boolean;
      readonly data?: string;
      readonly kept?: number;
      readonly dropped?: number;
      readonly zeroed?: number;
    };
    /** For `registry`: npm's integrity of the verified tarball. */
    readonly integrity?: string;
    readonly from: string;
  };
  readonly modules: { readonly loaded: readonly string[]; readonly missing: readonly string[] };
  readonly sizes: Phase1Sizes;
  /** stage0.img: the small first initramfs when phase 1 is served by peers (#16); not with zstd (busybox cannot unpack it). */
  readonly outputs: Readonly<
    Record<'vmlinuz' | 'initrd.img', { size: number; sha256: string }> &
      Partial<Record<'stage0.img', { size: number; sha256: string }>>
  >;
  /** Every file in the initramfs: where it came from and its hash. */
  readonly files: readonly { path: string; part: Phase1Part; size: number; sha256: string; from?: string }[];
}

export interface Phase1Result {
  readonly outDir: string;
  readonly kernel: string;
  readonly initrd: string;
  readonly manifestPath: string;
  readonly manifest: Phase1Manifest;
  /** True when an earlier build with the same input hash was reused. */
  readonly reused: boolean;
}

interface ImageFile {
  path: string;
  part: Phase1Part;
  data: Buffer;
  mode: number;
  from?: string;
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

function fail(message: string, cause?: unknown): never {
  throw new BootTorrentError('BT_ERR_PHASE1', message, cause === undefined ? undefined : { cause });
}

async function readInput(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    return fail(`cannot read ${path} (${what}): ${(err as Error).message}`, err);
  }
}

async function which(program: string): Promise<string | undefined> {
  try {
    const { stdout } = await execFileP('sh', ['-c', `command -v ${program}`], { encoding: 'utf8' });
    return stdout.trim() || undefined;
  } catch {
    return undefined;
  }
}

export function defaultCacheDir(): string {
  const base = process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache');
  return join(base, 'boottorrent', 'phase1');
}

/** The newest kernel that has both an image in /boot and a modules folder. */
async function pickKernel(wanted?: string): Promise<string> {
  if (wanted !== undefined) return wanted;
  const names = await readdir('/boot').catch(() => [] as string[]);
  const versions = names
    .filter((n) => n.startsWith('vmlinuz-'))
    .map((n) => n.slice('vmlinuz-'.length))
    .filter((v) => existsSync(join('/lib/modules', v, 'modules.dep')))
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  const v = versions.at(-1);
  if (v === undefined) {
    fail(
      'no kernel found: need /boot/vmlinuz-<version> and /lib/modules/<version>/ (apt-get install linux-image-amd64)',
    );
  }
  return v;
}

/**
 * The agent as it goes into the image. In a checkout, src/agent/main.ts
 * bundled now (esbuild, a dev dependency); in an installed package (npm
 * tarball, .deb), which has no sources and no esbuild, the bundle made when
 * the package was packed (dist/agent.mjs, scripts/bundle-agent.js).
 */
async function agentBundle(entry: string | undefined): Promise<{ data: Buffer; from: string }> {
  if (entry !== undefined) return { data: await bundleAgent(entry), from: entry };
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const source = join(dir, 'src', 'agent', 'main.ts');
    if (existsSync(source)) return { data: await bundleAgent(source), from: source };
    const packed = join(dir, 'dist', 'agent.mjs');
    if (existsSync(packed)) return { data: await readInput(packed, 'agent bundle'), from: packed };
    dir = dirname(dir);
  }
  return fail(
    'cannot find the agent: neither src/agent/main.ts (a checkout) nor dist/agent.mjs (an installed package) is beside this build of BootTorrent; reinstall it',
  );
}

/** Runs a program with `input` on stdin and its stdout into `outFile`. */
async function pipeThrough(
  cmd: string,
  args: string[],
  input: Buffer,
  outFile: string,
  signal?: AbortSignal,
): Promise<void> {
  const fh = await open(outFile, 'w');
  try {
    await new Promise<void>((res, rej) => {
      const child = spawn(cmd, args, { stdio: ['pipe', fh.fd, 'pipe'], signal });
      const { stdin, stderr: errStream } = child;
      if (stdin === null || errStream === null) return rej(new Error(`${cmd}: no pipes`));
      let stderr = '';
      errStream.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', (err) => rej(err));
      child.on('close', (code) =>
        code === 0 ? res() : rej(new Error(`${cmd} exited with ${code}: ${stderr.trim()}`)),
      );
      stdin.on('error', () => {}); // reported through 'close'
      stdin.end(input);
    });
  } finally {
    await fh.close();
  }
}

/** Compressor command lines the kernel can unpack (its decompressors have limits). */
function compressor(kind: Phase1Compression): { cmd: string; args: string[]; pkg: string } {
  const threads = String(Math.max(1, availableParallelism()));
  switch (kind) {
    case 'xz':
      // The kernel's xz decoder checks CRC32 only (not xz's default CRC64).
      // No x86 BCJ filter, though the kernel has one (it shrank the image by
      // ~3%): stage 0 unpacks the same file with busybox's xzcat, which has
      // none and calls such data corrupt (#16). Preset 9's 64 MiB dictionary
      // saves 1.5% over preset 6's 8 MiB; 9e gives nothing more for twice
      // the time. The kernel allocates the dictionary while unpacking
      // (XZ_DYNALLOC), then frees it.
      return {
        cmd: 'xz',
        args: ['--check=crc32', '--lzma2=preset=9', '-T', threads, '-c'],
        pkg: 'xz-utils',
      };
    case 'zstd':
      return { cmd: 'zstd', args: ['-19', '-T' + threads, '-q', '-c'], pkg: 'zstd' };
    case 'gzip':
      return { cmd: 'gzip', args: ['-9', '-n', '-c'], pkg: 'gzip' };
  }
}

/** What phase 1 keeps of the ICU data embedded in Node: all of it, or root + English. */
export type Phase1Icu = 'full' | 'en';

interface PreparedNode {
  data: Buffer;
  stripped: boolean;
  icu: Phase1Manifest['node']['icu'];
}

/**
 * Node as it goes into the image: the ICU data trimmed to root + English
 * (icu.ts) and the symbols stripped, cached by the source's hash. The
 * manifest records the source's checksum (the package's integrity); the
 * result differs from it, and its own hash is in the file list.
 */
async function prepareNode(
  source: string,
  cacheDir: string,
  opts: { strip: boolean; icu: Phase1Icu },
  signal?: AbortSignal,
): Promise<PreparedNode> {
  const raw = await readInput(source, 'Node runtime');
  const stripProgram = opts.strip ? await which('strip') : undefined;
  const pkg = opts.icu === 'en' ? findIcuPackage(raw) : undefined;
  if (stripProgram === undefined && pkg === undefined) {
    return { data: raw, stripped: false, icu: { trimmed: false } };
  }
  const key = `${sha256(raw).slice(0, 32)}${pkg ? '-icu-en' : ''}${stripProgram ? '.stripped' : ''}`;
  const cached = join(cacheDir, `node-${key}`);
  let icu: PreparedNode['icu'] = { trimmed: false };
  if (pkg !== undefined) {
    // In memory and cheap, so redone on a cached build too: it yields the manifest's counts.
    const r = trimIcuPackage(raw, pkg);
    icu = { trimmed: true, data: r.prefix, kept: r.kept, dropped: r.dropped, zeroed: r.zeroed };
  }
  if (!existsSync(cached)) {
    const tmp = `${cached}.${process.pid}.tmp`;
    try {
      if (pkg !== undefined) {
        await writeFile(tmp, raw, { mode: 0o755 });
        if (stripProgram !== undefined) await execFileP(stripProgram, ['--strip-all', tmp], { signal });
      } else {
        await execFileP(stripProgram!, ['--strip-all', '-o', tmp, source], { signal });
      }
      await rename(tmp, cached);
    } finally {
      await rm(tmp, { force: true });
    }
  }
  return { data: await readFile(cached), stripped: stripProgram !== undefined, icu };
}

/**
 * The Node running this command, when it is the pinned runtime as
 * scripts/install-node.sh installed it (setup.sh on an older machine, the
 * Debian package): its folder holds PINNED, "PACKAGE@VERSION INTEGRITY
 * sha256:HEX", written after the package's integrity was checked. The
 * binary's SHA-256 is checked again here; anything that does not match is
 * not used (the download path runs instead).
 */
async function runningPinnedNode(): Promise<string | undefined> {
  const exe = await realpath(process.execPath).catch(() => process.execPath);
  const stamp = join(dirname(dirname(exe)), 'PINNED');
  const text = await readFile(stamp, 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  const [pkg, integrity, digest] = text.trim().split(/\s+/);
  if (pkg !== `${PINNED_NODE.package}@${PINNED_NODE.version}` || integrity !== PINNED_NODE.integrity)
    return undefined;
  if (digest !== `sha256:${sha256(await readFile(exe))}`) return undefined;
  return exe;
}

/** The pinned runtime's `bin/node`, downloaded once with `npm pack` and checked against PINNED_NODE. */
async function registryNode(cacheDir: string, logger: Logger, signal?: AbortSignal): Promise<string> {
  const running = await runningPinnedNode();
  if (running !== undefined) {
    logger.info('using the pinned Node runtime this command runs on', { path: running });
    return running;
  }
  const name = `${PINNED_NODE.package}-${PINNED_NODE.version}`;
  const tgz = join(cacheDir, `${name}.tgz`);
  const extracted = join(cacheDir, name, 'package', 'bin', 'node');
  const integrityOf = async () =>
    `sha512-${createHash('sha512')
      .update(await readFile(tgz))
      .digest('base64')}`;
  if (!existsSync(tgz)) {
    logger.info('downloading the pinned Node runtime', {
      package: `${PINNED_NODE.package}@${PINNED_NODE.version}`,
    });
    try {
      await execFileP(
        'npm',
        ['pack', `${PINNED_NODE.package}@${PINNED_NODE.version}`, '--silent', '--pack-destination', cacheDir],
        {
          cwd: cacheDir,
          signal,
          maxBuffer: 16 * 1024 * 1024,
        },
      );
    } catch (err) {
      fail(
        `cannot download ${PINNED_NODE.package}@${PINNED_NODE.version} from the npm registry (${(err as Error).message.split('\n')[0]}); use --node host to build with this machine's Node`,
        err,
      );
    }
  }
  const got = await integrityOf();
  if (got !== PINNED_NODE.integrity) {
    await rm(tgz, { force: true });
    fail(
      `${tgz} does not match the pinned integrity (got ${got}, want ${PINNED_NODE.integrity}); deleted it, run again`,
    );
  }
  if (!existsSync(extracted)) {
    const dir = join(cacheDir, name);
    await mkdir(dir, { recursive: true });
    await execFileP('tar', ['-xzf', tgz, '-C', dir, 'package/bin/node'], { signal });
  }
  return extracted;
}

/** Bundles the agent's entry point into one ESM file for the image's Node. */
export async function bundleAgent(entry: string): Promise<Buffer> {
  const esbuild = await import('esbuild').catch((err: unknown) =>
    fail('esbuild is missing: run `npm ci` in the BootTorrent checkout', err),
  );
  try {
    const result = await esbuild.build({
      entryPoints: [entry],
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node22',
      write: false,
      legalComments: 'none',
      logLevel: 'silent',
    });
    const out = result.outputFiles[0];
    if (out === undefined) return fail(`esbuild produced nothing for ${entry}`);
    return Buffer.from(out.contents);
  } catch (err) {
    return fail(`cannot bundle the agent ${entry}: ${(err as Error).message}`, err);
  }
}

async function addWithLibs(
  files: Map<string, ImageFile>,
  program: string,
  dest: string,
  part: Phase1Part,
  libPart: Phase1Part,
  signal?: AbortSignal,
): Promise<void> {
  if (!files.has(dest)) {
    files.set(dest, { path: dest, part, data: await readInput(program, part), mode: 0o755, from: program });
  }
  for (const lib of await sharedLibraries(program, signal)) {
    if (files.has(lib)) continue;
    const real = await realpath(lib);
    files.set(lib, {
      path: lib,
      part: libPart,
      data: await readInput(real, `library of ${program}`),
      mode: 0o755,
      from: real,
    });
  }
}

async function addTree(
  files: Map<string, ImageFile>,
  dir: string,
  part: Phase1Part,
  names?: readonly string[],
) {
  const entries = names ?? (await readdir(dir));
  for (const name of entries) {
    const src = join(dir, name);
    const st = await stat(src).catch(() => undefined); // follows symlinks: Debian links ROMs across packages
    if (st === undefined) continue;
    if (st.isDirectory()) await addTree(files, src, part);
    else if (st.isFile())
      files.set(src, { path: src, part, data: await readFile(src), mode: 0o644, from: await realpath(src) });
  }
}

/** Every directory above the files, parents first, then the files, in a stable order. */
function cpioEntries(files: Iterable<ImageFile>): CpioEntry[] {
  const list = [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const dirs = new Set<string>(['dev']);
  for (const f of list) {
    const parts = f.path.replace(/^\/+/, '').split('/');
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  const entries: CpioEntry[] = [...dirs].sort().map((path) => ({ type: 'dir', path }));
  // The kernel opens /dev/console for PID 1 before /init can mount devtmpfs.
  entries.push({ type: 'char', path: 'dev/console', major: 5, minor: 1, mode: 0o600 });
  for (const f of list) entries.push({ type: 'file', path: f.path, data: f.data, mode: f.mode });
  return entries;
}

async function verifyOutputs(outDir: string, inputHash: string): Promise<Phase1Manifest | undefined> {
  try {
    const manifest = JSON.parse(await readFile(join(outDir, 'manifest.json'), 'utf8')) as Phase1Manifest;
    if (manifest.inputHash !== inputHash || manifest.builderVersion !== BUILDER_VERSION) return undefined;
    for (const [name, want] of Object.entries(manifest.outputs)) {
      const data = await readFile(join(outDir, name));
      if (data.length !== want.size || sha256(data) !== want.sha256) return undefined;
    }
    return manifest;
  } catch {
    return undefined;
  }
}

/** Builds (or reuses) vmlinuz, initrd.img and manifest.json in `options.outDir`. */
export async function buildPhase1(
  options: Phase1Options,
  services: Phase1Services = {},
): Promise<Phase1Result> {
  const logger = (services.logger ?? silentLogger).child('phase1');
  const signal = services.signal;
  const progress = (step: Phase1Progress['step'], message: string) => {
    logger.info(message);
    services.onProgress?.({ step, message });
  };
  const check = () => {
    if (signal?.aborted) throw abortError(signal);
  };
  const flavor = options.flavor ?? 'base';
  const compression = options.compression ?? 'xz';
  const nodeSource = options.node ?? 'registry';
  const outDir = resolve(options.outDir);
  const cacheDir = resolve(options.cacheDir ?? defaultCacheDir());
  await mkdir(cacheDir, { recursive: true });

  const comp = compressor(compression);
  if ((await which(comp.cmd)) === undefined)
    fail(`${comp.cmd} is not installed: apt-get install ${comp.pkg}`);

  progress('inputs', 'collecting inputs');
  const kernelVersion = await pickKernel(options.kernelVersion);
  const kernelPath = `/boot/vmlinuz-${kernelVersion}`;
  const kernel = await readInput(kernelPath, 'kernel');
  const files = new Map<string, ImageFile>();
  const add = (f: ImageFile) => files.set(f.path, f);

  // Drivers, dependencies first, and a trimmed modules.dep for busybox modprobe.
  const modDir = `/lib/modules/${kernelVersion}`;
  const dep = parseModulesDep(
    await readInput(join(modDir, 'modules.dep'), 'modules.dep').then((b) => b.toString()),
  );
  const wanted = [
    ...NIC_MODULES,
    ...EFI_MODULES,
    ...(options.serverNics === true ? SERVER_NIC_MODULES : []),
    ...(flavor === 'qemu' ? QEMU_MODULES : []),
  ];
  const mods = resolveModules(dep, wanted);
  for (const rel of mods.paths) {
    add({
      path: join(modDir, rel),
      part: 'modules',
      data: await readInput(join(modDir, rel), 'module'),
      mode: 0o644,
    });
  }
  add({
    path: join(modDir, 'modules.dep'),
    part: 'modules',
    data: Buffer.from(trimModulesDep(dep, mods.paths)),
    mode: 0o644,
  });

  const busybox = (await which('busybox')) ?? '/bin/busybox';
  if ((await sharedLibraries(busybox, signal)).length > 0) {
    fail(`${busybox} is dynamically linked; phase 1 needs busybox-static (apt-get install busybox-static)`);
  }
  add({
    path: '/bin/busybox',
    part: 'busybox',
    data: await readInput(busybox, 'busybox'),
    mode: 0o755,
    from: busybox,
  });

  const kexec = (await which('kexec')) ?? fail('kexec is not installed: apt-get install kexec-tools');
  await addWithLibs(files, kexec, '/sbin/kexec', 'kexec', 'libs', signal);
  check();

  progress(
    'node',
    nodeSource === 'registry'
      ? `Node ${PINNED_NODE.version} (pinned, from the npm registry)`
      : `Node ${process.version} (this machine's)`,
  );
  const nodeFrom =
    nodeSource === 'registry'
      ? await registryNode(cacheDir, logger, signal)
      : await realpath(process.execPath);
  const node = await prepareNode(
    nodeFrom,
    cacheDir,
    { strip: options.strip ?? true, icu: options.icu ?? 'en' },
    signal,
  );
  add({ path: '/usr/bin/node', part: 'node', data: node.data, mode: 0o755, from: nodeFrom });
  for (const lib of await sharedLibraries(nodeFrom, signal)) {
    if (!files.has(lib)) {
      const real = await realpath(lib);
      add({
        path: lib,
        part: 'libs',
        data: await readInput(real, 'library of node'),
        mode: 0o755,
        from: real,
      });
    }
  }
  check();

  progress('agent', 'bundling the agent');
  const agent = await agentBundle(options.agentEntry);
  add({
    path: '/opt/boottorrent/agent.mjs',
    part: 'agent',
    data: agent.data,
    mode: 0o644,
    from: agent.from,
  });

  if (flavor === 'qemu') {
    const qemu =
      (await which('qemu-system-x86_64')) ??
      fail('qemu-system-x86_64 is not installed: apt-get install qemu-system-x86');
    await addWithLibs(files, qemu, '/usr/bin/qemu-system-x86_64', 'qemu', 'qemu', signal);
    // TCG for machines without VT-x, curses for a display on a bare Linux console.
    const qemuMods = '/usr/lib/x86_64-linux-gnu/qemu';
    for (const m of ['accel-tcg-x86_64.so', 'ui-curses.so']) {
      await addWithLibs(files, join(qemuMods, m), join(qemuMods, m), 'qemu', 'qemu', signal);
    }
    // A guest's screen on the client's framebuffer (text and graphics modes,
    // keyboard and mouse): QEMU serves it over VNC on loopback and DirectFB's
    // VNC viewer draws it on /dev/fb0 (no X, no OpenGL). DirectFB loads its
    // parts as plugins: the fbdev system, Linux input, the window manager.
    const viewer =
      (await which('directvnc')) ?? fail('directvnc is not installed: apt-get install directvnc');
    await addWithLibs(files, viewer, '/usr/bin/directvnc', 'qemu', 'qemu', signal);
    const dfb = '/usr/lib/x86_64-linux-gnu/directfb-1.7-7';
    for (const plugin of [
      'systems/libdirectfb_fbdev.so',
      'inputdrivers/libdirectfb_linux_input.so',
      'inputdrivers/libdirectfb_keyboard.so',
      'wm/libdirectfbwm_default.so',
    ]) {
      const path = join(dfb, plugin);
      if (!existsSync(path)) fail(`${path} is missing: apt-get install --reinstall libdirectfb-1.7-7`);
      await addWithLibs(files, path, path, 'qemu', 'qemu', signal);
    }
    // Firmware, at the paths QEMU searches (-L help): SeaBIOS, iPXE NIC ROMs, x86 option ROMs.
    await addTree(files, '/usr/share/seabios', 'qemu');
    await addTree(files, '/usr/lib/ipxe/qemu', 'qemu');
    await addTree(files, '/usr/share/qemu', 'qemu', [
      'kvmvapic.bin',
      'linuxboot.bin',
      'linuxboot_dma.bin',
      'multiboot.bin',
      'multiboot_dma.bin',
      'pvh.bin',
      'sgabios.bin',
      'qboot.rom',
      'keymaps',
    ]);
    // curses maps the VGA font to the console through the locale's charset:
    // the agent runs QEMU with LC_ALL=C.UTF-8 (under the C locale it warns
    // for every glyph), whose files are these (400 KiB, glibc's locales).
    if (existsSync('/usr/lib/locale/C.utf8')) await addTree(files, '/usr/lib/locale/C.utf8', 'qemu');
    // -display curses on the machine's console: ncurses needs the terminal's
    // terminfo entry (Debian's ncurses-base keeps them in /lib/terminfo),
    // and QEMU's curses UI iconv-converts the VGA font from CP437, which
    // glibc loads as a gconv module found through gconv-modules.cache.
    const gconv = '/usr/lib/x86_64-linux-gnu/gconv';
    for (const t of [
      '/lib/terminfo/l/linux',
      '/lib/terminfo/v/vt100',
      '/lib/terminfo/v/vt220',
      '/lib/terminfo/x/xterm',
      '/lib/terminfo/x/xterm-256color',
      '/lib/terminfo/s/screen',
      join(gconv, 'gconv-modules.cache'),
      join(gconv, 'gconv-modules'),
      join(gconv, 'IBM437.so'),
    ]) {
      if (existsSync(t)) {
        const real = await realpath(t);
        add({ path: t, part: 'qemu', data: await readFile(real), mode: 0o644, from: real });
      }
    }
  }

  const moduleFiles = mods.paths.map((p) => join(modDir, p));
  add({
    path: '/init',
    part: 'init',
    data: Buffer.from(
      generateInitScript({
        modules: moduleFiles,
        node: '/usr/bin/node',
        agent: '/opt/boottorrent/agent.mjs',
      }),
    ),
    mode: 0o755,
  });
  for (const { path, content, mode } of phase1EtcFiles()) {
    add({ path, part: 'init', data: Buffer.from(content), mode });
  }

  // Stage 0 (#16): busybox, the NIC drivers and a /init that fetches and checks the rest.
  const stage0Files = new Map<string, ImageFile>();
  if (compression !== 'zstd') {
    for (const f of files.values())
      if (f.part === 'modules' || f.part === 'busybox') stage0Files.set(f.path, f);
    for (const { path, content, mode } of phase1EtcFiles())
      stage0Files.set(path, { path, part: 'init', data: Buffer.from(content), mode });
    stage0Files.set('/init', {
      path: '/init',
      part: 'init',
      data: Buffer.from(
        generateStage0Script({
          modules: moduleFiles,
          udhcpcScript: UDHCPC_SCRIPT,
          decompress: compression === 'xz' ? 'xzcat' : 'zcat',
        }),
      ),
      mode: 0o755,
    });
  }

  // The input hash covers every byte that reaches the outputs.
  const h = createHash('sha256');
  h.update(JSON.stringify({ BUILDER_VERSION, flavor, compression, kernel: sha256(kernel) }));
  const fileList = [...files.values()].sort((a, b) => (a.path < b.path ? -1 : 1));
  const fileHashes = new Map<string, string>();
  for (const f of fileList) {
    const fh = sha256(f.data);
    fileHashes.set(f.path, fh);
    h.update(`${f.path}\0${f.mode}\0${fh}\n`);
  }
  for (const f of [...stage0Files.values()].sort((a, b) => (a.path < b.path ? -1 : 1)))
    h.update(`stage0 ${f.path}\0${f.mode}\0${sha256(f.data)}\n`);
  const inputHash = h.digest('hex');
  check();

  const previous = await verifyOutputs(outDir, inputHash);
  if (previous) {
    progress('cached', `inputs unchanged (hash ${inputHash.slice(0, 16)}): reusing ${outDir}`);
    return {
      outDir,
      kernel: join(outDir, 'vmlinuz'),
      initrd: join(outDir, 'initrd.img'),
      manifestPath: join(outDir, 'manifest.json'),
      manifest: previous,
      reused: true,
    };
  }

  progress('cpio', `archiving ${fileList.length} files`);
  const cpio = encodeCpio(cpioEntries(fileList));
  await mkdir(outDir, { recursive: true });
  // A half-written build must never look complete: the manifest goes first and comes back last.
  await rm(join(outDir, 'manifest.json'), { force: true });
  const work = await mkdtemp(join(outDir, '.build-'));
  try {
    progress('compress', `compressing ${(cpio.length / 2 ** 20).toFixed(1)} MiB with ${compression}`);
    const initrdTmp = join(work, 'initrd.img');
    try {
      await pipeThrough(comp.cmd, comp.args, cpio, initrdTmp, signal);
    } catch (err) {
      if (signal?.aborted) throw abortError(signal);
      fail(`compressing the initramfs failed: ${(err as Error).message}`, err);
    }
    const initrd = await readFile(initrdTmp);
    await writeFile(join(work, 'vmlinuz'), kernel);
    let stage0: Buffer | undefined;
    if (stage0Files.size > 0) {
      const stage0Tmp = join(work, 'stage0.img');
      try {
        await pipeThrough(
          comp.cmd,
          comp.args,
          encodeCpio(cpioEntries(stage0Files.values())),
          stage0Tmp,
          signal,
        );
      } catch (err) {
        if (signal?.aborted) throw abortError(signal);
        fail(`compressing stage 0 failed: ${(err as Error).message}`, err);
      }
      stage0 = await readFile(stage0Tmp);
    }

    const parts = { init: 0, modules: 0, busybox: 0, kexec: 0, libs: 0, node: 0, agent: 0, qemu: 0 };
    for (const f of fileList) parts[f.part] += f.data.length;
    const manifest: Phase1Manifest = {
      format: 'boottorrent-phase1',
      builderVersion: BUILDER_VERSION,
      inputHash,
      builtAt: new Date().toISOString(),
      flavor,
      compression,
      kernelVersion,
      node: {
        source: nodeSource,
        version: nodeSource === 'registry' ? `v${PINNED_NODE.version}` : process.version,
        stripped: node.stripped,
        icu: node.icu,
        ...(nodeSource === 'registry' ? { integrity: PINNED_NODE.integrity } : {}),
        from: nodeSource === 'registry' ? `${PINNED_NODE.package}@${PINNED_NODE.version}` : nodeFrom,
      },
      modules: { loaded: mods.paths.map((p) => p.slice(p.lastIndexOf('/') + 1)), missing: mods.missing },
      sizes: { kernel: kernel.length, parts, cpio: cpio.length, initrd: initrd.length },
      outputs: {
        vmlinuz: { size: kernel.length, sha256: sha256(kernel) },
        'initrd.img': { size: initrd.length, sha256: sha256(initrd) },
        ...(stage0 ? { 'stage0.img': { size: stage0.length, sha256: sha256(stage0) } } : {}),
      },
      files: fileList.map((f) => ({
        path: f.path,
        part: f.part,
        size: f.data.length,
        sha256: fileHashes.get(f.path)!,
        ...(f.from !== undefined ? { from: f.from } : {}),
      })),
    };
    progress('write', `writing ${outDir}`);
    await rename(join(work, 'vmlinuz'), join(outDir, 'vmlinuz'));
    await rename(initrdTmp, join(outDir, 'initrd.img'));
    if (stage0) await rename(join(work, 'stage0.img'), join(outDir, 'stage0.img'));
    else await rm(join(outDir, 'stage0.img'), { force: true });
    const manifestPath = join(outDir, 'manifest.json');
    await writeFile(`${manifestPath}.tmp`, `${JSON.stringify(manifest, null, 2)}\n`);
    await rename(`${manifestPath}.tmp`, manifestPath);
    return {
      outDir,
      kernel: join(outDir, 'vmlinuz'),
      initrd: join(outDir, 'initrd.img'),
      manifestPath,
      manifest,
      reused: false,
    };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
