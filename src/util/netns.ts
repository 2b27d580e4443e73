/**
 * The one namespace lab (issue #15 item 4): throwaway LANs built from Linux
 * network namespaces, bridges, veth pairs and taps, and the processes run
 * inside them. The PXE demo (src/demo/lab.ts), the benchmarks
 * (bench/netlab.ts) and the tests (test/helpers/netns.ts) each shape a LAN
 * of their own from these parts; creating, tracking and removing is here
 * only. Nothing in a lab reaches any other network unless the caller links
 * it to the host (`linkToHost`, a private /30 of the caller's choice).
 * destroy() kills what the lab started (by PID), deletes its namespaces
 * (which takes every device in them along) and its host-side links, and
 * puts back a host setting it widened; it is synchronous and idempotent, so
 * exit and signal handlers can call it.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { BootTorrentError } from '../errors.js';

export interface LabProcess {
  readonly child: ChildProcess;
  /** Everything it wrote to stdout and stderr so far (the newest part, past the lab's cap). */
  output(): string;
  /** When it exited (Date.now()), if it has. */
  exitedAt?: number;
}

export interface NetnsLabOptions {
  /** A namespace's name from its role and the lab's id (default `bt-<role>-<id>`). */
  readonly name?: (role: string, id: string) => string;
  /**
   * TCP congestion control for every namespace. An algorithm the host has
   * but does not allow in namespaces is allowed for the lab's lifetime.
   */
  readonly congestionControl?: string;
  /** Output kept per process: past this many characters, the newest half is kept (default 4,000,000). */
  readonly maxOutput?: number;
}

/** `ip ARGS`; a failure is a BT_ERR_DEMO naming the command and what ip said. */
export function ipCmd(args: readonly string[]): string {
  try {
    return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new BootTorrentError(
      'BT_ERR_DEMO',
      `ip ${args.join(' ')} failed: ${(e.stderr ?? e.message).trim()}`,
      {
        cause: err,
      },
    );
  }
}

/** A host-wide kernel setting (the init namespace's), trimmed. */
export function sysctlRead(key: string): string {
  return execFileSync('sysctl', ['-n', key], { encoding: 'utf8' }).trim();
}

export class NetnsLab {
  readonly id = randomBytes(3).toString('hex');
  private readonly namespaces: string[] = [];
  private readonly hostLinks: string[] = [];
  private readonly children = new Set<ChildProcess>();
  private readonly maxOutput: number;
  /** The host's allowed congestion controls before this lab widened them, and the list it wrote. */
  private restoreAllowed: { old: string; widened: string } | undefined;
  private linkCount = 0;

  constructor(private readonly options: NetnsLabOptions = {}) {
    this.maxOutput = options.maxOutput ?? 4_000_000;
    if (options.congestionControl) this.allowCongestionControl(options.congestionControl);
  }

  /** What `ns(role)` would name a namespace. */
  nameOf(role: string): string {
    return this.options.name ? this.options.name(role, this.id) : `bt-${role}-${this.id}`;
  }

  /** A new namespace with loopback up (and the lab's congestion control); returns its name. */
  ns(role: string): string {
    const name = this.nameOf(role);
    ipCmd(['netns', 'add', name]);
    this.namespaces.push(name);
    this.ip(name, 'link', 'set', 'lo', 'up');
    const cc = this.options.congestionControl;
    if (cc) {
      try {
        execFileSync(
          'ip',
          ['netns', 'exec', name, 'sysctl', '-qw', `net.ipv4.tcp_congestion_control=${cc}`],
          {
            stdio: 'pipe',
          },
        );
      } catch {
        throw new BootTorrentError(
          'BT_ERR_DEMO',
          `cannot use TCP congestion control ${cc} in a namespace: the host allows ${sysctlRead('net.ipv4.tcp_allowed_congestion_control')} ` +
            `(add it to net.ipv4.tcp_allowed_congestion_control, or choose one of those)`,
        );
      }
    }
    return name;
  }

  /** `ip -n NS ARGS`. */
  ip(ns: string, ...args: string[]): string {
    return ipCmd(['-n', ns, ...args]);
  }

  /** A bridge in `ns`, up, holding `cidr` if given; forwarding at once (no STP delay: a tap must work the moment QEMU opens it). */
  bridge(ns: string, name: string, cidr?: string): void {
    this.ip(ns, 'link', 'add', name, 'type', 'bridge');
    this.ip(ns, 'link', 'set', name, 'type', 'bridge', 'forward_delay', '0', 'stp_state', '0');
    if (cidr) this.ip(ns, 'addr', 'add', cidr, 'dev', name);
    this.ip(ns, 'link', 'set', name, 'up');
  }

  /** A tap device on `bridge` in `ns`, for a VM. */
  tap(ns: string, name: string, bridge: string): void {
    this.ip(ns, 'tuntap', 'add', 'dev', name, 'mode', 'tap');
    this.ip(ns, 'link', 'set', name, 'master', bridge, 'up');
  }

  /**
   * A veth pair from a port on `bridge` in `bridgeNs` to `ifname` in
   * `hostNs`, which gets `cidr` if given; both ends up. Returns the port's
   * name (its counters are what the host sent and received).
   */
  veth(bridgeNs: string, bridge: string, hostNs: string, ifname: string, cidr?: string): string {
    const port = `v${this.id}${this.linkCount++}`;
    ipCmd(['link', 'add', port, 'netns', bridgeNs, 'type', 'veth', 'peer', 'name', ifname, 'netns', hostNs]);
    this.ip(bridgeNs, 'link', 'set', port, 'master', bridge, 'up');
    if (cidr) this.ip(hostNs, 'addr', 'add', cidr, 'dev', ifname);
    this.ip(hostNs, 'link', 'set', ifname, 'up');
    return port;
  }

  /**
   * A veth between this host and `ns`: the host end gets `hostCidr`, the
   * namespace end (`ifname`) gets `nsCidr`.
   */
  linkToHost(ns: string, hostCidr: string, nsCidr: string, ifname = 'uplink'): void {
    const host = `btd${this.id}${this.hostLinks.length || ''}`;
    ipCmd(['link', 'add', host, 'type', 'veth', 'peer', 'name', ifname, 'netns', ns]);
    this.hostLinks.push(host);
    ipCmd(['addr', 'add', hostCidr, 'dev', host]);
    ipCmd(['link', 'set', host, 'up']);
    this.ip(ns, 'addr', 'add', nsCidr, 'dev', ifname);
    this.ip(ns, 'link', 'set', ifname, 'up');
  }

  /**
   * Starts `cmd` inside `ns` (`ip netns exec` and `nice` exec it: the PID is
   * the command's). `nice` below 0 gives it a larger share of a shared CPU;
   * `stdin` keeps a pipe to it. Killed by PID in destroy().
   */
  spawn(
    ns: string,
    cmd: string,
    args: readonly string[],
    opts: { cwd?: string; nice?: number; stdin?: boolean } = {},
  ): LabProcess {
    const niced = opts.nice ? ['nice', '-n', String(opts.nice), cmd, ...args] : [cmd, ...args];
    const child = spawn('ip', ['netns', 'exec', ns, ...niced], {
      stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
    });
    this.children.add(child);
    let out = '';
    const keep = (d: Buffer) => {
      out += d.toString();
      if (out.length > this.maxOutput) out = out.slice(-Math.floor(this.maxOutput / 2));
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    child.on('error', (err) => (out += `\n[spawn failed: ${err.message}]\n`));
    const p: LabProcess = { child, output: () => out };
    child.on('exit', () => {
      p.exitedAt = Date.now();
      this.children.delete(child);
    });
    return p;
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves when every given process has exited. */
  async stop(procs: LabProcess | readonly LabProcess[], graceMs = 5000): Promise<void> {
    const list = Array.isArray(procs) ? (procs as readonly LabProcess[]) : [procs as LabProcess];
    await Promise.all(
      list.map(async ({ child }) => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const done = once(child, 'exit');
        child.kill('SIGTERM');
        const hard = setTimeout(() => child.kill('SIGKILL'), graceMs);
        try {
          await done;
        } finally {
          clearTimeout(hard);
        }
      }),
    );
  }

  /** Kills every child still running (by PID), deletes every namespace and host link; idempotent and synchronous. */
  destroy(): void {
    for (const c of this.children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    this.children.clear();
    for (const ns of this.namespaces.splice(0).reverse()) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        // already gone
      }
    }
    for (const link of this.hostLinks.splice(0)) {
      try {
        execFileSync('ip', ['link', 'del', link], { stdio: 'ignore' });
      } catch {
        // deleted with the namespace (a veth pair dies with either end)
      }
    }
    if (this.restoreAllowed !== undefined) {
      // Only if it is still what this lab wrote: a list changed meanwhile
      // (by someone else, or another lab that widened it further and still
      // runs) is left as it is.
      const { old, widened } = this.restoreAllowed;
      this.restoreAllowed = undefined;
      try {
        if (sysctlRead('net.ipv4.tcp_allowed_congestion_control') === widened)
          execFileSync('sysctl', ['-qw', `net.ipv4.tcp_allowed_congestion_control=${old}`]);
      } catch {
        // sysctl failed: nothing more to do on the way out
      }
    }
  }

  /**
   * The kernel lets a namespace choose only from the host's
   * net.ipv4.tcp_allowed_congestion_control: an algorithm the host has but
   * does not allow is added to that list until destroy().
   */
  private allowCongestionControl(name: string): void {
    const allowed = sysctlRead('net.ipv4.tcp_allowed_congestion_control');
    if (allowed.split(/\s+/).includes(name)) return;
    const available = sysctlRead('net.ipv4.tcp_available_congestion_control');
    if (!available.split(/\s+/).includes(name))
      throw new BootTorrentError(
        'BT_ERR_DEMO',
        `TCP congestion control ${name} is not available on this host (it has ${available}): choose one of those with --cc`,
      );
    const widened = `${allowed} ${name}`;
    execFileSync('sysctl', ['-qw', `net.ipv4.tcp_allowed_congestion_control=${widened}`]);
    this.restoreAllowed = { old: allowed, widened };
  }
}

/** Resolves when `p.output()` matches `re`; rejects on timeout, abort, or if the process exits first. */
export async function waitForOutput(
  p: LabProcess,
  re: RegExp,
  ms: number,
  what: string,
  signal?: AbortSignal,
): Promise<RegExpMatchArray> {
  const deadline = Date.now() + ms;
  for (;;) {
    const m = re.exec(p.output());
    if (m) return m;
    if (signal?.aborted) throw new BootTorrentError('BT_ERR_ABORTED', `${what}: interrupted`);
    if (p.child.exitCode !== null || p.child.signalCode !== null)
      throw new BootTorrentError(
        'BT_ERR_DEMO',
        `${what} exited (${p.child.exitCode ?? p.child.signalCode}) before ${re}:\n${p.output().slice(-4000)}`,
      );
    if (Date.now() > deadline)
      throw new BootTorrentError(
        'BT_ERR_DEMO',
        `${what}: no ${re} within ${ms / 1000} s:\n${p.output().slice(-4000)}`,
      );
    await new Promise((r) => setTimeout(r, 100));
  }
}
