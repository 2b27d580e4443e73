/** `boottorrent wake [--env DIR] TARGET...`: Wake-on-LAN for machines of the environment. */
import { isIP } from 'node:net';
import { loadEnvironment } from '../env/load.js';
import { resolveTarget, targetNames } from '../env/room.js';
import type { Environment } from '../env/types.js';
import { wake, type WakeTarget } from '../wol/wake.js';
import { EXIT_OK, UsageError, closestOption, parse, parsePort, type Io } from './common.js';
import { serverAction } from './server-api.js';

const HELP = `Usage: boottorrent wake [--env DIR] [options] TARGET...

Sends Wake-on-LAN magic packets to machines, from the served interface
(server.address of the environment in DIR, default .). A TARGET is a MAC
address, the name of a host (hosts: <MAC>: {name: ...}) or of a group
(groups:) in Boottorrent.yaml; a group wakes the machines it lists by MAC,
its hosts and its ranges of up to 1024 addresses. --all wakes every host.
Machines are woken one after another over --spread seconds so that a room
does not draw power all at once.

  --all                   every host in the environment's hosts
  --spread SECONDS        spread the wake-ups over this long (default: 0.5 s per machine)
  --broadcast ADDR        also send to this directed broadcast (a relayed subnet, e.g.
                          10.1.2.255; the router must forward it); repeatable; a group's
                          broadcast: in Boottorrent.yaml is added by itself
  --port N                UDP port (default 9)
  --next-boot OS          first set what the TARGETs boot next, through the running
                          server (as \`boottorrent next-boot TARGET... OS\`)
  --once                  with --next-boot: only their next boot`;

/** The machines TARGETs name: MACs as given, host and group names looked up (case-insensitive). */
export function resolveTargets(
  targets: readonly string[],
  env: Pick<Environment, 'hosts' | 'groups'>,
  all: boolean,
  warn: (line: string) => void = () => {},
): WakeTarget[] {
  const out = new Map<string, WakeTarget>();
  const add = (mac: string) => {
    const name = env.hosts.get(mac)?.name;
    out.set(mac, name ? { mac, name } : { mac });
  };
  if (all) for (const mac of env.hosts.keys()) add(mac);
  for (const t of targets) {
    const r = resolveTarget(env, t);
    if (r === undefined) {
      const names = targetNames(env);
      const near = closestOption(t, names);
      throw new UsageError(
        `${t}: not a MAC address, nor the name of a host or group in the environment${near ? ` (did you mean ${near}?)` : names.length === 0 ? ' (no host or group has a name: hosts: <MAC>: {name: pc-01})' : ''}`,
        HELP,
      );
    }
    if (r.unlisted)
      warn(
        `wake: group ${r.label} also matches by ${r.unlisted}: only its machines listed by MAC, under hosts: or in small ranges are woken`,
      );
    for (const mac of r.macs) add(mac);
  }
  return [...out.values()];
}

export async function run(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(
    argv,
    {
      env: { type: 'string', short: 'e' },
      all: { type: 'boolean' },
      spread: { type: 'string' },
      broadcast: { type: 'string', multiple: true },
      port: { type: 'string' },
      'next-boot': { type: 'string' },
      once: { type: 'boolean' },
    },
    HELP,
  );
  if (values.help) {
    io.stdout.write(`${HELP}\n`);
    return EXIT_OK;
  }
  if (positionals.length === 0 && !values.all)
    throw new UsageError('name at least one machine, or --all', HELP);
  let spreadS: number | undefined;
  if (values.spread !== undefined) {
    spreadS = Number(values.spread);
    if (!/^\d+(\.\d+)?$/.test(values.spread) || spreadS > 3600)
      throw new UsageError(`--spread ${values.spread}: expected seconds, 0 to 3600`, HELP);
  }
  const broadcasts = ['255.255.255.255'];
  for (const b of values.broadcast ?? []) {
    if (isIP(b) !== 4)
      throw new UsageError(`--broadcast ${b}: expected an IPv4 address, e.g. 10.1.2.255`, HELP);
    broadcasts.push(b);
  }
  const port = values.port !== undefined ? parsePort(values.port, '--port', HELP) : undefined;
  const env = await loadEnvironment(values.env ?? '.');
  if (values.once && values['next-boot'] === undefined)
    throw new UsageError('--once goes with --next-boot OS', HELP);
  const targets = resolveTargets(positionals, env, values.all ?? false, (l) => io.stderr.write(`${l}\n`));
  // A group on a relayed subnet names its directed broadcast in Boottorrent.yaml.
  for (const t of positionals)
    for (const b of resolveTarget(env, t)?.broadcasts ?? []) if (!broadcasts.includes(b)) broadcasts.push(b);
  if (targets.length === 0) throw new UsageError('--all: the environment lists no hosts', HELP);
  if (values['next-boot'] !== undefined) {
    const os = values['next-boot'];
    // Through the server, before any machine wakes: it must know what they boot.
    await serverAction(values.env ?? '.', 'next-boot', {
      targets: values.all ? targets.map((t) => t.mac) : positionals,
      os,
      once: values.once ?? false,
    });
    io.stdout.write(
      `next boot: ${os}${values.once ? ' (once)' : ''} for ${(values.all ? ['--all'] : positionals).join(', ')}\n`,
    );
  }
  const spreadMs = Math.round((spreadS ?? 0.5 * (targets.length - 1)) * 1000);
  const who = (t: WakeTarget) => (t.name ? `${t.name} (${t.mac})` : t.mac);
  io.stderr.write(
    `wake: ${targets.length} machine(s) from ${env.server.address}${spreadMs > 0 ? ` over ${(spreadMs / 1000).toFixed(1)} s` : ''}\n`,
  );
  const sent = await wake(targets, {
    source: env.server.address,
    broadcasts,
    ...(port !== undefined ? { port } : {}),
    spreadMs,
    signal: io.signal,
    onSent: (t, i) => io.stdout.write(`woke ${who(t)} [${i + 1}/${targets.length}]\n`),
  });
  if (sent < targets.length) {
    io.stderr.write(`wake: stopped after ${sent} of ${targets.length} machines\n`);
    return 130;
  }
  return EXIT_OK;
}
