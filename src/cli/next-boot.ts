/** `boottorrent next-boot [--env DIR] TARGET... OS [--once]`: what machines boot next, through the running server. */
import { EXIT_OK, UsageError, parse, type Io } from './common.js';
import { serverAction } from './server-api.js';

const HELP = `Usage: boottorrent next-boot [--env DIR] TARGET... OS [--once]
       boottorrent next-boot [--env DIR] TARGET... --clear

Sets what machines boot next: their menu's default becomes OS (a folder of
oss/), even where their menu would not offer it, and a menu that waits
forever counts down 10 s instead. A TARGET is a MAC address, the name of a
host, or the name of a group in Boottorrent.yaml; a machine's own setting
wins over its group's. The server running the environment in DIR (default
.) keeps it in its state folder, so it survives a restart.

  --once     only the next boot: a machine's entry ends when it boots; a
             group's entry is used once by each of its machines, and stays
             (for machines that join later) until --clear
  --clear    remove the next boot of the TARGETs (back to their defaults)`;

export async function run(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(
    argv,
    { env: { type: 'string', short: 'e' }, once: { type: 'boolean' }, clear: { type: 'boolean' } },
    HELP,
  );
  if (values.help) {
    io.stdout.write(`${HELP}\n`);
    return EXIT_OK;
  }
  const clear = values.clear ?? false;
  if (clear && values.once) throw new UsageError('--once and --clear: choose one', HELP);
  const targets = clear ? positionals : positionals.slice(0, -1);
  const os = clear ? null : (positionals.at(-1) ?? '');
  if (targets.length === 0)
    throw new UsageError(
      clear ? 'name at least one machine or group' : 'name the machines (or groups) and then the OS',
      HELP,
    );
  const answer = (await serverAction(values.env ?? '.', 'next-boot', {
    targets,
    os,
    once: values.once ?? false,
  })) as { set: { target: string; kind: string }[] };
  for (const s of answer.set)
    io.stdout.write(
      os === null
        ? `${s.kind} ${s.target}: next boot cleared\n`
        : `${s.kind} ${s.target}: boots ${os} next${values.once ? ' (once)' : ''}\n`,
    );
  return EXIT_OK;
}
