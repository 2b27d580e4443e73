/**
 * The site DHCP rules of docs/deployment.md (`dhcp.mode: off`) in the real
 * daemons, as written there: each block marked `<!-- site-dhcp: NAME -->`
 * is taken from the document, its example addresses (10.0.0.x, interface
 * eth1) are moved to a throwaway subnet, it is syntax-checked by its daemon
 * and the daemon runs in a network namespace:
 *
 *   [dhcp] lan0 10.69.N.2/24 (dnsmasq | dhcpd | kea-dhcp4) --- veth --- c0 [client] (no address)
 *
 * The client namespace broadcasts one DHCPDISCOVER per kind of client:
 * the packets SeaBIOS's iPXE, OVMF (PXE and HTTP Boot) and OVMF's iPXE
 * really sent (test/fixtures/dhcp/), a BIOS PXE ROM's, a UEFI one with
 * architecture 9, iPXE with only one of its two marks (user class, option
 * 175), and an operating system's plain DISCOVER. Every offer must name
 * what BootTorrent's own server names for that client (DefaultBootPolicy,
 * the policy its full mode asks): the same boot file, next-server, and
 * option 60 "HTTPClient" for HTTP Boot only. The BootTorrent address
 * (10.69.N.1) belongs to nobody: the offers must name it, not the DHCP
 * server.
 *
 * Every DISCOVER sets the BROADCAST flag: a reply unicast to the offered
 * address could not reach a client whose interface has no address yet.
 * dnsmasq runs with --no-ping (otherwise it waits 3 s per offer); the Kea
 * block's lease database is replaced by one in memory (the document's
 * would write /var/lib/kea).
 *
 * Requires root, iproute2, dnsmasq-base, isc-dhcp-server and
 * kea-dhcp4-server; a missing program fails the test. The namespaces and
 * daemons are removed when the test ends, pass or fail.
 */

import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import {
  MessageType,
  Opt,
  clientInfo,
  decode,
  encode,
  encodeClientArch,
  macToChaddr,
  messageType,
  optionString,
  type DhcpPacket,
} from '../../src/dhcp/codec.js';
import { DefaultBootPolicy } from '../../src/server/boot-policy.js';
import { NetnsLab, type LabProcess } from '../../src/util/netns.js';
import { removedWithTest, waitForOutput } from '../helpers/netns.js';
import { requireProgram } from '../helpers/programs.js';
import { tempDir } from '../helpers/tmp.js';

const DOC = new URL('../../../docs/deployment.md', import.meta.url);
const FIXTURES = new URL('../../../test/fixtures/dhcp/', import.meta.url);
/** Hang guard for one wait; a pass never depends on it. */
const WAIT_MS = 20_000;

/** The fenced block after `<!-- site-dhcp: name -->` in docs/deployment.md. */
function docBlock(name: string): string {
  const doc = readFileSync(DOC, 'utf8');
  const marker = `<!-- site-dhcp: ${name} -->`;
  const at = doc.indexOf(marker);
  assert.ok(at >= 0, `docs/deployment.md has no ${marker}`);
  const m = /^```[^\n]*\n([\s\S]*?)^```$/m.exec(doc.slice(at + marker.length));
  assert.ok(m?.[1], `no fenced block after ${marker} in docs/deployment.md`);
  return m[1];
}

/** The document's example addresses moved to the lab's subnet. */
function localize(block: string, prefix: string): string {
  assert.match(block, /\b10\.0\.0\.1\b/, 'the block names the BootTorrent server as 10.0.0.1');
  return block.replace(/\b10\.0\.0\./g, `${prefix}.`);
}

interface Client {
  name: string;
  packet: Buffer;
  request: DhcpPacket;
}

function fixture(name: string): DhcpPacket {
  return decode(readFileSync(new URL(`${name}.bin`, FIXTURES)));
}

/** One DISCOVER per kind of client; distinct MACs and xids, BROADCAST set, option 61 following the MAC. */
function clients(): Client[] {
  const list: Client[] = [];
  const add = (
    name: string,
    base: Map<number, Buffer>,
    edit: (o: Map<number, Buffer>) => void = () => {},
  ) => {
    const n = list.length + 1;
    const mac = `02:00:00:69:00:${n.toString(16).padStart(2, '0')}`;
    const options = new Map(base);
    options.set(Opt.MESSAGE_TYPE, Buffer.from([MessageType.DISCOVER]));
    if (options.has(Opt.CLIENT_ID))
      options.set(Opt.CLIENT_ID, Buffer.concat([Buffer.from([1]), macToChaddr(mac).subarray(0, 6)]));
    edit(options);
    const packet = encode({ op: 1, xid: 0x69000000 + n, flags: 0x8000, chaddr: macToChaddr(mac), options });
    list.push({ name, packet, request: decode(packet) });
  };
  const biosRom = new Map<number, Buffer>([
    [Opt.VENDOR_CLASS, Buffer.from('PXEClient:Arch:00000:UNDI:002001')],
    [Opt.CLIENT_ARCH, encodeClientArch([0])],
    [Opt.CLIENT_NDI, Buffer.from([1, 2, 1])],
    [Opt.CLIENT_UUID, Buffer.concat([Buffer.from([0]), Buffer.alloc(16, 0x42)])],
    [Opt.PARAMETER_REQUEST_LIST, Buffer.from([1, 3, 43, 60, 66, 67, 97])],
  ]);
  const ovmfPxe = fixture('ovmf-pxe-discover').options;
  const ovmfIpxe = fixture('ovmf-ipxe-efi-discover').options;
  add('BIOS PXE ROM (arch 0)', biosRom);
  add('iPXE on BIOS (SeaBIOS)', fixture('qemu-ipxe-bios-discover').options);
  add('UEFI PXE (OVMF, arch 7)', ovmfPxe);
  add('UEFI PXE (arch 9)', ovmfPxe, (o) => {
    o.set(Opt.CLIENT_ARCH, encodeClientArch([9]));
    o.set(Opt.VENDOR_CLASS, Buffer.from('PXEClient:Arch:00009:UNDI:003001'));
  });
  add('UEFI HTTP Boot (OVMF, arch 16)', fixture('ovmf-http-discover').options);
  add('iPXE on UEFI (OVMF)', ovmfIpxe);
  add('iPXE, user class only', ovmfIpxe, (o) => o.delete(Opt.IPXE_ENCAP));
  add('iPXE, option 175 only', ovmfIpxe, (o) => o.delete(Opt.USER_CLASS));
  add('an OS DHCP client', new Map([[Opt.PARAMETER_REQUEST_LIST, Buffer.from([1, 3, 6, 15])]]));
  return list;
}

interface BootOffer {
  client: string;
  file: string;
  nextServer?: string;
  option60?: string;
}

/** What BootTorrent's own DHCP server (full mode) puts in its offer to `c`. */
function ours(c: Client, server: string): BootOffer {
  const info = clientInfo(c.request);
  // Like DhcpServer: only firmware and iPXE are asked about; an OS's DHCP client gets no boot file.
  const d =
    info.pxe || info.httpClient || info.ipxe
      ? new DefaultBootPolicy({ serverIp: server }).bootFor({
          mac: info.mac,
          arch: info.arch,
          ipxe: info.ipxe,
        })
      : undefined;
  if (!d) return { client: c.name, file: '' };
  if (d.kind === 'tftp') return { client: c.name, file: d.file, nextServer: d.nextServer };
  return {
    client: c.name,
    file: d.url,
    nextServer: server,
    ...(d.kind === 'http' ? { option60: 'HTTPClient' } : {}),
  };
}

/** The same fields of a daemon's offer. The boot file is option 67 when sent (dnsmasq), else the file field. */
function theirs(c: Client, reply: DhcpPacket): BootOffer {
  assert.equal(messageType(reply), MessageType.OFFER, `${c.name}: a DHCPOFFER`);
  const file = optionString(reply, Opt.BOOTFILE_NAME) ?? reply.file;
  const option60 = optionString(reply, Opt.VENDOR_CLASS);
  return {
    client: c.name,
    file,
    ...(file !== '' ? { nextServer: reply.siaddr } : {}),
    ...(option60 !== undefined ? { option60 } : {}),
  };
}

interface SiteLab {
  lab: NetnsLab;
  dir: string;
  prefix: string;
  /** The BootTorrent server's address: named in the offers, held by nobody. */
  bootServer: string;
  dhcpNs: string;
  clientNs: string;
}

/** The picture of the file comment; removed with the test. */
function siteLab(t: TestContext): SiteLab {
  requireProgram('ip', 'iproute2');
  const prefix = `10.69.${randomInt(1, 250)}`;
  const dir = tempDir(t, 'bt-site-dhcp-');
  const lab = removedWithTest(t, new NetnsLab({ name: (role, id) => `bt-site-${id}-${role}` }));
  const dhcpNs = lab.ns('dhcp');
  const clientNs = lab.ns('client');
  lab.bridge(dhcpNs, 'lan0', `${prefix}.2/24`);
  lab.veth(dhcpNs, 'lan0', clientNs, 'c0');
  // The client has no address; a link route lets its socket send the limited broadcast.
  lab.ip(clientNs, 'route', 'add', 'default', 'dev', 'c0');
  return { lab, dir, prefix, bootServer: `${prefix}.1`, dhcpNs, clientNs };
}

async function waitUp(s: SiteLab): Promise<void> {
  for (let i = 0; !/state UP/.test(s.lab.ip(s.dhcpNs, '-o', 'link', 'show', 'dev', 'lan0')); i++) {
    if (i > 400) throw new Error('lan0 did not come up');
    await sleep(25);
  }
}

/**
 * Broadcasts every client's DISCOVER from 0.0.0.0:68 in the client
 * namespace, again every 500 ms until each has an answer, and returns the
 * answers in the clients' order.
 */
async function discover(s: SiteLab, list: Client[], daemon: LabProcess): Promise<DhcpPacket[]> {
  const code = `import { createSocket } from 'node:dgram';
const pending = new Map(${JSON.stringify(list.map((c) => c.packet.toString('hex')))}.map((h) => {
  const b = Buffer.from(h, 'hex');
  return [b.readUInt32BE(4), b];
}));
const sock = createSocket({ type: 'udp4', reuseAddr: true });
sock.on('message', (m) => {
  if (m.length < 240 || m[0] !== 2 || !pending.delete(m.readUInt32BE(4))) return;
  console.log('REPLY ' + m.toString('hex'));
  if (pending.size === 0) { console.log('DONE'); process.exit(0); }
});
sock.bind(68, '0.0.0.0', () => {
  sock.setBroadcast(true);
  const send = () => { for (const p of pending.values()) sock.send(p, 67, '255.255.255.255'); };
  send();
  setInterval(send, 500);
});`;
  const client = s.lab.spawn(s.clientNs, process.execPath, ['--input-type=module', '-e', code]);
  try {
    await waitForOutput(client, /^DONE$/m, WAIT_MS, 'DHCP client');
  } catch (err) {
    throw new Error(`${(err as Error).message}\n--- the DHCP server said:\n${daemon.output().slice(-6000)}`);
  }
  const replies = new Map<number, DhcpPacket>();
  for (const m of client.output().matchAll(/^REPLY ([0-9a-f]+)$/gm)) {
    const p = decode(Buffer.from(m[1] as string, 'hex'));
    replies.set(p.xid, p);
  }
  return list.map((c) => {
    const r = replies.get(c.request.xid);
    assert.ok(r, `no reply to ${c.name}`);
    return r;
  });
}

/** Every client's offer from the daemon equals BootTorrent's own. */
async function checkOffers(s: SiteLab, daemon: LabProcess): Promise<void> {
  const list = clients();
  const replies = await discover(s, list, daemon);
  assert.deepEqual(
    list.map((c, i) => theirs(c, replies[i] as DhcpPacket)),
    list.map((c) => ours(c, s.bootServer)),
    `offers differ from BootTorrent's own; the DHCP server said:\n${daemon.output().slice(-6000)}`,
  );
  // They are real leases from the site's pool, not proxyDHCP offers.
  for (const r of replies)
    assert.match(r.yiaddr, new RegExp(`^${s.prefix.replace(/\./g, '\\.')}\\.1\\d\\d$`));
}

function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv): string {
  try {
    return execFileSync(cmd, args, {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(env ? { env: { ...process.env, ...env } } : {}),
    });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed:\n${e.stdout ?? ''}${e.stderr ?? e.message}`);
  }
}

test('dnsmasq: the documented rules give every client what BootTorrent itself gives', async (t) => {
  const dnsmasq = requireProgram('dnsmasq', 'dnsmasq-base');
  const s = siteLab(t);
  const conf = join(s.dir, 'boottorrent.conf');
  writeFileSync(conf, localize(docBlock('dnsmasq'), s.prefix));
  run(dnsmasq, ['--test', `--conf-file=${conf}`]);
  await waitUp(s);
  const daemon = s.lab.spawn(s.dhcpNs, dnsmasq, [
    '--no-daemon',
    `--conf-file=${conf}`,
    '--port=0',
    '--user=root',
    '--interface=lan0',
    '--bind-interfaces',
    '--no-ping',
    `--dhcp-range=${s.prefix}.100,${s.prefix}.199,255.255.255.0,10m`,
    `--dhcp-leasefile=${join(s.dir, 'dnsmasq.leases')}`,
    `--pid-file=${join(s.dir, 'dnsmasq.pid')}`,
    '--log-dhcp',
    '--log-facility=-',
  ]);
  await waitForOutput(daemon, /DHCP, IP range/, WAIT_MS, 'dnsmasq');
  await checkOffers(s, daemon);
});

test('ISC dhcpd: the documented rules give every client what BootTorrent itself gives', async (t) => {
  const dhcpd = requireProgram('dhcpd', 'isc-dhcp-server');
  const s = siteLab(t);
  const conf = join(s.dir, 'dhcpd.conf');
  const leases = join(s.dir, 'dhcpd.leases');
  // The block is the boot part; the site's subnet declaration is the rest of its file.
  writeFileSync(
    conf,
    `${localize(docBlock('isc-dhcpd'), s.prefix)}\nsubnet ${s.prefix}.0 netmask 255.255.255.0 {\n  range ${s.prefix}.100 ${s.prefix}.199;\n}\n`,
  );
  writeFileSync(leases, '');
  run(dhcpd, ['-t', '-4', '-cf', conf, '-lf', leases]);
  await waitUp(s);
  const daemon = s.lab.spawn(s.dhcpNs, dhcpd, [
    '-4',
    '-f',
    '-d',
    '-cf',
    conf,
    '-lf',
    leases,
    '-pf',
    join(s.dir, 'dhcpd.pid'),
    'lan0',
  ]);
  await waitForOutput(daemon, /Server starting service/, WAIT_MS, 'dhcpd');
  await checkOffers(s, daemon);
});

test('Kea: the documented rules give every client what BootTorrent itself gives', async (t) => {
  const kea = requireProgram('kea-dhcp4', 'kea-dhcp4-server');
  const s = siteLab(t);
  const config = JSON.parse(localize(docBlock('kea'), s.prefix)) as { Dhcp4: Record<string, unknown> };
  assert.deepEqual(config.Dhcp4['interfaces-config'], { interfaces: ['eth1'] }, 'the block serves eth1');
  config.Dhcp4['interfaces-config'] = { interfaces: ['lan0'] };
  config.Dhcp4['lease-database'] = { type: 'memfile', persist: false };
  const conf = join(s.dir, 'kea-dhcp4.conf');
  writeFileSync(conf, JSON.stringify(config, null, 2));
  // Lock and PID files in the test's folder, not /run.
  const env = { KEA_LOCKFILE_DIR: s.dir, KEA_PIDFILE_DIR: s.dir };
  const envArgs = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  // `kea-dhcp4 -t` checks that the interface exists: run it where lan0 is.
  run('ip', ['netns', 'exec', s.dhcpNs, 'env', ...envArgs, kea, '-t', conf]);
  await waitUp(s);
  const daemon = s.lab.spawn(s.dhcpNs, 'env', [...envArgs, kea, '-c', conf]);
  await waitForOutput(daemon, /DHCP4_STARTED/, WAIT_MS, 'kea-dhcp4');
  await checkOffers(s, daemon);
});
