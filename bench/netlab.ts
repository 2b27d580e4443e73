/**
 * An emulated LAN in network namespaces for benchmarks: a "switch"
 * namespace holding a bridge, and hosts each joined to it by a veth pair
 * whose two ends are shaped with `tc tbf` (the switch end's egress is the
 * host's download, the host end's egress its upload).
 *
 * Unlike test/helpers/netns.ts (tied to a TestContext), this one cleans up
 * when the process ends for any reason: normal exit, an exception, SIGINT
 * or SIGTERM. Every child is killed by its PID and every namespace this lab
 * created is deleted. The one host-wide setting it may change, the list of
 * TCP congestion controls namespaces may use, is written back as it was.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';

export interface Host {
  readonly ns: string;
  readonly ifname: string;
  readonly ip: string;
  /** Its link's end on the switch (in the switch namespace): tx there is the host's download. */
  readonly port: string;
}

export interface Proc {
  readonly child: ChildProcess;
  output(): string;
  /** Date.now() when the process exited, if it has. */
  exitedAt?: number;
}

const live = new Set<NetLab>();
let handlersInstalled = false;

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', () => {
    for (const lab of live) lab.destroy();
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      process.stderr.write(`\n${sig}: removing the emulated LAN\n`);
      for (const lab of live) lab.destroy();
      process.exit(130);
    });
  }
}

/** A host-wide kernel setting (init namespace), trimmed. */
function sysctlRead(key: string): string {
  return execFileSync('sysctl', ['-n', key], { encoding: 'utf8' }).trim();
}

/** `10mbit`-style tc rate from bits per second. */
export function tcRate(bitsPerSecond: number): string {
  return `${Math.round(bitsPerSecond / 1000)}kbit`;
}

export class NetLab {
  readonly id = randomBytes(3).toString('hex');
  readonly switchNs: string;
  private readonly namespaces: string[] = [];
  private readonly children = new Set<ChildProcess>();
  private hostCount = 0;
  /** The host's allowed congestion controls before this lab widened them, and the list it wrote. */
  private restoreAllowed: { old: string; widened: string } | undefined;

  /**
   * `congestionControl`, if given, is set in every namespace; otherwise a
   * new namespace takes the host's default (see `tcpCongestionControl`).
   * The kernel lets a namespace choose only from the host's
   * net.ipv4.tcp_allowed_congestion_control: an algorithm the host has but
   * does not allow is added to that list for the lab's lifetime (the old
   * list is written back by destroy()).
   */
  constructor(
    private readonly subnet = '10.77.0',
    private readonly congestionControl?: string,
  ) {
    installHandlers();
    live.add(this);
    if (congestionControl) this.allowCongestionControl(congestionControl);
    this.switchNs = this.ns('sw');
    this.ipn(this.switchNs, 'link', 'add', 'br0', 'type', 'bridge');
    this.ipn(this.switchNs, 'link', 'set', 'br0', 'up');
    // A switch forwards frames; it does not run them through iptables. With
    // br_netfilter loaded (Docker loads it) every bridged frame of every
    // host went through the netfilter hooks: a CPU cost per packet that no
    // real LAN has. These knobs are per namespace and exist only when the
    // module is loaded.
    for (const knob of ['iptables', 'ip6tables', 'arptables']) {
      try {
        execFileSync(
          'ip',
          ['netns', 'exec', this.switchNs, 'sysctl', '-qw', `net.bridge.bridge-nf-call-${knob}=0`],
          {
            stdio: 'ignore',
          },
        );
      } catch {
        // br_netfilter not loaded: frames skip netfilter already.
      }
    }
  }

  private allowCongestionControl(name: string): void {
    const allowed = sysctlRead('net.ipv4.tcp_allowed_congestion_control');
    if (allowed.split(/\s+/).includes(name)) return;
    const available = sysctlRead('net.ipv4.tcp_available_congestion_control');
    if (!available.split(/\s+/).includes(name)) {
      this.destroy();
      throw new Error(
        `TCP congestion control ${name} is not available on this host (it has ${available}): choose one of those with --cc`,
      );
    }
    const widened = `${allowed} ${name}`;
    execFileSync('sysctl', ['-qw', `net.ipv4.tcp_allowed_congestion_control=${widened}`]);
    this.restoreAllowed = { old: allowed, widened };
  }

  /** Namespace names start with this; none is left once destroy() ran. */
  get prefix(): string {
    return `btb-${this.id}-`;
  }

  private ns(role: string): string {
    const name = `${this.prefix}${role}`;
    execFileSync('ip', ['netns', 'add', name]);
    this.namespaces.push(name);
    this.ipn(name, 'link', 'set', 'lo', 'up');
    if (this.congestionControl) {
      try {
        execFileSync(
          'ip',
          [
            'netns',
            'exec',
            name,
            'sysctl',
            '-qw',
            `net.ipv4.tcp_congestion_control=${this.congestionControl}`,
          ],
          { stdio: 'pipe' },
        );
      } catch {
        const allowed = sysctlRead('net.ipv4.tcp_allowed_congestion_control');
        this.destroy();
        throw new Error(
          `cannot use TCP congestion control ${this.congestionControl} in a namespace: the host allows ${allowed} ` +
            `(add it to net.ipv4.tcp_allowed_congestion_control, or choose one of those)`,
        );
      }
    }
    return name;
  }

  private ipn(ns: string, ...args: string[]): string {
    return execFileSync('ip', ['-n', ns, ...args], { encoding: 'utf8' });
  }

  /**
   * A host on the bridge at <subnet>.<octet>, its link shaped to `upBps`
   * (host -> switch) and `downBps` (switch -> host) with tbf. The bucket
   * scales with the rate (32 kbit at 10 Mbit/s): a fixed small bucket
   * would cap a faster link below its rate at the kernel's timer granularity.
   */
  host(role: string, octet: number, upBps: number, downBps: number): Host {
    const ns = this.ns(role);
    const sw = `v${this.id}${this.hostCount++}`;
    const ifname = 'eth0';
    execFileSync('ip', [
      'link',
      'add',
      sw,
      'netns',
      this.switchNs,
      'type',
      'veth',
      'peer',
      'name',
      ifname,
      'netns',
      ns,
    ]);
    this.ipn(this.switchNs, 'link', 'set', sw, 'master', 'br0', 'up');
    const ip = `${this.subnet}.${octet}`;
    this.ipn(ns, 'addr', 'add', `${ip}/24`, 'dev', ifname);
    this.ipn(ns, 'link', 'set', ifname, 'up');
    const tbf = (where: string, dev: string, bps: number) =>
      execFileSync('tc', [
        '-n',
        where,
        'qdisc',
        'add',
        'dev',
        dev,
        'root',
        'tbf',
        'rate',
        tcRate(bps),
        'burst',
        `${Math.max(4096, Math.round(bps / 8 / 312.5))}`,
        'latency',
        '50ms',
      ]);
    tbf(ns, ifname, upBps);
    tbf(this.switchNs, sw, downBps);
    return { ns, ifname, ip, port: sw };
  }

  /** The TCP congestion control the lab's hosts use. */
  tcpCongestionControl(): string {
    return execFileSync(
      'ip',
      ['netns', 'exec', this.switchNs, 'sysctl', '-n', 'net.ipv4.tcp_congestion_control'],
      {
        encoding: 'utf8',
      },
    ).trim();
  }

  /** TCP segments the host has sent and retransmitted so far (its namespace's /proc/net/snmp). */
  tcpSegments(h: Host): { out: number; retrans: number } {
    const snmp = execFileSync('ip', ['netns', 'exec', h.ns, 'cat', '/proc/net/snmp'], { encoding: 'utf8' });
    const rows = snmp.split('\n').filter((l) => l.startsWith('Tcp:'));
    const names = rows[0]?.split(/\s+/) ?? [];
    const values = rows[1]?.split(/\s+/).map(Number) ?? [];
    const get = (k: string) => values[names.indexOf(k)] ?? 0;
    return { out: get('OutSegs'), retrans: get('RetransSegs') };
  }

  /**
   * Every switch port's byte counters in one call (cheap enough to sample
   * each second): port tx is what its host downloaded, port rx what it sent.
   */
  portCounters(): Map<string, { tx: number; rx: number }> {
    const j = JSON.parse(this.ipn(this.switchNs, '-s', '-j', 'link', 'show')) as {
      ifname: string;
      stats64: { tx: { bytes: number }; rx: { bytes: number } };
    }[];
    return new Map(j.map((l) => [l.ifname, { tx: l.stats64.tx.bytes, rx: l.stats64.rx.bytes }]));
  }

  /**
   * Starts `cmd` inside the host's namespace (`ip netns exec` and `nice`
   * exec it: the PID is the command's). `nice` below 0 gives a host's
   * processes a larger share of the shared CPU; `stdin` keeps a pipe to it.
   */
  spawn(
    h: Host,
    cmd: string,
    args: string[],
    opts: { cwd?: string; nice?: number; stdin?: boolean } = {},
  ): Proc {
    const niced = opts.nice ? ['nice', '-n', String(opts.nice), cmd, ...args] : [cmd, ...args];
    const child = spawn('ip', ['netns', 'exec', h.ns, ...niced], {
      stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      cwd: opts.cwd,
    });
    this.children.add(child);
    let out = '';
    const keep = (d: Buffer) => {
      out += d.toString();
      if (out.length > 200_000) out = out.slice(-100_000);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    const p: Proc = { child, output: () => out };
    child.on('exit', () => {
      p.exitedAt = Date.now();
      this.children.delete(child);
    });
    return p;
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves when every given process has exited. */
  async stop(procs: readonly Proc[], graceMs = 2000): Promise<void> {
    await Promise.all(
      procs.map(async ({ child }) => {
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

  /** Kills every child still running (by PID) and deletes every namespace; idempotent and synchronous. */
  destroy(): void {
    for (const c of this.children) {
      if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    }
    this.children.clear();
    for (const ns of this.namespaces.splice(0).reverse()) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
      } catch {
        // already gone
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
    live.delete(this);
  }
}

/** Resolves when `re` matches the output; rejects on timeout or if the process exits first. */
export async function waitFor(p: Proc, re: RegExp, ms: number, what: string): Promise<RegExpMatchArray> {
  const deadline = Date.now() + ms;
  for (;;) {
    const m = re.exec(p.output());
    if (m) return m;
    if (p.child.exitCode !== null || p.child.signalCode !== null)
      throw new Error(
        `${what}: exited (${p.child.exitCode ?? p.child.signalCode}) before ${re}:\n${p.output()}`,
      );
    if (Date.now() > deadline)
      throw new Error(`${what}: no ${re} within ${ms / 1000} s:\n${p.output().slice(-4000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
