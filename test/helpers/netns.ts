import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { TestContext } from 'node:test';
import { onProcessEnd } from './reaper.js';

/**
 * A throwaway LAN in network namespaces: nothing in it can reach any other
 * network. Every namespace, and every process started in one, is removed
 * when the test ends, pass or fail, and when the runner kills the test file.
 */
export class Lab {
  readonly id = randomBytes(3).toString('hex');
  private readonly namespaces: string[] = [];
  private readonly children: ChildProcess[] = [];

  constructor(t: TestContext) {
    const forget = onProcessEnd(() => this.destroy());
    t.after(() => {
      this.destroy();
      forget();
    });
  }

  /** A new namespace with loopback up; returns its name. */
  ns(role: string): string {
    const name = `bt-${role}-${this.id}`;
    execFileSync('ip', ['netns', 'add', name]);
    this.namespaces.push(name);
    this.ip(name, 'link', 'set', 'lo', 'up');
    return name;
  }

  ip(ns: string, ...args: string[]): string {
    return execFileSync('ip', ['-n', ns, ...args], { encoding: 'utf8' });
  }

  /** A bridge in `ns` holding `address` (CIDR). */
  bridge(ns: string, name: string, address: string): void {
    this.ip(ns, 'link', 'add', name, 'type', 'bridge');
    this.ip(ns, 'addr', 'add', address, 'dev', name);
    this.ip(ns, 'link', 'set', name, 'up');
  }

  /** A tap device on `bridge` for a VM. */
  tap(ns: string, name: string, bridge: string): void {
    this.ip(ns, 'tuntap', 'add', 'dev', name, 'mode', 'tap');
    this.ip(ns, 'link', 'set', name, 'master', bridge, 'up');
  }

  /** A veth from `bridge` in `ns` to `otherNs`, where its end gets `address` (CIDR). */
  link(ns: string, bridge: string, otherNs: string, ifname: string, address: string): void {
    const a = `v${this.id}${Math.floor(Math.random() * 100)}`;
    execFileSync('ip', [
      'link',
      'add',
      a,
      'netns',
      ns,
      'type',
      'veth',
      'peer',
      'name',
      ifname,
      'netns',
      otherNs,
    ]);
    this.ip(ns, 'link', 'set', a, 'master', bridge, 'up');
    this.ip(otherNs, 'addr', 'add', address, 'dev', ifname);
    this.ip(otherNs, 'link', 'set', ifname, 'up');
  }

  /** Starts a process inside `ns`; it is killed (by PID) when the test ends. */
  spawn(ns: string, cmd: string, args: string[]): { child: ChildProcess; output: () => string } {
    const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.children.push(child);
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    return { child, output: () => out };
  }

  destroy(): void {
    for (const c of this.children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const ns of this.namespaces.splice(0)) {
      try {
        execFileSync('ip', ['netns', 'del', ns]);
      } catch {
        // already gone
      }
    }
  }
}

/** Resolves when `output()` matches `re`; rejects on timeout or if the child exits first. */
export async function waitForOutput(
  proc: { child: ChildProcess; output: () => string },
  re: RegExp,
  ms: number,
  what: string,
): Promise<RegExpMatchArray> {
  const deadline = Date.now() + ms;
  for (;;) {
    const m = re.exec(proc.output());
    if (m) return m;
    if (proc.child.exitCode !== null)
      throw new Error(`${what}: exited ${proc.child.exitCode} before ${re}:\n${proc.output()}`);
    if (Date.now() > deadline)
      throw new Error(`${what}: no ${re} within ${ms / 1000} s:\n${proc.output().slice(-4000)}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
