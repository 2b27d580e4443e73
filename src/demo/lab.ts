/**
 * A throwaway LAN for the demo (and the end-to-end tests): one network
 * namespace holding a bridge, the server process and one tap device per
 * QEMU client. Nothing in it reaches any other network; the only link out
 * is an optional veth to the host with a private /30, so the person running
 * the demo can open the dashboard. destroy() kills what it started (by PID)
 * and deletes the namespace, which takes every device in it along.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { BootTorrentError } from '../errors.js';

export interface LabProcess {
  readonly child: ChildProcess;
  /** Everything it wrote to stdout and stderr so far. */
  output(): string;
}

function ipCmd(args: string[]): string {
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

export class NetLab {
  readonly id = randomBytes(3).toString('hex');
  readonly ns: string;
  private readonly children: ChildProcess[] = [];
  private destroyed = false;
  private hostLink: string | undefined;

  /** Creates the namespace with loopback up and a bridge `br0` holding `cidr`. */
  constructor(
    role: string,
    readonly bridgeCidr: string,
  ) {
    this.ns = `bt-${role}-${this.id}`;
    ipCmd(['netns', 'add', this.ns]);
    try {
      this.ip('link', 'set', 'lo', 'up');
      this.ip('link', 'add', 'br0', 'type', 'bridge');
      // No STP delays: a tap must forward the moment QEMU opens it.
      this.ip('link', 'set', 'br0', 'type', 'bridge', 'forward_delay', '0', 'stp_state', '0');
      this.ip('addr', 'add', bridgeCidr, 'dev', 'br0');
      this.ip('link', 'set', 'br0', 'up');
    } catch (err) {
      this.destroy();
      throw err;
    }
  }

  ip(...args: string[]): string {
    return ipCmd(['-n', this.ns, ...args]);
  }

  /** A tap device on br0 for one VM. */
  tap(name: string): void {
    this.ip('tuntap', 'add', 'dev', name, 'mode', 'tap');
    this.ip('link', 'set', name, 'master', 'br0', 'up');
  }

  /**
   * A veth between the host and the namespace: the host gets `hostCidr`,
   * the namespace `nsCidr` (a private /30 of the caller's choice).
   */
  linkToHost(hostCidr: string, nsCidr: string): void {
    const host = `btd${this.id}`;
    ipCmd(['link', 'add', host, 'type', 'veth', 'peer', 'name', 'uplink', 'netns', this.ns]);
    this.hostLink = host;
    ipCmd(['addr', 'add', hostCidr, 'dev', host]);
    ipCmd(['link', 'set', host, 'up']);
    this.ip('addr', 'add', nsCidr, 'dev', 'uplink');
    this.ip('link', 'set', 'uplink', 'up');
  }

  /** Starts `cmd` inside the namespace; killed by PID in destroy(). */
  spawn(cmd: string, args: readonly string[], opts: { cwd?: string } = {}): LabProcess {
    const child = spawn('ip', ['netns', 'exec', this.ns, cmd, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
    });
    this.children.push(child);
    let out = '';
    const keep = (d: Buffer) => {
      out += d.toString();
      if (out.length > 4_000_000) out = out.slice(-2_000_000);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('error', (err) => (out += `\n[spawn failed: ${err.message}]\n`));
    return { child, output: () => out };
  }

  /** Asks a process to stop (SIGTERM), then kills it after `graceMs`. */
  async stop(p: LabProcess, graceMs = 5000): Promise<void> {
    const c = p.child;
    if (c.exitCode !== null || c.signalCode !== null) return;
    const done = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    c.kill('SIGTERM');
    const t = setTimeout(() => c.kill('SIGKILL'), graceMs);
    await done;
    clearTimeout(t);
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const c of this.children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    try {
      execFileSync('ip', ['netns', 'del', this.ns], { stdio: 'ignore' });
    } catch {
      // already gone
    }
    if (this.hostLink) {
      try {
        execFileSync('ip', ['link', 'del', this.hostLink], { stdio: 'ignore' });
      } catch {
        // deleted with the namespace (a veth pair dies with either end)
      }
    }
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
        `${what} exited (${p.child.exitCode ?? p.child.signalCode}) before ${re}:\n${p.output().slice(-3000)}`,
      );
    if (Date.now() > deadline)
      throw new BootTorrentError(
        'BT_ERR_DEMO',
        `${what}: no ${re} within ${ms / 1000} s:\n${p.output().slice(-3000)}`,
      );
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** What a lab's Boottorrent.yaml says: full DHCP on the lab's bridge br0, the server at `<lan>.1`. */
export interface LabEnvOptions {
  /** The lab's /24, e.g. `10.99.0`. */
  lan: string;
  /** Last octets of the DHCP range, e.g. [100, 250]. */
  range: readonly [number, number];
  defaultOs: string;
  timeout: number;
  seedTime: number;
  /** Local Service Discovery and PEX on (both default off in the environment format). */
  peers?: boolean;
  /** Clients serve phase 1 to later clients (peers.phase1, #16). */
  phase1Peers?: boolean;
  /** Per-MAC settings, each a YAML flow mapping such as `{ timeout: -1 }`. */
  hosts?: Readonly<Record<string, string>>;
}

/** The Boottorrent.yaml of a lab environment (the PXE demo's and the end-to-end tests'). */
export function labEnvYaml(o: LabEnvOptions): string {
  const hosts = Object.entries(o.hosts ?? {});
  return [
    'version: 1',
    'server:',
    '  interface: br0',
    `  address: ${o.lan}.1`,
    'dhcp:',
    '  mode: full',
    `  range: ${o.lan}.${o.range[0]}-${o.lan}.${o.range[1]}`,
    'boot:',
    `  default_os: ${o.defaultOs}`,
    `  timeout: ${o.timeout}`,
    `  seed_time: ${o.seedTime}`,
    ...(o.peers || o.phase1Peers
      ? [
          'peers:',
          ...(o.peers ? ['  lsd: true', '  pex: true'] : []),
          ...(o.phase1Peers ? ['  phase1: true'] : []),
        ]
      : []),
    ...(hosts.length > 0 ? ['hosts:', ...hosts.map(([mac, v]) => `  '${mac}': ${v}`)] : []),
    '',
  ].join('\n');
}
