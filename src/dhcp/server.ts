/**
 * The DHCPv4 server: the one owner of the DHCP sockets (STYLE.md lesson 2).
 * Modes: `full` (addresses from a range, reservations, persisted leases),
 * `proxy` (proxyDHCP per PXE 2.1 §2.2.3: boot information only, beside the
 * network's own DHCP server) and `off`.
 *
 * How replies reach clients that have no address, on the right interface,
 * without SO_BINDTODEVICE (which Node cannot set):
 *   - `rx` is bound to 0.0.0.0:67. Broadcast requests (255.255.255.255) are
 *     only delivered to wildcard-bound sockets, so they arrive here, from
 *     every interface.
 *   - `tx` is bound to <serverIp>:67 with SO_BROADCAST (both sockets use
 *     SO_REUSEADDR to share the port). Linux routes a datagram to the limited
 *     broadcast address out of the device that owns the socket's bound source
 *     address (net/ipv4/route.c, ip_route_output_key_hash_rcu: "user can
 *     direct multicasts and limited broadcast via necessary interface without
 *     fiddling with IP_MULTICAST_IF or IP_PKTINFO"). So every broadcast reply
 *     leaves through the served interface only. Unicast requests to
 *     serverIp:67 (renewals) are delivered to this more specific socket.
 *   - test/interop/dhcp-clients.test.ts proves it: a server namespace with
 *     two links serves one; the client on the other link gets no lease and
 *     captures no packet from port 67.
 * Limits: Node cannot see which interface a broadcast came in on (no
 * IP_PKTINFO), so a DISCOVER from a client on another link is answered too;
 * the OFFER still leaves only through the served interface, where that client
 * is not, and its address hold lapses after offerHoldSeconds. Requests that
 * carry an address (source, ciaddr, giaddr) outside every served subnet are
 * dropped.
 *
 * Relayed subnets (RFC 2131 §4.3.1, RFC 1542; issue #21): `subnets` lists
 * the subnets whose DHCP a router relays to us. A relayed request carries
 * the relay's address on the client's subnet in `giaddr`; that address
 * chooses the pool (range, mask, router, DNS), the reply goes to the relay
 * (giaddr, port 67), and a Relay Agent Information option (82, RFC 3046) is
 * echoed as the reply's last option. A relayed client renews by unicast from
 * its own address, which chooses the pool the same way. In proxy mode the
 * relay forwards to the site's DHCP and to us; we answer PXE clients of the
 * listed subnets through the relay, and their port-4011 requests directly. Replies to clients without an address are always broadcast: a
 * unicast to yiaddr (RFC 2131 §4.1 when the BROADCAST flag is clear) would
 * need an ARP entry injected, which userspace cannot do portably; every
 * client tested (PXE ROMs, iPXE, OVMF, udhcpc, dhclient) accepts broadcasts.
 */

import { createSocket } from 'node:dgram';
import type { RemoteInfo, Socket } from 'node:dgram';
import { EventEmitter } from 'node:events';
import { isIPv4 } from 'node:net';
import { networkInterfaces } from 'node:os';

import { BootTorrentError, ErrorCounts, errorText } from '../errors.js';
import { DHCP_LIMITS } from '../limits.js';
import { DropLog } from '../util/drop-log.js';
import { silentLogger } from '../util/logger.js';
import type { Logger } from '../util/logger.js';
import { watchListener } from '../util/listener-error.js';
import type { BootDecision, BootPolicy } from '../boot/policy.js';
import {
  DISCOVERY_CONTROL_USE_BOOTFILE,
  FLAG_BROADCAST,
  MessageType,
  Opt,
  PxeSubOpt,
  clientInfo,
  decode,
  encode,
  encodeSubOptions,
  ipsValue,
  macOf,
  messageType,
  messageTypeName,
  optionIp,
  optionString,
  u32Value,
} from './codec.js';
import {
  inSubnet as inSubnetOf,
  intToIp,
  ipToInt,
  normalizeMac,
  parseSubnet,
  subnetText,
} from '../util/address.js';
import type { Subnet } from '../util/address.js';
import type { ClientInfo, DhcpPacket } from './codec.js';
import { LeaseTable } from './leases.js';
import type { Lease } from './leases.js';

export type DhcpMode = 'full' | 'proxy' | 'off';

/** The replies the server sends, by DHCP message type (proxy replies included). */
export const DHCP_REPLY_TYPES = ['offer', 'ack', 'nak'] as const;
export type DhcpReplyType = (typeof DHCP_REPLY_TYPES)[number];

/** A relayed subnet (#21): its own pool and options. */
export interface DhcpSubnet {
  /** The subnet as CIDR, network address written: "10.1.0.0/24". */
  subnet: string;
  /** Full mode: first and last address handed out (inclusive), inside the subnet. */
  rangeStart?: string;
  rangeEnd?: string;
  /** Option 3 for this subnet (its router, normally the relay). */
  router?: string;
  /** Option 6 for this subnet; default: the server's `dns`. */
  dns?: readonly string[];
}

export interface DhcpServerOptions {
  mode: DhcpMode;
  /** The one interface served (e.g. "eth1"); serverIp must be one of its addresses. */
  interface: string;
  serverIp: string;
  /** Full mode: first and last address handed out (inclusive). */
  rangeStart?: string;
  rangeEnd?: string;
  /** Option 1; default: the interface address's netmask. */
  subnetMask?: string;
  /** Option 3. */
  router?: string;
  /** Option 6. */
  dns?: readonly string[];
  /** Relayed subnets; the served interface's own subnet is not listed here. */
  subnets?: readonly DhcpSubnet[];
  /** Option 15. */
  domainName?: string;
  /** Option 51, default 3600 s. */
  leaseTimeSeconds?: number;
  /** Fixed addresses per MAC ("aa:bb:cc:dd:ee:ff" in any common spelling). */
  reservations?: readonly { mac: string; ip: string }[];
  /** Full mode: where leases persist across restarts; without it they live in memory. */
  leasesFile?: string;
  /** How long a DECLINEd address stays unused, default DHCP_LIMITS.declinedHoldMs (600 s). */
  declineHoldSeconds?: number;
  /** How long an OFFERed address stays held, default DHCP_LIMITS.offerHoldMs (60 s). */
  offerHoldSeconds?: number;
  /** Delay before renewals, RELEASEs and DECLINEs are written, default DHCP_LIMITS.leasesWriteDelayMs. */
  leasesWriteDelayMs?: number;
  /** Ports and broadcast address; only tests change them (67, 68, 4011, 255.255.255.255). */
  serverPort?: number;
  clientPort?: number;
  pxePort?: number;
  broadcastAddress?: string;
}

export interface DhcpServerServices {
  logger?: Logger;
  /** Decides the boot offer per client; without one, no boot information is sent. DHCP asks only `bootFor`. */
  bootPolicy?: Pick<BootPolicy, 'bootFor'>;
  now?: () => number;
}

export interface DhcpServerEvents {
  /** A lease was granted or renewed (full mode). */
  lease: [Lease];
  /** A client was sent boot information (either mode). */
  boot: [{ mac: string; decision: BootDecision; client: ClientInfo }];
  /** A PXE, HTTP Boot or iPXE client the policy offered no boot (an architecture not served, or a MAC not allowed). */
  'no-boot': [{ mac: string; client: ClientInfo }];
  /** A socket failed after listen(): the server no longer serves (its owner stops). */
  listenerError: [Error];
}

/** Where a reply goes (RFC 2131 §4.1, "server ... sends to"). */
interface Destination {
  address: string;
  port: number;
  socket: 'tx' | 'pxe';
}

/** A subnet the server answers for: index 0 is the served interface's own, then `subnets` in order. */
interface Pool {
  index: number;
  subnet: Subnet;
  /** "10.1.0.0/24", for logs. */
  text: string;
  rangeStart?: string;
  rangeEnd?: string;
  router?: string;
  dns?: readonly string[];
}

type Validated = Required<Pick<DhcpServerOptions, 'serverIp' | 'subnetMask'>> &
  DhcpServerOptions & { pools: Pool[] };

export class DhcpServer extends EventEmitter<DhcpServerEvents> {
  readonly #o: DhcpServerOptions;
  readonly #log: Logger;
  readonly #policy: Pick<BootPolicy, 'bootFor'> | undefined;
  readonly #now: () => number;
  #cfg: Validated | undefined;
  #table: LeaseTable | undefined;
  #sockets: { rx?: Socket; tx?: Socket; pxe?: Socket } = {};
  #listening = false;
  /** UDP payload bytes of every reply sent (the server's own figure, #16). */
  sentBytes = 0;
  /** Replies sent, by message type (OFFER, ACK also to an INFORM or on port 4011, NAK). */
  readonly replies: Record<DhcpReplyType, number> = { offer: 0, ack: 0, nak: 0 };
  /** Typed errors met in requests (malformed packets, failed exchanges), by code. */
  readonly errors = new ErrorCounts();
  /** Dropped packets and failed exchanges, one line per source address per minute (a MAC is free to make up). */
  readonly #drops: DropLog;
  /** Honoured DECLINEs, one line per address per minute (RFC 2131 §4.3.3: tell the admin). */
  readonly #declines: DropLog;

  constructor(options: DhcpServerOptions, services: DhcpServerServices = {}) {
    super();
    this.#o = { ...options };
    this.#log = (services.logger ?? silentLogger).child('dhcp');
    this.#policy = services.bootPolicy;
    this.#now = services.now ?? Date.now;
    this.#drops = new DropLog(this.#log, { now: this.#now });
    this.#declines = new DropLog(this.#log, { now: this.#now });
    if (!['full', 'proxy', 'off'].includes(options.mode))
      throw configError(`dhcp mode must be full, proxy or off, got ${JSON.stringify(options.mode)}`);
  }

  get mode(): DhcpMode {
    return this.#o.mode;
  }

  /** Current lease records (full mode), active and expired. */
  leases(): Lease[] {
    return this.#table?.all() ?? [];
  }

  /** Leases not expired now (full mode; in proxy mode the network's own server leases: 0). */
  activeLeases(): number {
    const now = this.#now();
    return this.leases().filter((l) => l.expires > now).length;
  }

  /** The lease recorded for one MAC, active or expired (full mode). */
  leaseOf(mac: string): Lease | undefined {
    return this.#table?.leaseOf(mac);
  }

  /**
   * Sizes of the state clients can grow (full mode) and packets dropped, for
   * status and tests: leases, outstanding offers and declined addresses are
   * each bounded by the pool; `writes` counts leases-file writes.
   */
  stats(): { leases: number; offers: number; declined: number; writes: number; dropped: number } {
    const t = this.#table?.stats() ?? { leases: 0, offers: 0, declined: 0, writes: 0 };
    return { ...t, dropped: this.#drops.total };
  }

  /**
   * Validates the configuration against the interface, loads leases and
   * binds the sockets. Rejects with BT_ERR_DHCP_CONFIG, BT_ERR_DHCP_LEASES or
   * BT_ERR_LISTEN; on rejection nothing stays bound.
   */
  async listen(): Promise<void> {
    if (this.#listening) return;
    if (this.#o.mode === 'off') {
      this.#log.info('DHCP is off');
      return;
    }
    const cfg = this.#validate();
    this.#cfg = cfg;
    if (cfg.mode === 'full') {
      const reservations = new Map<string, string>();
      for (const r of cfg.reservations ?? []) reservations.set(normalizeMac(r.mac) as string, r.ip);
      this.#table = new LeaseTable({
        rangeStart: cfg.rangeStart as string,
        rangeEnd: cfg.rangeEnd as string,
        pools: cfg.pools
          .slice(1)
          .map((p) => ({ rangeStart: p.rangeStart as string, rangeEnd: p.rangeEnd as string })),
        reservations,
        exclude: [cfg.serverIp],
        ...(cfg.leasesFile ? { file: cfg.leasesFile } : {}),
        offerHoldMs:
          cfg.offerHoldSeconds !== undefined ? cfg.offerHoldSeconds * 1000 : DHCP_LIMITS.offerHoldMs,
        declineHoldMs:
          cfg.declineHoldSeconds !== undefined ? cfg.declineHoldSeconds * 1000 : DHCP_LIMITS.declinedHoldMs,
        writeDelayMs: cfg.leasesWriteDelayMs ?? DHCP_LIMITS.leasesWriteDelayMs,
        onWriteError: (err) =>
          this.#drops.drop('leases-file', 'DHCP leases file not written', { error: err.message }),
        now: this.#now,
      });
      const dropped = await this.#table.load();
      if (dropped.length > 0) {
        // One line for the whole file: a file of a million bad entries must not become a million lines.
        this.#log.warn(
          `DHCP leases file ${cfg.leasesFile} has ${dropped.length} bad ${dropped.length === 1 ? 'entry' : 'entries'}, dropped; the rest is loaded and the next write leaves them out`,
          {
            file: cfg.leasesFile,
            dropped: dropped.length,
            entries: dropped
              .slice(0, 5)
              .map((d) => `${d.entry.slice(0, 200)}: ${d.why}`)
              .join('; '),
          },
        );
      }
    }
    const port = cfg.serverPort ?? 67;
    try {
      // Wildcard socket first: it receives the broadcasts.
      this.#sockets.rx = await this.#bind('0.0.0.0', port, 'broadcast');
      this.#sockets.tx = await this.#bind(cfg.serverIp, port, 'unicast');
      this.#sockets.tx.setBroadcast(true);
      if (cfg.mode === 'proxy')
        this.#sockets.pxe = await this.#bind(cfg.serverIp, cfg.pxePort ?? 4011, 'pxe');
    } catch (err) {
      this.#closeSockets();
      throw err;
    }
    this.#listening = true;
    this.#log.info('DHCP listening', {
      mode: cfg.mode,
      interface: cfg.interface,
      serverIp: cfg.serverIp,
      ...(cfg.mode === 'full'
        ? { range: `${cfg.rangeStart}-${cfg.rangeEnd}`, leases: this.#table?.all().length }
        : {}),
      ...(cfg.pools.length > 1
        ? {
            relayed: cfg.pools
              .slice(1)
              .map((p) => (p.rangeStart ? `${p.text} (${p.rangeStart}-${p.rangeEnd})` : p.text))
              .join(', '),
          }
        : {}),
    });
  }

  /** Closes every socket and waits until every lease change is on disk (a SIGTERM loses nothing). */
  async close(): Promise<void> {
    this.#closeSockets();
    this.#listening = false;
    try {
      await this.#table?.flush();
    } catch (err) {
      this.#log.error('could not flush leases on close', { error: (err as Error).message });
    }
  }

  #closeSockets(): void {
    for (const s of Object.values(this.#sockets)) {
      try {
        s.close();
      } catch {
        // already closed
      }
    }
    this.#sockets = {};
  }

  #validate(): Validated {
    const o = this.#o;
    if (!isIPv4(o.serverIp))
      throw configError(`dhcp serverIp must be an IPv4 address, got ${JSON.stringify(o.serverIp)}`);
    const ifs = networkInterfaces();
    const addrs = ifs[o.interface];
    if (!addrs) {
      throw configError(
        `dhcp interface ${JSON.stringify(o.interface)} does not exist on this machine (interfaces: ${Object.keys(ifs).join(', ')}); set dhcp interface to the lab network's interface`,
      );
    }
    const v4 = addrs.filter((a) => a.family === 'IPv4');
    const own = v4.find((a) => a.address === o.serverIp);
    if (!own) {
      const list = v4.map((a) => a.cidr ?? a.address).join(', ') || 'none';
      throw configError(
        `dhcp serverIp ${o.serverIp} is not an address of interface ${o.interface} (its IPv4 addresses: ${list}); set serverIp to one of them, or add it: ip addr add ${o.serverIp}/24 dev ${o.interface}`,
      );
    }
    const subnetMask = o.subnetMask ?? own.netmask;
    if (!isIPv4(subnetMask)) throw configError(`dhcp subnetMask must be an IPv4 netmask, got ${subnetMask}`);
    const inSubnet = (ip: string): boolean => sameSubnet(ip, o.serverIp, subnetMask);
    for (const [field, v] of [
      ['router', o.router],
      ['broadcastAddress', o.broadcastAddress],
      ...(o.dns ?? []).map((d) => ['dns', d] as const),
    ] as const) {
      if (v !== undefined && !isIPv4(v))
        throw configError(`dhcp ${field} must be an IPv4 address, got ${JSON.stringify(v)}`);
    }
    if (o.mode === 'full') {
      const { rangeStart: a, rangeEnd: b } = o;
      if (!a || !b || !isIPv4(a) || !isIPv4(b))
        throw configError(
          'dhcp full mode needs rangeStart and rangeEnd (IPv4 addresses, e.g. 10.0.0.100 and 10.0.0.199)',
        );
      if (ipToInt(a) > ipToInt(b)) throw configError(`dhcp range start ${a} is after range end ${b}`);
      if (!inSubnet(a) || !inSubnet(b))
        throw configError(
          `dhcp range ${a}-${b} is not inside the subnet of ${o.interface} (${o.serverIp}/${subnetMask}); pick addresses from that subnet`,
        );
    }
    const ownBase = (ipToInt(o.serverIp) & ipToInt(subnetMask)) >>> 0;
    const ownSubnet: Subnet = {
      base: ownBase,
      mask: ipToInt(subnetMask),
      bits: maskBits(ipToInt(subnetMask)),
    };
    const pools: Pool[] = [
      {
        index: 0,
        subnet: ownSubnet,
        text: subnetText(ownSubnet),
        ...(o.rangeStart !== undefined ? { rangeStart: o.rangeStart, rangeEnd: o.rangeEnd } : {}),
        ...(o.router !== undefined ? { router: o.router } : {}),
        ...(o.dns !== undefined ? { dns: o.dns } : {}),
      },
    ];
    for (const [i, n] of (o.subnets ?? []).entries()) {
      const where = `dhcp subnets[${i}]`;
      const sub = typeof n.subnet === 'string' ? parseSubnet(n.subnet) : undefined;
      if (!sub || !sub.exact)
        throw configError(
          `${where}: subnet must be a network in CIDR form such as 10.1.0.0/24, got ${JSON.stringify(n.subnet)}`,
        );
      const text = subnetText(sub);
      const clash = pools.find((p) => overlaps(p.subnet, sub));
      if (clash)
        throw configError(
          clash.index === 0
            ? `${where}: ${text} overlaps the served interface's own subnet ${clash.text}; list only relayed subnets (the own subnet uses the main range)`
            : `${where}: ${text} overlaps ${clash.text}; subnets must not overlap`,
        );
      for (const [field, v] of [
        ['router', n.router],
        ['rangeStart', n.rangeStart],
        ['rangeEnd', n.rangeEnd],
        ...(n.dns ?? []).map((d) => ['dns', d] as const),
      ] as const) {
        if (v !== undefined && !isIPv4(v))
          throw configError(`${where}: ${field} must be an IPv4 address, got ${JSON.stringify(v)}`);
      }
      if (n.router !== undefined && !inSubnetOf(n.router, sub))
        throw configError(`${where}: router ${n.router} is not inside ${text}`);
      if (o.mode === 'full') {
        const { rangeStart: a, rangeEnd: b } = n;
        if (a === undefined || b === undefined)
          throw configError(`${where}: full mode needs rangeStart and rangeEnd for ${text}`);
        if (ipToInt(a) > ipToInt(b)) throw configError(`${where}: range start ${a} is after range end ${b}`);
        if (!inSubnetOf(a, sub) || !inSubnetOf(b, sub))
          throw configError(`${where}: range ${a}-${b} is not inside ${text}`);
      } else if (n.rangeStart !== undefined || n.rangeEnd !== undefined) {
        throw configError(`${where}: a range is only used in full mode (mode is ${o.mode})`);
      }
      pools.push({
        index: pools.length,
        subnet: sub,
        text,
        ...(n.rangeStart !== undefined ? { rangeStart: n.rangeStart, rangeEnd: n.rangeEnd } : {}),
        ...(n.router !== undefined ? { router: n.router } : {}),
        ...((n.dns ?? o.dns) !== undefined ? { dns: n.dns ?? o.dns } : {}),
      });
    }
    if (o.mode === 'full') {
      for (const r of o.reservations ?? []) {
        if (!normalizeMac(r.mac))
          throw configError(`dhcp reservation has an invalid MAC address: ${JSON.stringify(r.mac)}`);
        if (!isIPv4(r.ip) || !pools.some((p) => inSubnetOf(r.ip, p.subnet)))
          throw configError(
            `dhcp reservation for ${r.mac}: ${r.ip} is not an address in ${pools.map((p) => p.text).join(' or ')}`,
          );
      }
    }
    return { ...o, subnetMask, pools };
  }

  #bind(address: string, port: number, role: 'broadcast' | 'unicast' | 'pxe'): Promise<Socket> {
    return new Promise((resolve, reject) => {
      // A room of machines powered on at once sends hundreds of DISCOVERs in
      // a burst while each ACK waits for its lease to reach the disk: a 1 MiB
      // receive buffer holds the burst instead of dropping it (the kernel
      // caps it at net.core.rmem_max).
      const s = createSocket({ type: 'udp4', reuseAddr: true, recvBufferSize: 1 << 20 });
      const onError = (err: NodeJS.ErrnoException): void => {
        s.close();
        const fix =
          err.code === 'EACCES'
            ? 'ports below 1024 need root or CAP_NET_BIND_SERVICE'
            : err.code === 'EADDRINUSE'
              ? 'another DHCP server (dnsmasq, isc-dhcp-server, systemd-networkd) holds it on this machine: stop it, or set dhcp mode off and let that server send the boot information (proxy mode needs port 67 too)'
              : err.code === 'EADDRNOTAVAIL'
                ? `${address} is not an address of this machine`
                : 'check the address and port';
        reject(
          new BootTorrentError(
            'BT_ERR_LISTEN',
            `DHCP cannot listen on ${address}:${port} (${err.code ?? err.message}): ${fix}`,
            {
              cause: err,
            },
          ),
        );
      };
      s.once('error', onError);
      s.bind({ address, port, exclusive: true }, () => {
        s.off('error', onError);
        watchListener(
          s,
          {
            drops: this.#drops,
            packet: 'DHCP reply not sent',
            log: this.#log,
            failed: `DHCP socket ${address}:${port} failed`,
          },
          (err) => this.emit('listenerError', err),
        );
        s.on('message', (msg, rinfo) => {
          // Last line of defence: nothing one datagram does may throw out of the socket's handler.
          try {
            this.#onMessage(msg, rinfo, role);
          } catch (err) {
            this.#failed('unknown', rinfo, err);
          }
        });
        resolve(s);
      });
    });
  }

  #onMessage(msg: Buffer, rinfo: RemoteInfo, role: 'broadcast' | 'unicast' | 'pxe'): void {
    const cfg = this.#cfg;
    if (!cfg) return;
    const from = `${rinfo.address}:${rinfo.port}`;
    let p: DhcpPacket;
    let info: ClientInfo;
    try {
      p = decode(msg);
      info = clientInfo(p);
    } catch (err) {
      this.errors.count(err);
      this.#drops.drop(rinfo.address, 'malformed DHCP packet dropped', {
        from,
        error: (err as Error).message,
      });
      return;
    }
    if (p.op !== 1) return;
    const type = messageType(p);
    const poolOf = (ip: string): Pool | undefined => cfg.pools.find((q) => inSubnetOf(ip, q.subnet));
    let pool: Pool | undefined;
    if (p.giaddr !== '0.0.0.0') {
      // Relayed: the relay's address on the client's subnet chooses the pool.
      // The source is the relay's address toward us, wherever that is; the
      // reply goes to giaddr, never to the source.
      pool = poolOf(p.giaddr);
      if (!pool) {
        this.#drops.drop(rinfo.address, 'relayed DHCP packet from a subnet not served dropped', {
          from,
          giaddr: p.giaddr,
          type: messageTypeName(type),
          fix: 'list the subnet in dhcp.subnets to serve it',
        });
        return;
      }
    } else {
      // The ingress interface is invisible to Node; addresses are what we can check.
      for (const [what, ip] of [
        ['source', rinfo.address],
        ['ciaddr', p.ciaddr],
      ] as const) {
        if (ip !== '0.0.0.0' && !poolOf(ip)) {
          this.#log.debug('DHCP packet from outside the served subnets ignored', {
            from,
            what,
            ip,
            type: messageTypeName(type),
          });
          return;
        }
      }
      // A relayed client renews by unicast from its own address: that address's subnet.
      const own = p.ciaddr !== '0.0.0.0' ? p.ciaddr : rinfo.address;
      pool = own !== '0.0.0.0' ? poolOf(own) : cfg.pools[0];
    }
    if (!pool) return;
    this.#log.debug('DHCP request', {
      from,
      type: messageTypeName(type),
      ...(p.giaddr !== '0.0.0.0' ? { giaddr: p.giaddr, pool: pool.text } : {}),
      mac: info.mac,
      arch: info.arch,
      ipxe: info.ipxe,
    });
    try {
      if (cfg.mode === 'full') this.#full(cfg, pool, p, info, type, rinfo);
      else this.#proxy(cfg, p, info, type, rinfo, role);
    } catch (err) {
      // A fault in one exchange ends that exchange, never the server; only a socket failure is fatal.
      this.#failed(info.mac, rinfo, err);
    }
  }

  #failed(mac: string, rinfo: RemoteInfo, err: unknown): void {
    this.errors.count(err);
    this.#drops.drop(rinfo.address, 'DHCP request failed', {
      from: `${rinfo.address}:${rinfo.port}`,
      mac,
      error: errorText(err),
    });
  }

  // ---- full mode (RFC 2131 §4.3) -------------------------------------------

  #full(
    cfg: Validated,
    pool: Pool,
    p: DhcpPacket,
    info: ClientInfo,
    type: number | undefined,
    rinfo: RemoteInfo,
  ): void {
    const table = this.#table as LeaseTable;
    const mac = info.mac;
    const sid = optionIp(p, Opt.SERVER_ID);
    const requested = optionIp(p, Opt.REQUESTED_IP);
    const leaseSecs = cfg.leaseTimeSeconds ?? 3600;
    const hostname = optionString(p, Opt.HOSTNAME);
    switch (type) {
      case MessageType.DISCOVER: {
        const ip = table.pick(mac, requested, pool.index);
        if (!ip) {
          // One line a minute per pool however many clients are turned away.
          this.#drops.drop(`pool ${pool.text}`, 'no free address to offer', {
            mac,
            range: `${pool.rangeStart}-${pool.rangeEnd}`,
          });
          return;
        }
        if (!inSubnetOf(ip, pool.subnet)) {
          // A reservation on another subnet: the machine was moved, or the reservation is wrong.
          this.#drops.drop(
            `reservation ${mac}`,
            'reserved address is not on the subnet the client asks from',
            {
              mac,
              reserved: ip,
              subnet: pool.text,
              fix: 'change the reservation to an address of that subnet',
            },
          );
          return;
        }
        table.hold(mac, ip);
        this.#send(
          this.#fullReply(cfg, pool, p, info, MessageType.OFFER, ip, leaseSecs),
          p,
          'offer',
          'OFFER',
          ip,
        );
        return;
      }
      case MessageType.REQUEST: {
        let ip: string | undefined;
        if (sid !== undefined) {
          // SELECTING: the client answers one OFFER; others' servers drop theirs.
          if (sid !== cfg.serverIp) {
            table.unhold(mac);
            return;
          }
          ip = requested ?? (p.ciaddr !== '0.0.0.0' ? p.ciaddr : undefined);
          if (!ip || !inSubnetOf(ip, pool.subnet) || !table.canAssign(mac, ip))
            return this.#nak(cfg, p, `requested ${ip ?? 'nothing'} is not available`);
        } else if (requested !== undefined && p.ciaddr === '0.0.0.0') {
          // INIT-REBOOT: verify the remembered address; silence when we have no record of the client.
          if (!inSubnetOf(requested, pool.subnet))
            return this.#nak(cfg, p, `${requested} is on the wrong network`);
          const known = table.leaseOf(mac)?.ip ?? table.reservationOf(mac);
          if (known === undefined)
            return this.#log.debug('INIT-REBOOT from unknown client ignored', { mac, requested });
          if (known !== requested || !table.canAssign(mac, requested))
            return this.#nak(cfg, p, `${requested} is not this client's address (${known})`);
          ip = requested;
        } else if (p.ciaddr !== '0.0.0.0') {
          // RENEWING (unicast) or REBINDING (broadcast): extend if the address is still this client's to have.
          if (!table.canAssign(mac, p.ciaddr))
            return this.#nak(cfg, p, `${p.ciaddr} is not available to this client`);
          ip = p.ciaddr;
        } else {
          return this.#log.debug('DHCPREQUEST without server id, requested address or ciaddr ignored', {
            mac,
          });
        }
        const { lease, persisted } = table.bind(mac, ip, leaseSecs, hostname);
        const ack = this.#fullReply(cfg, pool, p, info, MessageType.ACK, ip, leaseSecs);
        // RFC 2131 §4.3.1: the binding is on disk before the ACK leaves.
        persisted
          .then(() => {
            this.#send(ack, p, 'ack', 'ACK', ip);
            this.emit('lease', lease);
          })
          .catch((err: unknown) => this.#failed(mac, rinfo, err));
        return;
      }
      case MessageType.DECLINE:
        if (sid !== cfg.serverIp || !requested) return;
        // RFC 2131 §4.3.3: only the client holding the address may decline it;
        // anyone else would take a neighbour's lease away (issue #14 item 2).
        // Drops are counted per source address, not per MAC: a MAC costs nothing to make up.
        if (!table.decline(mac, requested))
          return this.#drops.drop(
            rinfo.address,
            'DHCPDECLINE for an address this client does not hold dropped',
            {
              mac,
              ip: requested,
            },
          );
        // Keyed by address: a client cycling through the pool gets one line per address per minute.
        this.#declines.drop(requested, 'client declined an address (in use by someone else?)', {
          mac,
          ip: requested,
        });
        return;
      case MessageType.RELEASE:
        if (sid !== undefined && sid !== cfg.serverIp) return;
        // RFC 2131 §4.3.4: ciaddr must be this client's lease.
        if (!table.release(mac, p.ciaddr))
          return this.#drops.drop(
            rinfo.address,
            'DHCPRELEASE for an address this client does not hold dropped',
            {
              mac,
              ip: p.ciaddr,
            },
          );
        this.#log.info('lease released', { mac, ip: p.ciaddr });
        return;
      case MessageType.INFORM:
        // RFC 2131 §3.4: configuration only, no lease and no yiaddr, unicast to ciaddr.
        if (p.ciaddr === '0.0.0.0') return;
        this.#send(
          this.#fullReply(cfg, pool, p, info, MessageType.ACK, undefined, undefined),
          p,
          'ack',
          'ACK(INFORM)',
          p.ciaddr,
          {
            address: p.ciaddr,
            port: rinfo.port,
            socket: 'tx',
          },
        );
        return;
      default:
        this.#log.debug('DHCP message type not handled', { mac, type: messageTypeName(type) });
    }
  }

  /** OFFER/ACK in full mode: RFC 2131 table 3 fields plus RFC 2132 parameters and boot information. */
  #fullReply(
    cfg: Validated,
    pool: Pool,
    req: DhcpPacket,
    info: ClientInfo,
    type: number,
    yiaddr: string | undefined,
    leaseSecs: number | undefined,
  ): Buffer {
    const options = new Map<number, Buffer>([
      [Opt.MESSAGE_TYPE, Buffer.from([type])],
      [Opt.SERVER_ID, ipsValue([cfg.serverIp])],
    ]);
    if (leaseSecs !== undefined) {
      options.set(Opt.LEASE_TIME, u32Value(leaseSecs));
      options.set(Opt.RENEWAL_TIME, u32Value(Math.floor(leaseSecs / 2)));
      options.set(Opt.REBINDING_TIME, u32Value(Math.floor((leaseSecs * 7) / 8)));
    }
    options.set(Opt.SUBNET_MASK, ipsValue([intToIp(pool.subnet.mask)]));
    options.set(Opt.BROADCAST_ADDRESS, ipsValue([intToIp((pool.subnet.base | ~pool.subnet.mask) >>> 0)]));
    if (pool.router) options.set(Opt.ROUTER, ipsValue([pool.router]));
    if (pool.dns && pool.dns.length > 0) options.set(Opt.DNS, ipsValue(pool.dns));
    if (cfg.domainName) options.set(Opt.DOMAIN_NAME, Buffer.from(cfg.domainName, 'latin1'));
    const boot = this.#bootInfo(req, info, options);
    echoRelayInfo(req, options);
    return encode({
      op: 2,
      htype: req.htype,
      hlen: req.hlen,
      xid: req.xid,
      flags: req.flags,
      ciaddr: type === MessageType.ACK ? req.ciaddr : '0.0.0.0',
      yiaddr: yiaddr ?? '0.0.0.0',
      siaddr: boot?.siaddr ?? '0.0.0.0',
      giaddr: req.giaddr,
      chaddr: req.chaddr,
      file: boot?.file ?? '',
      options,
    });
  }

  /**
   * Asks the BootPolicy (only for PXE, HTTP Boot or iPXE clients: an OS's
   * own DHCP client gets no boot file) and adds what its decision needs:
   * the file field, siaddr, option 67 when the client asked for it (RFC 2132
   * §9.5) and vendor class "HTTPClient" for UEFI HTTP Boot (UEFI 2.5+ §24.7:
   * firmware ignores offers without it).
   */
  #bootInfo(
    req: DhcpPacket,
    info: ClientInfo,
    options: Map<number, Buffer>,
  ): { siaddr: string; file: string } | undefined {
    if (!this.#policy || !(info.pxe || info.httpClient || info.ipxe)) return undefined;
    const cfg = this.#cfg as Validated;
    const decision = this.#policy.bootFor({
      mac: info.mac,
      arch: info.arch,
      ipxe: info.ipxe,
      ...(info.vendorClass !== undefined ? { vendorClass: info.vendorClass } : {}),
      ...(info.userClass !== undefined ? { userClass: info.userClass } : {}),
    });
    if (!decision) {
      this.#log.debug('boot policy offers no boot to this client', { mac: info.mac, arch: info.arch });
      this.emit('no-boot', { mac: info.mac, client: info });
      return undefined;
    }
    this.emit('boot', { mac: info.mac, decision, client: info });
    const file = decision.kind === 'tftp' ? decision.file : decision.url;
    const siaddr = decision.kind === 'tftp' ? decision.nextServer : cfg.serverIp;
    if (decision.kind === 'http') options.set(Opt.VENDOR_CLASS, Buffer.from('HTTPClient'));
    const prl = req.options.get(Opt.PARAMETER_REQUEST_LIST);
    if (prl?.includes(Opt.BOOTFILE_NAME)) options.set(Opt.BOOTFILE_NAME, Buffer.from(file, 'latin1'));
    return { siaddr, file };
  }

  #nak(cfg: Validated, req: DhcpPacket, why: string): void {
    this.#table?.unhold(macOf(req));
    const reply = encode({
      op: 2,
      htype: req.htype,
      hlen: req.hlen,
      xid: req.xid,
      // RFC 2131 §4.3.2: a relayed NAK must be broadcast by the relay.
      flags: req.giaddr !== '0.0.0.0' ? req.flags | FLAG_BROADCAST : req.flags,
      giaddr: req.giaddr,
      chaddr: req.chaddr,
      options: echoRelayInfo(
        req,
        new Map([
          [Opt.MESSAGE_TYPE, Buffer.from([MessageType.NAK])],
          [Opt.SERVER_ID, ipsValue([cfg.serverIp])],
          [Opt.MESSAGE, Buffer.from(why, 'latin1')],
        ]),
      ),
    });
    this.#send(reply, req, 'nak', 'NAK', why);
  }

  // ---- proxy mode (PXE 2.1 §2.2.3) -----------------------------------------

  #proxy(
    cfg: Validated,
    p: DhcpPacket,
    info: ClientInfo,
    type: number | undefined,
    rinfo: RemoteInfo,
    role: 'broadcast' | 'unicast' | 'pxe',
  ): void {
    // Only boot firmware is ours to answer; everything else belongs to the network's DHCP server.
    if (!info.pxe && !info.httpClient) return;
    if (role === 'pxe') {
      // Port 4011 (PXE 2.1 §2.2.3 step 9; EDK2's "BINL" request; iPXE's ProxyDHCPREQUEST):
      // ACK unicast to where it came from.
      if (type !== MessageType.REQUEST && type !== MessageType.INFORM) return;
      const reply = this.#proxyReply(cfg, p, info, MessageType.ACK);
      if (reply)
        this.#send(reply, p, 'ack', 'proxy ACK', rinfo.address, {
          address: rinfo.address,
          port: rinfo.port,
          socket: 'pxe',
        });
      return;
    }
    if (type === MessageType.DISCOVER) {
      const reply = this.#proxyReply(cfg, p, info, MessageType.OFFER);
      if (reply) this.#send(reply, p, 'offer', 'proxy OFFER', '(no address)');
    } else if (type === MessageType.REQUEST && optionIp(p, Opt.SERVER_ID) === cfg.serverIp) {
      const reply = this.#proxyReply(cfg, p, info, MessageType.ACK);
      if (reply) this.#send(reply, p, 'ack', 'proxy ACK', '(no address)');
    }
  }

  /**
   * A proxyDHCP reply: no yiaddr, option 60 "PXEClient" (PXE 2.1 table 2-2:
   * what marks the offer as PXE boot information), the client's UUID (97)
   * echoed, boot file and next server. BIOS-era clients and iPXE also get
   * option 43 with PXE_DISCOVERY_CONTROL = 8: "use the boot file in this
   * offer, skip boot server discovery". UEFI PXE gets no option 43: EDK2
   * then treats the offer as "BINL" and asks port 4011, which we answer,
   * whereas some UEFI firmware ignores a proxy offer that disables
   * discovery (pixiecore documents the same finding).
   */
  #proxyReply(cfg: Validated, req: DhcpPacket, info: ClientInfo, type: number): Buffer | undefined {
    const options = new Map<number, Buffer>([
      [Opt.MESSAGE_TYPE, Buffer.from([type])],
      [Opt.SERVER_ID, ipsValue([cfg.serverIp])],
      [Opt.VENDOR_CLASS, Buffer.from(info.httpClient ? 'HTTPClient' : 'PXEClient')],
    ]);
    const guid = req.options.get(Opt.CLIENT_UUID);
    if (guid) options.set(Opt.CLIENT_UUID, guid);
    const uefi = info.arch.startsWith('uefi');
    if (info.pxe && (!uefi || info.ipxe)) {
      options.set(
        Opt.VENDOR_SPECIFIC,
        encodeSubOptions(
          new Map([[PxeSubOpt.DISCOVERY_CONTROL, Buffer.from([DISCOVERY_CONTROL_USE_BOOTFILE])]]),
        ),
      );
    }
    const boot = this.#bootInfo(req, info, options);
    if (!boot) return undefined;
    echoRelayInfo(req, options);
    return encode({
      op: 2,
      htype: req.htype,
      hlen: req.hlen,
      xid: req.xid,
      flags: req.flags,
      ciaddr: type === MessageType.ACK ? req.ciaddr : '0.0.0.0',
      yiaddr: '0.0.0.0',
      siaddr: boot.siaddr,
      giaddr: req.giaddr,
      chaddr: req.chaddr,
      file: boot.file,
      options,
    });
  }

  // ---- sending ---------------------------------------------------------------

  /** RFC 2131 §4.1: to the relay, to ciaddr, or broadcast (see the file comment). */
  #destination(req: DhcpPacket, isNak: boolean): Destination {
    const cfg = this.#cfg as Validated;
    if (req.giaddr !== '0.0.0.0') return { address: req.giaddr, port: cfg.serverPort ?? 67, socket: 'tx' };
    if (!isNak && req.ciaddr !== '0.0.0.0')
      return { address: req.ciaddr, port: cfg.clientPort ?? 68, socket: 'tx' };
    return { address: cfg.broadcastAddress ?? '255.255.255.255', port: cfg.clientPort ?? 68, socket: 'tx' };
  }

  #send(
    reply: Buffer,
    req: DhcpPacket,
    type: DhcpReplyType,
    what: string,
    detail: string,
    dest?: Destination,
  ): void {
    const to = dest ?? this.#destination(req, type === 'nak');
    const socket = this.#sockets[to.socket];
    if (!socket) return;
    const mac = macOf(req);
    this.sentBytes += reply.length;
    this.replies[type]++;
    socket.send(reply, to.port, to.address, (err) => {
      if (err)
        this.#log.warn(`DHCP ${what} not sent`, { mac, to: `${to.address}:${to.port}`, error: err.message });
    });
    // An OFFER costs a client nothing to provoke (a DISCOVER from a made-up
    // MAC), so it is a debug line; the ACK, a lease actually taken, is info.
    if (what === 'OFFER') this.#log.debug(`DHCP ${what}`, { mac, detail, to: `${to.address}:${to.port}` });
    else this.#log.info(`DHCP ${what}`, { mac, detail, to: `${to.address}:${to.port}` });
  }
}

function configError(message: string): BootTorrentError {
  return new BootTorrentError('BT_ERR_DHCP_CONFIG', message);
}

/**
 * RFC 3046 §2.2: a server that understands the Relay Agent Information
 * option echoes it whole, as the last option, in every reply to the
 * request that carried it (the relay uses it to find the client's port and
 * strips it before forwarding).
 */
function echoRelayInfo(req: DhcpPacket, options: Map<number, Buffer>): Map<number, Buffer> {
  const info = req.options.get(Opt.RELAY_AGENT_INFO);
  if (info) {
    options.delete(Opt.RELAY_AGENT_INFO);
    options.set(Opt.RELAY_AGENT_INFO, info);
  }
  return options;
}

/** Do two subnets share an address? (One contains the other's network address.) */
function overlaps(a: Subnet, b: Subnet): boolean {
  const wider = a.bits <= b.bits ? a : b;
  const narrower = wider === a ? b : a;
  return (narrower.base & wider.mask) >>> 0 === wider.base;
}

function maskBits(mask: number): number {
  let bits = 0;
  for (let m = mask >>> 0; m !== 0; m = (m << 1) >>> 0) bits++;
  return bits;
}

function sameSubnet(a: string, b: string, mask: string): boolean {
  const m = ipToInt(mask);
  return (ipToInt(a) & m) >>> 0 === (ipToInt(b) & m) >>> 0;
}
