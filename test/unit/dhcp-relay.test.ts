/**
 * Relayed subnets (#21 item 1) on loopback: the server serves "lo" as
 * 127.0.0.1 with a /24 mask (its own subnet 127.0.0.0/24), and 127.1.0.0/24
 * is a relayed subnet. The test plays the relay: a socket bound to
 * 127.1.0.1 (every 127/8 address is local) on the server's port, where a
 * reply to giaddr lands; nothing leaves the machine. The real relay
 * (isc-dhcp-relay) and real clients are in test/interop/dhcp-clients.test.ts.
 */

import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import type { Socket } from 'node:dgram';
import { randomInt } from 'node:crypto';

import {
  MessageType,
  Opt,
  decode,
  encode,
  encodeClientArch,
  ipsValue,
  macToChaddr,
  messageType,
  optionIp,
} from '../../src/dhcp/codec.js';
import type { DhcpPacket, DhcpPacketInit } from '../../src/dhcp/codec.js';
import { DhcpServer } from '../../src/dhcp/server.js';
import type { DhcpServerOptions } from '../../src/dhcp/server.js';
import { LeaseTable } from '../../src/dhcp/leases.js';
import { DefaultBootPolicy } from '../../src/server/boot-policy.js';
import { isBootTorrentError } from '../../src/errors.js';
import { memoryLogger } from '../../src/util/logger.js';

const WAIT_MS = 5_000;
const RELAY = '127.1.0.1';
/** Option 82 as a relay writes it: circuit id (1) "eth7", remote id (2) "sw-3". */
const AGENT_INFO = Buffer.from([1, 4, ...Buffer.from('eth7'), 2, 4, ...Buffer.from('sw-3')]);

/** A socket on `address`:`port` that keeps every datagram, raw and decoded. */
class Listener {
  readonly got: { raw: Buffer; packet: DhcpPacket; from: string }[] = [];

  private constructor(readonly socket: Socket) {
    socket.on('message', (raw, rinfo) => {
      const packet = decode(raw);
      if (packet.op === 2) this.got.push({ raw, packet, from: `${rinfo.address}:${rinfo.port}` });
    });
  }

  static async open(t: TestContext, address: string, port: number): Promise<Listener> {
    const s = createSocket({ type: 'udp4', reuseAddr: true });
    await new Promise<void>((resolve) => s.bind(port, address, resolve));
    t.after(() => s.close());
    return new Listener(s);
  }

  send(p: DhcpPacketInit, port: number, to = '127.0.0.1'): void {
    this.socket.send(encode(p), port, to);
  }

  /** The reply with this xid; the hang guard is not an assertion. */
  async reply(xid: number): Promise<{ raw: Buffer; packet: DhcpPacket; from: string }> {
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const r = this.got.find((x) => x.packet.xid === xid);
      if (r) return r;
      if (Date.now() > deadline) throw new Error(`no reply for xid ${xid}`);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  }
}

/** The options of a raw DHCP packet in wire order (codes only), END excluded. */
function optionOrder(raw: Buffer): number[] {
  const codes: number[] = [];
  for (let i = 240; i < raw.length;) {
    const code = raw[i] as number;
    if (code === Opt.END) break;
    if (code === Opt.PAD) {
      i++;
      continue;
    }
    codes.push(code);
    i += 2 + (raw[i + 1] as number);
  }
  return codes;
}

function ports(): { serverPort: number; clientPort: number; pxePort: number } {
  const base = randomInt(20_000, 60_000);
  return { serverPort: base, clientPort: base + 1, pxePort: base + 2 };
}

async function startServer(
  t: TestContext,
  options: Partial<DhcpServerOptions> & Pick<DhcpServerOptions, 'mode'>,
): Promise<{ server: DhcpServer; log: ReturnType<typeof memoryLogger> }> {
  const log = memoryLogger();
  const server = new DhcpServer(
    {
      interface: 'lo',
      serverIp: '127.0.0.1',
      subnetMask: '255.255.255.0',
      broadcastAddress: '127.0.0.255',
      ...options,
    },
    { logger: log, bootPolicy: new DefaultBootPolicy({ serverIp: '127.0.0.1' }) },
  );
  await server.listen();
  t.after(() => server.close());
  return { server, log };
}

const pxeOptions = (type: number): Map<number, Buffer> =>
  new Map([
    [Opt.MESSAGE_TYPE, Buffer.from([type])],
    [Opt.VENDOR_CLASS, Buffer.from('PXEClient:Arch:00000:UNDI:002001')],
    [Opt.CLIENT_ARCH, encodeClientArch([0])],
    [Opt.RELAY_AGENT_INFO, AGENT_INFO],
  ]);

test('full mode through a relay: the pool of giaddr, its router and DNS, option 82 echoed last, reply to the relay', async (t) => {
  const p = ports();
  const { server, log } = await startServer(t, {
    mode: 'full',
    rangeStart: '127.0.0.100',
    rangeEnd: '127.0.0.110',
    router: '127.0.0.254',
    dns: ['127.0.0.53'],
    subnets: [
      {
        subnet: '127.1.0.0/24',
        rangeStart: '127.1.0.100',
        rangeEnd: '127.1.0.110',
        router: RELAY,
        dns: ['127.1.0.53'],
      },
      { subnet: '127.2.0.0/16', rangeStart: '127.2.5.1', rangeEnd: '127.2.5.9' },
    ],
    ...p,
  });
  const relay = await Listener.open(t, RELAY, p.serverPort);
  const mac = '02:00:00:21:00:01';
  const xid = randomInt(1, 0x7fffffff);
  relay.send(
    {
      op: 1,
      xid,
      hops: 1,
      giaddr: RELAY,
      chaddr: macToChaddr(mac),
      options: pxeOptions(MessageType.DISCOVER),
    },
    p.serverPort,
  );
  const offer = await relay.reply(xid);
  assert.equal(offer.from, `127.0.0.1:${p.serverPort}`, 'the reply comes from the server port');
  assert.equal(messageType(offer.packet), MessageType.OFFER);
  assert.match(
    offer.packet.yiaddr,
    /^127\.1\.0\.1(0\d|10)$/,
    `address from the relayed pool: ${offer.packet.yiaddr}`,
  );
  assert.equal(offer.packet.giaddr, RELAY);
  assert.equal(optionIp(offer.packet, Opt.SUBNET_MASK), '255.255.255.0');
  assert.equal(optionIp(offer.packet, Opt.ROUTER), RELAY);
  assert.equal(optionIp(offer.packet, Opt.DNS), '127.1.0.53');
  assert.equal(optionIp(offer.packet, Opt.BROADCAST_ADDRESS), '127.1.0.255');
  assert.equal(offer.packet.file, 'undionly.kpxe', 'PXE boot information travels through the relay too');
  assert.deepEqual(
    offer.packet.options.get(Opt.RELAY_AGENT_INFO),
    AGENT_INFO,
    'option 82 echoed byte for byte',
  );
  assert.equal(
    optionOrder(offer.raw).at(-1),
    Opt.RELAY_AGENT_INFO,
    'option 82 is the last option (RFC 3046 §2.2)',
  );

  const xid2 = xid + 1;
  const req = pxeOptions(MessageType.REQUEST);
  req.set(Opt.SERVER_ID, ipsValue(['127.0.0.1']));
  req.set(Opt.REQUESTED_IP, ipsValue([offer.packet.yiaddr]));
  relay.send(
    { op: 1, xid: xid2, hops: 1, giaddr: RELAY, chaddr: macToChaddr(mac), options: req },
    p.serverPort,
  );
  const ack = await relay.reply(xid2);
  assert.equal(messageType(ack.packet), MessageType.ACK);
  assert.equal(ack.packet.yiaddr, offer.packet.yiaddr);
  assert.deepEqual(ack.packet.options.get(Opt.RELAY_AGENT_INFO), AGENT_INFO);
  assert.equal(server.leaseOf(mac)?.ip, offer.packet.yiaddr);

  // A wider relayed subnet (/16): its mask and broadcast, no router given; the reply goes to its relay.
  const xid3 = xid + 2;
  const relay2 = await Listener.open(t, '127.2.9.1', p.serverPort);
  relay.send(
    {
      op: 1,
      xid: xid3,
      giaddr: '127.2.9.1',
      chaddr: macToChaddr('02:00:00:21:00:02'),
      options: new Map([[Opt.MESSAGE_TYPE, Buffer.from([MessageType.DISCOVER])]]),
    },
    p.serverPort,
  );
  const wide = await relay2.reply(xid3);
  assert.match(wide.packet.yiaddr, /^127\.2\.5\.\d$/);
  assert.equal(optionIp(wide.packet, Opt.SUBNET_MASK), '255.255.0.0');
  assert.equal(optionIp(wide.packet, Opt.BROADCAST_ADDRESS), '127.2.255.255');
  assert.equal(wide.packet.options.get(Opt.ROUTER), undefined);
  assert.equal(
    optionIp(wide.packet, Opt.DNS),
    '127.0.0.53',
    'the server-wide DNS where the subnet names none',
  );
  assert.equal(wide.packet.options.get(Opt.RELAY_AGENT_INFO), undefined, 'no option 82 asked, none sent');

  // The relayed client renews by unicast from its own address: the same pool, an ACK to its address.
  const client = await Listener.open(t, offer.packet.yiaddr, p.clientPort);
  const xid4 = xid + 10;
  client.send(
    {
      op: 1,
      xid: xid4,
      ciaddr: offer.packet.yiaddr,
      chaddr: macToChaddr(mac),
      options: new Map([[Opt.MESSAGE_TYPE, Buffer.from([MessageType.REQUEST])]]),
    },
    p.serverPort,
  );
  const renewed = await client.reply(xid4);
  assert.equal(messageType(renewed.packet), MessageType.ACK);
  assert.equal(renewed.packet.yiaddr, offer.packet.yiaddr);
  assert.equal(optionIp(renewed.packet, Opt.ROUTER), RELAY, 'the renewal gets its own subnet options');

  // A relay on a subnet not served: dropped and logged, nothing sent.
  const stranger = await Listener.open(t, '127.9.0.1', p.serverPort);
  const xid5 = xid + 20;
  stranger.send(
    {
      op: 1,
      xid: xid5,
      giaddr: '127.9.0.1',
      chaddr: macToChaddr('02:00:00:21:00:09'),
      options: pxeOptions(MessageType.DISCOVER),
    },
    p.serverPort,
  );
  const deadline = Date.now() + WAIT_MS;
  while (!log.lines.some((l) => l.msg.includes('subnet not served')) && Date.now() < deadline)
    await new Promise((resolve) => setTimeout(resolve, 10));
  const line = log.lines.find((l) => l.msg.includes('subnet not served'));
  assert.ok(line, 'the drop is logged');
  assert.equal(line.fields?.giaddr, '127.9.0.1');
  assert.match(String(line.fields?.fix), /dhcp\.subnets/);
  // The server answers requests in order: a later reply proves the stranger's DISCOVER got none.
  const xid6 = xid + 30;
  relay.send(
    { op: 1, xid: xid6, giaddr: RELAY, chaddr: macToChaddr(mac), options: pxeOptions(MessageType.DISCOVER) },
    p.serverPort,
  );
  await relay.reply(xid6);
  assert.equal(stranger.got.length, 0, 'no reply to a relay of an unserved subnet');
});

test('proxy mode through a relay: a PXE client of a listed subnet gets its boot file at the relay', async (t) => {
  const p = ports();
  await startServer(t, { mode: 'proxy', subnets: [{ subnet: '127.1.0.0/24' }], ...p });
  const relay = await Listener.open(t, RELAY, p.serverPort);
  const xid = randomInt(1, 0x7fffffff);
  relay.send(
    {
      op: 1,
      xid,
      hops: 1,
      giaddr: RELAY,
      chaddr: macToChaddr('02:00:00:21:01:01'),
      options: pxeOptions(MessageType.DISCOVER),
    },
    p.serverPort,
  );
  const offer = await relay.reply(xid);
  assert.equal(messageType(offer.packet), MessageType.OFFER);
  assert.equal(offer.packet.yiaddr, '0.0.0.0', 'proxy: no address');
  assert.equal(offer.packet.file, 'undionly.kpxe');
  assert.equal(offer.packet.siaddr, '127.0.0.1');
  assert.equal(optionOrder(offer.raw).at(-1), Opt.RELAY_AGENT_INFO);
  assert.deepEqual(offer.packet.options.get(Opt.RELAY_AGENT_INFO), AGENT_INFO);
});

test('relayed subnets are validated at listen: overlaps, ranges, routers, modes', async () => {
  const base: DhcpServerOptions = {
    mode: 'full',
    interface: 'lo',
    serverIp: '127.0.0.1',
    subnetMask: '255.255.255.0',
    rangeStart: '127.0.0.100',
    rangeEnd: '127.0.0.110',
    serverPort: 1,
  };
  const cases: [Partial<DhcpServerOptions>, RegExp][] = [
    [
      { subnets: [{ subnet: '127.1.0.7/24', rangeStart: '127.1.0.10', rangeEnd: '127.1.0.20' }] },
      /CIDR form/,
    ],
    [
      { subnets: [{ subnet: '127.0.0.0/16', rangeStart: '127.0.1.10', rangeEnd: '127.0.1.20' }] },
      /overlaps the served interface's own subnet 127\.0\.0\.0\/24/,
    ],
    [
      {
        subnets: [
          { subnet: '127.1.0.0/24', rangeStart: '127.1.0.10', rangeEnd: '127.1.0.20' },
          { subnet: '127.1.0.128/25', rangeStart: '127.1.0.130', rangeEnd: '127.1.0.140' },
        ],
      },
      /subnets\[1\]: 127\.1\.0\.128\/25 overlaps 127\.1\.0\.0\/24/,
    ],
    [
      { subnets: [{ subnet: '127.1.0.0/24' }] },
      /full mode needs rangeStart and rangeEnd for 127\.1\.0\.0\/24/,
    ],
    [
      { subnets: [{ subnet: '127.1.0.0/24', rangeStart: '127.1.1.10', rangeEnd: '127.1.1.20' }] },
      /not inside 127\.1\.0\.0\/24/,
    ],
    [
      {
        subnets: [
          { subnet: '127.1.0.0/24', rangeStart: '127.1.0.10', rangeEnd: '127.1.0.20', router: '127.3.0.1' },
        ],
      },
      /router 127\.3\.0\.1 is not inside/,
    ],
    [
      {
        mode: 'proxy',
        subnets: [{ subnet: '127.1.0.0/24', rangeStart: '127.1.0.10', rangeEnd: '127.1.0.20' }],
      },
      /only used in full mode/,
    ],
    [
      { reservations: [{ mac: '02:00:00:00:00:01', ip: '127.5.0.1' }] },
      /127\.5\.0\.1 is not an address in 127\.0\.0\.0\/24/,
    ],
  ];
  for (const [extra, re] of cases) {
    const server = new DhcpServer({ ...base, ...extra });
    await assert.rejects(
      server.listen(),
      (err: unknown) => isBootTorrentError(err) && err.code === 'BT_ERR_DHCP_CONFIG' && re.test(err.message),
      `${JSON.stringify(extra)} should be refused with ${re}`,
    );
  }
});

test('lease pools: each subnet hands out its own addresses; a machine that moves gets one on its new subnet', () => {
  const table = new LeaseTable({
    rangeStart: '10.0.0.10',
    rangeEnd: '10.0.0.11',
    pools: [{ rangeStart: '10.1.0.10', rangeEnd: '10.1.0.11' }],
  });
  assert.equal(table.pick('02:00:00:00:00:01', undefined, 0), '10.0.0.10');
  assert.equal(
    table.pick('02:00:00:00:00:02', '10.0.0.11', 1),
    '10.1.0.10',
    'a requested address of another pool is not given',
  );
  table.bind('02:00:00:00:00:02', '10.1.0.10', 60);
  assert.equal(
    table.pick('02:00:00:00:00:02', undefined, 1),
    '10.1.0.10',
    'its old address in the same pool',
  );
  const moved = table.pick('02:00:00:00:00:02', undefined, 0);
  assert.match(String(moved), /^10\.0\.0\.1[01]$/, 'moved: an address of the new pool');
  table.bind('02:00:00:00:00:02', moved!, 60);
  assert.equal(table.leaseOf('02:00:00:00:00:02')?.ip, moved, 'one lease per MAC');
  table.bind('02:00:00:00:00:03', '10.1.0.11', 60);
  table.bind('02:00:00:00:00:04', '10.1.0.10', 60);
  assert.equal(
    table.pick('02:00:00:00:00:05', undefined, 1),
    undefined,
    'pool 1 is full; pool 0 is not lent',
  );
  assert.equal(
    table.pick('02:00:00:00:00:05', undefined, 0),
    moved === '10.0.0.10' ? '10.0.0.11' : '10.0.0.10',
  );
  assert.equal(table.pick('02:00:00:00:00:05', undefined, 7), undefined, 'no such pool');
});
