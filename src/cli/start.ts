/** `boottorrent start [--env DIR]`: serve an environment until Ctrl-C or SIGTERM. */
import { once } from 'node:events';
import { join } from 'node:path';
import { isIP } from 'node:net';
import { BootServer } from '../server/app.js';
import { parseCidr } from '../server/requester.js';
import { Dashboard } from '../dashboard/dashboard.js';
import { formatProblem, loadEnvironment } from '../env/load.js';
import { buildPhase1, defaultCacheDir, type Phase1Flavor } from '../phase1/build.js';
import { streamLogger } from '../util/logger.js';
import {
  EXIT_OK,
  Progress,
  UsageError,
  formatBytes,
  parse,
  parsePort,
  parseSize,
  type Io,
} from './common.js';

const HELP = `Usage: boottorrent start [--env DIR] [options]

Validates the environment, hashes each OS folder into a torrent (cached:
only changed folders are read again), then serves DHCP (as configured),
TFTP, HTTP, the tracker, the seeder and the dashboard until Ctrl-C or
SIGTERM. OS folders added or changed while it runs are offered to the next
client that asks, without a restart. Ports 67, 69 and 80 need root.

  --env DIR              the environment folder (default: .)
  --phase1 DIR           a phase-1 image built by \`boottorrent build-phase1\`
                         (default: build it, or reuse the cached build, in
                         ~/.cache/boottorrent/phase1-image/<flavor>)
  --flavor base|qemu     phase-1 flavor to build when --phase1 is not given (default:
                         qemu if any OS uses the qemu method, else base)
  --console screen|serial
                         where phase 1 shows the menu: the screen (default) or
                         the first serial port (ttyS0, 115200 baud; for VMs
                         and servers with serial consoles)
  --cmdline TEXT         more kernel parameters for phase 1
  --dashboard HOST:PORT  where the dashboard and status API listen
                         (default 127.0.0.1:8480; 0 picks a free port)
  --dashboard-name NAME  a DNS name the dashboard answers to besides its IP
                         addresses, localhost, this hostname and a name in
                         --dashboard (repeatable; other Host headers are
                         refused: DNS rebinding)
  --seed-port N          TCP port of the server's seeder (default 6881)
  --upload-limit RATE    cap the seeder's upload (bytes/s, e.g. 50M)
  --report-from CIDR     hand clients in CIDR (IPv4) their report token without
                         tying their address to their MAC (repeatable; for
                         clients behind a router, which the server cannot
                         see in its neighbour table)
  --force-dhcp           full DHCP mode: start even if another DHCP server
                         answers on the interface (normally refused)
  --log-format F         text (default) or json: one JSON object per line
                         (time, level, scope, msg, fields); no time is
                         written when stderr is systemd's journal (it adds one)
  -v, --verbose          log every request and peer`;

export async function run(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(
    argv,
    {
      env: { type: 'string', short: 'e' },
      phase1: { type: 'string' },
      flavor: { type: 'string' },
      console: { type: 'string' },
      cmdline: { type: 'string' },
      dashboard: { type: 'string' },
      'dashboard-name': { type: 'string', multiple: true },
      'seed-port': { type: 'string' },
      'upload-limit': { type: 'string' },
      'force-dhcp': { type: 'boolean' },
      'report-from': { type: 'string', multiple: true },
      verbose: { type: 'boolean', short: 'v' },
      'log-format': { type: 'string' },
    },
    HELP,
  );
  if (values.help) {
    io.stdout.write(`${HELP}\n`);
    return EXIT_OK;
  }
  if (positionals.length > 0)
    throw new UsageError(`unexpected argument '${positionals[0]}' (use --env DIR)`, HELP);
  const consoleMode = values.console ?? 'screen';
  if (consoleMode !== 'screen' && consoleMode !== 'serial')
    throw new UsageError(`--console ${consoleMode}: expected screen or serial`, HELP);
  if (values.flavor !== undefined && values.flavor !== 'base' && values.flavor !== 'qemu')
    throw new UsageError(`--flavor ${values.flavor}: expected base or qemu`, HELP);
  let dashboardHost = '127.0.0.1';
  let dashboardPort = 8480;
  if (values.dashboard !== undefined) {
    const m = /^(.*):(\d+)$/.exec(values.dashboard);
    if (!m) throw new UsageError(`--dashboard ${values.dashboard}: expected HOST:PORT`, HELP);
    dashboardHost = m[1]!.replace(/^\[(.*)\]$/, '$1');
    dashboardPort = parsePort(m[2]!, '--dashboard', HELP);
  }
  const dashboardNames = values['dashboard-name'] ?? [];
  for (const n of dashboardNames)
    if (!/^[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?\.?$/i.test(n))
      throw new UsageError(
        `--dashboard-name ${n}: expected a DNS name (letters, digits, '-', '_', '.')`,
        HELP,
      );
  // A name given as --dashboard's host is one the dashboard answers to.
  if (dashboardHost !== '' && isIP(dashboardHost) === 0) dashboardNames.push(dashboardHost);
  const reportFrom = values['report-from'] ?? [];
  for (const c of reportFrom)
    try {
      parseCidr(c);
    } catch {
      throw new UsageError(`--report-from ${c}: expected an IPv4 address or CIDR, e.g. 10.0.0.0/24`, HELP);
    }
  const logFormat = values['log-format'] ?? 'text';
  if (logFormat !== 'text' && logFormat !== 'json')
    throw new UsageError(`--log-format ${logFormat}: expected text or json`, HELP);
  const envDir = values.env ?? '.';

  // The environment is loaded and checked once, here; the server gets the frozen result.
  const env = await loadEnvironment(envDir);
  // log_level (v0: aria2.console_log_level) sets the level; -v raises it to debug.
  const logger = streamLogger(io.stderr, {
    level: values.verbose ? 'debug' : env.logLevel,
    format: logFormat,
  });
  for (const w of env.warnings) io.stderr.write(`warning: ${formatProblem(w)}\n`);
  // Phase 1 next: the environment decides the flavor.
  let phase1Dir = values.phase1;
  if (phase1Dir === undefined) {
    const flavor: Phase1Flavor =
      values.flavor ?? (env.oss.some((o) => o.method === 'qemu') ? 'qemu' : 'base');
    phase1Dir = join(defaultCacheDir(), '..', 'phase1-image', flavor);
    const built = await buildPhase1(
      { outDir: phase1Dir, flavor },
      { signal: io.signal, onProgress: (p) => io.stderr.write(`phase 1: ${p.message}\n`) },
    );
    io.stderr.write(
      `phase 1: ${built.reused ? 'reusing' : 'built'} ${flavor} image, initrd ${formatBytes(built.manifest.sizes.initrd)}\n`,
    );
  }
  const consoleArgs =
    consoleMode === 'serial' ? 'console=tty0 console=ttyS0,115200n8' : 'console=ttyS0,115200n8 console=tty0';
  const progress = new Progress(io.stderr);
  const server = new BootServer(
    {
      environment: env,
      phase1: {
        dir: phase1Dir,
        kernel: 'vmlinuz',
        initrds: ['initrd.img'],
        cmdline: [consoleArgs, 'quiet', values.cmdline ?? ''].join(' ').trim(),
      },
      dashboardHost,
      dashboardPort,
      ...(values['force-dhcp'] ? { dhcpProbeMs: 0 } : {}),
      ...(reportFrom.length > 0 ? { reportFrom } : {}),
      ...(values['seed-port'] !== undefined
        ? { seedPort: parsePort(values['seed-port'], '--seed-port', HELP) }
        : {}),
      ...(values['upload-limit'] !== undefined
        ? { uploadLimit: parseSize(values['upload-limit'], '--upload-limit', HELP) }
        : {}),
    },
    {
      logger,
      signal: io.signal,
      dashboard: (ctx) =>
        new Dashboard(
          {
            snapshot: ctx.snapshot,
            metrics: ctx.metrics,
            changes: ctx.changes,
            token: ctx.token,
            actions: ctx.actions,
            logger,
          },
          { names: dashboardNames },
        ),
      onHashProgress: (os, done, total) =>
        progress.update(`hashing ${os}: ${formatBytes(done)} of ${formatBytes(total)}`),
    },
  );
  try {
    await server.start();
    progress.done();
    io.stdout.write(
      `serving ${env.oss.length} OS${env.oss.length === 1 ? '' : 's'} from ${env.dir} on ${env.server.address} ` +
        `(DHCP ${env.dhcp.mode}); dashboard ${server.dashboardUrl}; Ctrl-C stops\n`,
    );
    // Ctrl-C / SIGTERM, or a listener that fails while serving (STYLE.md
    // lesson 4): the server has closed itself by then; its error names the
    // listener and becomes the exit status.
    const failed = await Promise.race([
      io.signal.aborted ? Promise.resolve(undefined) : once(io.signal, 'abort').then(() => undefined),
      server.failed,
    ]);
    if (failed) throw failed;
    io.stdout.write('stopping\n');
    return EXIT_OK;
  } finally {
    progress.done();
    await server.close();
  }
}
