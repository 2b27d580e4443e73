/**
 * An emulated LAN in network namespaces for benchmarks, built from the one
 * namespace lab (src/util/netns.ts): a "switch" namespace holding a bridge,
 * and hosts each joined to it by a veth pair whose two ends are shaped with
 * `tc tbf` (the switch end's egress is the host's download, the host end's
 * egress its upload).
 *
 * It cleans up when the process ends for any reason: normal exit, an
 * exception, SIGINT or SIGTERM. Every child is killed by its PID and every
 * namespace this lab created is deleted. The one host-wide setting it may
 * change, the list of TCP congestion controls namespaces may use, is
 * written back as it was.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { NetnsLab, waitForOutput, type LabProcess } from '../src/util/netns.js';

export interface Host {
  readonly ns: string;
  readonly ifname: string;
  readonly ip: string;
  /** The host's port on the switch: its tx counter is what the host downloaded, rx what it sent. */
  readonly port: string;
}

export type Proc = LabProcess;

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

/**
 * Shapes `dev` in namespace `ns` to `bps` with tbf. The bucket scales with
 * the rate (32 kbit at 10 Mbit/s): a fixed small bucket would cap a faster
 * link below its rate at the kernel's timer granularity.
 */
/** "32M" with k = 1024 is 32 MiB, "100M" with k = 1000 is 10^8: a number with an optional K, M or G. */
export function unit(s: string, k: number): number {
  const m = /^(\d+(?:\.\d+)?)([KMG]?)$/i.exec(s);
  if (!m) throw new Error(`${s}: expected a number with an optional K, M or G`);
  const e = { '': 0, K: 1, M: 2, G: 3 }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G'];
  return Math.round(Number(m[1]) * k ** e);
}

/** The path of `cmd`, or an error naming the Debian package that has it. */
export function which(cmd: string, pkg: string): string {
  try {
    return execFileSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error(`${cmd} is missing: apt-get install ${pkg}`);
  }
}

export function shapeTbf(ns: string, dev: string, bps: number): void {
  execFileSync('tc', [
    '-n',
    ns,
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
}

/** Busy and total CPU ticks of the whole machine so far (/proc/stat, all cores). */
export function cpuTicks(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: total - f[3]! - f[4]!, total };
}

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());

/** user + system CPU seconds a process has used so far; undefined once it is gone. */
export function processCpuSeconds(pid: number): number | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // Fields after the command name (which may hold spaces) start at the state (field 3).
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;
}

/** `10mbit`-style tc rate from bits per second. */
export function tcRate(bitsPerSecond: number): string {
  return `${Math.round(bitsPerSecond / 1000)}kbit`;
}

/**
 * The benchmarks' LAN, from the one namespace lab (src/util/netns.ts): a
 * switch namespace holding a bridge, and hosts each joined to it by a veth
 * pair whose two ends are shaped with tbf. Removed on exit and on
 * SIGINT/SIGTERM/SIGHUP (the benchmark then exits 130).
 */
export class NetLab {
  private readonly lab: NetnsLab;
  readonly switchNs: string;

  /**
   * `congestionControl`, if given, is set in every namespace; otherwise a
   * new namespace takes the host's default (see `tcpCongestionControl`).
   */
  constructor(
    private readonly subnet = '10.77.0',
    congestionControl?: string,
  ) {
    installHandlers();
    this.lab = new NetnsLab({
      name: (role, id) => `btb-${id}-${role}`,
      maxOutput: 200_000,
      ...(congestionControl ? { congestionControl } : {}),
    });
    live.add(this);
    try {
      this.switchNs = this.lab.ns('sw');
      this.lab.bridge(this.switchNs, 'br0');
    } catch (err) {
      this.destroy();
      throw err;
    }
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
          { stdio: 'ignore' },
        );
      } catch {
        // br_netfilter not loaded: frames skip netfilter already.
      }
    }
  }

  get id(): string {
    return this.lab.id;
  }

  /** Namespace names start with this; none is left once destroy() ran. */
  get prefix(): string {
    return this.lab.nameOf('');
  }

  /**
   * A host on the bridge at <subnet>.<octet>, its link shaped to `upBps`
   * (host -> switch) and `downBps` (switch -> host) with tbf. The bucket
   * scales with the rate (32 kbit at 10 Mbit/s): a fixed small bucket
   * would cap a faster link below its rate at the kernel's timer granularity.
   */
  host(role: string, octet: number, upBps: number, downBps: number): Host {
    const ns = this.lab.ns(role);
    const ifname = 'eth0';
    const ip = `${this.subnet}.${octet}`;
    const port = this.lab.veth(this.switchNs, 'br0', ns, ifname, `${ip}/24`);
    shapeTbf(ns, ifname, upBps);
    shapeTbf(this.switchNs, port, downBps);
    return { ns, ifname, ip, port };
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
    const j = JSON.parse(this.lab.ip(this.switchNs, '-s', '-j', 'link', 'show')) as {
      ifname: string;
      stats64: { tx: { bytes: number }; rx: { bytes: number } };
    }[];
    return new Map(j.map((l) => [l.ifname, { tx: l.stats64.tx.bytes, rx: l.stats64.rx.bytes }]));
  }

  /** Starts `cmd` inside the host's namespace (see NetnsLab.spawn). */
  spawn(
    h: Host,
    cmd: string,
    args: string[],
    opts: { cwd?: string; nice?: number; stdin?: boolean } = {},
  ): Proc {
    return this.lab.spawn(h.ns, cmd, args, opts);
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves when every given process has exited. */
  stop(procs: readonly Proc[], graceMs = 2000): Promise<void> {
    return this.lab.stop(procs, graceMs);
  }

  /** Kills every child still running (by PID), deletes every namespace, restores host settings; idempotent. */
  destroy(): void {
    this.lab.destroy();
    live.delete(this);
  }
}

/** Resolves when `re` matches the output; rejects on timeout or if the process exits first. */
export function waitFor(p: Proc, re: RegExp, ms: number, what: string): Promise<RegExpMatchArray> {
  return waitForOutput(p, re, ms, what);
}
