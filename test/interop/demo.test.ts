// The README's first command: `boottorrent demo` with real aria2c clients
// through our tracker. Checks the result and that Ctrl-C leaves nothing behind.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { exited, runCli, startCli } from '../helpers/cli.js';
import { requireProgram } from '../helpers/programs.js';

requireProgram('aria2c', 'aria2');

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // Field 4 (after the parenthesised command) is the parent PID.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(name));
    } catch {
      // the process ended while we looked
    }
  }
  return out;
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const demoDirs = () => readdirSync(tmpdir()).filter((n) => n.startsWith('boottorrent-demo-'));

test('demo: every aria2c client ends with a verified copy, and clients shared pieces', async () => {
  const r = await runCli(['demo', '--loopback', '--clients', '2', '--size', '8M', '--seeder-rate', '2M'], {
    timeoutMs: 240_000,
  });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /verified 2\/2/);
  const m = /clients sent each other .* \(([\d.]+) copies\)/.exec(r.stdout);
  assert.ok(m, r.stdout);
  assert.ok(Number(m[1]) > 0, `clients uploaded to each other: ${r.stdout}`);
});

test('demo: Ctrl-C stops every client it started and removes its folder', async () => {
  const before = new Set(demoDirs());
  const { child, output } = await startCli(
    ['demo', '--loopback', '--clients', '2', '--size', '32M', '--seeder-rate', '1M'],
    /clients started/,
    120_000,
  );
  const kids = childrenOf(child.pid!);
  assert.equal(kids.length, 3, `seeder and two clients running: ${output()}`);
  child.kill('SIGINT');
  assert.equal(await exited(child), 130, output());
  for (const pid of kids) assert.equal(alive(pid), false, `aria2c ${pid} still running`);
  assert.deepEqual(
    demoDirs().filter((d) => !before.has(d)),
    [],
  );
});
