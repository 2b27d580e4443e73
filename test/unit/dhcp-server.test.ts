/**
 * DhcpServer state machines on loopback: the server serves interface "lo"
 * as 127.0.0.1 on unusual ports, and broadcasts to 127.255.255.255 (a
 * loopback-only broadcast route) instead of 255.255.255.255, so nothing
 * leaves the machine. An in-test client speaks the codec directly.
 */

import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import type { Socket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomInt } from 'node:crypto';
import { waitUntil } from '../helpers/wait.js';

import {
  MessageType,
  Opt,
  decode,
  decodeSubOptions,
  encode,
  encodeClientArch,
  ipsValue,
  macToChaddr,
  messageType,
  optionIp,
  optionString,
} from '../../src/dhcp/codec.js';
import type { DhcpPacket } from '../../src/dhcp/codec.js';
import { DhcpServer } from '../../src/dhcp/server.js';
import type { DhcpServerOptions } from '../../src/dhcp/server.js';
import { DefaultBootPolicy } from '../../src/server/boot-policy.js';
import { isBootTorrentError } from '../../src/errors.js';
import { memoryLogger } from '../../src/util/logger.js';
import { tempDir } from '../helpers/tmp.js';

const SERVER_IP = '127.0.0.1';
const WAIT_MS = 5_000;

/** A client on loopback: sends to the server, collects every reply. */
class TestClient {
  readonly replies: { packet: DhcpPacket; address: string }[] = [];
  /** Bytes of every reply received (UDP payload). */
  received = 0;
  #waiters = new Set<() => void>();
  #xid = randomInt(1, 0x7fffffff);

  private constructor(
    readonly socket: Socket,
    readonly serverPort: number,
  ) {
    socket.on('message', (msg, rinfo) => {
      this.received += msg.length;
      this.replies.push({ packet: decode(msg), address: rinfo.address });
      for (const w of this.#waiters) w();
    });
  }

  static async open(t: TestContext, clientPort: number, serverPort: number): Promise<TestClient> {
    const s = createSocket({ type: 'udp4', reuseAddr: true });
    await new Promise<void>((resolve) => s.bind(clientPort, '0.0.0.0', resolve));
    t.after(() => s.close());
    return new TestClient(s, serverPort);
  }

  nextXid(): number {
    return ++this.#xid;
  }

  send(p: Parameters<typeof encode>[0], port = this.serverPort): void {
    this.socket.send(encode(p), port, SERVER_IP);
  }

  /** The first reply with this xid; the hang guard is not an assertion. */
  async reply(xid: number): Promise<DhcpPacket> {
    const deadline = AbortSignal.timeout(WAIT_MS);
    for (;;) {
      const r = this.replies.find((x) => x.packet.xid === xid);
      if (r) return r.packet;
      if (deadline.aborted) throw new Error(`no reply for xid ${xid}`);
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this.#waiters.delete(done);
          resolve();
        };
        this.#waiters.add(done);
        deadline.addEventListener('abort', done, { once: true });
      });
    }
  }

  /** Sends and waits for the reply with the same xid. */
  async ask(p: Omit<Parameters<typeof encode>[0], 'xid'>, port?: number): Promise<DhcpPacket> {
    const xid = this.nextXid();
    this.send({ ...p, xid }, port);
    return this.reply(xid);
  }

  hasReply(xid: number): boolean {
    return this.replies.some((r) => r.packet.xid === xid);
  }
}

function ports(): { serverPort: number; clientPort: number; pxePort: number } {
  const base = randomInt(20_000, 60_000);
  return { serverPort: base, clientPort: base + 1, pxePort: base + 2 };
}

async function startServer(
  t: TestContext,
  options: Partial<DhcpServerOptions> & { mode: DhcpServerOptions['mode'] },
  services: ConstructorParameters<typeof DhcpServer>[1] = {},
): Promise<DhcpServer> {
  const server = new DhcpServer(
    { interface: 'lo', serverIp: SERVER_IP, broadcastAddress: '127.255.255.255', ...options },
    services,
  );
  await server.listen();
  t.after(() => server.close());
  return server;
}

const opts = (entries: [number, Buffer][]): Map<number, Buffer> => new Map(entries);
const type = (t: number): [number, Buffer] => [Opt.MESSAGE_TYPE, Buffer.from([t])];

function discover(mac: string, extra: [number, Buffer][] = []): Omit<Parameters<typeof encode>[0], 'xid'> {
  return { op: 1, chaddr: macToChaddr(mac), options: opts([type(MessageType.DISCOVER), ...extra]) };
}

function request(
  mac: string,
  extra: [number, Buffer][],
  ciaddr = '0.0.0.0',
): Omit<Parameters<typeof encode>[0], 'xid'> {
  return { op: 1, chaddr: macToChaddr(mac), ciaddr, options: opts([type(MessageType.REQUEST), ...extra]) };
}

/** DISCOVER, OFFER, REQUEST(selecting), ACK: returns the ACK. */
async function lease(client: TestClient, mac: string): Promise<DhcpPacket> {
  const offer = await client.ask(discover(mac));
  assert.equal(messageType(offer), MessageType.OFFER);
  const ack = await client.ask(
    request(mac, [
      [Opt.SERVER_ID, ipsValue([SERVER_IP])],
      [Opt.REQUESTED_IP, ipsValue([offer.yiaddr])],
    ]),
  );
  assert.equal(messageType(ack), MessageType.ACK);
  assert.equal(ack.yiaddr, offer.yiaddr);
  return ack;
}

const FULL = {
  mode: 'full',
  rangeStart: '127.0.50.10',
  rangeEnd: '127.0.50.20',
  leaseTimeSeconds: 600,
} as const;

test('full mode: DISCOVER/OFFER/REQUEST/ACK with RFC 2132 parameters', async (t) => {
  const p = ports();
  const server = await startServer(t, {
    ...FULL,
    ...p,
    router: '127.0.0.254',
    dns: ['127.0.0.53'],
    domainName: 'lab',
  });
  const client = await TestClient.open(t, p.clientPort, p.serverPort);
  const ack = await lease(client, '52:54:00:00:00:01');
  assert.equal(ack.op, 2);
  assert.ok(server.leases().some((l) => l.mac === '52:54:00:00:00:01' && l.ip === ack.yiaddr));
  assert.equal(optionIp(ack, Opt.SERVER_ID), SERVER_IP);
  assert.equal(optionIp(ack, Opt.SUBNET_MASK), '255.0.0.0');
  assert.equal(optionIp(ack, Opt.ROUTER), '127.0.0.254');
  assert.equal(optionIp(ack, Opt.DNS), '127.0.0.53');
  assert.equal(optionString(ack, Opt.DOMAIN_NAME), 'lab');
  assert.equal(ack.options.get(Opt.LEASE_TIME)?.readUInt32BE(0), 600);
  assert.equal(ack.options.get(Opt.RENEWAL_TIME)?.readUInt32BE(0), 300);
  assert.equal(ack.options.get(Opt.REBINDING_TIME)?.readUInt32BE(0), 525);
  assert.equal(ack.options.has(Opt.CLIENT_ID), false, 'RFC 2131 table 3: no client id in ACK');
  assert.equal(ack.file, '', 'a plain DHCP client gets no boot file');
  // A second client gets a different address.
  const ack2 = await lease(client, '52:54:00:00:00:02');
  assert.notEqual(ack2.yiaddr, ack.yiaddr);
  // The server's own figure (#16): the OFFERs and ACKs this client received, to the byte.
  await waitUntil(() => client.replies.length === 4, WAIT_MS, 'four replies');
  assert.equal(server.sentBytes, client.received);
});

test('full mode: reservation, RENEW, INIT-REBOOT NAK/silence, DECLINE, RELEASE, INFORM', async (t) => {
  const p = ports();
  const log = memoryLogger();
  const server = await startServer(
    t,
    { ...FULL, ...p, reservations: [{ mac: '52-54-00-00-00-AA', ip: '127.0.60.1' }] },
    { logger: log },
  );
  const client = await TestClient.open(t, p.clientPort, p.serverPort);

  const reserved = await lease(client, '52:54:00:00:00:aa');
  assert.equal(reserved.yiaddr, '127.0.60.1', 'reservation outside the range but in the subnet');

  const a = await lease(client, '52:54:00:00:00:0a');
  // RENEWING: ciaddr set, no server id, no requested address.
  const renew = await client.ask(request('52:54:00:00:00:0a', [], a.yiaddr));
  assert.equal(messageType(renew), MessageType.ACK);
  assert.equal(renew.yiaddr, a.yiaddr);
  assert.equal(renew.ciaddr, a.yiaddr);

  // INIT-REBOOT with the wrong address: NAK.
  const nak = await client.ask(request('52:54:00:00:00:0a', [[Opt.REQUESTED_IP, ipsValue(['127.0.50.19'])]]));
  assert.equal(messageType(nak), MessageType.NAK);
  // INIT-REBOOT with its own address: ACK.
  const reboot = await client.ask(request('52:54:00:00:00:0a', [[Opt.REQUESTED_IP, ipsValue([a.yiaddr])]]));
  assert.equal(messageType(reboot), MessageType.ACK);
  // INIT-REBOOT from an unknown client: silence (RFC 2131 §4.3.2). The server
  // handles datagrams in order, so once a later request is answered the
  // earlier one was dropped.
  const silentXid = client.nextXid();
  client.send({
    ...request('52:54:00:00:00:0b', [[Opt.REQUESTED_IP, ipsValue(['127.0.50.11'])]]),
    xid: silentXid,
  });
  const wrongNet = await client.ask(
    request('52:54:00:00:00:0b', [[Opt.REQUESTED_IP, ipsValue(['10.9.9.9'])]]),
  );
  assert.equal(messageType(wrongNet), MessageType.NAK, 'an address on the wrong network is NAKed');
  assert.equal(client.hasReply(silentXid), false);

  // SELECTING another server: our hold is dropped, no reply.
  const offer = await client.ask(discover('52:54:00:00:00:0c'));
  const otherXid = client.nextXid();
  client.send({
    ...request('52:54:00:00:00:0c', [
      [Opt.SERVER_ID, ipsValue(['127.0.0.99'])],
      [Opt.REQUESTED_IP, ipsValue([offer.yiaddr])],
    ]),
    xid: otherXid,
  });
  // DECLINE: that address stays out of use; the next DISCOVER gets another.
  const b = await lease(client, '52:54:00:00:00:0d');
  client.send({
    op: 1,
    xid: client.nextXid(),
    chaddr: macToChaddr('52:54:00:00:00:0d'),
    options: opts([
      type(MessageType.DECLINE),
      [Opt.SERVER_ID, ipsValue([SERVER_IP])],
      [Opt.REQUESTED_IP, ipsValue([b.yiaddr])],
    ]),
  });
  const again = await client.ask(discover('52:54:00:00:00:0d'));
  assert.notEqual(again.yiaddr, b.yiaddr);
  assert.equal(client.hasReply(otherXid), false);
  assert.ok(log.lines.some((l) => /declined/.test(l.msg)));

  // RELEASE: the lease ends, and the same MAC gets the same address back.
  client.send({
    op: 1,
    xid: client.nextXid(),
    ciaddr: a.yiaddr,
    chaddr: macToChaddr('52:54:00:00:00:0a'),
    options: opts([type(MessageType.RELEASE), [Opt.SERVER_ID, ipsValue([SERVER_IP])]]),
  });
  const afterRelease = await client.ask(discover('52:54:00:00:00:0a'));
  const rec = server.leases().find((l) => l.mac === '52:54:00:00:00:0a');
  assert.ok(rec && rec.expires <= Date.now(), 'released lease has ended');
  assert.equal(afterRelease.yiaddr, a.yiaddr);

  // INFORM: configuration without a lease, unicast to ciaddr.
  const inform = await client.ask({
    op: 1,
    ciaddr: '127.0.0.1',
    chaddr: macToChaddr('52:54:00:00:00:0e'),
    options: opts([type(MessageType.INFORM)]),
  });
  assert.equal(messageType(inform), MessageType.ACK);
  assert.equal(inform.yiaddr, '0.0.0.0');
  assert.equal(inform.options.has(Opt.LEASE_TIME), false);
});

test('full mode: a restarted server hands every client its old address from the leases file', async (t) => {
  const p = ports();
  const file = join(tempDir(t), 'leases.json');
  const macs = ['52:54:00:00:01:01', '52:54:00:00:01:02', '52:54:00:00:01:03'];
  const first = await startServer(t, { ...FULL, ...p, leasesFile: file });
  const client = await TestClient.open(t, p.clientPort, p.serverPort);
  const before = new Map<string, string>();
  for (const mac of macs) before.set(mac, (await lease(client, mac)).yiaddr);
  await first.close();
  const saved = JSON.parse(readFileSync(file, 'utf8')) as { leases: { mac: string; ip: string }[] };
  assert.deepEqual(
    new Set(saved.leases.map((l) => `${l.mac}=${l.ip}`)),
    new Set([...before].map(([m, ip]) => `${m}=${ip}`)),
  );

  await startServer(t, { ...FULL, ...p, leasesFile: file });
  // Reverse order: without the file, the first asker would get the first address.
  for (const mac of [...macs].reverse()) {
    const offer = await client.ask(discover(mac));
    assert.equal(offer.yiaddr, before.get(mac), `${mac} keeps its address`);
  }
  const fresh = await client.ask(discover('52:54:00:00:01:04'));
  assert.ok(![...before.values()].includes(fresh.yiaddr), 'a new client gets a free address');
});

test('full mode: boot information per client kind (BootPolicy)', async (t) => {
  const p = ports();
  const policy = new DefaultBootPolicy({ serverIp: SERVER_IP, httpPort: 8080 });
  await startServer(t, { ...FULL, ...p }, { bootPolicy: policy });
  const client = await TestClient.open(t, p.clientPort, p.serverPort);
  const vc = (s: string): [number, Buffer] => [Opt.VENDOR_CLASS, Buffer.from(s)];
  const arch = (n: number): [number, Buffer] => [Opt.CLIENT_ARCH, encodeClientArch([n])];

  const bios = await client.ask(
    discover('52:54:00:00:02:01', [vc('PXEClient:Arch:00000:UNDI:002001'), arch(0)]),
  );
  assert.equal(bios.file, 'undionly.kpxe');
  assert.equal(bios.siaddr, SERVER_IP);

  const efi = await client.ask(
    discover('52:54:00:00:02:02', [vc('PXEClient:Arch:00007:UNDI:003001'), arch(7)]),
  );
  assert.equal(efi.file, 'ipxe.efi');

  const http = await client.ask(
    discover('52:54:00:00:02:03', [
      vc('HTTPClient:Arch:00016:UNDI:003001'),
      arch(16),
      [Opt.PARAMETER_REQUEST_LIST, Buffer.from([1, 3, 67])],
    ]),
  );
  assert.equal(http.file, 'http://127.0.0.1:8080/ipxe.efi');
  assert.equal(optionString(http, Opt.VENDOR_CLASS), 'HTTPClient');
  assert.equal(optionString(http, Opt.BOOTFILE_NAME), 'http://127.0.0.1:8080/ipxe.efi');

  const ipxe = await client.ask(
    discover('52:54:00:00:02:01', [
      vc('PXEClient:Arch:00000:UNDI:002001'),
      arch(0),
      [Opt.USER_CLASS, Buffer.from('iPXE')],
    ]),
  );
  assert.equal(
    ipxe.file,
    'http://127.0.0.1:8080/boot.ipxe?mac=${mac}',
    'iPXE gets the script, not iPXE again',
  );
  assert.equal(ipxe.yiaddr, bios.yiaddr, 'same MAC, same address through the boot chain');

  const plain = await client.ask(discover('52:54:00:00:02:04'));
  assert.equal(plain.file, '');
});

test('proxy mode: answers PXE clients only, without an address, on 67 and 4011', async (t) => {
  const p = ports();
  const policy = new DefaultBootPolicy({ serverIp: SERVER_IP });
  await startServer(t, { mode: 'proxy', ...p }, { bootPolicy: policy });
  const client = await TestClient.open(t, p.clientPort, p.serverPort);
  const guid = Buffer.concat([Buffer.from([0]), Buffer.alloc(16, 0x5a)]);

  // A non-PXE DISCOVER is the network DHCP server's business: no answer.
  const ignoredXid = client.nextXid();
  client.send({ ...discover('52:54:00:00:03:01'), xid: ignoredXid });

  const offer = await client.ask(
    discover('52:54:00:00:03:02', [
      [Opt.VENDOR_CLASS, Buffer.from('PXEClient:Arch:00000:UNDI:002001')],
      [Opt.CLIENT_ARCH, encodeClientArch([0])],
      [Opt.CLIENT_UUID, guid],
    ]),
  );
  assert.equal(client.hasReply(ignoredXid), false);
  assert.equal(messageType(offer), MessageType.OFFER);
  assert.equal(offer.yiaddr, '0.0.0.0');
  assert.equal(offer.siaddr, SERVER_IP);
  assert.equal(offer.file, 'undionly.kpxe');
  assert.equal(optionString(offer, Opt.VENDOR_CLASS), 'PXEClient');
  assert.equal(optionIp(offer, Opt.SERVER_ID), SERVER_IP);
  assert.deepEqual(offer.options.get(Opt.CLIENT_UUID), guid);
  assert.deepEqual(offer.options.get(Opt.VENDOR_SPECIFIC), Buffer.from([6, 1, 8, 255]));
  assert.deepEqual(
    decodeSubOptions(offer.options.get(Opt.VENDOR_SPECIFIC) as Buffer).get(6),
    Buffer.from([8]),
  );
  assert.equal(offer.options.has(Opt.LEASE_TIME), false);

  // UEFI: no option 43, so EDK2 asks port 4011; the ACK there goes back to the sender.
  const uefi = [
    [Opt.VENDOR_CLASS, Buffer.from('PXEClient:Arch:00007:UNDI:003001')],
    [Opt.CLIENT_ARCH, encodeClientArch([7])],
  ] as [number, Buffer][];
  const uefiOffer = await client.ask(discover('52:54:00:00:03:03', uefi));
  assert.equal(uefiOffer.options.has(Opt.VENDOR_SPECIFIC), false);
  const ack = await client.ask(request('52:54:00:00:03:03', uefi, '127.0.0.1'), p.pxePort);
  assert.equal(messageType(ack), MessageType.ACK);
  assert.equal(ack.file, 'ipxe.efi');
  assert.equal(ack.yiaddr, '0.0.0.0');
  assert.equal(ack.ciaddr, '127.0.0.1');
});

test('a malformed packet is logged and dropped; the server keeps answering', async (t) => {
  const p = ports();
  const log = memoryLogger();
  const server = await startServer(t, { ...FULL, ...p }, { logger: log });
  const client = await TestClient.open(t, p.clientPort, p.serverPort);
  client.socket.send(Buffer.alloc(100, 1), p.serverPort, SERVER_IP);
  const bad = encode({ op: 1, xid: 1, chaddr: macToChaddr('52:54:00:00:04:01') });
  bad.writeUInt32BE(0xdeadbeef, 236);
  client.socket.send(bad, p.serverPort, SERVER_IP);
  const ack = await lease(client, '52:54:00:00:04:02');
  assert.equal(messageType(ack), MessageType.ACK);
  // One line per source per minute (DropLog), however many packets it sent.
  const drops = log.lines.filter((l) => l.msg === 'malformed DHCP packet dropped');
  assert.equal(drops.length, 1);
  assert.equal(server.stats().dropped, 2);
});

test('configuration errors name the interface and the fix; bind failures are BT_ERR_LISTEN', async (t) => {
  const wrongIp = new DhcpServer({ ...FULL, interface: 'lo', serverIp: '10.254.254.254' });
  await assert.rejects(wrongIp.listen(), (err) => {
    assert.ok(isBootTorrentError(err, 'BT_ERR_DHCP_CONFIG'));
    assert.match(
      err.message,
      /10\.254\.254\.254 is not an address of interface lo .*127\.0\.0\.1\/8.*ip addr add/,
    );
    return true;
  });
  const noIf = new DhcpServer({ ...FULL, interface: 'bt-no-such0', serverIp: SERVER_IP });
  await assert.rejects(
    noIf.listen(),
    (err) => isBootTorrentError(err, 'BT_ERR_DHCP_CONFIG') && /bt-no-such0/.test(err.message),
  );
  const badRange = new DhcpServer({
    mode: 'full',
    interface: 'lo',
    serverIp: SERVER_IP,
    rangeStart: '10.0.0.1',
    rangeEnd: '10.0.0.9',
  });
  await assert.rejects(
    badRange.listen(),
    (err) => isBootTorrentError(err, 'BT_ERR_DHCP_CONFIG') && /not inside the subnet/.test(err.message),
  );

  // A socket holding the port without SO_REUSEADDR stands for another DHCP server.
  const p = ports();
  const blocker = createSocket('udp4');
  await new Promise<void>((resolve) => blocker.bind(p.serverPort, '0.0.0.0', resolve));
  t.after(() => blocker.close());
  const server = new DhcpServer({ ...FULL, ...p, interface: 'lo', serverIp: SERVER_IP });
  await assert.rejects(server.listen(), (err) => {
    assert.ok(isBootTorrentError(err, 'BT_ERR_LISTEN'));
    assert.match(err.message, new RegExp(`0\\.0\\.0\\.0:${p.serverPort}.*another DHCP server`));
    return true;
  });
  await server.close();

  const off = new DhcpServer({ mode: 'off', interface: 'lo', serverIp: SERVER_IP });
  await off.listen();
  await off.close();
});
