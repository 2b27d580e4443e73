/** `boottorrent validate [--env DIR]`: every problem of an environment at once, or a one-line summary. */
import { formatProblem, inspectEnvironment } from '../env/index.js';
import { EXIT_OK, EXIT_USER, UsageError, parse, type Io } from './common.js';

const HELP = `Usage: boottorrent validate [--env DIR] [--no-machine-checks]

Checks Boottorrent.yaml and oss/*/config.yaml (version 1, or the older tool's
version 0) and prints every problem as file:line:col: field: message (fix: ...).
Exit 0 when the environment is fine, 1 when it has problems.

  --env DIR              the environment folder (default: .)
  --no-machine-checks    skip what depends on this machine (interface and
                         address, ports in use, iPXE binaries), e.g. to check
                         an environment prepared for another server`;

export async function run(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(
    argv,
    { env: { type: 'string', short: 'e' }, 'no-machine-checks': { type: 'boolean' } },
    HELP,
  );
  if (values.help) {
    io.stdout.write(`${HELP}\n`);
    return EXIT_OK;
  }
  if (positionals.length > 0)
    throw new UsageError(`unexpected argument '${positionals[0]}' (use --env DIR)`, HELP);
  const dir = values.env ?? '.';
  const { env, problems } = await inspectEnvironment(dir, { machineChecks: !values['no-machine-checks'] });
  if (!env) {
    for (const p of problems) io.stderr.write(`${formatProblem(p)}\n`);
    io.stderr.write(`${problems.length} problem${problems.length === 1 ? '' : 's'} in ${dir}\n`);
    return EXIT_USER;
  }
  const n = env.oss.length;
  const dhcp = env.dhcp.mode === 'off' ? 'DHCP off' : `DHCP ${env.dhcp.mode}`;
  const where = env.server.interface ?? env.server.address;
  io.stdout.write(
    `ok: ${n} operating system${n === 1 ? '' : 's'}, default ${env.boot.defaultOs ?? '(none: menu waits)'}, ` +
      `${dhcp} on ${where}${env.sourceVersion === 0 ? ' (version 0 format, read as version 1)' : ''}\n`,
  );
  return EXIT_OK;
}
