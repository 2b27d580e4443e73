/**
 * A throwaway LAN for the demo (and the end-to-end tests): one network
 * namespace holding a bridge, the server process and one tap device per
 * QEMU client. Nothing in it reaches any other network; the only link out
 * is an optional veth to the host with a private /30, so the person running
 * the demo can open the dashboard. destroy() kills what it started (by PID)
 * and deletes the namespace, which takes every device in it along.
 */
import { NetnsLab, waitForOutput, type LabProcess } from '../util/netns.js';

export { waitForOutput, type LabProcess };

/** One namespace of a NetnsLab (src/util/netns.ts) with a bridge `br0`: the demo's LAN. */
export class NetLab {
  private readonly lab = new NetnsLab();
  readonly ns: string;

  /** Creates the namespace with loopback up and a bridge `br0` holding `cidr`. */
  constructor(
    role: string,
    readonly bridgeCidr: string,
  ) {
    try {
      this.ns = this.lab.ns(role);
      this.lab.bridge(this.ns, 'br0', bridgeCidr);
    } catch (err) {
      this.lab.destroy();
      throw err;
    }
  }

  get id(): string {
    return this.lab.id;
  }

  ip(...args: string[]): string {
    return this.lab.ip(this.ns, ...args);
  }

  /** A tap device on br0 for one VM. */
  tap(name: string): void {
    this.lab.tap(this.ns, name, 'br0');
  }

  /**
   * A veth between the host and the namespace: the host gets `hostCidr`,
   * the namespace's `uplink` gets `nsCidr` (a private /30 of the caller's choice).
   */
  linkToHost(hostCidr: string, nsCidr: string): void {
    this.lab.linkToHost(this.ns, hostCidr, nsCidr);
  }

  /** Starts `cmd` inside the namespace; killed by PID in destroy(). */
  spawn(cmd: string, args: readonly string[], opts: { cwd?: string } = {}): LabProcess {
    return this.lab.spawn(this.ns, cmd, args, opts);
  }

  /** Asks a process to stop (SIGTERM), then kills it after `graceMs`. */
  stop(p: LabProcess, graceMs = 5000): Promise<void> {
    return this.lab.stop(p, graceMs);
  }

  destroy(): void {
    this.lab.destroy();
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
  /** peers.phase1_loader: grub (UEFI clients load the kernel from holders through the verifying GRUB). */
  phase1Loader?: 'grub';
  /** server.uefi_chain (signed: Debian's shim and GRUB for UEFI PXE clients; uki: the lab-signed phase 1). */
  uefiChain?: 'ipxe' | 'signed' | 'uki';
  /** With uefiChain uki: the lab's key and certificate (server.uki_key, server.uki_cert). */
  uki?: { key: string; cert: string };
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
    ...(o.uefiChain ? [`  uefi_chain: ${o.uefiChain}`] : []),
    ...(o.uki
      ? [`  uki_key: ${JSON.stringify(o.uki.key)}`, `  uki_cert: ${JSON.stringify(o.uki.cert)}`]
      : []),
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
          ...(o.phase1Loader ? [`  phase1_loader: ${o.phase1Loader}`] : []),
        ]
      : []),
    ...(hosts.length > 0 ? ['hosts:', ...hosts.map(([mac, v]) => `  '${mac}': ${v}`)] : []),
    '',
  ].join('\n');
}
