/**
 * Phase 1's network: the NIC whose MAC the server booted (boottorrent.mac),
 * or, without one, every wired NIC; DHCP with busybox udhcpc.
 * udhcpc only negotiates; a script applies the lease (address, default
 * route) with `ip`. The agent writes and passes its own rather than rely on
 * the image's default one, so it also works in host mode and in tests.
 */
import { execFile } from 'node:child_process';
import { readFile, readdir, stat, writeFile, chmod } from 'node:fs/promises';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { BootTorrentError } from '../errors.js';
import { silentLogger, type Logger } from '../util/logger.js';

const execFileP = promisify(execFile);

/** ARPHRD_ETHER in /sys/class/net/X/type (linux/if_arp.h). */
const ARPHRD_ETHER = '1';

/**
 * The udhcpc script (busybox networking/udhcp/dhcpc.c runs it with $1 =
 * deconfig | bound | renew | leasefail | nak and the lease in variables:
 * $interface, $ip, $mask (prefix length), $broadcast, $router, $dns).
 */
export const UDHCPC_SCRIPT = `#!/bin/sh
# Written by the BootTorrent agent: applies a DHCP lease for busybox udhcpc.
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface" 2>/dev/null
    ip link set "$interface" up
    ;;
  bound|renew)
    ip -4 addr flush dev "$interface" 2>/dev/null
    ip addr add "$ip/\${mask:-24}" \${broadcast:+broadcast "$broadcast"} dev "$interface"
    if [ -n "$router" ]; then
      ip route del default dev "$interface" 2>/dev/null
      for r in $router; do
        ip route add default via "$r" dev "$interface" 2>/dev/null && break
      done
    fi
    if [ -n "$dns" ]; then
      : > /etc/resolv.conf 2>/dev/null
      for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf 2>/dev/null; done
    fi
    ;;
esac
exit 0
`;

/** Wired NICs: ethernet type, not lo, not wireless. */
export async function wiredInterfaces(sysNet = '/sys/class/net'): Promise<string[]> {
  const names = await readdir(sysNet).catch(() => [] as string[]);
  const out: string[] = [];
  for (const name of names.sort()) {
    if (name === 'lo') continue;
    const type = await readFile(join(sysNet, name, 'type'), 'utf8').catch(() => '');
    if (type.trim() !== ARPHRD_ETHER) continue;
    const wireless = await stat(join(sysNet, name, 'wireless')).then(
      () => true,
      () => false,
    );
    if (!wireless) out.push(name);
  }
  return out;
}

/** The first IPv4 address of a NIC, if it has one. */
export function ipv4Of(name: string): string | undefined {
  return networkInterfaces()[name]?.find((a) => a.family === 'IPv4' && !a.internal)?.address;
}

export interface Lease {
  readonly nic: string;
  readonly address: string;
}

/** The interface whose hardware address is `mac` (lower-case colon form), if any. */
export async function interfaceWithMac(mac: string, sysNet = '/sys/class/net'): Promise<string | undefined> {
  const names = await readdir(sysNet).catch(() => [] as string[]);
  for (const name of names.sort()) {
    const address = await readFile(join(sysNet, name, 'address'), 'utf8').catch(() => '');
    if (address.trim().toLowerCase() === mac) return name;
  }
  return undefined;
}

/**
 * Brings up the NIC the firmware booted from (`mac`, from boottorrent.mac)
 * and runs DHCP on it; the other NICs are left alone (another network's
 * DHCP server must not decide where this machine fetches its OS). Without
 * `mac` (host mode), every wired NIC at once, the first lease winning.
 * Throws BT_ERR_AGENT when no NIC has that MAC or none got a lease.
 */
export async function bringUpNetwork(
  services: { logger?: Logger; signal?: AbortSignal; say?: (line: string) => void; mac?: string } = {},
): Promise<Lease> {
  const log = (services.logger ?? silentLogger).child('net');
  const say = services.say ?? (() => undefined);
  let nics: string[];
  if (services.mac !== undefined) {
    const nic = await interfaceWithMac(services.mac);
    if (!nic) {
      const all = await wiredInterfaces();
      throw new BootTorrentError(
        'BT_ERR_AGENT',
        `no network interface has MAC ${services.mac}, the one this machine booted from ` +
          `(interfaces: ${all.join(', ') || 'none'}); its driver may be missing from phase 1 (see /sys/class/net)`,
      );
    }
    nics = [nic];
  } else {
    nics = await wiredInterfaces();
  }
  if (nics.length === 0) {
    throw new BootTorrentError(
      'BT_ERR_AGENT',
      'no wired network interface found: the NIC driver may be missing from phase 1 (see /sys/class/net)',
    );
  }
  const script = '/tmp/boottorrent-udhcpc.sh';
  await writeFile(script, UDHCPC_SCRIPT);
  await chmod(script, 0o755);
  say(`network: asking DHCP on ${nics.join(', ')}`);
  const attempts = nics.map(async (nic): Promise<Lease> => {
    const existing = ipv4Of(nic);
    if (existing) return { nic, address: existing };
    await execFileP('ip', ['link', 'set', nic, 'up'], { signal: services.signal });
    // -f foreground, -q quit after a lease, -n give up after -t 5 discovers.
    await execFileP('udhcpc', ['-i', nic, '-f', '-q', '-n', '-t', '5', '-s', script], {
      signal: services.signal,
      timeout: 60_000,
    });
    const address = ipv4Of(nic);
    if (!address) throw new Error(`${nic}: udhcpc succeeded but the NIC has no IPv4 address`);
    return { nic, address };
  });
  try {
    const lease = await Promise.any(attempts);
    log.info('lease', { nic: lease.nic, address: lease.address });
    return lease;
  } catch (err) {
    const errors = err instanceof AggregateError ? err.errors : [err];
    const why = errors
      .map((e: unknown, i) => `${nics[i]}: ${(e as Error).message.split('\n')[0]}`)
      .join('; ');
    throw new BootTorrentError('BT_ERR_AGENT', `no DHCP lease on any NIC (${why})`, { cause: err });
  }
}
