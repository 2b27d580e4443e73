/**
 * `boottorrent demo`: the newcomer's first command. By default a virtual lab
 * of QEMU clients PXE-booting from a local server (src/demo/pxe-demo.ts);
 * `--loopback` runs the lighter swarm-only demo with real aria2c clients
 * through our tracker (src/demo/swarm-demo.ts).
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { runSwarmDemo } from '../demo/swarm-demo.js';
import { runPxeDemo } from '../demo/pxe-demo.js';
import { buildPhase1, defaultCacheDir } from '../phase1/build.js';
import { BootTorrentError } from '../errors.js';
import { sentSummary } from '../server/traffic.js';
import {
  EXIT_OK,
  EXIT_USER,
  Progress,
  UsageError,
  formatBytes,
  parse,
  parseSize,
  type Io,
} from './common.js';

const HELP = `Usage: boottorrent demo [--clients N] [options]

A virtual lab on this machine (needs root): a network namespace with a
bridge, \`boottorrent start\` serving a sample OS (Debian's kernel and a
tiny initramfs that prints a marker), and N QEMU machines that PXE-boot at
once, load phase 1, download the OS from each other, verify it and kexec it.
Ends with \`booted N/N clients in S s; server sent X MB (phase 1 P MB, OS O MB) for Y MB delivered\`
and removes everything it made (also on Ctrl-C).

  --clients N      number of QEMU clients (default 3, at most 32)
  --phase1 DIR     a phase-1 image from \`boottorrent build-phase1\` (default:
                   build it, or reuse the cached build)
  --memory MB      RAM per client (default: the sample OS's size + 512 MB)
  --stagger S      power the clients on S seconds apart (default 0: all at once),
                   as most rooms come up; clients then seed at least S seconds,
                   so the next one finds a peer to load phase 1 from
  --phase1-from server|peers
                   where clients load phase 1 once a client's agent runs
                   (default peers: kernel and stage 0 from the server, the
                   rest from a peer, checked by SHA-256 before it runs)
  --firmware bios|uefi|uefi-secureboot
                   every client's firmware (default bios); uefi-secureboot is
                   OVMF with Secure Boot enforced and Microsoft's keys, booted
                   through Debian's signed shim and GRUB (server.uefi_chain: signed)
  --keep           keep the lab folder (serial logs, server log) afterwards
  --loopback       instead: a BitTorrent swarm on loopback with real aria2c
                   clients and our tracker (no VMs, no root)
  --size BYTES     --loopback image size (default 64M)
  --seeder-rate R  --loopback seeder upload cap in bytes/s (default 4M)`;

function findAria2c(): string {
  try {
    return execFileSync('sh', ['-c', 'command -v aria2c'], { encoding: 'utf8' }).trim();
  } catch {
    throw new BootTorrentError(
      'BT_ERR_DEMO',
      'aria2c is not installed; the demo uses it as a real BitTorrent client. Run `bash scripts/setup.sh` as root (or `apt-get install aria2`).',
    );
  }
}

export async function run(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(
    argv,
    {
      clients: { type: 'string' },
      size: { type: 'string' },
      'seeder-rate': { type: 'string' },
      loopback: { type: 'boolean' },
      phase1: { type: 'string' },
      memory: { type: 'string' },
      keep: { type: 'boolean' },
      firmware: { type: 'string' },
      stagger: { type: 'string' },
      'phase1-from': { type: 'string' },
    },
    HELP,
  );
  if (values.help) {
    io.stdout.write(`${HELP}\n`);
    return EXIT_OK;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`, HELP);
  const clients = Number(values.clients ?? 3);
  if (!Number.isInteger(clients) || clients < 1 || clients > 32) {
    throw new UsageError(`--clients ${values.clients}: expected a whole number from 1 to 32`, HELP);
  }
  if (!values.loopback) return runPxe(clients, values, io);
  const imageBytes = parseSize(values.size ?? '64M', '--size', HELP);
  const seederUploadLimit = parseSize(values['seeder-rate'] ?? '4M', '--seeder-rate', HELP);
  if (imageBytes < 1) throw new UsageError('--size must be at least 1 byte', HELP);
  const log = (line: string) => io.stdout.write(`${line}\n`);
  const progress = new Progress(io.stdout, 2000);
  const result = await runSwarmDemo(
    { clients, imageBytes, seederUploadLimit, aria2c: findAria2c(), timeoutMs: 600_000 },
    {
      signal: io.signal,
      log: (line) => {
        progress.done();
        log(line);
      },
      onTick: (swarm, ms) => {
        if (!swarm) return;
        // As the tracker last heard it (clients announce every 2 s).
        const pct = swarm.peers
          .map((p) => `${Math.floor((100 * (imageBytes - p.left)) / imageBytes)}%`.padStart(4))
          .join(' ');
        progress.update(`${(ms / 1000).toFixed(0).padStart(3)} s  peers ${swarm.peers.length}: ${pct}`);
      },
    },
  );
  progress.done();
  const copies = (n: number) => (n / result.imageBytes).toFixed(2);
  log(
    `all ${result.clients} clients finished in ${result.seconds.toFixed(1)} s\n` +
      `seeder sent ${formatBytes(result.seederUploaded)} (${copies(result.seederUploaded)} copies); ` +
      `clients sent each other ${formatBytes(result.leechersUploaded)} (${copies(result.leechersUploaded)} copies)\n` +
      `verified ${result.verified}/${result.clients}`,
  );
  return result.verified === result.clients ? EXIT_OK : EXIT_USER;
}

async function runPxe(
  clients: number,
  values: {
    phase1?: string | undefined;
    memory?: string | undefined;
    keep?: boolean | undefined;
    firmware?: string | undefined;
    stagger?: string | undefined;
    'phase1-from'?: string | undefined;
  },
  io: Io,
): Promise<number> {
  const memoryMb = values.memory === undefined ? undefined : Number(values.memory);
  if (memoryMb !== undefined && (!Number.isInteger(memoryMb) || memoryMb < 256))
    throw new UsageError(`--memory ${values.memory}: expected a whole number of MB, at least 256`, HELP);
  const stagger = Number(values.stagger ?? 0);
  if (!Number.isFinite(stagger) || stagger < 0 || stagger > 3600)
    throw new UsageError(`--stagger ${values.stagger}: expected seconds from 0 to 3600`, HELP);
  const firmware = values.firmware ?? 'bios';
  if (firmware !== 'bios' && firmware !== 'uefi' && firmware !== 'uefi-secureboot')
    throw new UsageError(`--firmware ${firmware}: expected bios, uefi or uefi-secureboot`, HELP);
  const from = values['phase1-from'] ?? 'peers';
  if (from !== 'peers' && from !== 'server')
    throw new UsageError(`--phase1-from ${from}: expected server or peers`, HELP);
  let qemu: string;
  try {
    qemu = execFileSync('sh', ['-c', 'command -v qemu-system-x86_64'], { encoding: 'utf8' }).trim();
  } catch {
    throw new BootTorrentError(
      'BT_ERR_DEMO',
      'qemu-system-x86_64 is not installed: run `bash scripts/setup.sh` as root (or `apt-get install qemu-system-x86 ipxe-qemu`)',
    );
  }
  const log = (line: string) => io.stdout.write(`${line}\n`);
  let phase1Dir = values.phase1;
  if (phase1Dir === undefined) {
    phase1Dir = join(defaultCacheDir(), '..', 'phase1-image', 'base');
    log('phase 1: building the client image (first run: a few minutes; later runs reuse it)');
    const built = await buildPhase1(
      { outDir: phase1Dir, flavor: 'base' },
      { signal: io.signal, onProgress: (p) => log(`phase 1: ${p.message}`) },
    );
    log(`phase 1: initrd ${formatBytes(built.manifest.sizes.initrd)}, Node ${built.manifest.node.version}`);
  }
  const progress = new Progress(io.stdout, 5000);
  const result = await runPxeDemo(
    {
      clients,
      phase1Dir,
      qemu,
      ...(memoryMb !== undefined ? { memoryMb } : {}),
      ...(values.keep ? { keep: true } : {}),
      staggerSeconds: stagger,
      phase1Peers: from === 'peers',
      firmware,
    },
    {
      signal: io.signal,
      log: (line) => {
        progress.done();
        log(line);
      },
      onStatus: (snap, ms) => {
        const rows = snap.clients
          .map(
            (c) =>
              `${c.mac.slice(-5)} ${c.stage}${c.stage === 'downloading' ? ` ${Math.round(c.progress * 100)}%` : ''}`,
          )
          .join(', ');
        progress.update(`${(ms / 1000).toFixed(0).padStart(4)} s  ${rows || 'waiting for DHCP'}`);
      },
    },
  );
  progress.done();
  const mb = (n: number) => (n / 1e6).toFixed(1);
  if (values.keep) log(`lab files kept in ${result.dir}`);
  for (const m of result.machines)
    log(
      `${m.name} ${m.mac}: ${m.seconds === null ? 'did not boot' : `booted in ${m.seconds.toFixed(1)} s`}; ` +
        `downloaded ${mb(m.downloaded)} MB, uploaded ${mb(m.uploaded)} MB to other clients; ` +
        `agent peak RSS ${m.peakRss === null ? '?' : `${Math.round(m.peakRss / 1e6)} MB`}`,
    );
  log(
    `booted ${result.booted}/${result.clients} clients in ${result.seconds.toFixed(1)} s; ` +
      sentSummary(result.sent, result.delivered),
  );
  const p1 = result.snapshot?.server.phase1Size ?? 0;
  if (p1 > 0)
    log(
      `phase 1: the server sent ${(result.sent.phase1 / p1).toFixed(2)} copies of it for ${result.booted} clients ` +
        `(${from === 'peers' ? 'kernel and stage 0 to each, the rest only to those that found no peer' : 'all of it to each'})`,
    );
  log(
    `clients sent each other ${mb(result.peerUploaded)} MB (their reports; the tracker counted ${mb(result.trackerPeerUploaded)} MB)`,
  );
  return result.booted === result.clients ? EXIT_OK : EXIT_USER;
}
