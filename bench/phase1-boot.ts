/**
 * End-to-end boot benchmark (issue #16 item 4): `npm run bench:swarm -- --phase1 ...`.
 *
 *   npm run bench:swarm -- --phase1 [--clients 4,8,16,32] [--size 32M] [--server-rate 100M]
 *                          [--client-rate 10M] [--methods central,peers,http] [--stagger S]
 *                          [--seed-time S] [--phase1-dir DIR] [--quick] [--json FILE]
 *                          [--no-results] [--logs DIR]
 *
 * The same emulated LAN as the scale benchmark (bench/netlab.ts: one
 * namespace per host, tbf-shaped links), with the real server: `boottorrent
 * start` in the server's namespace (DHCP off, its HTTP on port 80, its
 * seeder and tracker), serving a real phase 1 (the kernel, initramfs and
 * stage 0 that `build-phase1` made; `--phase1-dir`, default the test
 * cache's base build). Each client (bench/phase1-client.ts) fetches
 * boot.ipxe, then the kernel and initramfs as the script says, then (with
 * peers) runs stage 0's protocol for the payload, then runs the real agent
 * (host mode, dry run) which downloads and verifies the OS. The clock starts
 * when the first client powers on and stops when every client has its OS
 * verified. Methods:
 *   central  today's design: phase 1 from the server (peers.phase1: false),
 *            the OS from the swarm
 *   peers    phase 1 served by peers (peers.phase1: true): kernel and stage 0
 *            from the server, the payload from a client whose agent runs
 *   http     phase 1 from the server and then the whole OS image from it
 *            over HTTP (our HTTP server): no swarm at all
 * `--stagger S`: clients power on S seconds apart, in a random order.
 * Copies are the server's own per-stage byte counts (status API) over the
 * size of one phase 1 (kernel + initramfs) or of the OS image; for `http`
 * the OS bytes are what the clients received from the image server. What
 * an emulated client skips: firmware, the kernel's boot and unpacking.
 * `--quick` (CI): N=4, a 4 MiB OS, a small synthetic phase 1, stagger 2 s,
 * no results file.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  appendFileSync,
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { cpus, homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { NetLab, unit as parseUnit, waitFor, type Host, type Proc } from './netlab.js';

const USAGE = `usage: npm run bench:swarm -- --phase1 [--clients 4,8,16,32] [--size 32M] [--server-rate 100M]
       [--client-rate 10M] [--methods central,peers,http] [--stagger S] [--seed-time S]
       [--phase1-dir DIR] [--quick] [--json FILE] [--no-results] [--logs DIR]
Rates are bits per second (100M = 100 Mbit/s), sizes bytes (32M = 32 MiB). Needs root (network namespaces).
See bench/README.md.`;

const METHODS = ['central', 'peers', 'grub', 'http'] as const;
type MethodName = (typeof METHODS)[number];

const argv = process.argv.slice(2).filter((a) => a !== '--phase1');
let parsed;
try {
  parsed = parseArgs({
    args: argv,
    options: {
      clients: { type: 'string' },
      size: { type: 'string' },
      'server-rate': { type: 'string', default: '100M' },
      'client-rate': { type: 'string', default: '10M' },
      methods: { type: 'string', default: METHODS.join(',') },
      stagger: { type: 'string' },
      'seed-time': { type: 'string', default: '30' },
      'phase1-dir': { type: 'string' },
      quick: { type: 'boolean', default: false },
      json: { type: 'string' },
      logs: { type: 'string' },
      'no-results': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
} catch (err) {
  process.stderr.write(`bench:swarm --phase1: ${(err as Error).message}\n${USAGE}\n`);
  process.exit(2);
}
const { values } = parsed;
if (values.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
const fail = (msg: string): never => {
  process.stderr.write(`bench:swarm --phase1: ${msg}\n`);
  process.exit(2);
};
const unit = (s: string, k: number): number => {
  try {
    return parseUnit(s, k);
  } catch (err) {
    return fail((err as Error).message);
  }
};
const quick = values.quick;
const Ns = (values.clients ?? (quick ? '4' : '4,8,16,32')).split(',').map(Number);
const F = unit(values.size ?? (quick ? '4M' : '32M'), 1024);
const us = unit(values['server-rate'], 1000);
const uc = unit(values['client-rate'], 1000);
const stagger = Number(values.stagger ?? (quick ? '2' : '0'));
const seedTime = Number(values['seed-time']);
const methods = values.methods.split(',') as MethodName[];
for (const m of methods)
  if (!METHODS.includes(m)) fail(`--methods: unknown method ${m} (${METHODS.join(', ')})`);
if (Ns.some((n) => !Number.isInteger(n) || n < 1 || n > 200)) fail('--clients: whole numbers 1..200');
if (!Number.isFinite(stagger) || stagger < 0 || stagger > 600) fail('--stagger: seconds, 0..600');
if (!Number.isInteger(seedTime) || seedTime < 0) fail('--seed-time: whole seconds');

const REPO = new URL('../..', import.meta.url).pathname;
const CLI = join(REPO, 'bin/boottorrent.js');
const SERVE = join(REPO, 'dist/bench/swarm-serve.js');
const CLIENT = join(REPO, 'dist/bench/phase1-client.js');
const AGENT = join(REPO, 'dist/src/agent/main.js');
const SERVER_IP = '10.78.0.1';
const DASHBOARD = `${SERVER_IP}:8480`;

const work = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'bt-bench-phase1-'));
chmodSync(work, 0o755);
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

// Phase 1: a real build, or (quick) small random files: the client checks
// digests and sizes, never runs them.
const phase1Dir = join(work, 'phase1');
mkdirSync(phase1Dir);
if (quick && values['phase1-dir'] === undefined) {
  writeFileSync(join(phase1Dir, 'vmlinuz'), randomBytes(1 << 20));
  writeFileSync(join(phase1Dir, 'initrd.img'), randomBytes(3 << 20));
  writeFileSync(join(phase1Dir, 'stage0.img'), randomBytes(256 << 10));
} else {
  const from = values['phase1-dir'] ?? join(homedir(), '.cache/boottorrent/phase1-image/base');
  for (const f of ['vmlinuz', 'initrd.img', 'stage0.img']) {
    if (!existsSync(join(from, f)))
      fail(
        `${join(from, f)} is missing: build phase 1 first (boottorrent build-phase1 --out ${from}), or name a build with --phase1-dir`,
      );
    copyFileSync(join(from, f), join(phase1Dir, f));
  }
}
const size = (f: string) => statSync(join(phase1Dir, f)).size;
/** One phase 1 as today's design sends it: kernel + initramfs. */
const P1 = size('vmlinuz') + size('initrd.img');

const srvDir = join(work, 'srv');
mkdirSync(srvDir);
chmodSync(srvDir, 0o755);
const image = join(srvDir, 'image.bin');
writeFileSync(image, randomBytes(F));
const imageSha = createHash('sha256').update(readFileSync(image)).digest('hex');

// busybox's applets, for the clients' stage 0 (as in phase 1: busybox-static).
const busybox = (() => {
  try {
    return execFileSync('sh', ['-c', 'command -v busybox'], { encoding: 'utf8' }).trim();
  } catch {
    return fail('busybox is missing: apt-get install busybox-static');
  }
})();
const bbin = join(work, 'busybox');
mkdirSync(bbin);
for (const applet of execFileSync(busybox, ['--list'], { encoding: 'utf8' }).split('\n').filter(Boolean))
  symlinkSync(busybox, join(bbin, applet));

const lab = new NetLab('10.78.0', 'cubic');
const maxN = Math.max(...Ns);
const server = lab.host('srv', 1, us, us);
const hosts: Host[] = [];
for (let i = 0; i < maxN; i++) hosts.push(lab.host(`c${i}`, 10 + i, uc, uc));

/** A fresh environment per run: the server keeps state (secret, clients) beside it. */
function writeEnv(method: MethodName): string {
  const env = join(work, `env-${method}-${Date.now()}`);
  mkdirSync(join(env, 'oss', 'img'), { recursive: true });
  writeFileSync(
    join(env, 'Boottorrent.yaml'),
    [
      'version: 1',
      'server:',
      `  interface: ${server.ifname}`,
      `  address: ${SERVER_IP}`,
      'dhcp:',
      '  mode: off',
      'boot:',
      '  default_os: img',
      '  timeout: 0',
      `  seed_time: ${seedTime}`,
      'peers:',
      `  phase1: ${method === 'peers' || method === 'grub'}`,
      // grub: UEFI clients' iPXE chains the verifying GRUB (src/server/phase1-loader.ts).
      ...(method === 'grub' ? ['  phase1_loader: grub'] : []),
      '',
    ].join('\n'),
  );
  writeFileSync(join(env, 'oss', 'img', 'config.yaml'), 'name: Image\nmethod: kexec\nkernel: image.bin\n');
  copyFileSync(image, join(env, 'oss', 'img', 'image.bin'));
  return env;
}

interface Row {
  method: MethodName;
  n: number;
  stagger: number;
  allBooted: number | undefined;
  /** Seconds until every client had phase 1 (from the first power-on). */
  phase1Done: number | undefined;
  verified: number;
  serverPhase1: number;
  serverOs: number;
  serverTotal: number;
  /** Bytes the server's interface sent (headers and everything else included). */
  serverWire: number;
  phase1Copies: number;
  osCopies: number;
  busy: number;
  /** Clients whose kernel came from another client (the GRUB loader's holders). */
  kernelsFromPeers: number;
  error?: string;
}

function cpuTicks(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: total - f[3]! - f[4]!, total };
}

interface ServerSent {
  total: number;
  phase1: number;
  os: number;
}
function serverSent(): ServerSent {
  const out = execFileSync(
    'ip',
    ['netns', 'exec', server.ns, 'curl', '-sf', '--max-time', '10', `http://${DASHBOARD}/api/v1/status`],
    { encoding: 'utf8' },
  );
  return (JSON.parse(out) as { totals: { sent: ServerSent } }).totals.sent;
}

/** A random order of 0..n-1 (Fisher-Yates). */
function shuffled(n: number): number[] {
  const a = [...Array(n).keys()];
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

async function runOne(method: MethodName, n: number): Promise<Row> {
  const row: Row = {
    method,
    n,
    stagger,
    allBooted: undefined,
    phase1Done: undefined,
    verified: 0,
    kernelsFromPeers: 0,
    serverPhase1: 0,
    serverOs: 0,
    serverTotal: 0,
    serverWire: 0,
    phase1Copies: 0,
    osCopies: 0,
    busy: 0,
  };
  const procs: Proc[] = [];
  const clients: Proc[] = [];
  try {
    const env = writeEnv(method);
    const start = lab.spawn(
      server,
      process.execPath,
      [CLI, 'start', '--env', env, '--phase1', phase1Dir, '--dashboard', DASHBOARD],
      { nice: -10 },
    );
    procs.push(start);
    await waitFor(start, /dashboard http:\/\/\S+; Ctrl-C stops/, 120_000, 'boottorrent start');
    if (method === 'http') {
      const s = lab.spawn(
        server,
        process.execPath,
        [SERVE, '--host', SERVER_IP, '--root', srvDir, '--http-port', '8080', '--tftp-port', '1069'],
        { nice: -10 },
      );
      procs.push(s);
      await waitFor(s, /ready/, 20_000, 'the image server');
    }
    const wire0 = lab.portCounters().get(server.port)?.rx ?? 0;
    const order = shuffled(n);
    const phase1At: (number | undefined)[] = new Array<number | undefined>(n).fill(undefined);
    const doneAt: (number | undefined)[] = new Array<number | undefined>(n).fill(undefined);
    const osBytes: number[] = new Array<number>(n).fill(0);
    const kernelFrom: (string | undefined)[] = new Array<string | undefined>(n).fill(undefined);
    let failed = '';
    const t0 = Date.now();
    const cpu0 = cpuTicks();
    const timers: NodeJS.Timeout[] = [];
    order.forEach((i, k) => {
      timers.push(
        setTimeout(
          () => {
            const args = [
              CLIENT,
              '--server',
              `http://${SERVER_IP}`,
              '--dir',
              join(work, `c${i}`),
              '--agent',
              AGENT,
              '--busybox',
              bbin,
            ];
            if (method === 'http')
              args.push('--image-url', `http://${SERVER_IP}:8080/img/image.bin`, '--image-sha', imageSha);
            const p = lab.spawn(hosts[i]!, process.execPath, args);
            clients[i] = p;
            procs.push(p);
            p.child.stdout!.on('data', () => {
              const out = p.output();
              if (phase1At[i] === undefined && /^BENCH phase1 /m.test(out)) phase1At[i] = Date.now() - t0;
              const v = /^BENCH verified \S+(?: (\d+))?$/m.exec(out);
              if (doneAt[i] === undefined && v) {
                doneAt[i] = Date.now() - t0;
                osBytes[i] = Number(v[1] ?? 0);
              }
              const k = /^BENCH kernel (\S+)$/m.exec(out);
              if (k && kernelFrom[i] === undefined) kernelFrom[i] = k[1]!;
              const f = /^BENCH failed (.*)$/m.exec(out);
              if (f && !failed) failed = `c${i}: ${f[1]}`;
            });
          },
          k * stagger * 1000,
        ),
      );
    });
    const limitMs = (300 + stagger * n + 4 * n) * 1000;
    const deadline = Date.now() + limitMs;
    while (doneAt.some((d) => d === undefined) && !failed && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 200));
    for (const t of timers) clearTimeout(t);
    const cpu1 = cpuTicks();
    row.busy = (cpu1.busy - cpu0.busy) / Math.max(1, cpu1.total - cpu0.total);
    const sent = serverSent();
    row.serverWire = (lab.portCounters().get(server.port)?.rx ?? 0) - wire0;
    row.serverPhase1 = sent.phase1;
    row.serverOs = method === 'http' ? osBytes.reduce((a, b) => a + b, 0) : sent.os;
    row.serverTotal = sent.total + (method === 'http' ? row.serverOs : 0);
    row.phase1Copies = row.serverPhase1 / P1;
    row.osCopies = row.serverOs / F;
    row.verified = doneAt.filter((d) => d !== undefined).length;
    row.kernelsFromPeers = kernelFrom.filter((h) => h !== undefined && h.split(':')[0] !== SERVER_IP).length;
    if (row.verified === n) {
      row.allBooted = Math.max(...doneAt.map((d) => d!)) / 1000;
      row.phase1Done = Math.max(...phase1At.map((d) => d ?? 0)) / 1000;
    } else {
      const missing = doneAt.map((d, i) => (d === undefined ? `c${i}` : '')).filter(Boolean);
      row.error = failed || `not verified within ${limitMs / 1000} s: ${missing.join(' ')}`;
      const first = Number((failed || missing[0]!).replace(/^c(\d+).*/s, '$1'));
      process.stderr.write(
        `${method} N=${n}: ${row.error}\nclient c${first} output:\n${clients[first]?.output().slice(-3000) ?? '(not started)'}\nserver output:\n${start.output().slice(-3000)}\n`,
      );
    }
  } catch (err) {
    row.error = (err as Error).message.split('\n')[0]!;
    process.stderr.write(`${method} N=${n}: ${(err as Error).message}\n`);
  } finally {
    await lab.stop(procs, 5000);
    if (values.logs) {
      mkdirSync(values.logs, { recursive: true });
      writeFileSync(join(values.logs, `${method}-${n}-server.log`), procs[0]?.output() ?? '');
      clients.forEach((p, i) => writeFileSync(join(values.logs!, `${method}-${n}-c${i}.log`), p.output()));
    }
    for (let i = 0; i < n; i++) rmSync(join(work, `c${i}`), { recursive: true, force: true });
  }
  return row;
}

const MB = 1e6;
const fmt = (x: number | undefined, d = 1) => (x === undefined ? '—' : x.toFixed(d));
const line = (r: Row) =>
  `N=${r.n} method=${r.method} all_booted=${fmt(r.allBooted)}s server_phase1_copies=${r.phase1Copies.toFixed(2)} server_os_copies=${r.osCopies.toFixed(2)}${r.error ? `  error: ${r.error}` : ''}`;
const tableRow = (r: Row) =>
  `| ${r.n} | ${r.stagger} | ${r.method} | ${fmt(r.allBooted)} | ${fmt(r.phase1Done)} | ${r.verified}/${r.n} | ${r.phase1Copies.toFixed(2)} | ${r.osCopies.toFixed(2)} | ${(r.serverPhase1 / MB).toFixed(1)} | ${(r.serverOs / MB).toFixed(1)} | ${(r.serverWire / MB).toFixed(1)} | ${r.kernelsFromPeers} | ${(100 * r.busy).toFixed(0)} |`;
const HEADER = [
  '| N | stagger (s) | method | all booted (s) | all had phase 1 (s) | verified | server phase-1 copies | server OS copies | server phase 1 (MB) | server OS (MB) | server interface sent (MB) | kernels from peers | CPU busy (%) |',
  '| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
];

process.stdout.write(
  `lab ${lab.prefix}: phase 1 ${(P1 / MB).toFixed(1)} MB (kernel ${(size('vmlinuz') / MB).toFixed(1)} + initramfs ${(size('initrd.img') / MB).toFixed(1)}; stage 0 ${(size('stage0.img') / MB).toFixed(2)}), OS ${(F / MB).toFixed(1)} MB, u_s=${us / 1e6} Mbit/s, clients ${uc / 1e6} Mbit/s, N=${Ns.join(',')}, stagger ${stagger} s\n`,
);
const rows: Row[] = [];
let bad = false;
try {
  for (const n of Ns)
    for (const m of methods) {
      const r = await runOne(m, n);
      rows.push(r);
      if (r.error) bad = true;
      process.stdout.write(`${line(r)}\n`);
    }
} finally {
  lab.destroy();
}
const remaining = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
  .split('\n')
  .filter((l) => l.startsWith(lab.prefix));
if (remaining.length > 0) throw new Error(`namespaces left behind: ${remaining.join(', ')}`);
process.stdout.write(`cleaned up: no ${lab.prefix}* namespace left\n`);
if (values.json)
  writeFileSync(
    values.json,
    JSON.stringify({ prefix: lab.prefix, phase1Size: P1, osSize: F, rows }, null, 2),
  );

if (!quick && !values['no-results']) {
  const command = `npm run bench:swarm -- --phase1 ${argv.join(' ')}`.trim();
  const out = join(REPO, 'bench/results/phase1-boot.md');
  const svg = join(REPO, `bench/results/phase1-boot${stagger > 0 ? `-stagger${stagger}` : ''}.svg`);
  writeFileSync(svg, chart(rows));
  const block = [
    `## ${new Date().toISOString()}`,
    '',
    `- machine: ${cpus().length} x ${cpus()[0]?.model ?? '?'}, Node ${process.version}`,
    `- command: \`${command}\``,
    `- phase 1 ${P1} B (kernel ${size('vmlinuz')} + initramfs ${size('initrd.img')}; stage 0 ${size('stage0.img')}), OS image ${F} B (random); server link ${us / 1e6} Mbit/s, client links ${uc / 1e6} Mbit/s each way (tc tbf); clients power on ${stagger} s apart in a random order; agents seed ${seedTime} s`,
    '- copies: the server\'s own per-stage byte counts over one phase 1 (kernel + initramfs) or one OS image; "server interface sent" is its switch port\'s counter (headers, tracker, everything)',
    '',
    ...HEADER,
    ...rows.map(tableRow),
    '',
    `![time until every client booted](${svg.slice(svg.lastIndexOf('/') + 1)})`,
    '',
  ].join('\n');
  if (!existsSync(out))
    appendFileSync(out, '# End-to-end boot: phase 1 and the OS, N clients on an emulated LAN\n\n');
  appendFileSync(out, `${block}\n`);
  process.stdout.write(`results appended to ${out}; chart ${svg}\n`);
}
process.exitCode = bad ? 1 : 0;

/** A plain SVG chart: time until every client booted against N, one line per method. */
function chart(rs: Row[]): string {
  const W = 720;
  const H = 420;
  const L = 60;
  const R = 130;
  const T = 30;
  const B = 50;
  const ns = [...new Set(rs.map((r) => r.n))].sort((a, b) => a - b);
  const ymax = Math.max(1, ...rs.map((r) => r.allBooted ?? 0)) * 1.05;
  const x = (n: number) =>
    L + (W - L - R) * (ns.length === 1 ? 0.5 : Math.log2(n / ns[0]!) / Math.log2(ns.at(-1)! / ns[0]!));
  const y = (s: number) => H - B - ((H - T - B) * s) / ymax;
  const colors: Record<MethodName, string> = {
    central: '#1f77b4',
    peers: '#d62728',
    grub: '#2ca02c',
    http: '#7f7f7f',
  };
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${L}" y="18" font-size="14">Seconds until every client has phase 1 and a verified OS${stagger > 0 ? ` (power-on ${stagger} s apart)` : ''}</text>`,
    `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="#000"/>`,
    `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#000"/>`,
  ];
  for (const n of ns) out.push(`<text x="${x(n)}" y="${H - B + 18}" text-anchor="middle">${n}</text>`);
  out.push(`<text x="${(L + W - R) / 2}" y="${H - 12}" text-anchor="middle">clients N (log scale)</text>`);
  for (let k = 0; k <= 5; k++) {
    const s = (ymax * k) / 5;
    out.push(`<line x1="${L - 4}" y1="${y(s)}" x2="${W - R}" y2="${y(s)}" stroke="#ddd"/>`);
    out.push(`<text x="${L - 8}" y="${y(s) + 4}" text-anchor="end">${s.toFixed(0)}</text>`);
  }
  let legendY = T + 10;
  for (const m of methods) {
    const pts = rs.filter((r) => r.method === m && r.allBooted !== undefined);
    if (pts.length > 0)
      out.push(
        `<polyline fill="none" stroke="${colors[m]}" stroke-width="2" points="${pts.map((r) => `${x(r.n).toFixed(1)},${y(r.allBooted!).toFixed(1)}`).join(' ')}"/>`,
      );
    out.push(
      `<line x1="${W - R + 15}" y1="${legendY}" x2="${W - R + 40}" y2="${legendY}" stroke="${colors[m]}" stroke-width="2"/>`,
      `<text x="${W - R + 45}" y="${legendY + 4}">${m}</text>`,
    );
    legendY += 20;
  }
  out.push('</svg>', '');
  return out.join('\n');
}
