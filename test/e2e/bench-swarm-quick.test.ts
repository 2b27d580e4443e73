// `bench/swarm --quick`: four clients on an emulated LAN (network
// namespaces, tbf-shaped links) fetch a small random image by every method;
// each client's copy must have the image's SHA-256. No time is asserted.
// The benchmark removes its own namespaces and children (also when it
// fails); the test checks none is left and kills the benchmark by PID if it
// hangs.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { requireProgram } from '../helpers/programs.js';
import { tempDir } from '../helpers/tmp.js';

const SCRIPT = new URL('../../bench/swarm.js', import.meta.url).pathname;

interface Row {
  method: string;
  n: number;
  verified: number;
  allSecs?: number;
  error?: string;
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
  const child = spawn(process.execPath, [SCRIPT, '--quick', '--json', json], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  // SIGTERM lets the benchmark remove its namespaces; SIGKILL after that.
  const hang = setTimeout(() => child.kill('SIGTERM'), 170_000);
  t.after(() => {
    clearTimeout(hang);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
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
  assert.deepEqual(methods.sort(), ['aria2', 'boottorrent', 'http', 'nginx', 'tftp']);
  for (const r of rows) {
    assert.equal(r.error, undefined, `${r.method}: ${r.error}`);
    assert.equal(r.n, 4);
    assert.equal(r.verified, 4, `${r.method}: ${r.verified}/4 clients with the right SHA-256`);
  }
});
