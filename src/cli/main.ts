/**
 * `boottorrent <command>`: dispatches to one file per subcommand and owns
 * the process: exit codes (0 ok, 1 user error, 2 usage), signals, and the
 * rule that a user error prints one clear message, never a stack trace.
 */
import { BootTorrentError } from '../errors.js';
import { version } from '../version.js';
import { EXIT_USAGE, EXIT_USER, UsageError, type Command, type Io } from './common.js';

const HELP = `Usage: boottorrent <command> [options]

Commands available now:
  torrent create <path> [options]   make a .torrent of a file or folder
  torrent info <file> [--json]      show what a .torrent holds
  tracker [--host H] [--port N]     run a BitTorrent tracker (HTTP and UDP on one port)
  seed <file.torrent> <data-path>   serve a torrent's data to peers
  get <file.torrent> [-o DIR]       download a torrent, verifying every piece
  demo [--clients N]                a PXE lab: the server and N QEMU machines booting from it
  build-phase1 [--flavor base|qemu] [--out DIR]
                                    build the phase-1 kernel + initramfs (Node and the agent)
  init <dir>                        new environment (documented Boottorrent.yaml + oss/)
  validate [--env DIR]              check an environment; every problem with file, line and fix
  start [--env DIR]                 serve an environment: DHCP/TFTP/HTTP, tracker, seeder, dashboard
  status [--env DIR] [--json]       clients and swarms as the running server sees them
  wake [--env DIR] TARGET...        Wake-on-LAN: machines by MAC, host or group name, paced
  next-boot TARGET... OS [--once]   what machines or groups boot next (the running server)
  version                           print the version (also --version)

Run \`boottorrent <command> --help\` for a command's options.`;

const commands: Record<string, () => Promise<Command>> = {
  torrent: async () => (await import('./torrent.js')).run,
  tracker: async () => (await import('./tracker.js')).run,
  demo: async () => (await import('./demo.js')).run,
  seed: async () => (await import('./seed.js')).run,
  get: async () => (await import('./get.js')).run,
  'build-phase1': async () => (await import('./build-phase1.js')).run,
  init: async () => (await import('./init.js')).run,
  validate: async () => (await import('./validate.js')).run,
  start: async () => (await import('./start.js')).run,
  status: async () => (await import('./status.js')).run,
  wake: async () => (await import('./wake.js')).run,
  'next-boot': async () => (await import('./next-boot.js')).run,
};

let outputClosed = false;

async function main(argv: string[]): Promise<number> {
  const ac = new AbortController();
  let interrupted = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    interrupted++;
    // A second Ctrl-C means "now": the user has waited for cleanup long enough.
    if (interrupted > 1) process.exit(130);
    ac.abort(new BootTorrentError('BT_ERR_ABORTED', `interrupted by ${sig}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // Whoever reads our output went away (`boottorrent status | head -1`): not
  // an error of ours. The command stops as on Ctrl-C, quietly, and exits 0
  // if it was not failing anyway; nothing more is written to that pipe.
  for (const stream of [process.stdout, process.stderr])
    stream.on('error', () => {
      // EPIPE, or a write after that (ERR_STREAM_DESTROYED): the reader is gone either way.
      outputClosed = true;
      ac.abort(new BootTorrentError('BT_ERR_ABORTED', 'output closed'));
    });
  const io: Io = { stdout: process.stdout, stderr: process.stderr, signal: ac.signal };

  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(`${HELP}\n`);
    return name === undefined ? EXIT_USAGE : 0;
  }
  if (name === '--version' || name === 'version') {
    process.stdout.write(`boottorrent ${version()}\n`);
    return 0;
  }
  const load = commands[name];
  if (!load) {
    process.stderr.write(`boottorrent: unknown command '${name}'\n\n${HELP}\n`);
    return EXIT_USAGE;
  }
  try {
    return await (
      await load()
    )(rest, io);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`boottorrent ${name}: ${err.message}\n${err.brief ? '' : `\n${err.help}\n`}`);
      return EXIT_USAGE;
    }
    if (err instanceof BootTorrentError) {
      if (err.code === 'BT_ERR_ABORTED') {
        if (outputClosed) return 0;
        process.stderr.write(
          `\nboottorrent ${name}: stopped (${err.cause instanceof Error ? err.cause.message : err.message})\n`,
        );
        return 130;
      }
      process.stderr.write(`boottorrent ${name}: ${err.message}\n`);
      return EXIT_USER;
    }
    // Anything else is our bug: keep the stack, it is what a bug report needs.
    process.stderr.write(
      `boottorrent ${name}: internal error, please report it:\n${(err as Error).stack ?? String(err)}\n`,
    );
    return 70;
  }
}

const code = await main(process.argv.slice(2));
// A closed pipe that a finished command wrote into last: success all the same.
process.exitCode = outputClosed && code === 0 ? 0 : code;
// Every command closes what it opened; should a handle leak anyway, do not
// leave the user's terminal hanging. The timer itself keeps nothing alive.
setTimeout(() => process.exit(), 2000).unref();
