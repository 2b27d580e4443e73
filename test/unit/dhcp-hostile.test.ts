/**
 * Issue #14, DHCP: made-up MACs and forged messages cannot take another
 * client's lease, fill the server's memory, stall it with leases-file
 * rewrites or lock honest clients out; a bad leases file or a fault in one
 * exchange does not stop the server. Loopback only, as dhcp-server.test.ts:
 * the server serves "lo" as 127.0.0.1 on random high ports and broadcasts
 * to 127.255.255.255.
 */

import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import type { Socket } from 'node:dgram';
import { randomBytes, randomInt } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';

import {
  MessageType,
  Opt,
  decode,
  encode,
  ipsValue,
  macToChaddr,
  messageType,
} from '../../src/dhcp/codec.js';
import type { DhcpPacket } from '../../src/dhcp/codec.js';
import { DhcpServer } from '../../src/dhcp/server.js';
import type { DhcpServerOptions, DhcpServerServices } from '../../src/dhcp/server.js';
import { memoryLogger } from '../../src/util/logger.js';
import { tempDir } from '../helpers/tmp.js';

const SERVER_IP = '127.0.0.1';
/** Hang guard for one wait; a pass never depends on it. */
const WAIT_MS = 20_000;

type Packet = Omit<Parameters<typeof encode>[0], 'xid'>;

/** Sends requests and collects replies by xid. */
class Client {
  readonly #replies = new Map<number, DhcpPacket>();
  readonly #waiters = new Map<number, () => void>();
  #xid = randomInt(1, 0x3fffffff);

  private constructor(
    readonly socket: Socket,
    readonly serverPort: number,
  ) {
    socket.on('message', (msg) => {
      const p = decode(msg);
      if (!this.#replies.has(p.xid)) this.#replies.set(p.xid, p);
      this.#waiters.get(p.xid)?.();
    });
  }

  static async open(t: TestContext, clientPort: number, serverPort: number): Promise<Client> {
    const s = createSocket({ type: 'udp4', reuseAddr: true, recvBufferSize: 1 << 20 });
    await new Promise<void>((resolve) => s.bind(clientPort, '0.0.0.0', resolve));
    t.after(() => s.close());
    return new Client(s, serverPort);
  }

  /** Sends without waiting; returns the xid. */
  send(p: Packet): number {
    const xid = ++this.#xid;
    this.socket.send(encode({ ...p, xid }), this.serverPort, SERVER_IP);
    return xid;
  }

  async reply(xid: number): Promise<DhcpPacket> {
    const got = this.#replies.get(xid);
    if (got) return got;
    return new Promise<DhcpPacket>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(xid);
        reject(new Error(`no reply for xid ${xid}`));
      }, WAIT_MS);
      this.#waiters.set(xid, () => {
        clearTimeout(timer);
        this.#waiters.delete(xid);
        resolve(this.#replies.get(xid) as DhcpPacket);
      });
    });
  }

  ask(p: Packet): Promise<DhcpPacket> {
    return this.reply(this.send(p));
  }

  hasReply(xid: number): boolean {
    return this.#replies.has(xid);
  }
}

async function start(
  t: TestContext,
  options: Partial<DhcpServerOptions>,
  services: DhcpServerServices = {},
): Promise<{ server: DhcpServer; client: Client }> {
  const base = randomInt(20_000, 60_000);
  const server = new DhcpServer(
    {
      mode: 'full',
      interface: 'lo',
      serverIp: SERVER_IP,
      broadcastAddress: '127.255.255.255',
      serverPort: base,
      clientPort: base + 1,
      pxePort: base + 2,
      rangeStart: '127.0.70.1',
      rangeEnd: '127.0.70.200',
      leaseTimeSeconds: 600,
      ...options,
    },
    services,
  );
  await server.listen();
  t.after(() => server.close());
  return { server, client: await Client.open(t, base + 1, base) };
}

const typeOpt = (t: number): [number, Buffer] => [Opt.MESSAGE_TYPE, Buffer.from([t])];
const sid: [number, Buffer] = [Opt.SERVER_ID, ipsValue([SERVER_IP])];
const want = (ip: string): [number, Buffer] => [Opt.REQUESTED_IP, ipsValue([ip])];
const randomMac = (): string =>
  `02:${randomBytes(5)
    .toString('hex')
    .replace(/(..)(?!$)/g, '$1:')}`;

function msg(type: number, mac: string, options: [number, Buffer][] = [], ciaddr = '0.0.0.0'): Packet {
  return { op: 1, chaddr: macToChaddr(mac), ciaddr, options: new Map([typeOpt(type), ...options]) };
}

async function lease(client: Client, mac: string): Promise<string> {
  const offer = await client.ask(msg(MessageType.DISCOVER, mac));
  assert.equal(messageType(offer), MessageType.OFFER);
  const ack = await client.ask(msg(MessageType.REQUEST, mac, [sid, want(offer.yiaddr)]));
  assert.equal(messageType(ack), MessageType.ACK);
  return ack.yiaddr;
}

/** Sends all, `window` at a time, and waits for each reply. */
async function burst(client: Client, packets: Packet[], window = 100): Promise<DhcpPacket[]> {
  const out: DhcpPacket[] = [];
  for (let i = 0; i < packets.length; i += window) {
    const xids = packets.slice(i, i + window).map((p) => client.send(p));
    for (const xid of xids) out.push(await client.reply(xid));
  }
  return out;
}

test("another MAC's DECLINE or RELEASE does not take a client's lease: its renewal still gets ACK", async (t) => {
  const log = memoryLogger();
  const { server, client } = await start(t, {}, { logger: log });
  const victim = '52:54:00:00:0e:01';
  const ip = await lease(client, victim);
  const attacker = '52:54:00:00:0e:66';
  client.send(msg(MessageType.DECLINE, attacker, [sid, want(ip)]));
  client.send(msg(MessageType.RELEASE, attacker, [sid], ip));
  const renew = await client.ask(msg(MessageType.REQUEST, victim, [], ip));
  assert.equal(messageType(renew), MessageType.ACK, 'the victim keeps its address');
  assert.equal(renew.yiaddr, ip);
  assert.equal(server.stats().declined, 0);
  assert.ok(server.leases().some((l) => l.mac === victim && l.ip === ip && l.expires > Date.now()));
  assert.equal(server.stats().dropped, 2);
  assert.ok(log.lines.some((l) => /DHCPDECLINE for an address this client does not hold/.test(l.msg)));
  // The holder itself may still decline (RFC 2131 §4.3.3): then it is out of use.
  client.send(msg(MessageType.DECLINE, victim, [sid, want(ip)]));
  const again = await client.ask(msg(MessageType.DISCOVER, victim));
  assert.notEqual(again.yiaddr, ip);
  assert.equal(server.stats().declined, 1);
});

test('1,000 DECLINEs from made-up MACs: no leases-file rewrite each, declined list stays bounded, one log line', async (t) => {
  const log = memoryLogger();
  const file = join(tempDir(t), 'leases.json');
  const { server, client } = await start(t, { leasesFile: file }, { logger: log });
  const victim = '52:54:00:00:0e:02';
  const ip = await lease(client, victim);
  const writesBefore = server.stats().writes;
  for (let i = 0; i < 1000; i++) {
    // In the pool, the victim's address, and far outside the pool.
    const target = i % 3 === 0 ? ip : i % 3 === 1 ? `127.0.70.${1 + (i % 200)}` : `127.${i % 250}.9.9`;
    client.send(msg(MessageType.DECLINE, randomMac(), [sid, want(target)]));
    if (i % 100 === 99) await client.ask(msg(MessageType.INFORM, victim, [], ip)); // pace: no UDP loss
  }
  // Datagrams are handled in order: once this is answered, every DECLINE was handled.
  const renew = await client.ask(msg(MessageType.REQUEST, victim, [], ip));
  assert.equal(messageType(renew), MessageType.ACK);
  const s = server.stats();
  assert.equal(s.declined, 0, 'no forged DECLINE is recorded');
  assert.ok(s.writes - writesBefore <= 2, `leases file written ${s.writes - writesBefore} times`);
  assert.equal(s.dropped, 1000);
  assert.equal(
    log.lines.filter((l) => /DHCPDECLINE/.test(l.msg)).length,
    1,
    'one line per source per minute',
  );
});

test('200 renewals in a burst share a few leases-file writes, and close() still saves the last one', async (t) => {
  const file = join(tempDir(t), 'leases.json');
  const { server, client } = await start(t, { leasesFile: file, leasesWriteDelayMs: 60_000 });
  const mac = '52:54:00:00:0e:03';
  const ip = await lease(client, mac);
  // RFC 2131 §4.3.1: a new binding is on disk before its ACK leaves, write delay or not.
  assert.match(readFileSync(file, 'utf8'), new RegExp(mac));
  const writesBefore = server.stats().writes;
  const acks = await burst(
    client,
    Array.from({ length: 200 }, () => msg(MessageType.REQUEST, mac, [], ip)),
  );
  assert.ok(acks.every((a) => messageType(a) === MessageType.ACK));
  assert.equal(server.stats().writes - writesBefore, 0, 'renewals wait for the write delay');
  const last = server.leases().find((l) => l.mac === mac)?.expires;
  await server.close();
  const saved = JSON.parse(readFileSync(file, 'utf8')) as { leases: { mac: string; expires: string }[] };
  assert.equal(Date.parse(saved.leases.find((l) => l.mac === mac)?.expires ?? ''), last);
});

test('3,000 DISCOVERs from made-up MACs: offers lapse and are pruned, never outnumber the pool', async (t) => {
  let now = Date.now();
  const log = memoryLogger();
  const { server, client } = await start(
    t,
    { rangeStart: '127.0.80.0', rangeEnd: '127.0.95.255', offerHoldSeconds: 60 },
    { now: () => now, logger: log },
  );
  const offers = await burst(
    client,
    Array.from({ length: 3000 }, () => msg(MessageType.DISCOVER, randomMac())),
  );
  assert.equal(new Set(offers.map((o) => o.yiaddr)).size, 3000, 'each offer reserves its own address');
  // The hostile soak logged 11,756 "DHCP OFFER" info lines in 5 minutes:
  // an OFFER costs a made-up MAC nothing, so it is a debug line.
  assert.equal(log.lines.filter((l) => l.level !== 'debug').length <= 2, true, 'no info line per OFFER');
  assert.equal(server.stats().offers, 3000);
  now += 61_000;
  assert.equal(server.stats().offers, 0, 'lapsed offers are gone, not just ignored');
  const first = offers[0]?.yiaddr as string;
  const offer = await client.ask(msg(MessageType.DISCOVER, '52:54:00:00:0e:04', [want(first)]));
  assert.equal(offer.yiaddr, first, 'a lapsed offer freed its address');
  assert.equal(server.stats().offers, 1);
});

test('a pool full of offers to made-up MACs: the oldest offer goes to an honest client', async (t) => {
  const { server, client } = await start(t, { rangeStart: '127.0.71.1', rangeEnd: '127.0.71.10' });
  const flood = await burst(
    client,
    Array.from({ length: 50 }, () => msg(MessageType.DISCOVER, randomMac())),
    10,
  );
  assert.ok(flood.every((o) => messageType(o) === MessageType.OFFER));
  assert.ok(server.stats().offers <= 10, `${server.stats().offers} offers for a pool of 10`);
  const ip = await lease(client, '52:54:00:00:0e:05');
  assert.ok(ip.startsWith('127.0.71.'));
});

test('DECLINEs cannot empty the pool: with nothing else left, the address declined longest ago is offered again', async (t) => {
  const { server, client } = await start(t, { rangeStart: '127.0.72.1', rangeEnd: '127.0.72.5' });
  const declined: string[] = [];
  for (let i = 0; i < 5; i++) {
    const mac = randomMac();
    const ip = await lease(client, mac);
    client.send(msg(MessageType.DECLINE, mac, [sid, want(ip)]));
    declined.push(ip);
  }
  const offer = await client.ask(msg(MessageType.DISCOVER, '52:54:00:00:0e:06'));
  assert.equal(messageType(offer), MessageType.OFFER, 'an honest client still gets an address');
  assert.equal(offer.yiaddr, declined[0]);
  assert.equal(server.stats().declined, 4);
});

test('a leases file with a bad ip: bad entries are dropped with one warning, new clients get ACKs', async (t) => {
  const log = memoryLogger();
  const file = join(tempDir(t), 'leases.json');
  const future = new Date(Date.now() + 3600_000).toISOString();
  writeFileSync(
    file,
    JSON.stringify({
      version: 1,
      leases: [
        { mac: '52:54:00:00:0e:10', ip: '127.0.70.50', expires: future },
        { mac: '52:54:00:00:0e:11', ip: 'banana', expires: future },
        { mac: '52:54:00:00:0e:12', ip: '10.1.2.3', expires: future },
        { mac: 'not-a-mac', ip: '127.0.70.52', expires: future },
        { mac: '52:54:00:00:0e:13', ip: '127.0.70.53', expires: 'soon' },
        null,
      ],
      declined: [{ ip: 'x', until: future }],
    }),
  );
  const { server, client } = await start(t, { leasesFile: file }, { logger: log });
  const warnings = log.lines.filter((l) => l.level === 'warn' && l.msg.includes(file));
  assert.equal(warnings.length, 1, 'one warning for the file');
  assert.equal(warnings[0]?.fields?.dropped, 6);
  assert.match(String(warnings[0]?.fields?.entries), /banana.*ip is not a dotted IPv4 address/);
  assert.deepEqual(
    server.leases().map((l) => l.mac),
    ['52:54:00:00:0e:10'],
  );
  const ip = await lease(client, '52:54:00:00:0e:20');
  assert.notEqual(ip, '127.0.70.50', 'the good entry still holds its address');
  const renew = await client.ask(msg(MessageType.REQUEST, '52:54:00:00:0e:10', [], '127.0.70.50'));
  assert.equal(messageType(renew), MessageType.ACK);
  await server.close();
  assert.doesNotMatch(readFileSync(file, 'utf8'), /banana/);
});

test('a fault while handling one exchange is logged and dropped; the server keeps answering', async (t) => {
  const log = memoryLogger();
  const bad = '52:54:00:00:0e:30';
  const { server, client } = await start(
    t,
    {},
    {
      logger: log,
      bootPolicy: {
        bootFor: (c) => {
          if (c.mac === bad) throw new Error('policy bug');
          return undefined;
        },
      },
    },
  );
  let listenerCalls = 0;
  server.on('lease', () => {
    listenerCalls++;
    throw new Error('listener bug');
  });
  const pxe: [number, Buffer] = [Opt.VENDOR_CLASS, Buffer.from('PXEClient:Arch:00000:UNDI:002001')];
  const silent = [
    client.send(msg(MessageType.DISCOVER, bad, [pxe])),
    client.send(msg(MessageType.DISCOVER, bad, [pxe])),
  ];
  await lease(client, '52:54:00:00:0e:31');
  await lease(client, '52:54:00:00:0e:32');
  assert.equal(listenerCalls, 2);
  assert.ok(silent.every((x) => !client.hasReply(x)));
  const lines = log.lines.filter((l) => l.msg === 'DHCP request failed');
  assert.equal(lines.length, 1, 'one line per source per minute');
  assert.match(String(lines[0]?.fields?.error), /policy bug/);
});

test('a leases file that cannot be written: no ACK, one line, the server keeps answering and recovers', async (t) => {
  const log = memoryLogger();
  const dir = join(tempDir(t), 'not-yet');
  const { server, client } = await start(t, { leasesFile: join(dir, 'leases.json') }, { logger: log });
  const mac = '52:54:00:00:0e:40';
  const offer = await client.ask(msg(MessageType.DISCOVER, mac));
  const request = msg(MessageType.REQUEST, mac, [sid, want(offer.yiaddr)]);
  const failed = [client.send(request), client.send(request)];
  const deadline = Date.now() + WAIT_MS; // hang guard, not a timing assertion
  while (!log.lines.some((l) => l.msg === 'DHCP leases file not written')) {
    assert.ok(Date.now() < deadline, 'the write failure is logged');
    await sleep(20);
  }
  const inform = await client.ask(msg(MessageType.INFORM, mac, [], '127.0.0.1'));
  assert.equal(messageType(inform), MessageType.ACK, 'the server keeps answering');
  assert.ok(
    failed.every((x) => !client.hasReply(x)),
    'no ACK for a binding that is not on disk',
  );
  assert.equal(log.lines.filter((l) => l.msg === 'DHCP leases file not written').length, 1);
  mkdirSync(dir);
  const ack = await client.ask(request);
  assert.equal(messageType(ack), MessageType.ACK, 'the retransmitted REQUEST is ACKed once the disk is back');
  await server.close();
  assert.match(readFileSync(join(dir, 'leases.json'), 'utf8'), new RegExp(mac));
});
