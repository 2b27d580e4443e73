/** `boottorrent wake [--env DIR] TARGET...`: Wake-on-LAN for machines of the environment. */
import { isIP } from 'node:net';
import { loadEnvironment } from '../env/load.js';
import { normalizeMac } from '../util/address.js';
import { wake, type WakeTarget } from '../wol/wake.js';
import { EXIT_OK, UsageError, closestOption, parse, parsePort, type Io } from './common.js';

const HELP = `Usage: boottorrent wake [--env DIR] [options] TARGET...

Sends Wake-on-LAN magic packets to machines, from the served interface
(server.address of the environment in DIR, default .). A TARGET is a MAC
address or the name of a host in Boottorrent.yaml (hosts: <MAC>: {name: ...});
--all wakes every host listed there. Machines are woken one after another
over --spread seconds so that a room does not draw power all at once.

  --all                   every host in the environment's hosts
  --spread SECONDS        spread the wake-ups over this long (default: 0.5 s per machine)
  --broadcast ADDR        also send to this directed broadcast (a relayed subnet, e.g.
                          10.1.2.255; the router must forward it); repeatable
  --port N                UDP port (default 9)`;

/** The machines TARGETs name: MACs as given, host names looked up (case-insensitive). */
export function resolveTargets(
  targets: readonly string[],
  hosts: ReadonlyMap<string, { readonly name?: string }>,
  all: boolean,
): WakeTarget[] {
  const byName = new Map<string, string>();
  for (const [mac, h] of hosts) if (h.name) byName.set(h.name.toLowerCase(), mac);
  const nameOf = (mac: string) => hosts.get(mac)?.name;
  const out = new Map<string, WakeTarget>();
  const add = (mac: string) => {
    const name = nameOf(mac);
    out.set(mac, name ? { mac, name } : { mac });
  };
  if (all) for (const mac of hosts.keys()) add(mac);
  for (const t of targets) {
    const mac = normalizeMac(t) ?? byName.get(t.toLowerCase());
    if (mac === undefined) {
      const names = [...hosts.values()].flatMap((h) => (h.name ? [h.name] : []));
      const near = closestOption(t, names);
      throw new UsageError(
        `${t}: not a MAC address or the name of a host in the environment${near ? ` (did you mean ${near}?)` : names.length === 0 ? ' (no host has a name: hosts: <MAC>: {name: pc-01})' : ''}`,
        HELP,
      );
    }
    add(mac);
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
  const targets = resolveTargets(positionals, env.hosts, values.all ?? false);
  if (targets.length === 0) throw new UsageError('--all: the environment lists no hosts', HELP);
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
