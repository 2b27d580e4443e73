/**
 * Looks for other DHCP servers on one interface before we hand out
 * addresses (full mode): two servers on a LAN hand out conflicting leases,
 * so `start` refuses when anyone else answers.
 *
 * It acts as a client would: a DHCPDISCOVER with a random xid, a made-up
 * locally administered MAC and the BROADCAST flag (RFC 2131 §4.1: so servers
 * broadcast the OFFER, which we can receive without an address), sent to
 * 255.255.255.255:67, then every OFFER for that xid until the timeout. It
 * never sends a REQUEST, so no server commits a lease; the offered address
 * is held by the server only for its offer timeout.
 *
 * Sockets follow the server's scheme (src/dhcp/server.ts) since Node cannot
 * set SO_BINDTODEVICE: the DISCOVER leaves from a socket bound to the
 * interface's own address on port 68 (Linux routes a limited broadcast out
 * of the device owning the bound source address), and OFFERs, broadcast to
 * port 68, arrive on a second socket bound to 0.0.0.0:68 (broadcasts reach
 * only wildcard-bound sockets). Both use SO_REUSEADDR. Port 68 needs root or
 * CAP_NET_BIND_SERVICE, like port 67 for the server.
 */
import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import type { RemoteInfo, Socket } from 'node:dgram';
import { networkInterfaces } from 'node:os';

import { abortError, BootTorrentError } from '../errors.js';
import { FLAG_BROADCAST, MessageType, Opt, decode, encode, messageType, optionIp } from './codec.js';

export interface ProbeOptions {
  /** The interface to probe (e.g. "eth1"); it needs an IPv4 address. */
  interface: string;
  /** Our own DHCP server's address: OFFERs whose server id is this are ignored. */
  serverIp?: string;
  /**
   * How long to collect OFFERs, in ms. Use 5000 or more: dnsmasq (by
   * default) and others ping an address before they first offer it and stay
   * silent for about 3 s meanwhile; our DISCOVER is repeated every second.
   */
  timeoutMs: number;
  /** Source port (default 68); tests may use another with a server that answers there. */
  clientPort?: number;
  /** Server port (default 67). */
  serverPort?: number;
  signal?: AbortSignal;
}

export interface DhcpServerSeen {
  /** Source address of the OFFER datagram. */
  address: string;
  /** Option 54 (server identifier); the source address when the server left it out. */
  serverId: string;
  /** yiaddr: the address offered to our made-up client ('0.0.0.0' from a proxyDHCP server). */
  offeredIp: string;
}

/** DISCOVERs per probe: one at the start, then one a second while time remains (a lost packet is not "no server"). */
const RESEND_MS = 1000;

/**
 * Sends a DHCPDISCOVER on `interface` and resolves with every other server
 * that OFFERed within `timeoutMs` (one entry per server id and source), or
 * [] when none did. Rejects with BT_ERR_DHCP_CONFIG (no such interface or no
 * IPv4 address on it), BT_ERR_LISTEN (port 68 not bindable) or BT_ERR_ABORTED.
 */
export async function probeDhcpServers(options: ProbeOptions): Promise<DhcpServerSeen[]> {
  const { signal } = options;
  if (signal?.aborted) throw abortError(signal);
  const addrs = networkInterfaces()[options.interface];
  if (!addrs) {
    throw new BootTorrentError(
      'BT_ERR_DHCP_CONFIG',
      `DHCP probe: interface ${JSON.stringify(options.interface)} does not exist (interfaces: ${Object.keys(networkInterfaces()).join(', ')})`,
    );
  }
  const own = addrs.find((a) => a.family === 'IPv4');
  if (!own) {
    throw new BootTorrentError(
      'BT_ERR_DHCP_CONFIG',
      `DHCP probe: interface ${options.interface} has no IPv4 address; add one (ip addr add <address>/24 dev ${options.interface})`,
    );
  }
  const clientPort = options.clientPort ?? 68;
  const serverPort = options.serverPort ?? 67;
  const xid = randomBytes(4).readUInt32BE(0);
  // Locally administered (bit 1 of the first octet), unicast (bit 0 clear):
  // cannot collide with a real NIC's address.
  const mac = randomBytes(6);
  mac[0] = (mac[0]! & 0xfc) | 0x02;
  const chaddr = Buffer.concat([mac, Buffer.alloc(10)]);
  const discover = encode({
    op: 1,
    xid,
    chaddr,
    flags: FLAG_BROADCAST,
    options: new Map([
      [Opt.MESSAGE_TYPE, Buffer.from([MessageType.DISCOVER])],
      // Parameter request list: subnet mask, router, DNS; a plain client's.
      [Opt.PARAMETER_REQUEST_LIST, Buffer.from([Opt.SUBNET_MASK, Opt.ROUTER, Opt.DNS])],
    ]),
  });

  const sockets: Socket[] = [];
  const seen = new Map<string, DhcpServerSeen>();
  const onMessage = (msg: Buffer, rinfo: RemoteInfo): void => {
    let p;
    try {
      p = decode(msg);
    } catch {
      return; // not DHCP, or broken: not an answer to us either way
    }
    if (p.op !== 2 || p.xid !== xid || !p.chaddr.subarray(0, 6).equals(mac)) return;
    if (messageType(p) !== MessageType.OFFER) return;
    const serverId = optionIp(p, Opt.SERVER_ID) ?? rinfo.address;
    if (options.serverIp !== undefined && serverId === options.serverIp) return;
    seen.set(`${serverId}/${rinfo.address}`, { address: rinfo.address, serverId, offeredIp: p.yiaddr });
  };
  try {
    sockets.push(await bind('0.0.0.0', clientPort, onMessage));
    const tx = await bind(own.address, clientPort, onMessage);
    sockets.push(tx);
    tx.setBroadcast(true);
    await new Promise<void>((resolve, reject) => {
      const send = (): void =>
        tx.send(discover, serverPort, '255.255.255.255', () => {
          // A failed send (e.g. no route) leaves the probe to time out empty;
          // the caller learns nothing false from it.
        });
      send();
      const resend = setInterval(send, RESEND_MS);
      const finish = (err?: BootTorrentError): void => {
        clearInterval(resend);
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve();
      };
      const timer = setTimeout(() => finish(), options.timeoutMs);
      const onAbort = (): void => finish(abortError(signal!));
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  } finally {
    for (const s of sockets) s.close();
  }
  return [...seen.values()];
}

function bind(
  address: string,
  port: number,
  onMessage: (msg: Buffer, rinfo: RemoteInfo) => void,
): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = createSocket({ type: 'udp4', reuseAddr: true });
    s.once('error', (err: NodeJS.ErrnoException) => {
      s.close();
      const fix = err.code === 'EACCES' ? ': port 68 needs root or CAP_NET_BIND_SERVICE' : '';
      reject(
        new BootTorrentError(
          'BT_ERR_LISTEN',
          `DHCP probe cannot bind ${address}:${port} (${err.code ?? err.message})${fix}`,
          {
            cause: err,
          },
        ),
      );
    });
    s.bind({ address, port, exclusive: true }, () => {
      s.removeAllListeners('error');
      s.on('error', () => undefined); // a late socket error only ends what we hear
      s.on('message', onMessage);
      resolve(s);
    });
  });
}
