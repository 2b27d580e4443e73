/**
 * Campus benchmark (issue #21 item 5): one server on a core network, a
 * router with a DHCP relay (Debian's isc-dhcp-relay, adding option 82), and
 * several client subnets behind it, each its own bridge. Every client
 * takes its address from our DHCP server through the relay (busybox
 * udhcpc), then runs as the agent does (bench/swarm-agent.ts: our engine,
 * the server's tracker and seeder) and fetches one random image. Each run
 * is done with the swarm's locality on (a peer asks and unchokes peers on
 * its own subnet first) and off, in the same lab.
 *
 *   npm run bench:campus -- [--per-subnet 4,8] [--subnets 3] [--size 32M] [--piece-length 256K]
 *                           [--server-rate 100M] [--router-rate 100M] [--client-rate 10M]
 *                           [--modes locality,flat] [--quick] [--json FILE] [--no-results]
 *
 * Links are veth pairs shaped with tbf in both directions: the server's at
 * --server-rate, each subnet's link to the router at --router-rate, each
 * client's at --client-rate. Bytes are read from interface counters
 * (headers and ACKs included): "router" is every byte that crossed a
 * router-subnet link (in both directions, all subnets), "imports" what the
 * router delivered into the subnets, "server" what the server's link sent.
 * Copies are bytes / image size. The clock runs from "go" (every agent is
 * loaded and leased, at its menu) to the last verified copy; DHCP through
 * the relay is timed once for all clients.
 * `--quick` (CI): 2 clients per subnet, a 4 MiB image, no results file.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  appendFileSync,
  chmodSync,
  closeSync,
  createReadStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createTorrent } from '../src/torrent/create.js';
import { encodeTorrent } from '../src/torrent/metainfo.js';
import { NetnsLab, waitForOutput, type LabProcess } from '../src/util/netns.js';
import { cpuTicks, shapeTbf, unit, which } from './netlab.js';

const USAGE = `usage: npm run bench:campus -- [--per-subnet 4,8] [--subnets 3] [--size 32M] [--piece-length 256K]
       [--server-rate 100M] [--router-rate 100M] [--client-rate 10M] [--modes locality,flat]
       [--quick] [--json FILE] [--no-results]
Rates are bits per second (100M = 100 Mbit/s), sizes bytes (32M = 32 MiB). Needs root, iproute2,
isc-dhcp-relay and busybox-static. See bench/README.md.`;

let parsed;
try {
  parsed = parseArgs({
    options: {
      'per-subnet': { type: 'string' },
      subnets: { type: 'string', default: '3' },
      size: { type: 'string' },
      'piece-length': { type: 'string', default: '256K' },
      'server-rate': { type: 'string', default: '100M' },
      'router-rate': { type: 'string', default: '100M' },
      'client-rate': { type: 'string', default: '10M' },
      modes: { type: 'string', default: 'locality,flat' },
      quick: { type: 'boolean', default: false },
      json: { type: 'string' },
      'no-results': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
} catch (err) {
  process.stderr.write(`bench:campus: ${(err as Error).message}\n${USAGE}\n`);
  process.exit(2);
}
const { values } = parsed;
if (values.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
const quick = values.quick;
const perSubnet = (values['per-subnet'] ?? (quick ? '2' : '4,8')).split(',').map(Number);
const subnets = Number(values.subnets);
const F = unit(values.size ?? (quick ? '4M' : '32M'), 1024);
const pieceLength = unit(values['piece-length'], 1024);
const rates = {
  server: unit(values['server-rate'], 1000),
  router: unit(values['router-rate'], 1000),
  client: unit(values['client-rate'], 1000),
};
const modes = values.modes.split(',');
for (const m of modes)
  if (m !== 'locality' && m !== 'flat') throw new Error(`--modes: locality or flat, not ${m}`);
if (!Number.isInteger(subnets) || subnets < 1 || subnets > 8) throw new Error('--subnets: 1..8');
if (perSubnet.some((n) => !Number.isInteger(n) || n < 1 || n > 60)) throw new Error('--per-subnet: 1..60');

const dhcrelay = which('dhcrelay', 'isc-dhcp-relay');
const busybox = which('busybox', 'busybox-static');
which('tc', 'iproute2');

const REPO = new URL('../..', import.meta.url).pathname;
const CLI = join(REPO, 'bin/boottorrent.js');
const AGENT = join(REPO, 'dist/bench/swarm-agent.js');
const DHCP = join(REPO, 'dist/bench/campus-dhcp.js');
const SERVER_IP = '10.80.0.1';
const ROUTER_CORE_IP = '10.80.0.254';
const subnetPrefix = (k: number) => `10.80.${k + 1}`;

// ---- the lab, removed on exit and on SIGINT/SIGTERM/SIGHUP ----
const lab = new NetnsLab({ name: (role, id) => `btc-${id}-${role}`, maxOutput: 200_000 });
const work = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'bt-bench-campus-'));
chmodSync(work, 0o755);
const cleanup = () => {
  lab.destroy();
  rmSync(work, { recursive: true, force: true });
};
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    process.stderr.write(`\n${sig}: removing the emulated campus\n`);
    cleanup();
    process.exit(130);
  });
}
process.stdout.write(`lab ${lab.nameOf('')} (namespaces), work ${work}\n`);

const shape = shapeTbf;
const sysctl = (ns: string, kv: string) =>
  execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-qw', kv], { stdio: 'ignore' });

interface Client {
  readonly ns: string;
  readonly subnet: number;
  readonly mac: string;
  ip?: string;
}

const maxPer = Math.max(...perSubnet);
const core = lab.ns('core');
lab.bridge(core, 'br0');
const srv = lab.ns('srv');
const srvPort = lab.veth(core, 'br0', srv, 'eth0', `${SERVER_IP}/24`);
shape(srv, 'eth0', rates.server);
shape(core, srvPort, rates.server);
const rtr = lab.ns('rtr');
lab.veth(core, 'br0', rtr, 'up0', `${ROUTER_CORE_IP}/24`);
sysctl(rtr, 'net.ipv4.ip_forward=1');
const clients: Client[] = [];
for (let k = 0; k < subnets; k++) {
  const sw = lab.ns(`sw${k + 1}`);
  lab.bridge(sw, 'br0');
  // The subnet's link to the router: the router's end is lan<k>, shaped both ways.
  const port = lab.veth(sw, 'br0', rtr, `lan${k + 1}`, `${subnetPrefix(k)}.254/24`);
  shape(rtr, `lan${k + 1}`, rates.router);
  shape(sw, port, rates.router);
  lab.ip(srv, 'route', 'add', `${subnetPrefix(k)}.0/24`, 'via', ROUTER_CORE_IP);
  for (let i = 0; i < maxPer; i++) {
    const ns = lab.ns(`s${k + 1}c${i}`);
    const cport = lab.veth(sw, 'br0', ns, 'eth0');
    const mac = `02:00:50:${(k + 1).toString(16).padStart(2, '0')}:00:${i.toString(16).padStart(2, '0')}`;
    lab.ip(ns, 'link', 'set', 'eth0', 'address', mac);
    shape(ns, 'eth0', rates.client);
    shape(sw, cport, rates.client);
    clients.push({ ns, subnet: k, mac });
  }
}

// ---- the image and its torrent ----
const srvDir = join(work, 'srv');
mkdirSync(srvDir);
chmodSync(srvDir, 0o755);
const image = join(srvDir, 'image.bin');
{
  const fd = openSync(image, 'w', 0o644);
  for (let off = 0; off < F; off += 1 << 20) writeSync(fd, randomBytes(Math.min(1 << 20, F - off)));
  closeSync(fd);
}
async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}
const expected = await sha256(image);
const announce = `http://${SERVER_IP}:6969/announce`;
const { meta } = await createTorrent(image, { pieceLength, announce: [[announce]], creationDate: null });
const torrent = join(work, 'image.torrent');
writeFileSync(torrent, encodeTorrent(meta.infoBuffer, { announce: [[announce]] }));

const wait = (p: LabProcess, re: RegExp, ms: number, what: string) => waitForOutput(p, re, ms, what);
const serverProcs: LabProcess[] = [];

// ---- DHCP: our server (full mode, a pool per subnet) and the relay ----
const dhcp = lab.spawn(
  srv,
  process.execPath,
  [
    DHCP,
    JSON.stringify({
      mode: 'full',
      interface: 'eth0',
      serverIp: SERVER_IP,
      rangeStart: '10.80.0.100',
      rangeEnd: '10.80.0.150',
      router: ROUTER_CORE_IP,
      subnets: Array.from({ length: subnets }, (_, k) => ({
        subnet: `${subnetPrefix(k)}.0/24`,
        rangeStart: `${subnetPrefix(k)}.100`,
        rangeEnd: `${subnetPrefix(k)}.199`,
        router: `${subnetPrefix(k)}.254`,
      })),
    }),
  ],
  { nice: -10 },
);
serverProcs.push(dhcp);
await wait(dhcp, /^ready$/m, 30_000, 'our DHCP server');
const relay = lab.spawn(rtr, dhcrelay, [
  '-d',
  '-4',
  '-a',
  '-pf',
  join(work, 'dhcrelay.pid'),
  ...Array.from({ length: subnets }, (_, k) => ['-id', `lan${k + 1}`]).flat(),
  '-iu',
  'up0',
  SERVER_IP,
]);
serverProcs.push(relay);
await wait(relay, /Sending on\s+Socket\/fallback/, 30_000, 'dhcrelay');

const leaseScript = join(work, 'udhcpc.sh');
writeFileSync(
  leaseScript,
  `#!/bin/sh
case "$1" in
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$subnet" dev "$interface"
    ip route replace default via "$router"
    echo "LEASE $ip $router";;
esac
`,
);
chmodSync(leaseScript, 0o755);
const dhcpT0 = Date.now();
await Promise.all(
  clients.map(async (c) => {
    const p = lab.spawn(c.ns, busybox, [
      'udhcpc',
      '-i',
      'eth0',
      '-f',
      '-q',
      '-n',
      '-t',
      '8',
      '-T',
      '2',
      '-s',
      leaseScript,
    ]);
    const m = await wait(p, /^LEASE (\S+) (\S+)$/m, 60_000, `DHCP for ${c.mac}`);
    c.ip = m[1]!;
    if (!c.ip.startsWith(`${subnetPrefix(c.subnet)}.`) || m[2] !== `${subnetPrefix(c.subnet)}.254`) {
      throw new Error(`${c.mac} on subnet ${c.subnet + 1} got ${c.ip} via ${m[2]}: not its subnet's pool`);
    }
  }),
);
const dhcpSecs = (Date.now() - dhcpT0) / 1000;
process.stdout.write(
  `DHCP through the relay: ${clients.length} clients leased in ${dhcpSecs.toFixed(1)} s\n`,
);

// ---- the server: our tracker and seeder ----
const tracker = lab.spawn(
  srv,
  process.execPath,
  [CLI, 'tracker', '--host', SERVER_IP, '--port', '6969', '--torrent', torrent],
  { nice: -10 },
);
serverProcs.push(tracker);
await wait(tracker, /serving 1 infohash/, 20_000, 'our tracker');
const seed = lab.spawn(
  srv,
  process.execPath,
  [CLI, 'seed', torrent, image, '--host', SERVER_IP, '--port', '6881'],
  { nice: -10 },
);
serverProcs.push(seed);
await wait(seed, /seeding [0-9a-f]{40}/, 60_000, 'our seeder');

// ---- counters ----
interface Counters {
  router: number;
  imports: number;
  server: number;
}
function counters(): Counters {
  const links = JSON.parse(lab.ip(rtr, '-s', '-j', 'link', 'show')) as {
    ifname: string;
    stats64: { tx: { bytes: number }; rx: { bytes: number } };
  }[];
  let router = 0;
  let imports = 0;
  for (const l of links) {
    if (!/^lan\d+$/.test(l.ifname)) continue;
    router += l.stats64.tx.bytes + l.stats64.rx.bytes;
    imports += l.stats64.tx.bytes;
  }
  const s = JSON.parse(lab.ip(srv, '-s', '-j', 'link', 'show', 'eth0')) as {
    stats64: { tx: { bytes: number } };
  }[];
  return { router, imports, server: s[0]!.stats64.tx.bytes };
}

interface Row {
  mode: string;
  perSubnet: number;
  clients: number;
  allSecs?: number;
  verified: number;
  routerBytes: number;
  importCopies: number;
  serverCopies: number;
  busy?: number;
  error?: string;
}

async function runOne(mode: string, n: number): Promise<Row> {
  const used = clients.filter((c, i) => i % maxPer < n);
  const row: Row = {
    mode,
    perSubnet: n,
    clients: used.length,
    verified: 0,
    routerBytes: 0,
    importCopies: 0,
    serverCopies: 0,
  };
  const dir = (c: Client) => join(work, c.ns);
  const procs: LabProcess[] = [];
  try {
    for (const c of used) {
      rmSync(dir(c), { recursive: true, force: true });
      mkdirSync(dir(c));
      procs.push(
        lab.spawn(
          c.ns,
          process.execPath,
          [
            AGENT,
            '--torrent',
            torrent,
            '--dir',
            dir(c),
            '--host',
            c.ip!,
            '--tracker',
            announce,
            '--seed',
            `${SERVER_IP}:6881`,
            '--locality',
            mode === 'locality' ? 'on' : 'off',
          ],
          { stdin: true },
        ),
      );
    }
    await Promise.all(procs.map((p, i) => wait(p, /^ready$/m, 120_000, `client ${used[i]!.ns}`)));
    const before = counters();
    const cpu0 = cpuTicks();
    const t0 = Date.now();
    for (const p of procs) p.child.stdin?.write('go\n');
    // Generous: 10 times the time the server alone would take to send each subnet one copy, at least 2 minutes.
    const limitMs = Math.max(120_000, ((10 * F * 8 * subnets) / rates.server) * 1000);
    const done = await Promise.allSettled(
      procs.map((p, i) => wait(p, /^downloaded /m, limitMs, `client ${used[i]!.ns}`).then(() => Date.now())),
    );
    const cpu1 = cpuTicks();
    const after = counters();
    row.busy = (cpu1.busy - cpu0.busy) / Math.max(1, cpu1.total - cpu0.total);
    row.routerBytes = after.router - before.router;
    row.importCopies = (after.imports - before.imports) / F;
    row.serverCopies = (after.server - before.server) / F;
    let last = 0;
    for (const [i, c] of used.entries()) {
      const d = done[i]!;
      const file = join(dir(c), 'image.bin');
      if (d.status === 'fulfilled' && existsSync(file) && (await sha256(file)) === expected) {
        row.verified++;
        last = Math.max(last, d.value);
      }
    }
    if (row.verified === used.length) row.allSecs = (last - t0) / 1000;
    else row.error = `${used.length - row.verified} clients without a verified copy`;
  } catch (err) {
    row.error = (err as Error).message.split('\n')[0]!;
  } finally {
    await lab.stop(procs);
  }
  return row;
}

const rows: Row[] = [];
const MB = 1e6;
for (const n of perSubnet) {
  for (const mode of modes) {
    const r = await runOne(mode, n);
    rows.push(r);
    process.stdout.write(
      `N=${n}x${subnets} mode=${mode} all_booted=${r.allSecs?.toFixed(1) ?? '-'}s ` +
        `router_MB=${(r.routerBytes / MB).toFixed(1)} subnet_imports=${r.importCopies.toFixed(2)} ` +
        `server_copies=${r.serverCopies.toFixed(2)} verified=${r.verified}/${r.clients}` +
        `${r.error ? ` error=${r.error}` : ''}\n`,
    );
  }
}
await lab.stop(serverProcs);

if (values.json) writeFileSync(values.json, JSON.stringify({ dhcpSecs, rows }, null, 2));
if (!quick && !values['no-results']) {
  const args = process.argv.slice(2).join(' ');
  const cmd = args ? `npm run bench:campus -- ${args}` : 'npm run bench:campus';
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const file = join(REPO, 'bench/results/campus.md');
  const head = [
    '# bench:campus: one server, a relaying router, client subnets',
    '',
    'Each run appends a block. Router MB: bytes over every router-subnet link, both directions (headers and ACKs',
    'included). Subnet imports: bytes the router delivered into the subnets / image size (the floor is one per',
    'subnet). Server copies: bytes the server sent / image size. Time: from "go" (agents loaded and leased, at',
    'their menu) to the last verified copy. `locality`: peers ask and unchoke peers on their own subnet first',
    '(the default); `flat`: every peer alike (`SessionOptions.locality: false`).',
    '',
  ];
  const block = [
    `## ${new Date().toISOString().slice(0, 16)}Z`,
    '',
    `- command: \`${cmd}\``,
    `- machine: ${cpus().length} x ${cpu}, Node ${process.version}`,
    `- ${subnets} subnets behind one router (isc-dhcp-relay with option 82 to our DHCP server); image ` +
      `${(F / 1048576).toFixed(0)} MiB, pieces ${pieceLength / 1024} KiB; links: server ${rates.server / 1e6} Mbit/s, ` +
      `router-subnet ${rates.router / 1e6} Mbit/s, clients ${rates.client / 1e6} Mbit/s (tbf both ways)`,
    `- DHCP through the relay: ${clients.length} clients leased in ${dhcpSecs.toFixed(1)} s`,
    '',
    '| clients/subnet | mode | all done (s) | router MB | subnet imports (copies) | server copies | CPU busy |',
    '| ---: | --- | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map(
      (r) =>
        `| ${r.perSubnet} | ${r.mode} | ${r.allSecs?.toFixed(1) ?? `— (${r.error})`} | ${(r.routerBytes / MB).toFixed(1)} | ` +
        `${r.importCopies.toFixed(2)} | ${r.serverCopies.toFixed(2)} | ${r.busy === undefined ? '—' : `${(r.busy * 100).toFixed(0)} %`} |`,
    ),
    '',
  ];
  mkdirSync(join(REPO, 'bench/results'), { recursive: true });
  if (!existsSync(file)) writeFileSync(file, head.join('\n'));
  appendFileSync(file, `${block.join('\n')}\n`);
  process.stdout.write('appended to bench/results/campus.md\n');
}
const failed = rows.filter((r) => r.error !== undefined);
process.exit(failed.length > 0 ? 1 : 0);
