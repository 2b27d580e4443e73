import { spawn, type ChildProcess, type ChildProcessByStdio } from 'node:child_process';
import type { Readable } from 'node:stream';
import type { TestContext } from 'node:test';
import { onProcessEnd, stopSync } from './reaper.js';

export const BIN = new URL('../../../bin/boottorrent.js', import.meta.url).pathname;

/**
 * SIGINT is the CLI's Ctrl-C: `demo` and `start` remove their namespaces,
 * VMs and folders on it. SIGKILL only after this grace, to what remains.
 */
const STOP_GRACE_MS = 60_000;

/** Stops `child` like Ctrl-C would (see STOP_GRACE_MS), synchronously. */
export function stopCli(child: ChildProcess): void {
  if (child.exitCode === null && child.signalCode === null) stopSync(child.pid, 'SIGINT', STOP_GRACE_MS);
}

/** Spawns the CLI; it is stopped if the runner kills this test file while it runs. */
function spawnCli(args: string[], cwd?: string): ChildProcessByStdio<null, Readable, Readable> {
  const child = spawn(process.execPath, [BIN, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  const forget = onProcessEnd(() => stopCli(child));
  child.once('exit', forget);
  return child;
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `boottorrent <args>` to completion. */
export function runCli(args: string[], opts: { cwd?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawnCli(args, opts.cwd);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      stopCli(child);
      reject(new Error(`boottorrent ${args.join(' ')} did not finish; stdout: ${stdout} stderr: ${stderr}`));
    }, opts.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/**
 * Starts `boottorrent <args>` in the background; resolves once stdout
 * matches `ready`. With `t`, the child is stopped when that test ends, so a
 * failed assertion does not leave it (and what it started) running.
 */
export function startCli(
  args: string[],
  ready: RegExp,
  timeoutMs = 60_000,
  t?: TestContext,
): Promise<{ child: ChildProcess; match: RegExpMatchArray; output: () => string }> {
  return new Promise((resolve, reject) => {
    const child = spawnCli(args);
    t?.after(() => stopCli(child));
    let out = '';
    const timer = setTimeout(() => {
      stopCli(child);
      reject(new Error(`boottorrent ${args.join(' ')} never printed ${ready}; output: ${out}`));
    }, timeoutMs);
    const onData = (d: Buffer) => {
      out += d.toString();
      const m = ready.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ child, match: m, output: () => out });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', reject);
  });
}

/** Resolves with the exit code once the child has exited. */
export function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}
