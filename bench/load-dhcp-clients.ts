/**
 * Many simulated DHCP clients in one process (the DHCP load bench and its
 * small CI test): each does DISCOVER -> OFFER -> REQUEST -> ACK with its own
 * MAC and xid, all at once, retransmitting after a silence like a PXE ROM
 * (RFC 2131 §4.1: the client retransmits; we use a fixed interval). One UDP
 * socket on the client port receives every reply (they are broadcast) and
 * routes it by xid.
 */
import { createSocket } from 'node:dgram';
import type { Socket } from 'node:dgram';
import { randomInt } from 'node:crypto';
import {
  FLAG_BROADCAST,
  MessageType,
  Opt,
  decode,
  encode,
  ipToBytes,
  macOf,
  macToChaddr,
  messageType,
  optionIp,
} from '../src/dhcp/codec.js';
import type { DhcpPacket } from '../src/dhcp/codec.js';

export interface DhcpClientsOptions {
  /** Number of clients; MAC i is 02:bt:<i> (locally administered), stable across runs. */
  n: number;
  /** Where requests go: 255.255.255.255 on a LAN, 127.0.0.1 on loopback. */
  serverAddress: string;
  serverPort: number;
  /** The port replies arrive on (68 on a LAN). */
  clientPort: number;
  /** Silence before a retransmission, ms (default 2000). */
  retransmitMs?: number;
  /** Sends of one message before the client gives up (default 6). */
  tries?: number;
  /**
   * On a LAN: send from a socket bound to this address of the interface.
   * Linux routes a limited broadcast out of the device owning the bound
   * source address; from 0.0.0.0 it needs a default route (ENETUNREACH).
   */
  sendAddress?: string;
  /** Third MAC octet, to tell runs apart (default 0xb7). */
  macTag?: number;
}

export interface DhcpClientResult {
  mac: string;
  ip: string | null;
  serverId: string | null;
  /** Retransmissions this client needed (DISCOVER and REQUEST together). */
  retries: number;
  error?: string;
}

export interface DhcpClientsReport {
  results: DhcpClientResult[];
  ms: number;
  retries: number;
  failures: number;
  /** Datagrams the kernel refused to send (e.g. ENETUNREACH). */
  sendErrors: number;
}

/** The MAC of simulated client `i`. */
export function clientMac(i: number, tag = 0xb7): string {
  return [
    '02',
    'bd',
    tag.toString(16).padStart(2, '0'),
    ((i >> 16) & 0xff).toString(16).padStart(2, '0'),
    ((i >> 8) & 0xff).toString(16).padStart(2, '0'),
    (i & 0xff).toString(16).padStart(2, '0'),
  ].join(':');
}

/** Runs all clients to an ACK (or failure) and reports what each got. */
export async function runDhcpClients(o: DhcpClientsOptions): Promise<DhcpClientsReport> {
  const open = async (address: string): Promise<Socket> => {
    const s = createSocket({ type: 'udp4', reuseAddr: true });
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.bind(o.clientPort, address, () => {
        s.off('error', reject);
        resolve();
      });
    });
    s.setBroadcast(true);
    s.on('message', onMessage);
    return s;
  };
  const waiting = new Map<number, (p: DhcpPacket) => void>();
  const onMessage = (msg: Buffer): void => {
    let p: DhcpPacket;
    try {
      p = decode(msg);
    } catch {
      return;
    }
    if (p.op === 2) waiting.get(p.xid)?.(p);
  };
  const rx = await open('0.0.0.0');
  const sock = o.sendAddress ? await open(o.sendAddress) : rx;
  let sendErrors = 0;
  const retransmitMs = o.retransmitMs ?? 2000;
  const tries = o.tries ?? 6;
  const xidBase = randomInt(1, 0x7fff0000);

  /** Sends `pkt` until a reply with its xid passes `accept`, or the tries run out. */
  const exchange = (
    xid: number,
    pkt: Buffer,
    accept: (p: DhcpPacket) => boolean,
    count: () => void,
  ): Promise<DhcpPacket | null> =>
    new Promise((resolve) => {
      let sent = 0;
      let timer: NodeJS.Timeout | undefined;
      const send = (): void => {
        if (sent >= tries) {
          waiting.delete(xid);
          resolve(null);
          return;
        }
        if (sent > 0) count();
        sent++;
        sock.send(pkt, o.serverPort, o.serverAddress, (err) => {
          if (err) sendErrors++;
        });
        timer = setTimeout(send, retransmitMs);
      };
      waiting.set(xid, (p) => {
        if (!accept(p)) return;
        clearTimeout(timer);
        waiting.delete(xid);
        resolve(p);
      });
      send();
    });

  const one = async (i: number): Promise<DhcpClientResult> => {
    const mac = clientMac(i, o.macTag);
    const chaddr = macToChaddr(mac);
    const r: DhcpClientResult = { mac, ip: null, serverId: null, retries: 0 };
    const count = (): void => void r.retries++;
    const xid = (xidBase + i * 2) >>> 0;
    const discover = encode({
      op: 1,
      xid,
      chaddr,
      flags: FLAG_BROADCAST,
      options: new Map([[Opt.MESSAGE_TYPE, Buffer.from([MessageType.DISCOVER])]]),
    });
    const offer = await exchange(
      xid,
      discover,
      (p) => messageType(p) === MessageType.OFFER && macOf(p) === mac,
      count,
    );
    if (!offer) return { ...r, error: 'no OFFER' };
    const serverId = optionIp(offer, Opt.SERVER_ID);
    if (!serverId) return { ...r, error: 'OFFER without server id' };
    const xid2 = (xid + 1) >>> 0;
    const request = encode({
      op: 1,
      xid: xid2,
      chaddr,
      flags: FLAG_BROADCAST,
      options: new Map([
        [Opt.MESSAGE_TYPE, Buffer.from([MessageType.REQUEST])],
        [Opt.REQUESTED_IP, ipToBytes(offer.yiaddr)],
        [Opt.SERVER_ID, ipToBytes(serverId)],
      ]),
    });
    const ack = await exchange(
      xid2,
      request,
      (p) => (messageType(p) === MessageType.ACK || messageType(p) === MessageType.NAK) && macOf(p) === mac,
      count,
    );
    if (!ack) return { ...r, error: 'no ACK' };
    if (messageType(ack) === MessageType.NAK)
      return { ...r, error: `NAK: ${ack.options.get(Opt.MESSAGE)?.toString() ?? ''}` };
    if (ack.yiaddr !== offer.yiaddr) return { ...r, error: `ACK for ${ack.yiaddr}, offered ${offer.yiaddr}` };
    return { ...r, ip: ack.yiaddr, serverId };
  };

  const t0 = performance.now();
  try {
    const results = await Promise.all(Array.from({ length: o.n }, (_, i) => one(i)));
    return {
      results,
      ms: performance.now() - t0,
      retries: results.reduce((s, r) => s + r.retries, 0),
      failures: results.filter((r) => r.ip === null).length,
      sendErrors,
    };
  } finally {
    rx.close();
    if (sock !== rx) sock.close();
  }
}
