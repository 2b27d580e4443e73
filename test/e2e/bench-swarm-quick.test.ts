// `bench/swarm --quick`: four clients on an emulated LAN (network
// namespaces, tbf-shaped links) fetch a small random image by every method;
// each client's copy must have the image's SHA-256. No time is asserted.
// The benchmark removes its own namespaces and children (also when it
// fails); the test checks none is left and kills the benchmark by PID if it
// hangs.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { requireProgram } from '../helpers/programs.js';
import { stopWithTest } from '../helpers/reaper.js';
import { tempDir } from '../helpers/tmp.js';

const SCRIPT = new URL('../../bench/swarm.js', import.meta.url).pathname;

interface Row {
  method: string;
  n: number;
  verified: number;
  allSecs?: number;
  error?: string;
  serverCpu?: number;
  clientCpu?: number;
}

test('bench:swarm --quick: every method delivers a verified image to every client', async (t) => {
  for (const [p, pkg] of [
    ['ip', 'iproute2'],
    ['tc', 'iproute2'],
    ['curl', 'curl'],
    ['tftp', 'tftp-hpa'],
    ['nginx', 'nginx-light'],
    ['aria2c', 'aria2'],
    ['opentracker', 'opentracker'],
  ] as const)
    requireProgram(p, pkg);
  const dir = tempDir(t, 'bt-bench-swarm-test-');
  const json = join(dir, 'out.json');
  const child = spawn(
    process.execPath,
    [SCRIPT, '--quick', '--tracker', 'ours,opentracker', '--json', json],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  // SIGTERM lets the benchmark remove its namespaces; SIGKILL after that.
  const hang = setTimeout(() => child.kill('SIGTERM'), 170_000);
  t.after(() => clearTimeout(hang));
  // Also if the runner kills this file: SIGTERM, then SIGKILL to what is left.
  stopWithTest(t, child, 'SIGTERM', 30_000);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(hang);
  const prefix = /lab (btb-[0-9a-f]{6}-)/.exec(out)?.[1];
  assert.ok(prefix, `no lab line in:\n${out}`);
  const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.startsWith(prefix));
  assert.deepEqual(left, [], 'namespaces left behind');
  assert.equal(code, 0, out);
  const { rows } = JSON.parse(readFileSync(json, 'utf8')) as { rows: Row[] };
  const methods = rows.filter((r) => r.method !== 'bound').map((r) => r.method);
  assert.deepEqual(methods.sort(), [
    'aria2',
    'boottorrent',
    'boottorrent+opentracker',
    'http',
    'nginx',
    'tftp',
  ]);
  for (const r of rows) {
    assert.equal(r.error, undefined, `${r.method}: ${r.error}`);
    assert.equal(r.n, 4);
    assert.equal(r.verified, 4, `${r.method}: ${r.verified}/4 clients with the right SHA-256`);
    if (r.method === 'bound') continue;
    // Every run records the server's CPU; clients that run to the end (ours, aria2c) their own.
    assert.ok(typeof r.serverCpu === 'number' && r.serverCpu >= 0, `${r.method}: server CPU ${r.serverCpu}`);
    if (['boottorrent', 'boottorrent+opentracker', 'aria2'].includes(r.method))
      assert.ok(
        typeof r.clientCpu === 'number' && r.clientCpu > 0,
        `${r.method}: CPU per client ${r.clientCpu}`,
      );
  }
});

/** PIDs of every process below `root` (by /proc/<pid>/stat's parent field). */
function descendants(root: number): number[] {
  const parent = new Map<number, number>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      // pid (comm) state ppid ...: comm may hold spaces and parentheses
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parent.set(Number(e), ppid);
    } catch {
      // gone meanwhile
    }
  }
  const out: number[] = [];
  for (const pid of parent.keys()) {
    for (let p = parent.get(pid); p !== undefined && p > 1; p = parent.get(p)) {
      if (p === root) {
        out.push(pid);
        break;
      }
    }
  }
  return out;
}

function alive(pid: number): boolean {
  try {
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

test('bench:swarm stopped by Ctrl-C mid-run leaves no namespace, process or file, and the host settings as they were', async (t) => {
  requireProgram('ip', 'iproute2');
  requireProgram('tc', 'iproute2');
  const sysctl = (k: string) => execFileSync('sysctl', ['-n', k], { encoding: 'utf8' }).trim();
  const allowedBefore = sysctl('net.ipv4.tcp_allowed_congestion_control');
  const shm = () => new Set(existsSync('/dev/shm') ? readdirSync('/dev/shm') : []);
  const shmBefore = shm();
  const child = spawn(process.execPath, [SCRIPT, '--quick', '--methods', 'boottorrent', '--no-results'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  // Wait until the four clients run (each a swarm-agent process in its namespace).
  const cmdline = (pid: number) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      return '';
    }
  };
  const deadline = Date.now() + 60_000;
  let kids: number[] = [];
  let agents = 0;
  while (Date.now() < deadline) {
    kids = descendants(child.pid!);
    agents = kids.filter((pid) => cmdline(pid).includes('swarm-agent.js')).length;
    if (agents >= 4) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(agents, 4, `the benchmark's clients did not start:\n${out}`);
  const prefix = /lab (btb-[0-9a-f]{6}-)/.exec(out)?.[1];
  assert.ok(prefix, `no lab line in:\n${out}`);
  child.kill('SIGINT');
  const [code] = (await once(child, 'exit')) as [number | null];
  assert.equal(code, 130, out);
  assert.match(out, /SIGINT: removing the emulated LAN/);
  const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.startsWith(prefix));
  assert.deepEqual(left, [], 'namespaces left behind');
  assert.deepEqual(kids.filter(alive), [], 'processes of the benchmark still running');
  assert.equal(sysctl('net.ipv4.tcp_allowed_congestion_control'), allowedBefore);
  assert.deepEqual(
    [...shm()].filter((f) => !shmBefore.has(f) && f.startsWith('bt-bench-swarm-')),
    [],
    'work files left in /dev/shm',
  );
});
