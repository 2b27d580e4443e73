/**
 * Hashing throughput of `boottorrent torrent create` against mktorrent on
 * the same file and piece length, warm page cache, median of several runs.
 *
 *   npm run bench:hash -- [--size 1G] [--piece-length 512K] [--runs 5] [--file PATH]
 *
 * Appends a result block (date, machine, command, figures) to
 * bench/results/hash-throughput.md.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import {
  appendFileSync,
  existsSync,
  mkdtempSync,
  openSync,
  closeSync,
  rmSync,
  writeSync,
  readFileSync,
} from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';

const { values } = parseArgs({
  options: {
    size: { type: 'string', default: '1G' },
    'piece-length': { type: 'string', default: '512K' },
    runs: { type: 'string', default: '5' },
    file: { type: 'string' },
  },
});
const units: Record<string, number> = { K: 1024, M: 1024 ** 2, G: 1024 ** 3 };
const size = (s: string) => Number(/^\d+/.exec(s)![0]) * (units[s.at(-1)!.toUpperCase()] ?? 1);
const bytes = size(values.size);
const pieceLength = size(values['piece-length']);
const runs = Number(values.runs);
const repo = new URL('../..', import.meta.url).pathname;

const work = mkdtempSync(join(tmpdir(), 'bt-bench-hash-'));
try {
  const file = values.file ?? join(work, 'image.bin');
  if (!values.file) {
    const fd = openSync(file, 'w');
    const block = randomBytes(16 << 20);
    for (let left = bytes; left > 0; left -= block.length)
      writeSync(fd, block, 0, Math.min(left, block.length));
    closeSync(fd);
  }
  const length = values.file ? readFileSync(file).length : bytes;
  readFileSync(file); // warm the page cache so both tools read from memory

  const time = (cmd: string, args: string[]): number => {
    const t0 = process.hrtime.bigint();
    const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr.toString()}`);
    return Number(process.hrtime.bigint() - t0) / 1e9;
  };
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const ours: number[] = [];
  const theirs: number[] = [];
  const log2 = Math.log2(pieceLength);
  for (let i = 0; i < runs; i++) {
    ours.push(
      time(process.execPath, [
        join(repo, 'bin/boottorrent.js'),
        'torrent',
        'create',
        file,
        '-o',
        join(work, 'ours.torrent'),
        '--force',
        '--no-date',
        '--piece-length',
        String(pieceLength),
      ]),
    );
    rmSync(join(work, 'mk.torrent'), { force: true });
    theirs.push(
      time('mktorrent', [
        '-d',
        '-l',
        String(log2),
        '-a',
        'http://127.0.0.1/a',
        '-o',
        join(work, 'mk.torrent'),
        file,
      ]),
    );
  }
  const mb = length / 1e6;
  const o = median(ours);
  const m = median(theirs);
  const mkVersion = execFileSync('mktorrent', ['-h'], { encoding: 'utf8' }).split('\n')[0];
  const block = [
    `## ${new Date().toISOString()}`,
    '',
    `- machine: ${cpus().length} x ${cpus()[0]?.model ?? '?'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM, Node ${process.version}`,
    `- command: \`npm run bench:hash -- --size ${values.size} --piece-length ${values['piece-length']} --runs ${runs}\``,
    `- load average (1 min) at the end: ${loadavg()[0]!.toFixed(2)} on ${cpus().length} cores (other work on the machine skews the figures)`,
    `- input: ${(length / 2 ** 20).toFixed(0)} MiB random file, piece length ${pieceLength}, warm page cache; wall time of the whole command, median of ${runs}`,
    '',
    '| tool | median s | MB/s | all runs (s) |',
    '| --- | --- | --- | --- |',
    `| boottorrent torrent create | ${o.toFixed(3)} | ${(mb / o).toFixed(0)} | ${ours.map((x) => x.toFixed(3)).join(', ')} |`,
    `| ${mkVersion} (threads = cores) | ${m.toFixed(3)} | ${(mb / m).toFixed(0)} | ${theirs.map((x) => x.toFixed(3)).join(', ')} |`,
    '',
    `ratio boottorrent/mktorrent throughput: ${(m / o).toFixed(2)}`,
    '',
  ].join('\n');
  process.stdout.write(block);
  const out = join(repo, 'bench/results/hash-throughput.md');
  if (!existsSync(out)) appendFileSync(out, '# torrent create hashing throughput\n\n');
  appendFileSync(out, `${block}\n`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
