/**
 * The checks of an environment that depend on the machine it runs on: the
 * interface and its address, the DHCP range against that interface's
 * subnet, the ports `start` will bind, and the iPXE binaries it serves.
 * Kept apart so unit tests of the pure checks stay deterministic.
 */
import { SIGNED_CHAIN_FILES, SIGNED_CHAIN_PACKAGES, type UefiChain } from '../boot/grub.js';
import { UKI_PACKAGES, UKI_STUB } from '../boot/uki.js';
import { createSocket } from 'node:dgram';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { networkInterfaces as osInterfaces, type NetworkInterfaceInfo } from 'node:os';
import { join } from 'node:path';
import type { DhcpMode } from './types.js';

export interface MachineOptions {
  /** Replaces os.networkInterfaces() (tests describe a machine without having it). */
  readonly networkInterfaces?: () => NodeJS.Dict<NetworkInterfaceInfo[]>;
}

export interface MachineInput {
  readonly interface: string | null;
  readonly address: string;
  readonly httpPort: number;
  readonly tftp: boolean;
  readonly ipxeDir: string;
  readonly uefiChain?: UefiChain;
  readonly uefiLoader?: 'ipxe.efi' | 'snponly.efi';
  readonly ipxeConfigured: boolean;
  readonly dhcpMode: DhcpMode;
  readonly range: string | undefined;
  /** Tracker port, or null when the tracker is off. */
  readonly tracker: number | null;
  /** Field names as written in the file's version. */
  readonly names: Record<
    'interface' | 'address' | 'httpPort' | 'range' | 'trackerPort' | 'tftp' | 'dhcpMode' | 'ipxeDir',
    string
  >;
}

export interface MachineProblem {
  readonly field: string;
  readonly message: string;
  readonly fix: string;
}

/** iPXE for BIOS PXE (chainloaded over TFTP) and for UEFI x64. */
export const IPXE_FILES = ['undionly.kpxe', 'ipxe.efi'] as const;

export async function machineProblems(
  cfg: MachineInput,
  opts: MachineOptions = {},
): Promise<MachineProblem[]> {
  const out: MachineProblem[] = [];
  const n = cfg.names;
  const ifaces = (opts.networkInterfaces ?? osInterfaces)();
  const v4 = (name: string) => (ifaces[name] ?? []).filter((a) => a.family === 'IPv4');
  const describe = (name: string) =>
    v4(name)
      .map((a) => a.cidr ?? a.address)
      .join(', ') || 'no IPv4 address';

  let owner: NetworkInterfaceInfo | undefined;
  if (cfg.interface !== null) {
    if (!ifaces[cfg.interface]) {
      const names = Object.keys(ifaces);
      out.push({
        field: n.interface,
        message: `there is no network interface '${cfg.interface}' on this machine (it has ${names.join(', ')})`,
        fix: `use one of: ${names.join(', ')} (see \`ip -br addr\`)`,
      });
    } else {
      owner = v4(cfg.interface).find((a) => a.address === cfg.address);
      if (!owner)
        out.push({
          field: n.address,
          message: `interface ${cfg.interface} does not have address ${cfg.address} (it has ${describe(cfg.interface)})`,
          fix: `set ${n.address} to the interface's address, or add it: ip addr add ${cfg.address}/24 dev ${cfg.interface}`,
        });
    }
  } else {
    const hit = Object.entries(ifaces).find(([, list]) =>
      (list ?? []).some((a) => a.family === 'IPv4' && a.address === cfg.address),
    );
    owner = hit?.[1]?.find((a) => a.family === 'IPv4' && a.address === cfg.address);
    if (!owner)
      out.push({
        field: n.address,
        message: `no interface of this machine has address ${cfg.address}`,
        fix: `set ${n.address} to an address of this machine, or add it with \`ip addr add\``,
      });
  }

  if (owner && cfg.dhcpMode === 'full' && cfg.range !== undefined) {
    const mask = toInt(owner.netmask);
    const net = toInt(owner.address) & mask;
    const ends = cfg.range
      .split(/[-,]/)
      .slice(0, 2)
      .map((s) => s.trim());
    const outside = ends.find((ip) => (toInt(ip) & mask) !== net);
    if (outside)
      out.push({
        field: n.range,
        message: `${outside} is outside the interface's subnet ${owner.cidr ?? `${owner.address}/${owner.netmask}`}`,
        fix: 'choose a range inside the subnet of the server address',
      });
  }

  // Bind where `start` will: the lab address when the machine has it.
  const host = owner ? cfg.address : '0.0.0.0';
  const ports: { field: string; proto: 'tcp' | 'udp'; port: number; what: string }[] = [
    { field: n.httpPort, proto: 'tcp', port: cfg.httpPort, what: 'boot HTTP server' },
  ];
  if (cfg.tracker !== null) {
    ports.push({ field: n.trackerPort, proto: 'tcp', port: cfg.tracker, what: 'tracker (HTTP)' });
    ports.push({ field: n.trackerPort, proto: 'udp', port: cfg.tracker, what: 'tracker (UDP)' });
  }
  // DHCP servers must receive broadcasts, so they bind the wildcard address.
  if (cfg.dhcpMode !== 'off') ports.push({ field: n.dhcpMode, proto: 'udp', port: 67, what: 'DHCP server' });
  if (cfg.dhcpMode === 'proxy')
    ports.push({ field: n.dhcpMode, proto: 'udp', port: 4011, what: 'proxyDHCP (PXE)' });
  if (cfg.tftp) ports.push({ field: n.tftp, proto: 'udp', port: 69, what: 'TFTP server' });
  for (const p of ports) {
    const bindHost = p.port === 67 || p.port === 4011 ? '0.0.0.0' : host;
    const err = await tryBind(p.proto, bindHost, p.port);
    if (err === 'EADDRINUSE')
      out.push({
        field: p.field,
        message: `${p.proto.toUpperCase()} port ${p.port} (${p.what}) is already in use on ${bindHost}`,
        fix: `stop the program using it (\`ss -lnp${p.proto === 'tcp' ? 't' : 'u'} sport = :${p.port}\`) or choose another port`,
      });
    else if (err === 'EACCES')
      out.push({
        field: p.field,
        message: `no permission to bind ${p.proto.toUpperCase()} port ${p.port} (${p.what})`,
        fix: 'run boottorrent as root (ports below 1024 need it)',
      });
    else if (err)
      out.push({
        field: p.field,
        message: `cannot bind ${p.proto.toUpperCase()} ${bindHost}:${p.port} (${p.what}): ${err}`,
        fix: `check ${n.address}`,
      });
  }

  const wanted = [...IPXE_FILES, ...(cfg.uefiLoader === 'snponly.efi' ? ['snponly.efi'] : [])];
  const missing = wanted.filter((f) => !existsSync(join(cfg.ipxeDir, f)));
  if (missing.length)
    out.push({
      field: n.ipxeDir,
      message: `iPXE binaries missing in ${cfg.ipxeDir}: ${missing.join(', ')}`,
      fix: cfg.ipxeConfigured
        ? `put ${missing.join(' and ')} in ${cfg.ipxeDir}, or remove ipxe_dir to use the Debian package's`
        : 'install them: apt-get install ipxe',
    });
  if (cfg.uefiChain === 'signed') {
    const gone = Object.values(SIGNED_CHAIN_FILES).filter((f) => !existsSync(f));
    if (gone.length)
      out.push({
        field: 'server.uefi_chain',
        message: `the signed boot chain is missing: ${gone.join(', ')}`,
        fix: `apt-get install ${SIGNED_CHAIN_PACKAGES} (docs/deployment.md, "Secure Boot")`,
      });
  }
  if (cfg.uefiChain === 'uki') {
    const gone = [UKI_STUB, '/usr/bin/sbsign', '/usr/bin/objcopy'].filter((f) => !existsSync(f));
    if (gone.length)
      out.push({
        field: 'server.uefi_chain',
        message: `building the lab-signed phase-1 image needs ${gone.join(', ')}`,
        fix: `apt-get install ${UKI_PACKAGES} (docs/deployment.md, "Secure Boot with the lab's key")`,
      });
  }
  return out;
}

function toInt(ip: string): number {
  return ip.split('.').reduce((a, b) => ((a << 8) | Number(b)) >>> 0, 0);
}

/** Binds and releases at once; resolves with the error code, or null when the port is free. */
function tryBind(proto: 'tcp' | 'udp', host: string, port: number): Promise<string | null> {
  return new Promise((resolve) => {
    if (proto === 'tcp') {
      const srv = createServer();
      srv.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      srv.listen({ host, port, exclusive: true }, () => srv.close(() => resolve(null)));
    } else {
      const sock = createSocket({ type: 'udp4', reuseAddr: false });
      sock.once('error', (e: NodeJS.ErrnoException) => {
        sock.close();
        resolve(e.code ?? e.message);
      });
      sock.bind({ address: host, port, exclusive: true }, () => sock.close(() => resolve(null)));
    }
  });
}
