/**
 * `boottorrent demo`: the newcomer's first command. In this version it runs
 * a loopback BitTorrent swarm of real aria2c clients through our tracker
 * (see src/demo/swarm-demo.ts); the PXE lab of QEMU clients comes later.
 */
import { execFileSync } from 'node:child_process';
import { runSwarmDemo } from '../demo/swarm-demo.js';
import { BootTorrentError } from '../errors.js';
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

const HELP = `Usage: boottorrent demo [--clients N] [--size BYTES]

A BitTorrent swarm on this machine's loopback: our tracker, a torrent made by
us, one aria2c seeder with its upload capped and N aria2c clients that share
pieces with each other. Each client's copy is checked by SHA-256.
(PXE-booting virtual machines arrive in a later version.)

  --clients N      number of downloading clients (default 3, at most 32)
  --size BYTES     image size (default 64M)
  --seeder-rate R  seeder upload cap in bytes/s (default 4M)`;

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
    { clients: { type: 'string' }, size: { type: 'string' }, 'seeder-rate': { type: 'string' } },
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
