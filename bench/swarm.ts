/**
 * Scale benchmark: N clients fetch one random image on an emulated LAN
 * (network namespaces, every link shaped with tc tbf in both directions),
 * by each method in turn, against the Kumar & Ross (2006) lower bound
 * T = max(F/u_s, F/d_min, N·F/(u_s + Σu_i)).
 *
 *   npm run bench:swarm -- [--clients 1,2,4,8,16,32] [--size 32M] [--server-rate 100M]
 *                          [--client-rate 10M] [--methods boottorrent,http,nginx,tftp,aria2]
 *                          [--piece-length 256K] [--choker lan|standard] [--quick] [--json FILE] [--no-results]
 *                          [--timeline FILE] [--logs DIR] [--cc cubic|bbr|reno]
 *                          [--tracker ours,opentracker] [--repeat K]
 *
 * Rates are bits per second (100M = 100 Mbit/s); sizes bytes (32M = 32 MiB).
 * Every client is a process in its own namespace; every method's server
 * processes run at nice -10 (the server is a machine of its own). Methods:
 *   boottorrent  our seeder + our tracker, clients run as the agent does
 *                (bench/swarm-agent.ts: BitTorrentClient + TorrentSession,
 *                the server's tracker and its seeder as a direct peer),
 *                loaded before the clock starts (the agent sits at its menu)
 *                and seeding on after they finish until every client is done
 *   http         our HTTP server, N curl clients at once
 *   nginx        the same with nginx (is the server itself the limit?)
 *   tftp         our TFTP server, N tftp-hpa clients at once
 *   aria2        the older stack: aria2c seeder + opentracker + aria2c
 *                clients with its settings (no LPD, PEX on, seed on)
 * `--tracker ours,opentracker` runs the boottorrent method once per
 * tracker: ours (`boottorrent tracker`), and Debian's opentracker with a
 * whitelist and its default intervals (as a site that already runs one
 * would), shown as `boottorrent+opentracker`.
 * `--repeat K` runs each N and method K times; the results then add a
 * table of medians and spread (min-max), which the chart shows.
 * Every run records CPU busy (the whole machine) and the CPU time
 * (user + system) of each server process and each client process from the
 * clock's start to the last client done (mean per client; a client that
 * exited before, like curl, has no figure).
 * Bytes are counted on the interfaces (headers and TCP ACKs included).
 * `--timeline FILE` appends one JSON line per second of each run: every
 * client's download and upload rate and the server's (Mbit/s, from the
 * switch ports' counters) and which clients are done, to see where link
 * capacity goes unused.
 * `--cc` sets the TCP congestion control of every host. The default is
 * cubic, Debian's (the phase-1 kernel's and a Debian server's), whatever
 * this host's own default is; a host that has cubic but does not allow it
 * in namespaces gets it allowed for the run (restored afterwards). On
 * the VMs this was developed on the host default is bbr, which on these
 * tbf-shaped links retransmitted 11-20 % of all segments (cubic: 3 %).
 * `--logs DIR` keeps every process's output (DIR/<method>-<N>-<role>.log).
 * `--quick` (CI) runs N=4 with a 4 MiB image and writes no results file.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  appendFileSync,
  chmodSync,
  createReadStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  writeFileSync,
  writeSync,
  openSync,
  closeSync,
} from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createTorrent } from '../src/torrent/create.js';
import { encodeTorrent } from '../src/torrent/metainfo.js';
import { NetLab, cpuTicks, processCpuSeconds, unit, waitFor, which, type Host, type Proc } from './netlab.js';

// `--phase1`: the end-to-end boot benchmark (phase 1 and the OS), its own script.
if (process.argv.slice(2).includes('--phase1')) {
  await import('./phase1-boot.js');
  process.exit();
}

const USAGE = `usage: npm run bench:swarm -- [--clients 1,2,4,8,16,32] [--size 32M] [--server-rate 100M]
       [--client-rate 10M] [--methods boottorrent,http,nginx,tftp,aria2] [--piece-length 256K]
       [--choker lan|standard] [--quick] [--json FILE] [--no-results] [--timeline FILE] [--logs DIR]
       [--cc cubic|reno|bbr] [--tracker ours,opentracker] [--repeat K]
Rates are bits per second (100M = 100 Mbit/s), sizes bytes (32M = 32 MiB). Needs root (network namespaces).
See bench/README.md.`;

const argv = process.argv.slice(2);
let parsed;
try {
  parsed = parseArgs({
    args: argv,
    options: {
      clients: { type: 'string' },
      size: { type: 'string' },
      'server-rate': { type: 'string', default: '100M' },
      'client-rate': { type: 'string', default: '10M' },
      methods: { type: 'string', default: 'boottorrent,http,nginx,tftp,aria2' },
      'piece-length': { type: 'string', default: '256K' },
      choker: { type: 'string', default: 'lan' },
      quick: { type: 'boolean', default: false },
      json: { type: 'string' },
      timeline: { type: 'string' },
      logs: { type: 'string' },
      cc: { type: 'string', default: 'cubic' },
      tracker: { type: 'string', default: 'ours' },
      repeat: { type: 'string', default: '1' },
      'no-results': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
} catch (err) {
  process.stderr.write(`bench:swarm: ${(err as Error).message}\n${USAGE}\n`);
  process.exit(2);
}
const { values } = parsed;
if (values.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}

const quick = values.quick;
const Ns = (values.clients ?? (quick ? '4' : '1,2,4,8,16,32')).split(',').map(Number);
const F = unit(values.size ?? (quick ? '4M' : '32M'), 1024);
const us = unit(values['server-rate'], 1000); // bits/s
const uc = unit(values['client-rate'], 1000);
const pieceLength = unit(values['piece-length'], 1024);
const trackers = values.tracker.split(',');
for (const t of trackers)
  if (!['ours', 'opentracker'].includes(t)) throw new Error(`--tracker ${t}: ours or opentracker`);
const methods = values.methods.split(',').flatMap((m) => {
  if (!['boottorrent', 'http', 'nginx', 'tftp', 'aria2'].includes(m)) throw new Error(`unknown method ${m}`);
  return m === 'boottorrent' ? trackers.map((t) => (t === 'ours' ? m : `${m}+${t}`)) : [m];
});
const repeat = Number(values.repeat);
if (!Number.isInteger(repeat) || repeat < 1 || repeat > 50) throw new Error('--repeat: a whole number 1..50');
if (Ns.some((n) => !Number.isInteger(n) || n < 1 || n > 200))
  throw new Error('--clients: whole numbers 1..200');

const REPO = new URL('../..', import.meta.url).pathname;
const CLI = join(REPO, 'bin/boottorrent.js');
const SERVE = join(REPO, 'dist/bench/swarm-serve.js');
const AGENT = join(REPO, 'dist/bench/swarm-agent.js');
const SERVER_IP = '10.77.0.1';
// Extra node flags for our seeder and clients, e.g. '--cpu-prof --cpu-prof-dir=/tmp/prof' to profile them.
const NODE_ARGS = (process.env.BENCH_SWARM_NODE_ARGS ?? '').split(' ').filter(Boolean);

/** Kumar & Ross (2006): no distribution can finish before this (seconds). */
function bound(n: number): number {
  const bits = F * 8;
  return Math.max(bits / us, bits / uc, (n * bits) / (us + n * uc));
}

async function sha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

interface ClientResult {
  secs: number | undefined;
  ok: boolean;
  uploaded: number;
}
interface Row {
  method: string;
  n: number;
  allSecs: number | undefined;
  meanSecs: number | undefined;
  maxSecs: number | undefined;
  serverSent: number;
  meanUploaded: number;
  verified: number;
  bound: number;
  /** TCP segments retransmitted over all hosts, as a share of segments sent. */
  retrans?: number;
  /** Share of the machine's CPU time busy (user, system, softirq) from start to the last client done. */
  busy?: number;
  /** CPU seconds (user + system) of the server's processes, start to the last client done. */
  serverCpu?: number;
  /** Mean CPU seconds per client process over the same time (clients still running at the end). */
  clientCpu?: number;
  error?: string;
}

// Files live in RAM, as on a booting client (the agent downloads into a
// tmpfs): on disk, 32 clients' writes and the final fsync of each download
// waited on the disk, which no real client shares with 31 others.
const work = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'bt-bench-swarm-'));
chmodSync(work, 0o755);
const lab = new NetLab('10.77.0', values.cc);
const congestionControl = lab.tcpCongestionControl();
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

/**
 * The server is a machine of its own on a real LAN; here it shares two
 * cores with N client processes, and with an equal share per process the
 * CPU scheduler starved it (at N = 32 our seeder sent 6-18 Mbit/s of its
 * 100 while clients waited). Every method's server processes run at nice
 * -10, so the server gets about the CPU it would have alone.
 */
const spawnServer = (cmd: string, args: string[]): Proc => lab.spawn(server, cmd, args, { nice: -10 });

const maxN = Math.max(...Ns);
const server = lab.host('srv', 1, us, us);
const hosts: Host[] = [];
for (let i = 0; i < maxN; i++) hosts.push(lab.host(`c${i}`, 10 + i, uc, uc));

// The image and its two torrents (ours and opentracker's announce): one info dictionary, one infohash.
const srvDir = join(work, 'srv');
mkdirSync(srvDir);
chmodSync(srvDir, 0o755);
const image = join(srvDir, 'image.bin');
{
  const fd = openSync(image, 'w', 0o644);
  for (let off = 0; off < F; off += 1 << 20) writeSync(fd, randomBytes(Math.min(1 << 20, F - off)));
  closeSync(fd);
}
const expected = await sha256(image);
const { meta } = await createTorrent(image, {
  pieceLength,
  announce: [[`http://${SERVER_IP}:6969/announce`]],
  creationDate: null,
});
const torrentOurs = join(work, 'ours.torrent');
writeFileSync(
  torrentOurs,
  encodeTorrent(meta.infoBuffer, { announce: [[`http://${SERVER_IP}:6969/announce`]] }),
);
const torrentOld = join(work, 'old.torrent');
writeFileSync(
  torrentOld,
  encodeTorrent(meta.infoBuffer, { announce: [[`http://${SERVER_IP}:6969/announce`]] }),
);

const clientDir = (i: number) => join(work, `c${i}`);
const clientFile = (i: number) => join(clientDir(i), 'image.bin');

interface Method {
  /** Starts the server side; returns its processes. */
  server(): Promise<Proc[]>;
  /** Starts client i; `done` is called when its copy is complete. */
  client(i: number, h: Host, done: () => void): Proc;
  /**
   * Clients that load first, print "ready" and start on a line "go" on
   * stdin: the agent, which is running at its menu before a download
   * starts. The clock starts at "go".
   */
  startsOnGo?: boolean;
}

const aria2Common = [
  '--enable-dht=false',
  '--enable-dht6=false',
  '--bt-enable-lpd=false', // the older tool's default: bt_enable_lpd False
  '--enable-peer-exchange=true', // enable_peer_exchange True
  '--seed-ratio=0.0', // seed on (until the benchmark stops it)
  '--console-log-level=error',
  '--summary-interval=0',
  '--listen-port=6881',
  '--check-certificate=false',
];

/** Debian's opentracker on the server, port 6969, this image whitelisted, its default intervals. */
async function startOpentracker(): Promise<Proc> {
  const ot = which('opentracker', 'opentracker');
  // Debian's opentracker is whitelist-only, will not run as root, and chroots to -d.
  const d = join(work, 'opentracker');
  mkdirSync(d, { recursive: true });
  chmodSync(d, 0o755);
  writeFileSync(join(d, 'whitelist.txt'), `${meta.infoHashHex}\n`, { mode: 0o644 });
  const tracker = spawnServer(ot, [
    '-i',
    SERVER_IP,
    '-p',
    '6969',
    '-P',
    '6969',
    '-d',
    d,
    '-w',
    'whitelist.txt',
    '-u',
    'nobody',
  ]);
  await new Promise((r) => setTimeout(r, 500));
  if (tracker.exitedAt !== undefined) throw new Error(`opentracker exited: ${tracker.output()}`);
  return tracker;
}

function methodFor(name: string): Method {
  switch (name) {
    case 'boottorrent':
    case 'boottorrent+opentracker':
      return {
        async server() {
          let tracker: Proc;
          if (name === 'boottorrent') {
            tracker = spawnServer(process.execPath, [
              CLI,
              'tracker',
              '--host',
              SERVER_IP,
              '--port',
              '6969',
              '--torrent',
              torrentOurs,
            ]);
            await waitFor(tracker, /serving 1 infohash/, 20_000, 'our tracker');
          } else tracker = await startOpentracker();
          const seed = spawnServer(process.execPath, [
            ...NODE_ARGS,
            CLI,
            'seed',
            torrentOurs,
            image,
            '--host',
            SERVER_IP,
            '--port',
            '6881',
            '--choker',
            values.choker,
          ]);
          await waitFor(seed, /seeding [0-9a-f]{40}/, 60_000, 'our seeder');
          return [tracker, seed];
        },
        startsOnGo: true,
        client(i, h, done) {
          const p = lab.spawn(
            h,
            process.execPath,
            [
              ...NODE_ARGS,
              AGENT,
              '--torrent',
              torrentOurs,
              '--dir',
              clientDir(i),
              '--host',
              h.ip,
              '--port',
              '6881',
              '--tracker',
              `http://${SERVER_IP}:6969/announce`,
              '--seed',
              `${SERVER_IP}:6881`,
              '--choker',
              values.choker,
            ],
            { stdin: true },
          );
          const onData = () => {
            if (/^downloaded /m.test(p.output())) {
              p.child.stdout?.off('data', onData);
              done();
            }
          };
          p.child.stdout?.on('data', onData);
          return p;
        },
      };
    case 'http':
    case 'nginx': {
      const port = name === 'http' ? 8080 : 8081;
      return {
        async server() {
          if (name === 'http') {
            const s = spawnServer(process.execPath, [SERVE, '--host', SERVER_IP, '--root', srvDir]);
            await waitFor(s, /ready/, 20_000, 'our HTTP/TFTP server');
            return [s];
          }
          const bin = which('nginx', 'nginx-light');
          const d = join(work, 'nginx');
          mkdirSync(join(d, 'tmp'), { recursive: true });
          const t = (k: string) => `${k} ${join(d, 'tmp')};`;
          writeFileSync(
            join(d, 'nginx.conf'),
            [
              'master_process off;',
              'worker_processes 1;',
              `pid ${join(d, 'nginx.pid')};`,
              `error_log ${join(d, 'error.log')} warn;`,
              'events { worker_connections 1024; }',
              'http {',
              '  access_log off;',
              '  sendfile on;',
              '  default_type application/octet-stream;',
              `  ${t('client_body_temp_path')} ${t('proxy_temp_path')} ${t('fastcgi_temp_path')}`,
              `  ${t('uwsgi_temp_path')} ${t('scgi_temp_path')}`,
              `  server { listen ${SERVER_IP}:${port}; location /img/ { alias ${srvDir}/; } }`,
              '}',
              '',
            ].join('\n'),
          );
          const s = spawnServer(bin, ['-p', d, '-c', join(d, 'nginx.conf'), '-g', 'daemon off;']);
          // nginx prints nothing when it is up: poll until it answers.
          for (let i = 0; ; i++) {
            try {
              execFileSync('ip', [
                'netns',
                'exec',
                hosts[0]!.ns,
                'curl',
                '-sf',
                '-o',
                '/dev/null',
                '-r',
                '0-0',
                `http://${SERVER_IP}:${port}/img/image.bin`,
              ]);
              break;
            } catch (err) {
              if (s.exitedAt !== undefined || i > 100)
                throw new Error(`nginx did not come up: ${s.output()}`, { cause: err });
              await new Promise((r) => setTimeout(r, 100));
            }
          }
          return [s];
        },
        client(i, h, done) {
          const p = lab.spawn(h, 'curl', [
            '-sS',
            '-o',
            clientFile(i),
            `http://${SERVER_IP}:${port}/img/image.bin`,
          ]);
          p.child.on('exit', done);
          return p;
        },
      };
    }
    case 'tftp':
      return {
        async server() {
          which('tftp', 'tftp-hpa');
          const s = spawnServer(process.execPath, [SERVE, '--host', SERVER_IP, '--root', srvDir]);
          await waitFor(s, /ready/, 20_000, 'our HTTP/TFTP server');
          return [s];
        },
        client(i, h, done) {
          // tftp-hpa asks no options: 512-byte blocks, one block in flight (RFC 1350).
          const p = lab.spawn(h, 'tftp', [
            '-m',
            'binary',
            SERVER_IP,
            '69',
            '-c',
            'get',
            'image.bin',
            clientFile(i),
          ]);
          p.child.on('exit', done);
          return p;
        },
      };
    case 'aria2':
      return {
        async server() {
          which('aria2c', 'aria2');
          const tracker = await startOpentracker();
          const seed = spawnServer('aria2c', [...aria2Common, '-V', '-d', srvDir, torrentOld]);
          // aria2c prints nothing at this log level once seeding: give it time to check and announce.
          await new Promise((r) => setTimeout(r, 3000));
          if (seed.exitedAt !== undefined) throw new Error(`aria2c seeder exited: ${seed.output()}`);
          return [tracker, seed];
        },
        client(i, h, done) {
          const hook = join(work, 'aria2-done.sh');
          if (!existsSync(hook)) writeFileSync(hook, '#!/bin/sh\ntouch "$3.done"\n', { mode: 0o755 });
          const p = lab.spawn(h, 'aria2c', [
            ...aria2Common,
            '-d',
            clientDir(i),
            `--on-bt-download-complete=${hook}`,
            torrentOld,
          ]);
          const marker = `${clientFile(i)}.done`;
          const timer = setInterval(() => {
            if (existsSync(marker)) {
              clearInterval(timer);
              done();
            }
          }, 50);
          p.child.on('exit', () => clearInterval(timer));
          return p;
        },
      };
    default:
      throw new Error(`unknown method ${name}`);
  }
}

/** Samples the switch ports each second into `file` (JSON lines); returns the interval to clear. */
function timeline(
  file: string,
  method: string,
  n: number,
  t0: number,
  used: readonly Host[],
  doneAt: readonly (number | undefined)[],
): NodeJS.Timeout {
  let last = lab.portCounters();
  let lastAt = Date.now();
  return setInterval(() => {
    const now = Date.now();
    const cur = lab.portCounters();
    const dt = (now - lastAt) / 1000;
    const mbit = (a: number, b: number) => Number((((a - b) * 8) / dt / 1e6).toFixed(2));
    const rate = (h: Host) => {
      const c = cur.get(h.port);
      const l = last.get(h.port);
      return c && l ? { down: mbit(c.tx, l.tx), up: mbit(c.rx, l.rx) } : { down: 0, up: 0 };
    };
    const rates = used.map(rate);
    const line = {
      method,
      n,
      t: Number(((now - t0) / 1000).toFixed(1)),
      server: rate(server).up,
      down: rates.map((r) => r.down),
      up: rates.map((r) => r.up),
      done: doneAt.map((d) => d !== undefined),
    };
    appendFileSync(file, `${JSON.stringify(line)}\n`);
    last = cur;
    lastAt = now;
  }, 1000);
}

async function runOne(name: string, n: number): Promise<Row> {
  const T = bound(n);
  const used = hosts.slice(0, n);
  for (let i = 0; i < n; i++) {
    rmSync(clientDir(i), { recursive: true, force: true });
    mkdirSync(clientDir(i));
  }
  const m = methodFor(name);
  const procs: Proc[] = [];
  const row: Row = {
    method: name,
    n,
    allSecs: undefined,
    meanSecs: undefined,
    maxSecs: undefined,
    serverSent: 0,
    meanUploaded: 0,
    verified: 0,
    bound: T,
  };
  try {
    procs.push(...(await m.server()));
    // Switch-port counters, all in one call: a port's rx is what its host sent.
    const sentBy = (ports: Map<string, { rx: number }>) =>
      [server, ...used].map((h) => ports.get(h.port)?.rx ?? 0);
    const before = sentBy(lab.portCounters());
    const segs0 = [server, ...used].map((h) => lab.tcpSegments(h));
    const doneAt: (number | undefined)[] = new Array<number | undefined>(n).fill(undefined);
    let pending = n;
    let allDone: () => void = () => {};
    const all = new Promise<void>((r) => (allDone = r));
    const startClients = () => {
      for (let i = 0; i < n; i++) {
        procs.push(
          m.client(i, used[i]!, () => {
            if (doneAt[i] !== undefined) return;
            doneAt[i] = Date.now();
            if (--pending === 0) allDone();
          }),
        );
      }
    };
    if (m.startsOnGo) {
      startClients();
      const clients = procs.slice(-n);
      await Promise.all(clients.map((p, i) => waitFor(p, /^ready$/m, 120_000, `client ${i}`)));
    }
    const t0 = Date.now();
    const cpu0 = cpuTicks();
    const serverProcs = procs.slice(0, procs.length - (m.startsOnGo ? n : 0));
    const serverCpu0 = serverProcs.map(procCpu);
    const clientCpu0 = m.startsOnGo ? procs.slice(-n).map(procCpu) : new Array<number | undefined>(n).fill(0);
    const sampler = values.timeline ? timeline(values.timeline, name, n, t0, used, doneAt) : undefined;
    if (m.startsOnGo) for (const p of procs.slice(-n)) p.child.stdin?.write('go\n');
    else startClients();
    const limitMs = Math.max(120, 8 * T) * 1000;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([all, new Promise<void>((r) => (timer = setTimeout(r, limitMs)))]);
    clearTimeout(timer);
    clearInterval(sampler);
    const cpu1 = cpuTicks();
    row.busy = (cpu1.busy - cpu0.busy) / Math.max(1, cpu1.total - cpu0.total);
    row.serverCpu = serverProcs.reduce((a, p, k) => a + (procCpu(p) ?? 0) - (serverCpu0[k] ?? 0), 0);
    const clientCpu = procs
      .slice(-n)
      .map((p, k) => {
        const now = procCpu(p);
        const start = clientCpu0[k];
        return now === undefined || start === undefined ? undefined : now - start;
      })
      .filter((x): x is number => x !== undefined);
    if (clientCpu.length > 0) row.clientCpu = clientCpu.reduce((a, b) => a + b, 0) / clientCpu.length;
    const after = sentBy(lab.portCounters());
    const segs1 = [server, ...used].map((h) => lab.tcpSegments(h));
    const sum = (k: 'out' | 'retrans') => segs1.reduce((a, s, i) => a + s[k] - segs0[i]![k], 0);
    row.retrans = sum('retrans') / Math.max(1, sum('out'));
    await lab.stop(procs);
    if (values.logs) {
      mkdirSync(values.logs, { recursive: true });
      procs.forEach((p, k) => {
        const role = k < procs.length - n ? `server${k}` : `c${k - (procs.length - n)}`;
        writeFileSync(join(values.logs!, `${name}-${n}-${role}.log`), p.output());
      });
    }
    const results: ClientResult[] = [];
    for (let i = 0; i < n; i++) {
      const ok = existsSync(clientFile(i)) && (await sha256(clientFile(i))) === expected;
      results.push({
        secs: doneAt[i] === undefined ? undefined : (doneAt[i]! - t0) / 1000,
        ok,
        uploaded: after[i + 1]! - before[i + 1]!,
      });
    }
    row.serverSent = after[0]! - before[0]!;
    row.meanUploaded = results.reduce((a, r) => a + r.uploaded, 0) / n;
    row.verified = results.filter((r) => r.ok && r.secs !== undefined).length;
    if (row.verified === n) {
      const secs = results.map((r) => r.secs!);
      row.maxSecs = Math.max(...secs);
      row.allSecs = row.maxSecs;
      row.meanSecs = secs.reduce((a, b) => a + b, 0) / n;
    } else {
      const bad = results.map((r, i) => (r.ok && r.secs !== undefined ? '' : `c${i}`)).filter(Boolean);
      row.error = `not complete or wrong SHA-256: ${bad.join(' ')} (limit ${limitMs / 1000} s)`;
      const firstBad = Number(bad[0]!.slice(1));
      process.stderr.write(
        `${name} N=${n}: client ${firstBad} output:\n${procs[procs.length - n + firstBad]?.output().slice(-2000)}\n`,
      );
    }
  } catch (err) {
    row.error = (err as Error).message.split('\n')[0]!;
    process.stderr.write(`${name} N=${n}: ${(err as Error).message}\n`);
  } finally {
    await lab.stop(procs);
  }
  return row;
}

/** CPU seconds (user + system) a running process has used; undefined once it has exited. */
function procCpu(p: Proc): number | undefined {
  const pid = p.child.pid;
  return pid === undefined || p.exitedAt !== undefined ? undefined : processCpuSeconds(pid);
}

const MB = 1024 * 1024;
const fmt = (x: number | undefined, d = 1) => (x === undefined ? '—' : x.toFixed(d));
function tableRow(r: Row): string {
  return `| ${r.n} | ${r.method} | ${fmt(r.allSecs)} | ${fmt(r.meanSecs)} | ${fmt(r.maxSecs)} | ${(r.serverSent / MB).toFixed(1)} | ${(r.meanUploaded / MB).toFixed(1)} | ${r.verified}/${r.n} | ${r.allSecs === undefined ? '—' : (r.allSecs / r.bound).toFixed(2)} | ${r.busy === undefined ? '—' : (100 * r.busy).toFixed(0)} | ${fmt(r.serverCpu)} | ${fmt(r.clientCpu, 2)} | ${r.retrans === undefined ? '—' : (100 * r.retrans).toFixed(1)} |`;
}
const HEADER = [
  '| N | method | all verified (s) | mean per client (s) | max per client (s) | server sent (MiB) | mean client upload (MiB) | verified | ratio to bound | CPU busy (%) | server CPU (s) | CPU per client (s) | TCP retransmitted (%) |',
  '| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
];

const median = (xs: readonly number[]): number | undefined => {
  if (xs.length === 0) return undefined;
  const a = [...xs].sort((x, y) => x - y);
  const h = Math.floor(a.length / 2);
  return a.length % 2 === 1 ? a[h]! : (a[h - 1]! + a[h]!) / 2;
};

const finite = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? undefined : x);

interface Summary {
  n: number;
  method: string;
  runs: number;
  /** Runs in which every client verified. */
  good: number;
  median: Row;
  min: number | undefined;
  max: number | undefined;
}

/** Per N and method over its repeats: medians of each figure, and the spread of the time. */
function summarize(rs: readonly Row[]): Summary[] {
  const out: Summary[] = [];
  for (const n of Ns) {
    for (const method of ['bound', ...methods]) {
      const runs = rs.filter((r) => r.n === n && r.method === method);
      if (runs.length === 0) continue;
      const times = runs.flatMap((r) => (r.allSecs === undefined ? [] : [r.allSecs]));
      const med = (k: keyof Row) => median(runs.flatMap((r) => (typeof r[k] === 'number' ? [r[k]] : [])));
      out.push({
        n,
        method,
        runs: runs.length,
        good: times.length,
        // A run that did not finish counts as slower than every one that did.
        median: {
          ...runs[0]!,
          allSecs: finite(median(runs.map((r) => r.allSecs ?? Infinity))),
          meanSecs: med('meanSecs'),
          maxSecs: med('maxSecs'),
          serverSent: med('serverSent') ?? 0,
          meanUploaded: med('meanUploaded') ?? 0,
          verified: runs[0]!.verified,
          ...(med('busy') !== undefined ? { busy: med('busy') } : {}),
          ...(med('serverCpu') !== undefined ? { serverCpu: med('serverCpu') } : {}),
          ...(med('clientCpu') !== undefined ? { clientCpu: med('clientCpu') } : {}),
          ...(med('retrans') !== undefined ? { retrans: med('retrans') } : {}),
        },
        min: times.length > 0 ? Math.min(...times) : undefined,
        max: times.length > 0 ? Math.max(...times) : undefined,
      });
    }
  }
  return out;
}

function summaryRow(x: Summary): string {
  const r = x.median;
  const ratio = (v: number | undefined) => (v === undefined ? '—' : (v / r.bound).toFixed(2));
  return `| ${x.n} | ${x.method} | ${x.good}/${x.runs} | ${fmt(r.allSecs)} | ${fmt(x.min)}–${fmt(x.max)} | ${ratio(r.allSecs)} | ${ratio(x.min)}–${ratio(x.max)} | ${r.busy === undefined ? '—' : (100 * r.busy).toFixed(0)} | ${fmt(r.serverCpu)} | ${fmt(r.clientCpu, 2)} |`;
}
const SUMMARY_HEADER = [
  '| N | method | runs all verified | median all verified (s) | spread (s) | median ratio to bound | spread of ratio | CPU busy (%) | server CPU (s) | CPU per client (s) |',
  '| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
];

const rows: Row[] = [];
process.stdout.write(
  `lab ${lab.prefix}: F=${(F / MB).toFixed(1)} MiB, u_s=${us / 1e6} Mbit/s, clients ${uc / 1e6} Mbit/s, N=${Ns.join(',')}\n`,
);
try {
  for (const n of Ns) {
    rows.push({
      method: 'bound',
      n,
      allSecs: bound(n),
      meanSecs: undefined,
      maxSecs: undefined,
      serverSent: F,
      meanUploaded: 0,
      verified: n,
      bound: bound(n),
    });
    process.stdout.write(`${tableRow(rows.at(-1)!)}\n`);
    for (const name of methods) {
      for (let k = 0; k < repeat; k++) {
        const r = await runOne(name, n);
        rows.push(r);
        process.stdout.write(`${tableRow(r)}${r.error ? `  ${r.error}` : ''}\n`);
      }
    }
  }
} finally {
  lab.destroy();
}
const summary = summarize(rows);
if (repeat > 1) {
  process.stdout.write(
    `\nmedians of ${repeat} runs:\n${[...SUMMARY_HEADER, ...summary.map(summaryRow)].join('\n')}\n`,
  );
  for (const x of summary)
    if (x.method !== 'bound')
      process.stdout.write(
        `N=${x.n} method=${x.method} median=${fmt(x.median.allSecs)}s ratio=${x.median.allSecs === undefined ? '—' : (x.median.allSecs / x.median.bound).toFixed(2)} spread=${fmt(x.min)}-${fmt(x.max)}s runs_ok=${x.good}/${x.runs}\n`,
      );
}

const remaining = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
  .split('\n')
  .filter((l) => l.startsWith(lab.prefix));
if (remaining.length > 0) throw new Error(`namespaces left behind: ${remaining.join(', ')}`);
process.stdout.write(`cleaned up: no ${lab.prefix}* namespace left\n`);

if (values.json) writeFileSync(values.json, JSON.stringify({ prefix: lab.prefix, expected, rows }, null, 2));

if (!quick && !values['no-results']) {
  const command = `npm run bench:swarm -- ${argv.join(' ')}`.trim();
  const out = join(REPO, 'bench/results/swarm-lan.md');
  const svg = join(REPO, 'bench/results/swarm-lan.svg');
  writeFileSync(svg, chart(repeat > 1 ? summary.map((x) => x.median) : rows));
  const block = [
    `## ${new Date().toISOString()}`,
    '',
    `- machine: ${cpus().length} x ${cpus()[0]?.model ?? '?'}, Node ${process.version}`,
    `- command: \`${command}\``,
    `- image ${(F / MB).toFixed(1)} MiB (random), pieces ${pieceLength / 1024} KiB, our choker \`${values.choker}\`; server link ${us / 1e6} Mbit/s, client links ${uc / 1e6} Mbit/s each way (tc tbf), TCP congestion control \`${congestionControl}\`, servers at nice -10, our clients loaded before the clock starts; bound = max(F/u_s, F/d_min, N·F/(u_s + Σu_i))`,
    '- bytes are interface counters (Ethernet/IP/TCP headers and ACKs included; a pure HTTP client "uploads" its ACKs)',
    '',
    ...(repeat > 1
      ? [
          `Medians of ${repeat} runs each (a run in which a client did not verify counts as slowest):`,
          '',
          ...SUMMARY_HEADER,
          ...summary.map(summaryRow),
          '',
          'Every run:',
          '',
        ]
      : []),
    ...HEADER,
    ...rows.map(tableRow),
    '',
    `![completion time against N${repeat > 1 ? ' (medians)' : ''}](swarm-lan.svg)`,
    '',
  ].join('\n');
  if (!existsSync(out)) appendFileSync(out, '# Scale benchmark: N clients on an emulated LAN\n\n');
  appendFileSync(out, `${block}\n`);
  process.stdout.write(`results appended to ${out}; chart ${svg}\n`);
}

/** A plain SVG line chart: time until all clients verified, against N, one line per method. */
function chart(rs: Row[]): string {
  const W = 720;
  const H = 440;
  const L = 60;
  const R = 150;
  const T = 30;
  const B = 50;
  const ns = [...new Set(rs.map((r) => r.n))].sort((a, b) => a - b);
  const ymax = Math.max(1, ...rs.map((r) => r.allSecs ?? 0)) * 1.05;
  const x = (n: number) =>
    L + (W - L - R) * (ns.length === 1 ? 0.5 : Math.log2(n / ns[0]!) / Math.log2(ns.at(-1)! / ns[0]!));
  const y = (s: number) => H - B - ((H - T - B) * s) / ymax;
  const colors: Record<string, string> = {
    bound: '#000',
    boottorrent: '#d62728',
    http: '#1f77b4',
    nginx: '#17becf',
    tftp: '#9467bd',
    aria2: '#2ca02c',
    'boottorrent+opentracker': '#ff7f0e',
  };
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${L}" y="18" font-size="14">Time until every client has a verified image (s) against N</text>`,
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
  for (const method of ['bound', ...methods]) {
    const pts = rs.filter((r) => r.method === method && r.allSecs !== undefined);
    const c = colors[method] ?? '#888';
    const dash = method === 'bound' ? ' stroke-dasharray="6 4"' : '';
    if (pts.length > 0) {
      out.push(
        `<polyline fill="none" stroke="${c}" stroke-width="2"${dash} points="${pts.map((r) => `${x(r.n).toFixed(1)},${y(r.allSecs!).toFixed(1)}`).join(' ')}"/>`,
      );
      for (const r of pts)
        out.push(`<circle cx="${x(r.n).toFixed(1)}" cy="${y(r.allSecs!).toFixed(1)}" r="3" fill="${c}"/>`);
    }
    out.push(
      `<line x1="${W - R + 15}" y1="${legendY}" x2="${W - R + 40}" y2="${legendY}" stroke="${c}" stroke-width="2"${dash}/>`,
    );
    out.push(`<text x="${W - R + 45}" y="${legendY + 4}">${method}</text>`);
    legendY += 20;
  }
  out.push('</svg>', '');
  return out.join('\n');
}
