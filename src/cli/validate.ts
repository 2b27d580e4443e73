/** `boottorrent validate [--env DIR]`: every problem of an environment at once, or a one-line summary. */
import { formatProblem, inspectEnvironment } from '../env/index.js';
import { EXIT_OK, EXIT_USER, UsageError, parse, type Io } from './common.js';

const HELP = `Usage: boottorrent validate [--env DIR] [--no-machine-checks] [--json]

Checks Boottorrent.yaml and oss/*/config.yaml (version 1, or the older tool's
version 0) and prints every problem as file:line:col: field: message (fix: ...).
Exit 0 when the environment is fine, 1 when it has problems.

  --env DIR              the environment folder (default: .)
  --no-machine-checks    skip what depends on this machine (interface and
                         address, ports in use, iPXE binaries), e.g. to check
                         an environment prepared for another server
  --json                 print one JSON object on stdout instead:
                         {"ok": true|false, "environment": DIR, "problems": [{file,
                         line, column, field, message, fix}], "summary": {...}}
                         (summary only when ok); the exit code is the same`;

export async function run(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(
    argv,
    {
      env: { type: 'string', short: 'e' },
      'no-machine-checks': { type: 'boolean' },
      json: { type: 'boolean' },
    },
    HELP,
  );
  if (values.help) {
    io.stdout.write(`${HELP}\n`);
    return EXIT_OK;
  }
  if (positionals.length > 0)
    throw new UsageError(`unexpected argument '${positionals[0]}' (use --env DIR)`, HELP);
  const dir = values.env ?? '.';
  const { env, problems, warnings } = await inspectEnvironment(dir, {
    machineChecks: !values['no-machine-checks'],
  });
  if (values.json) {
    const summary = env && {
      oss: env.oss.map((o) => ({ id: o.id, name: o.name, method: o.method })),
      defaultOs: env.boot.defaultOs,
      dhcp: env.dhcp.mode,
      interface: env.server.interface,
      address: env.server.address,
      sourceVersion: env.sourceVersion,
    };
    io.stdout.write(
      `${JSON.stringify({ ok: Boolean(env), environment: dir, problems, warnings, ...(summary ? { summary } : {}) })}\n`,
    );
    return env ? EXIT_OK : EXIT_USER;
  }
  // Warnings first: what a version 0 file says that is ignored or read differently.
  for (const w of warnings) io.stderr.write(`warning: ${formatProblem(w)}\n`);
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
      `${dhcp} on ${where}${env.sourceVersion === 0 ? ' (version 0 format, read as version 1)' : ''}` +
      `${warnings.length > 0 ? `; ${warnings.length} warning${warnings.length === 1 ? '' : 's'} above` : ''}\n`,
  );
  return EXIT_OK;
}
