/**
 * Single-stream swarm throughput on loopback: one seeder, one leecher, a
 * random file (1 GiB by default), page cache warm. Ours (`boottorrent seed`
 * -> `boottorrent get`, two processes) against aria2c -> aria2c on the same
 * torrent, median of several runs, with CPU time and peak memory of each
 * side.
 *
 *   npm run bench:throughput -- [--size 1G] [--runs 3] [--only ours|aria2c]
 *                               [--label TEXT] [--profile DIR] [--no-write]
 *
 * How each figure is taken:
 * - MB/s (10^6 bytes/s) = file size / wall time of the leecher process, from
 *   spawn to exit (start-up, connection and the final fsync included). The
 *   seeder is started and has finished checking its data before that.
 * - Leecher CPU (user+sys) and peak RSS come from GNU time (`/usr/bin/time`,
 *   Debian package `time`): the whole process.
 * - Seeder CPU is the user+sys it used during the transfer only (its
 *   start-up hash check is not part of serving), from /proc/<pid>/stat; its
 *   peak RSS is VmHWM from /proc/<pid>/status read just before it is
 *   stopped, so it covers its whole life.
 *
 * aria2c has no way to be handed a peer address, so both aria2c runs find
 * each other through `boottorrent tracker` on 127.0.0.1 (our processes get
 * `--peer` as well as the tracker). Appends a block (date, machine, command,
 * table) to bench/results/swarm-throughput.md.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import {
  appendFileSync,
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { cpus, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { aria2cSwarmArgs } from '../src/demo/aria2c.js';
import { processCpuSeconds } from './netlab.js';

const { values } = parseArgs({
  options: {
    size: { type: 'string', default: '1G' },
    runs: { type: 'string', default: '3' },
    only: { type: 'string' },
    label: { type: 'string' },
    profile: { type: 'string' },
    'no-write': { type: 'boolean', default: false },
  },
});
const units: Record<string, number> = { K: 1024, M: 1024 ** 2, G: 1024 ** 3 };
const parseSize = (s: string): number => {
  const m = /^(\d+)([KMG]?)$/i.exec(s);
  if (!m) throw new Error(`--size ${s}: expected e.g. 256M or 1G`);
  return Number(m[1]) * (units[m[2]!.toUpperCase()] ?? 1);
};
const bytes = parseSize(values.size);
const runs = Number(values.runs);
const repo = new URL('../..', import.meta.url).pathname;
const bin = join(repo, 'bin/boottorrent.js');
const TIME = '/usr/bin/time';
if (!existsSync(TIME)) throw new Error('needs GNU time at /usr/bin/time: apt-get install time');
const aria2c = execFileSync('sh', ['-c', 'command -v aria2c'], { encoding: 'utf8' }).trim();
if (!aria2c) throw new Error('needs aria2c: apt-get install aria2');
const children = new Set<ChildProcess>();

/** user+sys seconds a live process has used so far. */
function cpuSeconds(pid: number): number {
  const s = processCpuSeconds(pid);
  if (s === undefined) throw new Error(`process ${pid} is gone: no CPU time to read`);
  return s;
}

/** Peak resident set (VmHWM) of a live process, in bytes. */
function peakRss(pid: number): number {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) * 1024;
}

function start(cmd: string, args: string[]): { child: ChildProcess; output: () => string } {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  return { child, output: () => out };
}

async function waitFor(what: string, output: () => string, re: RegExp, child: ChildProcess, ms = 120_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const m = re.exec(output());
    if (m) return m;
    if (child.exitCode !== null) throw new Error(`${what} exited ${child.exitCode}:\n${output()}`);
    if (Date.now() > deadline) throw new Error(`${what}: no ${re} in ${ms} ms:\n${output()}`);
    await sleep(20);
  }
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGINT');
  const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(t);
}

interface Sample {
  seconds: number;
  leechCpu: number;
  /** The kernel's share of leechCpu (page-cache copies, sockets). */
  leechSys: number;
  leechRss: number;
  seedCpu: number;
  seedRss: number;
}

/** Runs the leecher under GNU time until it exits; samples the seeder meanwhile. */
async function leech(seederPid: number, cmd: string, args: string[], timeFile: string): Promise<Sample> {
  const cpu0 = cpuSeconds(seederPid);
  const t0 = process.hrtime.bigint();
  const l = start(TIME, ['-f', '%U %S %M', '-o', timeFile, cmd, ...args]);
  const [code] = (await once(l.child, 'exit')) as [number | null];
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (code !== 0) throw new Error(`leecher exited ${code}:\n${l.output()}`);
  const seedCpu = cpuSeconds(seederPid) - cpu0;
  const seedRss = peakRss(seederPid);
  const [u, s, kb] = readFileSync(timeFile, 'utf8').trim().split('\n').at(-1)!.split(' ').map(Number);
  return { seconds, leechCpu: u! + s!, leechSys: s!, leechRss: kb! * 1024, seedCpu, seedRss };
}

/** Byte-compares the download with the source (outside the timing). */
function sameFile(a: string, b: string): boolean {
  const fa = openSync(a, 'r');
  const fb = openSync(b, 'r');
  const ba = Buffer.allocUnsafe(16 << 20);
  const bb = Buffer.allocUnsafe(16 << 20);
  try {
    for (;;) {
      const na = readSync(fa, ba, 0, ba.length, null);
      const nb = readSync(fb, bb, 0, bb.length, null);
      if (na !== nb || !ba.subarray(0, na).equals(bb.subarray(0, nb))) return false;
      if (na === 0) return true;
    }
  } finally {
    closeSync(fa);
    closeSync(fb);
  }
}

const work = mkdtempSync(join(tmpdir(), 'bt-bench-swarm-'));
let tracker: ChildProcess | undefined;
try {
  const seedDir = join(work, 'seed');
  mkdirSync(seedDir);
  const file = join(seedDir, 'image.bin');
  const fd = openSync(file, 'w');
  for (let left = bytes; left > 0; left -= 16 << 20) {
    const n = Math.min(left, 16 << 20);
    writeSync(fd, randomBytes(n));
  }
  closeSync(fd);
  readFileSync(file); // warm the page cache: both tools read the source from memory

  const tr = start(process.execPath, [bin, 'tracker', '--host', '127.0.0.1', '--port', '0', '--open', '-v']);
  tracker = tr.child;
  const trackerPort = (
    await waitFor('tracker', tr.output, /announce and udp:\/\/127\.0\.0\.1:(\d+)/, tracker)
  )[1]!;
  const torrent = join(work, 'image.torrent');
  execFileSync(process.execPath, [
    bin,
    'torrent',
    'create',
    file,
    '-o',
    torrent,
    '--announce',
    `http://127.0.0.1:${trackerPort}/announce`,
  ]);
  const info = JSON.parse(
    execFileSync(process.execPath, [bin, 'torrent', 'info', torrent, '--json'], { encoding: 'utf8' }),
  ) as { pieceLength: number };

  const nodeArgs = (role: string) =>
    values.profile
      ? ['--cpu-prof', `--cpu-prof-dir=${values.profile}`, `--cpu-prof-name=${role}-${Date.now()}.cpuprofile`]
      : [];

  const oursRun = async (): Promise<Sample> => {
    const out = join(work, 'ours-out');
    rmSync(out, { recursive: true, force: true });
    const seed = start(process.execPath, [
      ...nodeArgs('seed'),
      bin,
      'seed',
      torrent,
      file,
      '--port',
      '0',
      '--host',
      '127.0.0.1',
    ]);
    try {
      const port = (await waitFor('seed', seed.output, /on port (\d+)/, seed.child))[1]!;
      const sample = await leech(
        seed.child.pid!,
        process.execPath,
        [
          ...nodeArgs('get'),
          bin,
          'get',
          torrent,
          '-o',
          out,
          '--peer',
          `127.0.0.1:${port}`,
          '--port',
          '0',
          '--host',
          '127.0.0.1',
        ],
        join(work, 'time.txt'),
      );
      if (!sameFile(file, join(out, 'image.bin'))) throw new Error('ours: download differs from the source');
      return sample;
    } finally {
      await stop(seed.child);
      rmSync(out, { recursive: true, force: true });
    }
  };

  const ariaRun = async (): Promise<Sample> => {
    const out = join(work, 'aria-out');
    rmSync(out, { recursive: true, force: true });
    mkdirSync(out);
    const seedPort = 20000 + Math.floor(Math.random() * 20000);
    const seed = start(aria2c, [
      ...aria2cSwarmArgs({ dir: seedDir, listenPort: seedPort, stopWithPid: process.pid }),
      '--check-integrity=true',
      torrent,
    ]);
    try {
      // The tracker logs each announce (-v); `complete` once the seeder's check is done.
      await waitFor(
        'tracker (aria2c seeder)',
        tr.output,
        new RegExp(`127\\.0\\.0\\.1:${seedPort} .*\\(complete\\)`),
        seed.child,
      );
      const sample = await leech(
        seed.child.pid!,
        aria2c,
        [
          ...aria2cSwarmArgs({ dir: out, listenPort: seedPort + 1, stopWithPid: process.pid }),
          '--seed-time=0',
          torrent,
        ],
        join(work, 'time.txt'),
      );
      if (!sameFile(file, join(out, 'image.bin')))
        throw new Error('aria2c: download differs from the source');
      return sample;
    } finally {
      await stop(seed.child);
      rmSync(out, { recursive: true, force: true });
    }
  };

  const runLine = (x: Sample) =>
    `${(bytes / x.seconds / 1e6).toFixed(1)} MB/s, leecher ${x.leechCpu.toFixed(2)} CPU-s ` +
    `(sys ${x.leechSys.toFixed(2)}), seeder ${x.seedCpu.toFixed(2)} CPU-s`;
  const ours: Sample[] = [];
  const theirs: Sample[] = [];
  for (let i = 0; i < runs; i++) {
    if (values.only !== 'aria2c') {
      ours.push(await oursRun());
      process.stderr.write(`ours   run ${i + 1}: ${runLine(ours.at(-1)!)}\n`);
    }
    if (values.only !== 'ours') {
      theirs.push(await ariaRun());
      process.stderr.write(`aria2c run ${i + 1}: ${runLine(theirs.at(-1)!)}\n`);
    }
  }

  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const mb = (n: number) => (n / 1e6).toFixed(0);
  const row = (name: string, s: Sample[]) => {
    const secs = median(s.map((x) => x.seconds));
    return (
      `| ${name} | **${(bytes / secs / 1e6).toFixed(1)}** | ${secs.toFixed(2)} | ` +
      `${median(s.map((x) => x.leechCpu)).toFixed(2)} | ${median(s.map((x) => x.leechSys)).toFixed(2)} | ` +
      `${mb(median(s.map((x) => x.leechRss)))} | ` +
      `${median(s.map((x) => x.seedCpu)).toFixed(2)} | ${mb(median(s.map((x) => x.seedRss)))} |`
    );
  };
  const rate = (s: Sample[]) => bytes / median(s.map((x) => x.seconds));
  const lines = [
    '| seeder -> leecher | MB/s | wall s | leecher CPU s | of it sys | leecher peak RSS MB | seeder CPU s | seeder peak RSS MB |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  if (ours.length) lines.push(row('BootTorrent seed -> get', ours));
  if (theirs.length) lines.push(row('aria2c -> aria2c', theirs));
  if (ours.length && theirs.length) {
    lines.push(`| ratio ours / aria2c | ${(rate(ours) / rate(theirs)).toFixed(2)} | | | | | | |`);
  }
  const ariaVersion = execFileSync(aria2c, ['--version'], { encoding: 'utf8' }).split('\n')[0];
  const block = [
    `## ${new Date().toISOString()}${values.label ? ` — ${values.label}` : ''}`,
    '',
    `- Machine: ${cpus().length} x ${cpus()[0]?.model ?? '?'}, Linux ${release()}, Node ${process.version}, ${ariaVersion}`,
    `- Command: \`npm run bench:throughput -- ${process.argv
      .slice(2)
      .map((a) => (/[\s"']/.test(a) ? JSON.stringify(a) : a))
      .join(' ')}\``,
    `- ${(bytes / 2 ** 20).toFixed(0)} MiB random file, piece length ${info.pieceLength / 1024} KiB, loopback, page cache warm; median of ${runs} run(s) per row (each column's own median)`,
    '- MB/s = 10^6 bytes/s over the leecher process wall time (spawn to exit). Leecher CPU (user+sys, and sys alone) and peak RSS: GNU time, whole process. Seeder CPU: during the transfer only; seeder peak RSS: VmHWM over its whole life.',
    '',
    ...lines,
    '',
  ].join('\n');
  process.stdout.write(`${block}\n`);
  if (!values['no-write']) {
    const results = join(repo, 'bench/results/swarm-throughput.md');
    if (!existsSync(results))
      appendFileSync(results, '# Swarm throughput (loopback, one seeder, one leecher)\n\n');
    appendFileSync(results, `${block}\n`);
  }
} finally {
  if (tracker) await stop(tracker);
  for (const c of children) c.kill('SIGKILL');
  rmSync(work, { recursive: true, force: true });
}
