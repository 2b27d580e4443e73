/**
 * Issue #14's hostile-client soak: `boottorrent start` serving full DHCP,
 * TFTP, HTTP, the tracker and the seeder on an emulated LAN (network
 * namespaces, bench/netlab.ts), one hostile host on that LAN running every
 * attack of bench/attacks.ts at once for --duration seconds, and N honest
 * clients booting one after another during it: each gets an address with
 * busybox udhcpc, fetches the iPXE binary over TFTP (busybox tftp), the
 * boot script and phase-1 kernel over HTTP (curl), then runs the host-mode
 * agent (as the fault tests do: `--no-network --dry-run`), which downloads
 * the OS over BitTorrent, verifies every file and reports to the server.
 *
 *   npm run bench:soak -- [--duration 300] [--clients 8] [--size 16M] [--seed-time 20]
 *                         [--mode both|attack|baseline] [--rates JSON]
 *                         [--logs DIR] [--no-results]
 *
 * `--mode both` (the default) runs the same schedule twice, first with no
 * attack (the baseline), then under attack, each on a fresh LAN and server.
 * Measured: every honest client booted and verified (files' SHA-256 against
 * the OS folder's), its row on the server's status API right after it
 * booted and at the end (a forged report must not have changed it), the
 * server alive throughout and exiting 0 on SIGTERM, its RSS (VmRSS of the
 * start process, each second) and event-loop delay (bench/soak-probe.ts,
 * loaded into the server with --import, each second), CPU seconds of the
 * server and of the attacker, and whether forged log lines or raw escape
 * sequences reached the server's log. Results are appended to
 * bench/results/hostile-soak.md. Needs root (namespaces).
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_RATES, type AttackRates } from './attacks.js';
import { NetLab, processCpuSeconds, waitFor, type Host, type Proc } from './netlab.js';
import { writeFaultEnv, type FaultEnv } from '../test/helpers/faults-server.js';

const USAGE = `usage: npm run bench:soak -- [--duration 300] [--clients 8] [--size 16M] [--seed-time 20]
       [--mode both|attack|baseline] [--rates JSON] [--logs DIR] [--no-results]
--rates overrides bench/attacks.ts DEFAULT_RATES, e.g. '{"announcesPerSec":10}'. Needs root.`;

const argv = process.argv.slice(2);
let values;
try {
  ({ values } = parseArgs({
    args: argv,
    options: {
      duration: { type: 'string', default: '300' },
      'seed-time': { type: 'string', default: '20' },
      clients: { type: 'string', default: '8' },
      size: { type: 'string', default: '16M' },
      mode: { type: 'string', default: 'both' },
      rates: { type: 'string', default: '{}' },
      logs: { type: 'string' },
      'no-results': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  }));
} catch (err) {
  process.stderr.write(`bench:soak: ${(err as Error).message}\n${USAGE}\n`);
  process.exit(2);
}
if (values.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
const DURATION = Number(values.duration);
const N = Number(values.clients);
/** Seconds each agent seeds after it verified: long enough to be a peer the attacker can find and hit. */
const SEED_TIME = Number(values['seed-time']);
const SIZE = (() => {
  const m = /^(\d+)([KM]?)$/i.exec(values.size);
  if (!m) throw new Error(`--size ${values.size}: expected e.g. 16M`);
  return Number(m[1]) * { '': 1, K: 1024, M: 1 << 20 }[m[2]!.toUpperCase() as '' | 'K' | 'M'];
})();
if (!(DURATION >= 10) || !Number.isInteger(N) || N < 1 || N > 50)
  throw new Error(`bad --duration/--clients\n${USAGE}`);
if (!['both', 'attack', 'baseline'].includes(values.mode))
  throw new Error(`--mode: both, attack or baseline`);
const RATES: AttackRates = { ...DEFAULT_RATES, ...(JSON.parse(values.rates) as Partial<AttackRates>) };

const REPO = new URL('../..', import.meta.url).pathname;
const CLI = join(REPO, 'bin/boottorrent.js');
const AGENT = join(REPO, 'dist/src/agent/main.js');
const ATTACKS = join(REPO, 'dist/bench/attacks.js');
const PROBE = new URL('./soak-probe.js', import.meta.url).href;
const SUBNET = '10.93.0';
const SRV = `${SUBNET}.1`;
const EVIL = `${SUBNET}.66`;
const RANGE: [string, string] = [`${SUBNET}.100`, `${SUBNET}.250`];
const DASH = `${SRV}:8480`;
const TFTP_FILE = 'ipxe.efi';
const IPXE_DIR = '/usr/lib/ipxe';
/** Links are shaped only so netlab's hosts look alike; at 1 Gbit/s the CPU, not the link, is the limit. */
const LINK = 1e9;
const mac = (i: number) => `02:00:00:93:00:${(i + 1).toString(16).padStart(2, '0')}`;
const logsDir = values.logs;
if (logsDir) mkdirSync(logsDir, { recursive: true });

function need(cmd: string, pkg: string): void {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
  } catch {
    process.stderr.write(`bench:soak needs ${cmd} (Debian package ${pkg})\n`);
    process.exit(2);
  }
}
need('busybox', 'busybox');
need('curl', 'curl');
if (process.getuid?.() !== 0) {
  process.stderr.write('bench:soak needs root (network namespaces)\n');
  process.exit(2);
}
if (!existsSync(join(IPXE_DIR, TFTP_FILE))) {
  process.stderr.write(`bench:soak needs ${IPXE_DIR}/${TFTP_FILE} (Debian package ipxe)\n`);
  process.exit(2);
}

const work = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'bt-bench-soak-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** The environment: one kexec OS, full DHCP on the LAN, PEX on (so #1 and #4 reach the seeder). */
function writeEnv(dir: string): FaultEnv {
  return writeFaultEnv(dir, {
    iface: 'eth0',
    address: SRV,
    dhcp: ['  mode: full', `  range: ${RANGE[0]}-${RANGE[1]}`],
    seedTime: SEED_TIME,
    kernelBytes: SIZE / 4,
    initrdBytes: SIZE - SIZE / 4,
    extra: ['peers:', '  lsd: false', '  pex: true'],
  });
}

/** Runs a short command in a host; resolves with its exit code (null: killed at `ms`) and output. */
async function run(
  lab: NetLab,
  h: Host,
  cmd: string,
  args: string[],
  ms: number,
): Promise<{ code: number | null; out: string; proc: Proc }> {
  const p = lab.spawn(h, cmd, args);
  const exited = new Promise<number | null>((r) => p.child.once('exit', (code) => r(code)));
  const timer = setTimeout(() => p.child.kill('SIGKILL'), ms);
  const code = await exited;
  clearTimeout(timer);
  return { code, out: p.output(), proc: p };
}

interface StatusRow {
  mac: string;
  stage: string;
  os: string | null;
  progress: number;
  error: string | null;
}

/** The status API's snapshot, or why there is none (curl's exit code and message). */
async function status(lab: NetLab, srv: Host): Promise<{ clients: StatusRow[] } | string> {
  // To a file: under a DHCP flood the snapshot holds thousands of rows, more than a Proc keeps of its output.
  const file = join(work, `status-${randomBytes(4).toString('hex')}.json`);
  try {
    const r = await run(
      lab,
      srv,
      'curl',
      ['-sSf', '-m', '20', '-o', file, `http://${DASH}/api/v1/status`],
      30_000,
    );
    if (r.code !== 0)
      return `no status (curl exit ${r.code}: ${r.out.trim().split('\n').at(-1)?.slice(0, 120)})`;
    return JSON.parse(readFileSync(file, 'utf8')) as { clients: StatusRow[] };
  } catch (err) {
    return `no status (${(err as Error).message.slice(0, 120)})`;
  } finally {
    rmSync(file, { force: true });
  }
}

function rowOf(s: { clients: StatusRow[] } | string | undefined, mac: string): string {
  if (s === undefined) return 'no status (server gone)';
  if (typeof s === 'string') return s;
  const row = s.clients.find((c) => c.mac === mac);
  return row ? `${row.stage}${row.error ? ` (${row.error})` : ''}` : 'no row';
}

interface ClientResult {
  mac: string;
  startedAt: number;
  ip: string | null;
  steps: Record<string, number>;
  failed?: string;
  booted: boolean;
  verified: boolean;
  bootSeconds?: number;
  /** Seconds from the phase's start to the end of its boot, booted or not. */
  doneAt?: number;
  rowAfter?: string;
  rowAtEnd?: string;
}

interface Sample {
  t: number;
  rss: number;
  alive: boolean;
}

interface ProbeLine {
  t: number;
  p50: number;
  p99: number;
  max: number;
  rss: number;
  heap: number;
}

interface PhaseResult {
  attack: boolean;
  /** Epoch ms of "ready": every `t` in samples counts from here. */
  t0: number;
  clients: ClientResult[];
  samples: Sample[];
  probe: ProbeLine[];
  serverDiedAt?: number;
  serverExit?: string;
  serverTail?: string;
  serverCpu: number;
  attackerCpu: number;
  attackStats?: Record<string, number>;
  /** The hostile host's packets/s each way and its send rate, from its switch port's counters. */
  attackerTraffic?: { sentPerSec: number; receivedPerSec: number; kbitPerSec: number };
  logBytes: number;
  logLines: number;
  forgedLines: number;
  rawEscapes: number;
  seconds: number;
}

/** utime + stime of a process, in seconds; NaN once it is gone. */
function cpuSeconds(pid: number | undefined): number {
  if (!pid) return 0;
  return processCpuSeconds(pid) ?? NaN;
}

/** Packets and bytes through a host's switch port: rx there is what the host sent, tx what it received. */
function portPackets(lab: NetLab, h: Host): { sent: number; received: number; bytesSent: number } {
  const [l] = JSON.parse(
    execFileSync('ip', ['-n', lab.switchNs, '-s', '-j', 'link', 'show', 'dev', h.port], { encoding: 'utf8' }),
  ) as { stats64: { rx: { packets: number; bytes: number }; tx: { packets: number } } }[];
  return { sent: l!.stats64.rx.packets, received: l!.stats64.tx.packets, bytesSent: l!.stats64.rx.bytes };
}

function vmRss(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

async function phase(attack: boolean): Promise<PhaseResult> {
  const name = attack ? 'attack' : 'baseline';
  const dir = mkdtempSync(join(work, `${name}-`));
  const env = writeEnv(dir);
  const probeFile = join(dir, 'probe.jsonl');
  const lab = new NetLab(SUBNET);
  try {
    const srv = lab.host('srv', 1, LINK, LINK);
    const evil = attack ? lab.host('evil', 66, LINK, LINK) : undefined;
    const hosts = Array.from({ length: N }, (_, i) => lab.host(`c${i}`, 20 + i, LINK, LINK));
    // Each honest host gets its address by DHCP: its MAC set, the static one netlab gave removed.
    hosts.forEach((h, i) => {
      const ipn = (...a: string[]) => execFileSync('ip', ['-n', h.ns, ...a]);
      ipn('link', 'set', h.ifname, 'down');
      ipn('link', 'set', h.ifname, 'address', mac(i));
      ipn('addr', 'flush', 'dev', h.ifname);
      ipn('link', 'set', h.ifname, 'up');
    });
    const script = join(dir, 'udhcpc.sh');
    writeFileSync(script, '#!/bin/sh\necho "LEASE $1 ${ip:-}"\n', { mode: 0o755 });

    process.env.BT_SOAK_PROBE = probeFile;
    const server = lab.spawn(srv, process.execPath, [
      '--enable-source-maps',
      '--import',
      PROBE,
      CLI,
      'start',
      '--env',
      env.envDir,
      '--phase1',
      env.phase1,
      '--dashboard',
      DASH,
      '--force-dhcp',
    ]);
    delete process.env.BT_SOAK_PROBE;
    // The whole log, counted as it comes (the Proc keeps only its tail):
    // its size, and any line the attacker forged or raw escape it got in.
    const logFile = logsDir ? join(logsDir, `${name}-server.log`) : undefined;
    if (logFile) writeFileSync(logFile, '');
    const logStats = { bytes: 0, lines: 0, forged: 0, raw: 0 };
    let partial = '';
    const onLog = (d: Buffer): void => {
      logStats.bytes += d.length;
      if (logFile) appendFileSync(logFile, d);
      const parts = (partial + d.toString()).split('\n');
      partial = parts.pop()!;
      for (const l of parts) {
        logStats.lines++;
        // A line that starts with the attacker's made-up timestamp, or an ESC/BEL/bidi character: injection got through.
        if (l.startsWith('2026-12-04T00:00:00.000Z')) logStats.forged++;
        for (const ch of l) if (RAW.has(ch)) logStats.raw++;
      }
    };
    server.child.stdout!.on('data', onLog);
    server.child.stderr!.on('data', onLog);
    await waitFor(server, /dashboard http:\/\/\S+; Ctrl-C stops/, 120_000, 'boottorrent start');
    const serverPid = server.child.pid;
    const t0 = Date.now();
    process.stdout.write(`[${name}] server ready (pid ${serverPid})\n`);

    let attacker: Proc | undefined;
    let evilStart: { sent: number; received: number; bytesSent: number; at: number } | undefined;
    if (evil) {
      attacker = lab.spawn(evil, process.execPath, [
        '--enable-source-maps',
        ATTACKS,
        '--server',
        SRV,
        '--self',
        EVIL,
        '--range',
        RANGE.join('-'),
        '--victims',
        Array.from({ length: N }, (_, i) => mac(i)).join(','),
        '--tftp-file',
        TFTP_FILE,
        '--rates',
        JSON.stringify(RATES),
      ]);
      await waitFor(attacker, /^ATTACK-STARTED$/m, 60_000, 'attacker');
      evilStart = { ...portPackets(lab, evil), at: Date.now() };
      process.stdout.write(`[${name}] attack running\n`);
    }

    const samples: Sample[] = [];
    let diedAt: number | undefined;
    const sampler = setInterval(() => {
      const alive = server.child.exitCode === null && server.child.signalCode === null;
      if (!alive && diedAt === undefined) {
        diedAt = ((server.exitedAt ?? Date.now()) - t0) / 1000;
        process.stdout.write(`[${name}] SERVER EXITED at ${diedAt.toFixed(1)} s\n`);
      }
      samples.push({ t: (Date.now() - t0) / 1000, rss: vmRss(alive ? serverPid : undefined), alive });
    }, 1000);
    const lastCpu = { server: 0, attacker: 0 };
    const cpuTimer = setInterval(() => {
      const s = cpuSeconds(serverPid);
      const a = cpuSeconds(attacker?.child.pid);
      if (Number.isFinite(s) && s > 0) lastCpu.server = s;
      if (Number.isFinite(a) && a > 0) lastCpu.attacker = a;
    }, 1000);
    const serverAlive = () => server.child.exitCode === null && server.child.signalCode === null;

    const expected = Object.fromEntries(Object.entries(env.files).map(([n, d]) => [n, sha(d)]));
    const ipxeSize = readFileSync(join(IPXE_DIR, TFTP_FILE)).length;
    const boot = async (i: number): Promise<ClientResult> => {
      const h = hosts[i]!;
      const r: ClientResult = {
        mac: mac(i),
        startedAt: (Date.now() - t0) / 1000,
        ip: null,
        steps: {},
        booted: false,
        verified: false,
      };
      const step = async (what: string, fn: () => Promise<string | undefined>): Promise<boolean> => {
        if (!serverAlive()) {
          r.failed = `${what}: server had exited`;
          return false;
        }
        const s = Date.now();
        const err = await fn();
        r.steps[what] = (Date.now() - s) / 1000;
        if (err !== undefined) r.failed = `${what}: ${err}`;
        return err === undefined;
      };
      const ok =
        (await step('dhcp', async () => {
          // -t 15 -T 2: about 30 s of DISCOVERs, as long as a PXE ROM tries.
          const u = await run(
            lab,
            h,
            'busybox',
            ['udhcpc', '-i', h.ifname, '-f', '-q', '-n', '-t', '15', '-T', '2', '-s', script],
            60_000,
          );
          const ip = /^LEASE bound (\S+)/m.exec(u.out)?.[1];
          if (u.code !== 0 || !ip)
            return `no lease (exit ${u.code}, ${(u.out.match(/discover/g) ?? []).length} DISCOVERs sent)`;
          r.ip = ip;
          execFileSync('ip', ['-n', h.ns, 'addr', 'add', `${ip}/24`, 'dev', h.ifname]);
          return undefined;
        })) &&
        (await step('tftp', async () => {
          const out = join(dir, `c${i}-${TFTP_FILE}`);
          const t = await run(lab, h, 'busybox', ['tftp', '-g', '-r', TFTP_FILE, '-l', out, SRV], 90_000);
          const got = existsSync(out) ? readFileSync(out).length : -1;
          return t.code === 0 && got === ipxeSize
            ? undefined
            : `exit ${t.code}, ${got} of ${ipxeSize} bytes: ${t.out.trim().split('\n').at(-1) ?? ''}`;
        })) &&
        (await step('http', async () => {
          for (const path of [`/boot.ipxe?mac=${mac(i)}`, `/phase1/vmlinuz?mac=${mac(i)}`]) {
            const c = await run(
              lab,
              h,
              'curl',
              ['-sf', '-m', '30', '-o', '/dev/null', `http://${SRV}${path}`],
              40_000,
            );
            if (c.code !== 0) return `GET ${path}: curl exit ${c.code}`;
          }
          return undefined;
        })) &&
        (await step('agent', async () => {
          const adir = join(dir, `agent-${i}`);
          mkdirSync(adir);
          const a = await run(
            lab,
            h,
            process.execPath,
            [
              '--enable-source-maps',
              AGENT,
              '--server',
              `http://${SRV}`,
              '--mac',
              mac(i),
              '--dir',
              adir,
              '--no-network',
              '--dry-run',
              '--port',
              '0',
            ],
            240_000,
          );
          if (logsDir) writeFileSync(join(logsDir, `${name}-agent-${i}.log`), a.out);
          if (a.code !== 0) return `agent exit ${a.code}: ${a.out.slice(-400)}`;
          if (!/verified \d+ files of alpha/.test(a.out)) return 'agent did not say it verified';
          r.booted = /dry-run: would run: kexec -l/.test(a.out);
          const bad = Object.entries(expected).filter(
            ([n, want]) =>
              !existsSync(join(adir, 'alpha', n)) || sha(readFileSync(join(adir, 'alpha', n))) !== want,
          );
          r.verified = bad.length === 0;
          if (!r.verified) return `files differ from the OS folder: ${bad.map(([n]) => n).join(', ')}`;
          return r.booted ? undefined : 'agent verified but did not boot';
        }));
      r.doneAt = (Date.now() - t0) / 1000;
      if (ok) {
        r.bootSeconds = Object.values(r.steps).reduce((a, b) => a + b, 0);
        r.rowAfter = rowOf(await status(lab, srv), r.mac);
      }
      process.stdout.write(
        `[${name}] client ${r.mac}: ${ok ? `booted in ${r.bootSeconds?.toFixed(1)} s, row ${r.rowAfter}` : `FAILED ${r.failed}`}\n`,
      );
      return r;
    };

    // Client i starts at (i + 1) / (N + 1) of the duration: each boots in a different phase of the attack.
    // A server that died ends the phase: the clients not started yet are reported as not booted.
    const runs = Array.from({ length: N }, async (_, i) => {
      const at = t0 + ((i + 1) * DURATION * 1000) / (N + 1);
      while (Date.now() < at && serverAlive()) await sleep(200);
      return boot(i);
    });
    const deadline = Date.now() + DURATION * 1000;
    const clients = await Promise.all(runs);
    while (Date.now() < deadline && serverAlive()) await sleep(500);

    // The end: what the server says about every honest client now, then stop everything.
    const end = serverAlive() ? await status(lab, srv) : undefined;
    for (const c of clients) c.rowAtEnd = rowOf(end, c.mac);
    let attackStats: Record<string, number> | undefined;
    let attackerTraffic: PhaseResult['attackerTraffic'];
    if (attacker && evil && evilStart) {
      const now = portPackets(lab, evil);
      const secs = (Date.now() - evilStart.at) / 1000;
      attackerTraffic = {
        sentPerSec: (now.sent - evilStart.sent) / secs,
        receivedPerSec: (now.received - evilStart.received) / secs,
        kbitPerSec: ((now.bytesSent - evilStart.bytesSent) * 8) / 1000 / secs,
      };
    }
    if (attacker) {
      const cpu = cpuSeconds(attacker.child.pid);
      if (Number.isFinite(cpu) && cpu > 0) lastCpu.attacker = cpu;
      await lab.stop([attacker], 5000);
      const done = /^ATTACK-DONE (.*)$/m.exec(attacker.output())?.[1];
      attackStats = done ? (JSON.parse(done) as Record<string, number>) : undefined;
      if (logsDir) writeFileSync(join(logsDir, `${name}-attacker.log`), attacker.output());
    }
    const cpu = cpuSeconds(serverPid);
    if (Number.isFinite(cpu) && cpu > 0) lastCpu.server = cpu;
    clearInterval(sampler);
    clearInterval(cpuTimer);
    const seconds = (Date.now() - t0) / 1000;
    let serverExit: string;
    if (serverAlive()) {
      await lab.stop([server], 10_000);
      serverExit = `stopped by SIGTERM: exit ${server.child.exitCode ?? server.child.signalCode}`;
    } else serverExit = `exited by itself: ${server.child.exitCode ?? server.child.signalCode}`;
    const log = server.output();
    const probe = existsSync(probeFile)
      ? readFileSync(probeFile, 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l) as ProbeLine)
          // From "ready" on: hashing the OS at start is not what the soak measures.
          .filter((l) => l.t >= t0)
      : [];
    if (logsDir) writeFileSync(join(logsDir, `${name}-samples.json`), JSON.stringify({ t0, samples, probe }));
    return {
      attack,
      t0,
      clients,
      samples,
      probe,
      ...(diedAt !== undefined ? { serverDiedAt: diedAt, serverTail: log.slice(-1500) } : {}),
      serverExit,
      serverCpu: lastCpu.server,
      attackerCpu: lastCpu.attacker,
      ...(attackStats ? { attackStats } : {}),
      ...(attackerTraffic ? { attackerTraffic } : {}),
      logBytes: logStats.bytes,
      logLines: logStats.lines,
      forgedLines: logStats.forged,
      rawEscapes: logStats.raw,
      seconds,
    };
  } finally {
    lab.destroy();
  }
}

/** Characters that must never reach the log raw: ESC, BEL, a bidi override, a line separator. */
const RAW = new Set(['\u001b', '\u0007', '\u202e', '\u2028']);
const MiB = 1 << 20;
const pct = (xs: number[], p: number): number => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};
/** Text for a table cell: control characters (an injected report) shown escaped, pipes escaped, kept short. */
const cell = (s: string, max = 160): string =>
  JSON.stringify(s.length > max ? `${s.slice(0, max)}…` : s)
    .slice(1, -1)
    .replace(/\|/g, '\\|');
const f1 = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '—' : x.toFixed(1));

function summary(r: PhaseResult) {
  const rss = r.samples.filter((s) => s.alive && s.rss > 0).map((s) => s.rss / MiB);
  const half = r.samples.filter((s) => s.alive && s.rss > 0 && s.t >= r.seconds / 2);
  // RSS growth over the second half, MiB per minute (a leak keeps growing; a bounded server levels off).
  const slope =
    half.length >= 2 ? ((half.at(-1)!.rss - half[0]!.rss) / MiB / (half.at(-1)!.t - half[0]!.t)) * 60 : NaN;
  const ok = r.clients.filter((c) => c.booted && c.verified);
  const boots = ok.map((c) => c.bootSeconds ?? 0);
  return {
    booted: ok.length,
    // A forged report (#7) shows as a booted client's row changed after it left.
    kept: ok.filter((c) => c.rowAfter !== undefined && c.rowAfter === c.rowAtEnd).length,
    rssStart: rss[0],
    rssPeak: rss.length ? Math.max(...rss) : NaN,
    rssEnd: rss.at(-1),
    slope,
    p50: pct(
      r.probe.map((p) => p.p50),
      50,
    ),
    p99med: pct(
      r.probe.map((p) => p.p99),
      50,
    ),
    p99worst: r.probe.length ? Math.max(...r.probe.map((p) => p.p99)) : NaN,
    max: r.probe.length ? Math.max(...r.probe.map((p) => p.max)) : NaN,
    bootMean: boots.length ? boots.reduce((a, b) => a + b, 0) / boots.length : NaN,
    bootMax: boots.length ? Math.max(...boots) : NaN,
  };
}

/** The run in ten windows: RSS at each window's end, the worst event-loop delay in it, clients booted by then. */
function timeline(r: PhaseResult): string[] {
  const step = Math.max(1, Math.ceil(r.seconds / 10));
  const out = [
    '| until (s) | server RSS (MiB) | event-loop delay, worst p99 / max in the window (ms) | honest clients booted |',
    '| ---: | ---: | --- | ---: |',
  ];
  for (let end = step; end < r.seconds + step; end += step) {
    const inWin = r.probe.filter((p) => (p.t - r.t0) / 1000 > end - step && (p.t - r.t0) / 1000 <= end);
    const dead = r.serverDiedAt !== undefined && r.serverDiedAt <= end;
    const last = dead ? undefined : r.samples.filter((x) => x.t <= end && x.alive && x.rss > 0).at(-1);
    const booted = r.clients.filter((c) => c.booted && c.verified && (c.doneAt ?? Infinity) <= end).length;
    out.push(
      `| ${end} | ${dead ? 'exited' : last ? f1(last.rss / MiB) : '—'} | ${inWin.length ? `${f1(Math.max(...inWin.map((p) => p.p99)))} / ${f1(Math.max(...inWin.map((p) => p.max)))}` : '—'} | ${booted} |`,
    );
  }
  return out;
}

const phases: PhaseResult[] = [];
try {
  if (values.mode !== 'attack') phases.push(await phase(false));
  if (values.mode !== 'baseline') phases.push(await phase(true));
} catch (err) {
  process.stderr.write(`bench:soak: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
}

let commit = '?';
try {
  commit = execFileSync('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
  if (
    execFileSync('git', ['-C', REPO, 'status', '--porcelain', '--untracked-files=no'], {
      encoding: 'utf8',
    }).trim()
  )
    commit += ' (with uncommitted changes)';
} catch {
  // not a git checkout
}

const lines: string[] = [
  `## ${new Date().toISOString()}`,
  '',
  `- machine: ${cpus().length} x ${cpus()[0]?.model ?? '?'}, Node ${process.version}; commit ${commit}`,
  `- command: \`npm run bench:soak -- ${argv.map((a) => (/^[\w.,:/=-]+$/.test(a) ? a : `'${a}'`)).join(' ')}\``.replace(
    / -- `$/,
    '`',
  ),
  `- ${N} honest clients, client i starting at (i+1)/${N + 1} of ${DURATION} s; OS ${(SIZE / MiB).toFixed(0)} MiB (kexec kernel + initrd); links 1 Gbit/s (tbf); full DHCP range ${RANGE.join('-')}; PEX on; each agent seeds ${SEED_TIME} s after it verified (in its agent time)`,
  `- attack rates: ${Object.entries(RATES)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ')}`,
  '',
  '| phase | honest booted + verified | server | RSS start / peak / end (MiB) | RSS growth, 2nd half (MiB/min) | event-loop delay p50 (ms) | p99: median second / worst second (ms) | max (ms) | server CPU (s) | attacker CPU (s) | boot mean / max (s) | status rows unchanged at the end | server log (lines, KiB) | forged log lines / raw escapes |',
  '| --- | ---: | --- | --- | ---: | ---: | --- | ---: | ---: | ---: | --- | ---: | --- | --- |',
];
for (const r of phases) {
  const s = summary(r);
  lines.push(
    `| ${r.attack ? 'attack' : 'baseline'} | ${s.booted}/${N} | ${r.serverDiedAt !== undefined ? `**died at ${f1(r.serverDiedAt)} s**` : 'alive'}; ${r.serverExit} | ${f1(s.rssStart)} / ${f1(s.rssPeak)} / ${f1(s.rssEnd)} | ${f1(s.slope)} | ${f1(s.p50)} | ${f1(s.p99med)} / ${f1(s.p99worst)} | ${f1(s.max)} | ${f1(r.serverCpu)} | ${r.attack ? f1(r.attackerCpu) : '—'} | ${f1(s.bootMean)} / ${f1(s.bootMax)} | ${s.kept}/${s.booted} | ${r.logLines}, ${(r.logBytes / 1024).toFixed(0)} | ${r.forgedLines} / ${r.rawEscapes} |`,
  );
}
for (const r of phases) {
  lines.push(
    '',
    `### ${r.attack ? 'Under attack' : 'Baseline'}: honest clients`,
    '',
    '| client | start (s) | address | dhcp / tftp / http / agent (s) | booted | verified | status row after boot | at the end |',
    '| --- | ---: | --- | --- | --- | --- | --- | --- |',
  );
  for (const c of r.clients)
    lines.push(
      `| ${c.mac} | ${c.startedAt.toFixed(0)} | ${c.ip ?? '—'} | ${['dhcp', 'tftp', 'http', 'agent'].map((k) => f1(c.steps[k])).join(' / ')} | ${c.booted ? 'yes' : `**no**: ${cell(c.failed ?? '')}`} | ${c.verified ? 'yes' : 'no'} | ${cell(c.rowAfter ?? '—')} | ${cell(c.rowAtEnd ?? '—')} |`,
    );
  lines.push('', ...timeline(r));
  if (r.serverTail)
    lines.push(
      '',
      "The server's last output:",
      '',
      '```',
      r.serverTail.split('\n').slice(-20).join('\n').replaceAll('\u001b', '\\e'),
      '```',
    );
  if (r.attackerTraffic)
    lines.push(
      '',
      `The hostile host sent ${r.attackerTraffic.sentPerSec.toFixed(0)} packets/s (${r.attackerTraffic.kbitPerSec.toFixed(0)} kbit/s) and received ${r.attackerTraffic.receivedPerSec.toFixed(0)} packets/s on average while it ran (its switch port's counters).`,
    );
  if (r.attackStats)
    lines.push(
      '',
      'Attacker counters at the end (sent, answered, refused, closed by the server; `open.*` are connections held when it stopped):',
      '',
      '```',
      Object.entries(r.attackStats)
        .map(([k, v]) => `${k} ${v}`)
        .join('\n'),
      '```',
    );
}
const block = lines.join('\n');
process.stdout.write(`\n${block}\n`);
if (!values['no-results']) {
  const out = join(REPO, 'bench/results/hostile-soak.md');
  if (!existsSync(out)) appendFileSync(out, '# Hostile-client soak (issue #14)\n\n');
  appendFileSync(out, `${block}\n\n`);
  process.stdout.write(`results appended to ${out}\n`);
}
const pass = phases.every((r) => summary(r).booted === N && r.serverDiedAt === undefined);
process.exit(pass ? 0 : 1);
