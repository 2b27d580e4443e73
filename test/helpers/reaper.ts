/**
 * Cleanup that runs even when the test runner kills this test file.
 *
 * node:test's runner enforces its per-file timeout (--test-timeout) by
 * sending SIGTERM to the file's process: no `t.after` hook runs, and the
 * QEMU machines, servers and namespaces a test started outlive it (issue #15
 * item 5: a timed-out boot-methods test left two VMs and its namespace
 * running). Tests that start such things register a synchronous cleanup
 * here as well as in `t.after`; on SIGTERM, SIGINT or SIGHUP each one runs
 * once, the killed children are reaped, then the signal is raised again so
 * the process ends as it would have. Cleanups also run on a plain exit, for
 * anything a test left behind.
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import type { TestContext } from 'node:test';

type Cleanup = () => void;

const cleanups = new Set<Cleanup>();
let installed = false;

function runAll(): void {
  // Newest first: a VM goes before the namespace it runs in.
  for (const fn of [...cleanups].reverse()) {
    cleanups.delete(fn);
    try {
      fn();
    } catch (err) {
      process.stderr.write(`reaper: cleanup failed: ${String(err)}\n`);
    }
  }
}

function onSignal(sig: NodeJS.Signals): void {
  process.stderr.write(`reaper: ${sig}: stopping what this test file started\n`);
  runAll();
  for (const s of SIGNALS) process.removeListener(s, onSignal);
  // Back to the event loop until Node has reaped the children just killed:
  // exiting first would leave them as zombies for init, still listed by
  // `pgrep qemu`. Then the same signal, with our handler gone, ends the process.
  const deadline = Date.now() + 5000;
  const reaped = () => {
    if (descendants(process.pid).length > 0 && Date.now() < deadline) setTimeout(reaped, 50);
    else if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
  };
  reaped();
}

const SIGNALS: readonly NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP'];

/**
 * Registers `fn` (synchronous, idempotent) to run if the process is killed
 * or exits before the test removes it; returns the function that removes it.
 */
export function onProcessEnd(fn: Cleanup): () => void {
  if (!installed) {
    installed = true;
    for (const s of SIGNALS) process.on(s, onSignal);
    process.on('exit', runAll);
  }
  cleanups.add(fn);
  return () => cleanups.delete(fn);
}

/** Sleeps without returning to the event loop: signal handlers and exit handlers may not await. */
function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Fields 3.. of /proc/<pid>/stat (after the command name, which may hold spaces), or undefined. */
function statFields(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** A process as (PID, start time): a PID alone may be reused once it exits. */
interface Proc {
  readonly pid: number;
  readonly start: string;
}

function proc(pid: number): Proc | undefined {
  const f = statFields(pid);
  return f ? { pid, start: f[19]! } : undefined;
}

/**
 * True while `p` runs. An exited child of ours stays a zombie until the
 * event loop reaps it, and a zombie holds no memory, devices or sockets, so
 * it counts as gone.
 */
function running(p: Proc): boolean {
  const f = statFields(p.pid);
  return f !== undefined && f[19] === p.start && f[0] !== 'Z';
}

/** The processes below `pid` (children first, then theirs, zombies too), read from /proc. */
function descendants(pid: number): Proc[] {
  const parent = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const f = statFields(Number(name));
    if (f) parent.set(Number(name), Number(f[1]));
  }
  const pids: number[] = [];
  for (let i = -1; i < pids.length; i++) {
    const p = i < 0 ? pid : pids[i]!;
    for (const [child, pp] of parent) if (pp === p) pids.push(child);
  }
  return pids.map(proc).filter((p) => p !== undefined);
}

/**
 * Stops a process this test started, synchronously: `signal` first (SIGINT
 * lets `boottorrent demo` and `start` remove their own labs), then, after
 * `graceMs`, SIGKILL to it and to every process below it, by PID. Returns
 * once none of them runs (or after a last short wait).
 */
export function stopSync(
  pid: number | undefined,
  signal: NodeJS.Signals = 'SIGTERM',
  graceMs = 10_000,
): void {
  const top = pid === undefined ? undefined : proc(pid);
  if (top === undefined || !running(top)) return;
  const below = descendants(top.pid);
  try {
    process.kill(top.pid, signal);
  } catch {
    return;
  }
  const deadline = Date.now() + graceMs;
  while (running(top) && Date.now() < deadline) sleepSync(100);
  // What it started and did not stop: it is ours too.
  const rest = [top, ...below, ...descendants(top.pid)].filter(running);
  for (const p of rest) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  const last = Date.now() + 5000;
  while (rest.some(running) && Date.now() < last) sleepSync(50);
}

/**
 * Stops `child` (see stopSync) when the test ends, pass or fail, and when
 * the runner kills this test file first.
 */
export function stopWithTest(
  t: TestContext,
  child: ChildProcess,
  signal: NodeJS.Signals = 'SIGKILL',
  graceMs = 10_000,
): void {
  const stop = () => {
    if (child.exitCode === null && child.signalCode === null) stopSync(child.pid, signal, graceMs);
  };
  const forget = onProcessEnd(stop);
  t.after(() => {
    stop();
    forget();
  });
}
