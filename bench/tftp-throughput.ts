/**
 * TFTP throughput on loopback: our TftpServer against tftpd-hpa's in.tftpd,
 * both downloaded by the same real client (atftp) with the same options,
 * median of several runs.
 *
 *   npm run bench:tftp -- [--size 50M] [--runs 5]
 *
 * Needs atftp (client) and tftpd-hpa (server; the bench runs its
 * /usr/sbin/in.tftpd in the foreground on a free port and kills it by PID).
 * Appends a result block to bench/results/tftp-throughput.md.
 */
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import {
  appendFileSync,
  chmodSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { TftpServer } from '../src/tftp/server.js';
import { decode, encode } from '../src/tftp/codec.js';

const { values } = parseArgs({
  options: {
    size: { type: 'string', default: '50M' },
    runs: { type: 'string', default: '5' },
    /** Internal: run only our server over this folder (the bench starts itself so). */
    serve: { type: 'string' },
  },
});
const units: Record<string, number> = { K: 1024, M: 1024 ** 2, G: 1024 ** 3 };
const parseSize = (s: string) => Number(/^\d+/.exec(s)?.[0] ?? NaN) * (units[s.at(-1)!.toUpperCase()] ?? 1);
const bytes = parseSize(values.size);
const runs = Number(values.runs);
const repo = new URL('../..', import.meta.url).pathname;
const HOST = '127.0.0.1';
const IN_TFTPD = '/usr/sbin/in.tftpd';

function which(name: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

// Each server runs in its own process, so neither shares an event loop or a
// core with the bench that drives the client.
if (values.serve !== undefined) {
  const server = new TftpServer({
    host: HOST,
    port: 0,
    root: values.serve,
    maxBlockSize: 1468,
    maxWindowSize: 64,
  });
  const { port } = await server.listen();
  process.stdout.write(`port ${port}\n`);
  process.once('SIGTERM', () => void server.close());
} else {
  await bench();
}

async function bench(): Promise<void> {
  const atftp = which('atftp');
  const missing: string[] = [];
  if (!atftp) missing.push('atftp (the client: `apt-get install atftp`)');
  if (!existsSync(IN_TFTPD))
    missing.push(`${IN_TFTPD} (the reference server: \`apt-get install tftpd-hpa\`)`);
  if (missing.length > 0) {
    process.stderr.write(
      `bench:tftp needs ${missing.join(' and ')}.\n` +
        'tftpd-hpa is not in scripts/debian-packages.txt because no test needs it. Installing it may start a\n' +
        'daemon on port 69: stop it with `systemctl stop tftpd-hpa` (or `service tftpd-hpa stop`) if so.\n',
    );
    process.exitCode = 1;
  } else {
    await main(atftp!);
  }
}

/** A UDP port free right now (the reference server binds it a moment later). */
async function freePort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((res) => s.bind(0, HOST, () => res()));
  const port = s.address().port;
  await new Promise<void>((res) => s.close(() => res()));
  return port;
}

/** Resolves once something on `port` answers an RRQ (with anything). */
async function waitForTftp(port: number): Promise<void> {
  const s = createSocket('udp4');
  await new Promise<void>((res) => s.bind(0, HOST, () => res()));
  try {
    for (let i = 0; i < 50; i++) {
      const answered = new Promise<boolean>((res) => {
        const timer = setTimeout(() => res(false), 100);
        s.once('message', (m) => {
          clearTimeout(timer);
          decode(m);
          res(true);
        });
      });
      s.send(
        encode({ type: 'RRQ', filename: 'probe-missing', mode: 'octet', options: new Map() }),
        port,
        HOST,
      );
      if (await answered) return;
    }
    throw new Error(`nothing answers TFTP on ${HOST}:${port}`);
  } finally {
    s.close();
  }
}

async function main(client: string): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'bt-bench-tftp-'));
  // tftpd-hpa drops to user nobody: the folder and file must be world-readable.
  chmodSync(work, 0o755);
  const file = join(work, 'image.bin');
  writeFileSync(file, randomBytes(bytes), { mode: 0o644 });
  const want = createHash('sha256').update(readFileSync(file)).digest('hex');

  const ours = spawn(process.execPath, [new URL(import.meta.url).pathname, '--serve', work], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const ourPort = await new Promise<number>((resolve, reject) => {
    let out = '';
    ours.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /port (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    ours.once('exit', (code) => reject(new Error(`our server exited (${code}) before listening`)));
  });
  const refPort = await freePort();
  const ref = spawn(IN_TFTPD, ['--foreground', '--address', `${HOST}:${refPort}`, '--secure', work], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let refErr = '';
  ref.stderr.on('data', (d: Buffer) => (refErr += d.toString()));
  try {
    await waitForTftp(refPort).catch((err: unknown) => {
      throw new Error(`in.tftpd did not start: ${refErr}`, { cause: err });
    });

    const atftpArgs = (port: number, options: string[], local: string, trace = false) => [
      ...(trace ? ['--trace'] : []),
      ...options.flatMap((o) => ['--option', o]),
      '-g',
      '-r',
      'image.bin',
      '-l',
      local,
      HOST,
      String(port),
    ];
    const time = (port: number, options: string[]): number => {
      const t0 = process.hrtime.bigint();
      const r = spawnSync(client, atftpArgs(port, options, '/dev/null'), {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      const s = Number(process.hrtime.bigint() - t0) / 1e9;
      if (r.status !== 0) throw new Error(`atftp failed: ${r.stderr.toString()}`);
      return s;
    };
    /** One checked download (SHA-256) that also reports the options the server granted. */
    const check = (port: number, options: string[]): string => {
      const local = join(work, 'check.bin');
      const r = spawnSync(client, atftpArgs(port, options, local, true), {
        encoding: 'utf8',
        maxBuffer: 1 << 30,
      });
      if (r.status !== 0) throw new Error(`atftp failed: ${r.stderr}`);
      const got = createHash('sha256').update(readFileSync(local)).digest('hex');
      rmSync(local);
      if (got !== want) throw new Error(`port ${port}: downloaded file differs`);
      const oack = /received OACK <([^>]*)>/.exec(r.stdout + r.stderr)?.[1];
      // atftp ends the list with ", " and two backspaces.
      return oack === undefined ? '(no OACK)' : oack.replaceAll('\b', '').replace(/[,\s]+$/, '');
    };
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const mb = bytes / 1e6;

    const configs = [['blksize 1468'], ['blksize 1468', 'windowsize 16']];
    const rows: string[] = [];
    const ratios: string[] = [];
    for (const options of configs) {
      const granted = { ours: check(ourPort, options), ref: check(refPort, options) };
      const o: number[] = [];
      const h: number[] = [];
      for (let i = 0; i < runs; i++) {
        o.push(time(ourPort, options));
        h.push(time(refPort, options));
      }
      const opt = options.map((x) => `\`${x}\``).join(' + ');
      rows.push(
        `| ${opt} | boottorrent TftpServer | ${granted.ours} | ${(mb / median(o)).toFixed(1)} | ${o.map((x) => x.toFixed(3)).join(', ')} |`,
        `| ${opt} | tftpd-hpa in.tftpd | ${granted.ref} | ${(mb / median(h)).toFixed(1)} | ${h.map((x) => x.toFixed(3)).join(', ')} |`,
      );
      ratios.push(`${opt}: ${(median(h) / median(o)).toFixed(2)}`);
    }
    // atftp prints its version on stderr.
    const v = spawnSync(client, ['--version'], { encoding: 'utf8' });
    const atftpVersion = `${v.stdout}${v.stderr}`.split('\n')[0]?.trim();
    const hpaVersion =
      spawnSync('dpkg-query', ['-W', '-f', '${Version}', 'tftpd-hpa'], { encoding: 'utf8' }).stdout || '?';
    // Other jobs on a small machine skew loopback figures; say how busy it was.
    const load = loadavg()[0]!.toFixed(2);
    const block = [
      `## ${new Date().toISOString()}`,
      '',
      `- machine: ${cpus().length} x ${cpus()[0]?.model ?? '?'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM, Node ${process.version}, 1-min load average at the end ${load}`,
      `- command: \`npm run bench:tftp -- --size ${values.size} --runs ${runs}\``,
      `- input: ${(bytes / 2 ** 20).toFixed(0)} MiB random file on ${HOST}; client ${atftpVersion} writing to /dev/null; server tftpd-hpa ${hpaVersion} (\`in.tftpd --foreground --address ${HOST}:PORT --secure DIR\`); wall time of each atftp run, median of ${runs}; each configuration checked once by SHA-256 first`,
      '',
      '| client options | server | options granted (OACK) | MB/s (median) | all runs (s) |',
      '| --- | --- | --- | --- | --- |',
      ...rows,
      '',
      `ratio boottorrent/tftpd-hpa throughput: ${ratios.join('; ')}`,
      '',
    ].join('\n');
    process.stdout.write(block);
    const out = join(repo, 'bench/results/tftp-throughput.md');
    if (!existsSync(out)) appendFileSync(out, '# TFTP throughput on loopback\n\n');
    appendFileSync(out, `${block}\n`);
  } finally {
    const exited = (c: ChildProcess) =>
      c.exitCode !== null || c.signalCode !== null
        ? Promise.resolve()
        : new Promise((res) => c.once('exit', res));
    ref.kill('SIGTERM');
    ours.kill('SIGTERM');
    await Promise.all([exited(ref), exited(ours)]);
    rmSync(work, { recursive: true, force: true });
  }
}
