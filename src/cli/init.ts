/** `boottorrent init <dir>`: a documented environment that validates as written. */
import { initEnvironment } from '../env/index.js';
import { EXIT_OK, UsageError, parse, type Io } from './common.js';

const HELP = `Usage: boottorrent init <dir> [--interface NAME]

Writes a new environment: a documented Boottorrent.yaml (DHCP in proxy mode,
tracker on), oss/README.md, a working example OS (oss/hello) and commented
examples for kexec, qemu and bin in oss-examples/. Never overwrites: <dir>
must not exist or be empty.

  --interface NAME   the lab network interface (default: the first one with
                     an IPv4 address other than loopback)`;

export async function run(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(argv, { interface: { type: 'string', short: 'i' } }, HELP);
  if (values.help) {
    io.stdout.write(`${HELP}\n`);
    return EXIT_OK;
  }
  if (positionals.length !== 1) throw new UsageError('init takes exactly one <dir>', HELP);
  const dir = positionals[0]!;
  const r = await Promise.resolve(initEnvironment(dir, { interface: values.interface }));
  for (const f of r.files) io.stdout.write(`  wrote ${dir}/${f}\n`);
  io.stdout.write(
    r.detected
      ? `New environment in ${dir}: serving on ${r.interface} (${r.address}), DHCP proxy.\n`
      : `New environment in ${dir}: no network interface found; set server.interface and server.address in Boottorrent.yaml.\n`,
  );
  io.stdout.write(`Next: boottorrent validate --env ${dir}\n`);
  return EXIT_OK;
}
