// The README's first command, as a newcomer runs it: `boottorrent demo
// --clients 3` builds a namespace LAN, starts the server, PXE-boots three
// QEMU machines that share the OS and kexec it, prints the summary line,
// and leaves nothing behind. Ctrl-C in the middle leaves nothing either.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { exited, startCli } from '../helpers/cli.js';
import { requireProgram } from '../helpers/programs.js';
import { waitUntil } from '../helpers/wait.js';

requireProgram('qemu-system-x86_64', 'qemu-system-x86');

const demoNamespaces = () =>
  execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.startsWith('bt-demo-'));
const demoDirs = () => readdirSync(tmpdir()).filter((n) => n.startsWith('boottorrent-demo-'));
/**
 * PIDs of QEMU processes whose command line names a demo folder. By the
 * program now running (comm), not the command line alone: `ip netns exec`
 * holds QEMU's command line until it has entered the namespace and exec'd.
 */
function demoQemus(): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const comm = readFileSync(`/proc/${name}/comm`, 'utf8');
      const cmd = readFileSync(`/proc/${name}/cmdline`, 'utf8');
      if (comm.startsWith('qemu-system') && cmd.includes('boottorrent-demo-')) out.push(Number(name));
    } catch {
      // gone
    }
  }
  return out;
}

const MIN = 60_000;

test(
  'demo --clients 3 boots three QEMU clients from the swarm and cleans up',
  // A backstop only: each step below has its own deadline, so a slow machine
  // fails at the step that stalled (with the demo's output so far).
  { timeout: 60 * MIN },
  async (t) => {
    const dirsBefore = new Set(demoDirs());
    // The runner built the image (scripts/prebuild-phase1.js); alone on a cold cache, the build's budget.
    const demo = await startCli(['demo', '--clients', '3'], /phase 1: initrd/, 30 * MIN, t);
    const ended = () => demo.child.exitCode !== null || demo.child.signalCode !== null;
    const step = (re: RegExp, n: number, ms: number, what: string) =>
      waitUntil(
        () => [...demo.output().matchAll(re)].length >= n || ended(),
        ms,
        what,
        () => demo.output().slice(-4000),
      );
    await step(/server: running/g, 1, 3 * MIN, 'server running');
    await step(/clients: 3 QEMU machines/g, 1, MIN, 'VMs started');
    // PXE, phase 1 and the OS from the swarm under TCG; the others follow the first.
    const booted = /pc\d (\(\S+\) booted the OS it downloaded|stopped without booting)/g;
    await step(booted, 1, 18 * MIN, 'first client booted');
    await step(booted, 2, 8 * MIN, 'second client booted');
    await step(booted, 3, 8 * MIN, 'third client booted');
    await waitUntil(ended, 3 * MIN, 'demo exit', () => demo.output());
    const r = { code: await exited(demo.child), stdout: demo.output(), stderr: '' };
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    const m =
      /booted 3\/3 clients in ([\d.]+) s; server sent ([\d.]+) MB \(phase 1 ([\d.]+) MB, OS ([\d.]+) MB\) for ([\d.]+) MB delivered/.exec(
        r.stdout,
      );
    assert.ok(m, r.stdout);
    const [total, phase1, os, delivered] = [m[2], m[3], m[4], m[5]].map(Number) as [
      number,
      number,
      number,
      number,
    ];
    assert.ok(delivered > 0, 'the clients reported what they downloaded');
    // Phase 1 counts (#16): three clients each loaded an 8 MB kernel and its initramfs from the server.
    assert.ok(phase1 > 3 * 8, `phase 1 sent: ${phase1} MB`);
    assert.ok(total + 0.15 >= phase1 + os, m[0]);
    // Each VM booted (its marker was seen on its serial console), with the agent under 150 MB.
    const machines = [
      ...r.stdout.matchAll(/^pc\d 52:54:00:77:\S+: booted in ([\d.]+) s; .* agent peak RSS (\d+) MB$/gm),
    ];
    assert.equal(machines.length, 3, r.stdout);
    for (const mm of machines) assert.ok(Number(mm[2]) < 150, `agent peak RSS ${mm[2]} MB`);
    // The clients shared: by their own reports and by the server's tracker.
    const shared =
      /clients sent each other ([\d.]+) MB \(their reports; the tracker counted ([\d.]+) MB\)/.exec(r.stdout);
    assert.ok(shared, r.stdout);
    assert.ok(Number(shared[1]) > 0 && Number(shared[2]) > 0, shared[0]);
    assert.deepEqual(demoNamespaces(), []);
    assert.deepEqual(demoQemus(), []);
    assert.deepEqual(
      demoDirs().filter((d) => !dirsBefore.has(d)),
      [],
    );
  },
);

test(
  'demo: Ctrl-C while the clients boot removes the lab, the VMs and the folder',
  { timeout: 10 * 60_000 },
  async (t) => {
    const dirsBefore = new Set(demoDirs());
    const { child, output } = await startCli(
      ['demo', '--clients', '2'],
      /clients: 2 QEMU machines/,
      8 * 60_000,
      t,
    );
    // The line comes right after the demo spawned the VMs; they may not be
    // QEMU yet when it is read (this checked at once and failed, #15 item 5).
    await waitUntil(
      () => demoQemus().length >= 2,
      60_000,
      'two demo VMs running',
      () => `QEMUs ${demoQemus().length}; output: ${output()}`,
    );
    assert.equal(demoNamespaces().length, 1);
    child.kill('SIGINT');
    const code = await exited(child);
    assert.equal(code, 130, output());
    assert.deepEqual(demoNamespaces(), []);
    assert.deepEqual(demoQemus(), []);
    assert.deepEqual(
      demoDirs().filter((d) => !dirsBefore.has(d)),
      [],
    );
  },
);
