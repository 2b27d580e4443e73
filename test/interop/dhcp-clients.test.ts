/**
 * DhcpServer against real DHCP clients, never on the host's network: each
 * test builds its own network namespaces joined by veth links (and a bridge
 * in the server namespace where one link carries several clients), runs the
 * server there as a child process (test/fixtures/dhcp/run-server.ts, via
 * `ip netns exec`), and removes everything in t.after, also on failure.
 *
 *   served link:  [S] lan0 10.N.1.1/24 --+-- sa <-> ca [C1]  (busybox udhcpc)
 *                                      +-- sb <-> cb [C3]  (ISC dhclient)
 *   other link:   [S] so 10.N.2.1/24 ------- co [C2]       (not served)
 *
 * Requires root, iproute2, busybox(-static), isc-dhcp-client, dnsmasq-base and
 * tcpdump; a missing program fails the test.
 */

import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import { NetnsLab } from '../../src/util/netns.js';
import { removedWithTest } from '../helpers/netns.js';
import { requireProgram } from '../helpers/programs.js';
import { tempDir } from '../helpers/tmp.js';

const SERVER = fileURLToPath(new URL('../fixtures/dhcp/run-server.js', import.meta.url));
const PXE_CLIENT = fileURLToPath(new URL('../fixtures/dhcp/pxe-client.js', import.meta.url));
/** Hang guard for one wait; a pass never depends on it. */
const WAIT_MS = 30_000;

type Event = Record<string, unknown>;

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** A child process with its output lines, and waits on them. */
class Child {
  readonly lines: string[] = [];
  readonly events: Event[] = [];
  exitCode: number | null | undefined;
  #notify = new Set<() => void>();

  constructor(
    readonly name: string,
    readonly proc: ChildProcess,
  ) {
    const onLine = (line: string): void => {
      this.lines.push(line);
      if (line.startsWith('{')) {
        try {
          this.events.push(JSON.parse(line) as Event);
        } catch {
          // not JSON after all
        }
      }
      this.#wake();
    };
    if (proc.stdout) createInterface({ input: proc.stdout }).on('line', onLine);
    if (proc.stderr) createInterface({ input: proc.stderr }).on('line', (l) => onLine(`[stderr] ${l}`));
    proc.on('exit', (code) => {
      this.exitCode = code;
      this.#wake();
    });
  }

  get exited(): boolean {
    return this.exitCode !== undefined;
  }

  #wake(): void {
    for (const f of this.#notify) f();
  }

  output(): string {
    return this.lines.join('\n');
  }

  /** Resolves once `check` returns a value; rejects on exit (unless `untilExit`) or hang. */
  async until<T>(what: string, check: () => T | undefined, untilExit = false): Promise<T> {
    const signal = AbortSignal.timeout(WAIT_MS);
    for (;;) {
      const found = check();
      if (found !== undefined) return found;
      if (this.exited && !untilExit)
        throw new Error(`${this.name} exited before ${what}; output:\n${this.output()}`);
      if (signal.aborted)
        throw new Error(`${this.name}: no ${what} within ${WAIT_MS} ms; output:\n${this.output()}`);
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this.#notify.delete(done);
          signal.removeEventListener('abort', done);
          resolve();
        };
        this.#notify.add(done);
        signal.addEventListener('abort', done);
      });
    }
  }

  line(what: string, re: RegExp): Promise<RegExpMatchArray> {
    return this.until(what, () => this.lines.map((l) => re.exec(l)).find((m) => m !== null) ?? undefined);
  }

  event(what: string, pred: (e: Event) => boolean): Promise<Event> {
    return this.until(what, () => this.events.find(pred));
  }

  async exit(): Promise<number | null> {
    await this.until('exit', () => (this.exited ? true : undefined), true);
    return this.exitCode ?? null;
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (this.exited) return;
    this.proc.kill(signal);
    const killer = setTimeout(() => this.proc.kill('SIGKILL'), 5_000);
    await this.exit().catch(() => undefined);
    clearTimeout(killer);
  }
}

interface Lab {
  net: number;
  dir: string;
  ns: (name: string) => string;
  spawnIn: (ns: string, name: string, cmd: string, args: string[]) => Child;
  ip: (...args: string[]) => string;
}

/**
 * Namespaces and links; cleanup is registered before anything is created:
 * children are killed by PID first, then the namespaces are deleted (which
 * removes their interfaces).
 */
function createLab(t: TestContext, names: string[]): Lab {
  requireProgram('ip', 'iproute2');
  const net = randomInt(1, 120) * 2;
  const dir = tempDir(t, 'bt-dhcp-');
  // The one namespace lab: removed with the test, also when the runner kills this file.
  const lab = removedWithTest(t, new NetnsLab({ name: (role, id) => `bt-dhcp-${id}-${role}` }));
  const children: Child[] = [];
  t.after(() => Promise.all(children.map((c) => c.stop('SIGKILL'))));
  const made = new Map(names.map((n) => [n, lab.ns(n)]));
  return {
    net,
    dir,
    ns: (name) => made.get(name) ?? lab.nameOf(name),
    ip: (...args) => run('ip', args),
    spawnIn: (where, name, cmd, args) => {
      const child = new Child(name, lab.spawn(where, cmd, args, { stdin: true }).child);
      children.push(child);
      return child;
    },
  };
}

/** A veth pair created directly inside two namespaces: nothing appears on the host. */
function veth(lab: Lab, a: string, aDev: string, b: string, bDev: string): void {
  lab.ip('link', 'add', aDev, 'netns', lab.ns(a), 'type', 'veth', 'peer', 'name', bDev, 'netns', lab.ns(b));
  lab.ip('-n', lab.ns(a), 'link', 'set', aDev, 'up');
  lab.ip('-n', lab.ns(b), 'link', 'set', bDev, 'up');
}

/** Waits until the kernel reports the device running (os.networkInterfaces() needs IFF_RUNNING). */
async function waitUp(lab: Lab, where: string, dev: string): Promise<void> {
  for (let i = 0; !/state UP/.test(lab.ip('-n', lab.ns(where), '-o', 'link', 'show', 'dev', dev)); i++) {
    if (i > 400) throw new Error(`${dev} in ${where} did not come up`);
    await sleep(25);
  }
}

/** The full-mode lab of the file comment. */
async function fullLab(t: TestContext): Promise<Lab & { served: string; other: string }> {
  const lab = createLab(t, ['s', 'c1', 'c2', 'c3']);
  const served = `10.66.${lab.net}.1`;
  const other = `10.66.${lab.net + 1}.1`;
  const s = lab.ns('s');
  lab.ip('-n', s, 'link', 'add', 'lan0', 'type', 'bridge');
  veth(lab, 's', 'sa', 'c1', 'ca');
  veth(lab, 's', 'sb', 'c3', 'cb');
  veth(lab, 's', 'so', 'c2', 'co');
  lab.ip('-n', s, 'link', 'set', 'sa', 'master', 'lan0');
  lab.ip('-n', s, 'link', 'set', 'sb', 'master', 'lan0');
  lab.ip('-n', s, 'addr', 'add', `${served}/24`, 'dev', 'lan0');
  lab.ip('-n', s, 'addr', 'add', `${other}/24`, 'dev', 'so');
  lab.ip('-n', s, 'link', 'set', 'lan0', 'up');
  // Distinct, known MACs for the clients.
  lab.ip('-n', lab.ns('c1'), 'link', 'set', 'ca', 'address', '02:00:00:00:01:01');
  lab.ip('-n', lab.ns('c3'), 'link', 'set', 'cb', 'address', '02:00:00:00:01:03');
  lab.ip('-n', lab.ns('c2'), 'link', 'set', 'co', 'address', '02:00:00:00:02:02');
  await waitUp(lab, 's', 'lan0');
  await waitUp(lab, 's', 'so');
  return { ...lab, served, other };
}

async function startServer(lab: Lab, name: string, options: Record<string, unknown>): Promise<Child> {
  const server = lab.spawnIn(lab.ns('s'), name, process.execPath, [
    '--enable-source-maps',
    SERVER,
    JSON.stringify(options),
  ]);
  await server.event('listening', (e) => e.type === 'listening' || e.type === 'error');
  const err = server.events.find((e) => e.type === 'error');
  if (err) throw new Error(`${name} failed: ${JSON.stringify(err)}`);
  return server;
}

async function stopServer(server: Child): Promise<void> {
  server.proc.kill('SIGTERM');
  await server.event('closed', (e) => e.type === 'closed');
  assert.equal(await server.exit(), 0);
}

function script(dir: string, name: string, body: string): string {
  const path = join(dir, name);
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
}

/** busybox udhcpc: one lease, then exit; the script prints it. */
async function udhcpc(
  lab: Lab,
  where: string,
  dev: string,
  tries = 5,
): Promise<{ code: number | null; ip?: string; child: Child }> {
  const busybox = requireProgram('busybox', 'busybox-static');
  const s = script(lab.dir, 'udhcpc.sh', 'echo "LEASE $1 ${ip:-} ${serverid:-} ${boot_file:-}"');
  const child = lab.spawnIn(lab.ns(where), `udhcpc@${where}`, busybox, [
    'udhcpc',
    '-i',
    dev,
    '-f',
    '-q',
    '-n',
    '-t',
    String(tries),
    '-T',
    '1',
    '-s',
    s,
  ]);
  const code = await child.exit();
  const ip = child.lines.map((l) => /^LEASE bound (\S+)/.exec(l)?.[1]).find((x) => x !== undefined);
  return { code, child, ...(ip ? { ip } : {}) };
}

/** ISC dhclient in the foreground with its own config, lease file and no-op script; stopped once bound. */
async function dhclient(lab: Lab, where: string, dev: string, round: number): Promise<string> {
  const bin = requireProgram('dhclient', 'isc-dhcp-client');
  const s = script(lab.dir, 'dhclient.sh', 'echo "LEASE $reason ${new_ip_address:-}"');
  const conf = join(lab.dir, 'dhclient.conf');
  writeFileSync(conf, 'request subnet-mask, broadcast-address, routers;\n');
  // A fresh lease file each round: dhclient must not remember; the server must.
  const lf = join(lab.dir, `dhclient-${round}.leases`);
  const pf = join(lab.dir, `dhclient-${round}.pid`);
  const child = lab.spawnIn(lab.ns(where), `dhclient@${where}`, bin, [
    '-d',
    '-v',
    '-1',
    '-cf',
    conf,
    '-lf',
    lf,
    '-pf',
    pf,
    '-sf',
    s,
    dev,
  ]);
  const m = await child.line('LEASE BOUND', /^LEASE BOUND (\S+)/);
  await child.stop();
  return m[1] as string;
}

const inRange = (ip: string, prefix: string, lo: number, hi: number): boolean => {
  const last = Number(ip.split('.')[3]);
  return ip.startsWith(`${prefix}.`) && last >= lo && last <= hi;
};

test('full mode: udhcpc and dhclient get leases; a restarted server gives them the same addresses', async (t) => {
  const lab = await fullLab(t);
  const prefix = lab.served.replace(/\.1$/, '');
  const options = {
    mode: 'full',
    interface: 'lan0',
    serverIp: lab.served,
    rangeStart: `${prefix}.100`,
    rangeEnd: `${prefix}.150`,
    leaseTimeSeconds: 600,
    leasesFile: join(lab.dir, 'leases.json'),
  };
  const first = await startServer(lab, 'server#1', options);
  const u1 = await udhcpc(lab, 'c1', 'ca');
  assert.equal(u1.code, 0, u1.child.output());
  assert.ok(u1.ip && inRange(u1.ip, prefix, 100, 150), `udhcpc lease ${u1.ip}`);
  assert.match(u1.child.output(), new RegExp(`LEASE bound ${u1.ip} ${lab.served}`));
  const d1 = await dhclient(lab, 'c3', 'cb', 1);
  assert.ok(inRange(d1, prefix, 100, 150), `dhclient lease ${d1}`);
  assert.notEqual(d1, u1.ip);
  await first.event(
    'lease for udhcpc',
    (e) => e.type === 'lease' && e.mac === '02:00:00:00:01:01' && e.ip === u1.ip,
  );
  await first.event(
    'lease for dhclient',
    (e) => e.type === 'lease' && e.mac === '02:00:00:00:01:03' && e.ip === d1,
  );
  await stopServer(first);

  // Restart, and ask in the opposite order: a server that forgot would give
  // dhclient the first free address, which udhcpc had.
  const second = await startServer(lab, 'server#2', options);
  const d2 = await dhclient(lab, 'c3', 'cb', 2);
  assert.equal(d2, d1, 'dhclient keeps its address across a server restart');
  const u2 = await udhcpc(lab, 'c1', 'ca');
  assert.equal(u2.code, 0, u2.child.output());
  assert.equal(u2.ip, u1.ip, 'udhcpc keeps its address across a server restart');
  await stopServer(second);
});

test('replies leave only through the served interface: the client on the other link gets nothing', async (t) => {
  const tcpdump = requireProgram('tcpdump', 'tcpdump');
  const lab = await fullLab(t);
  const prefix = lab.served.replace(/\.1$/, '');
  const server = await startServer(lab, 'server', {
    mode: 'full',
    interface: 'lan0',
    serverIp: lab.served,
    rangeStart: `${prefix}.100`,
    rangeEnd: `${prefix}.150`,
  });
  // Capture every DHCP packet on the unserved client's link.
  const capture = lab.spawnIn(lab.ns('c2'), 'tcpdump@c2', tcpdump, [
    '-i',
    'co',
    '-n',
    '-l',
    '-U',
    'udp and (port 67 or port 68)',
  ]);
  await capture.line('tcpdump ready', /listening on co/);

  const unserved = await udhcpc(lab, 'c2', 'co', 3);
  assert.notEqual(
    unserved.code,
    0,
    `udhcpc on the other link must get no lease:\n${unserved.child.output()}`,
  );
  assert.equal(unserved.ip, undefined);
  // The server did receive those DISCOVERs (the wildcard socket hears every
  // link) and answered them; the answers went out of the served interface.
  await server.event(
    'OFFER to the unserved MAC',
    (e) => e.msg === 'DHCP OFFER' && (e.fields as Event).mac === '02:00:00:00:02:02',
  );
  // Meanwhile the served link works.
  const served = await udhcpc(lab, 'c1', 'ca');
  assert.equal(served.code, 0, served.child.output());
  assert.ok(served.ip && inRange(served.ip, prefix, 100, 150));

  await capture.stop('SIGINT');
  const packets = capture.lines.filter((l) => / IP /.test(l));
  assert.ok(
    packets.some((l) => /0\.0\.0\.0\.68 > 255\.255\.255\.255\.67/.test(l)),
    `the capture saw the client's own DISCOVERs:\n${capture.output()}`,
  );
  assert.deepEqual(
    packets.filter((l) => /\.67 > /.test(l)),
    [],
    'no packet from a DHCP server reached the unserved link',
  );
});

test('proxy mode beside dnsmasq: the address comes from dnsmasq, the boot file from us, then port 4011', async (t) => {
  const dnsmasq = requireProgram('dnsmasq', 'dnsmasq-base');
  const lab = createLab(t, ['s', 'd', 'c']);
  const prefix = `10.67.${lab.net}`;
  const proxyIp = `${prefix}.1`;
  const dhcpIp = `${prefix}.2`;
  const s = lab.ns('s');
  lab.ip('-n', s, 'link', 'add', 'lan0', 'type', 'bridge');
  veth(lab, 's', 'sd', 'd', 'd0');
  veth(lab, 's', 'sc', 'c', 'c0');
  lab.ip('-n', s, 'link', 'set', 'sd', 'master', 'lan0');
  lab.ip('-n', s, 'link', 'set', 'sc', 'master', 'lan0');
  lab.ip('-n', s, 'addr', 'add', `${proxyIp}/24`, 'dev', 'lan0');
  lab.ip('-n', s, 'link', 'set', 'lan0', 'up');
  lab.ip('-n', lab.ns('d'), 'addr', 'add', `${dhcpIp}/24`, 'dev', 'd0');
  // The client has no address; a link route lets its socket send the limited broadcast.
  lab.ip('-n', lab.ns('c'), 'route', 'add', 'default', 'dev', 'c0');
  await waitUp(lab, 's', 'lan0');
  await waitUp(lab, 'd', 'd0');

  // The network's own DHCP server: addresses only, no PXE configuration.
  const dns = lab.spawnIn(lab.ns('d'), 'dnsmasq', dnsmasq, [
    '--no-daemon',
    '--conf-file=/dev/null',
    '--port=0',
    '--user=root',
    '--interface=d0',
    '--bind-interfaces',
    `--dhcp-range=${prefix}.50,${prefix}.60,255.255.255.0,10m`,
    `--dhcp-leasefile=${join(lab.dir, 'dnsmasq.leases')}`,
    `--pid-file=${join(lab.dir, 'dnsmasq.pid')}`,
    '--log-dhcp',
    '--log-facility=-',
  ]);
  await dns.line('dnsmasq ready', /DHCP, IP range/);
  await startServer(lab, 'proxy', { mode: 'proxy', interface: 'lan0', serverIp: proxyIp });

  const mac = '02:00:00:00:03:01';
  const client = lab.spawnIn(lab.ns('c'), 'pxe-client', process.execPath, [
    '--enable-source-maps',
    PXE_CLIENT,
    'discover',
    mac,
    '68',
  ]);
  const fromDnsmasq = await client.event('dnsmasq OFFER', (e) => e.type === 'reply' && e.serverId === dhcpIp);
  const fromProxy = await client.event('proxy OFFER', (e) => e.type === 'reply' && e.serverId === proxyIp);
  await client.stop();

  const leased = String(fromDnsmasq.yiaddr);
  assert.ok(inRange(leased, prefix, 50, 60), `dnsmasq offered ${leased}`);
  assert.equal(fromDnsmasq.file, '', 'dnsmasq has no boot configuration');
  assert.equal(fromProxy.messageType, 2);
  assert.equal(fromProxy.yiaddr, '0.0.0.0', 'a proxyDHCP offer carries no address');
  assert.equal(fromProxy.siaddr, proxyIp);
  assert.equal(fromProxy.file, 'undionly.kpxe');
  assert.equal(fromProxy.vendorClass, 'PXEClient');
  assert.equal(fromProxy.option43, '060108ff', 'PXE_DISCOVERY_CONTROL = 8: boot the file, no discovery');
  assert.equal(fromProxy.guid, '42424242-4242-4242-4242-424242424242', 'client UUID echoed');

  // PXE 2.1 step 9: with the address from dnsmasq, the client asks the proxy on port 4011.
  lab.ip('-n', lab.ns('c'), 'addr', 'add', `${leased}/24`, 'dev', 'c0');
  const req = lab.spawnIn(lab.ns('c'), 'pxe-request', process.execPath, [
    '--enable-source-maps',
    PXE_CLIENT,
    'request',
    mac,
    proxyIp,
    leased,
  ]);
  const ack = await req.event('proxy ACK on 4011', (e) => e.type === 'reply');
  assert.equal(ack.messageType, 5);
  assert.equal(ack.from, `${proxyIp}:4011`);
  assert.equal(ack.file, 'undionly.kpxe');
  assert.equal(ack.yiaddr, '0.0.0.0');
  assert.equal(await req.exit(), 0);
});

test('a dnsmasq already on port 67 makes listen() fail with BT_ERR_LISTEN naming it', async (t) => {
  const dnsmasq = requireProgram('dnsmasq', 'dnsmasq-base');
  const lab = createLab(t, ['s', 'c']);
  const serverIp = `10.68.${lab.net}.1`;
  veth(lab, 's', 'lan0', 'c', 'c0');
  lab.ip('-n', lab.ns('s'), 'addr', 'add', `${serverIp}/24`, 'dev', 'lan0');
  await waitUp(lab, 's', 'lan0');
  const dns = lab.spawnIn(lab.ns('s'), 'dnsmasq', dnsmasq, [
    '--no-daemon',
    '--conf-file=/dev/null',
    '--port=0',
    '--user=root',
    `--dhcp-range=10.68.${lab.net}.50,10.68.${lab.net}.60,10m`,
    `--dhcp-leasefile=${join(lab.dir, 'dnsmasq.leases')}`,
    `--pid-file=${join(lab.dir, 'dnsmasq.pid')}`,
    '--log-facility=-',
  ]);
  await dns.line('dnsmasq ready', /DHCP, IP range/);
  for (const mode of ['full', 'proxy']) {
    const server = lab.spawnIn(lab.ns('s'), `server(${mode})`, process.execPath, [
      SERVER,
      JSON.stringify({
        mode,
        interface: 'lan0',
        serverIp,
        rangeStart: `10.68.${lab.net}.100`,
        rangeEnd: `10.68.${lab.net}.110`,
      }),
    ]);
    const err = await server.event('listen error', (e) => e.type === 'error' || e.type === 'listening');
    assert.equal(err.type, 'error', `${mode} mode must not start beside dnsmasq`);
    assert.equal(err.code, 'BT_ERR_LISTEN');
    assert.match(String(err.message), /0\.0\.0\.0:67 \(EADDRINUSE\).*another DHCP server \(dnsmasq/);
    assert.equal(await server.exit(), 1);
  }
});

/**
 * Relayed subnet (#21): a router namespace runs ISC's dhcrelay between the
 * server's LAN and a client subnet; the server is two hops from its clients.
 *
 *   [S] lan0 10.69.N.1/24 --+-- sr <-> r0 10.69.N.254 [R] lan1 10.70.N.1/24 --+-- c1 (udhcpc, PXE client)
 *                           +-- sd <-> d0 10.69.N.2 [D] (the site's DHCP: dnsmasq)  +-- c2 (dhclient)
 */
async function relayedLab(t: TestContext): Promise<Lab & { lan: string; sub: string; relay: () => string }> {
  const lab = createLab(t, ['s', 'r', 'd', 'c1', 'c2']);
  const lan = `10.69.${lab.net}`;
  const sub = `10.70.${lab.net}`;
  const s = lab.ns('s');
  const r = lab.ns('r');
  lab.ip('-n', s, 'link', 'add', 'lan0', 'type', 'bridge');
  lab.ip('-n', r, 'link', 'add', 'lan1', 'type', 'bridge');
  veth(lab, 's', 'sr', 'r', 'r0');
  veth(lab, 's', 'sd', 'd', 'd0');
  veth(lab, 'r', 'rc1', 'c1', 'c1');
  veth(lab, 'r', 'rc2', 'c2', 'c2');
  for (const port of ['sr', 'sd']) lab.ip('-n', s, 'link', 'set', port, 'master', 'lan0');
  for (const port of ['rc1', 'rc2']) lab.ip('-n', r, 'link', 'set', port, 'master', 'lan1');
  lab.ip('-n', s, 'addr', 'add', `${lan}.1/24`, 'dev', 'lan0');
  lab.ip('-n', s, 'link', 'set', 'lan0', 'up');
  lab.ip('-n', r, 'addr', 'add', `${lan}.254/24`, 'dev', 'r0');
  lab.ip('-n', r, 'addr', 'add', `${sub}.1/24`, 'dev', 'lan1');
  lab.ip('-n', r, 'link', 'set', 'lan1', 'up');
  lab.ip('-n', lab.ns('d'), 'addr', 'add', `${lan}.2/24`, 'dev', 'd0');
  // The server and the site's DHCP reach the client subnet through the router (replies to giaddr, port 4011).
  lab.ip('-n', s, 'route', 'add', `${sub}.0/24`, 'via', `${lan}.254`);
  lab.ip('-n', lab.ns('d'), 'route', 'add', `${sub}.0/24`, 'via', `${lan}.254`);
  run('ip', ['netns', 'exec', r, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
  lab.ip('-n', lab.ns('c1'), 'link', 'set', 'c1', 'address', '02:00:00:00:70:01');
  lab.ip('-n', lab.ns('c2'), 'link', 'set', 'c2', 'address', '02:00:00:00:70:02');
  for (const [where, dev] of [
    ['s', 'lan0'],
    ['r', 'lan1'],
    ['r', 'r0'],
    ['d', 'd0'],
  ] as const)
    await waitUp(lab, where, dev);
  return {
    ...lab,
    lan,
    sub,
    relay: () => requireProgram('dhcrelay', 'isc-dhcp-relay'),
  };
}

/** ISC dhcrelay in the router, in the foreground, adding option 82 (-a) to what it relays to `servers`. */
async function startRelay(lab: Lab & { relay: () => string }, servers: string[]): Promise<Child> {
  const relay = lab.spawnIn(lab.ns('r'), 'dhcrelay', lab.relay(), [
    '-d',
    '-4',
    '-a',
    '-pf',
    join(lab.dir, 'dhcrelay.pid'),
    '-id',
    'lan1',
    '-iu',
    'r0',
    ...servers,
  ]);
  await relay.line('dhcrelay ready', /Sending on\s+Socket\/fallback/);
  return relay;
}

/** tcpdump -vv output grouped into packets (a packet starts with its timestamp). */
function packets(capture: Child): string[] {
  const out: string[] = [];
  for (const l of capture.lines) {
    if (/^\d\d:\d\d:\d\d\.\d+ /.test(l)) out.push(l);
    else if (out.length > 0) out[out.length - 1] += `\n${l}`;
  }
  return out;
}

test('full mode through a real relay (dhcrelay): udhcpc and dhclient on a routed subnet get its pool and router; option 82 comes back', async (t) => {
  const tcpdump = requireProgram('tcpdump', 'tcpdump');
  const busybox = requireProgram('busybox', 'busybox-static');
  const lab = await relayedLab(t);
  const { lan, sub } = lab;
  const server = await startServer(lab, 'server', {
    mode: 'full',
    interface: 'lan0',
    serverIp: `${lan}.1`,
    rangeStart: `${lan}.100`,
    rangeEnd: `${lan}.150`,
    router: `${lan}.254`,
    subnets: [
      { subnet: `${sub}.0/24`, rangeStart: `${sub}.100`, rangeEnd: `${sub}.150`, router: `${sub}.1` },
    ],
  });
  const capture = lab.spawnIn(lab.ns('s'), 'tcpdump@s', tcpdump, [
    '-i',
    'lan0',
    '-n',
    '-l',
    '-U',
    '-vv',
    'udp port 67',
  ]);
  await capture.line('tcpdump ready', /listening on lan0/);
  await startRelay(lab, [`${lan}.1`]);

  const s = script(
    lab.dir,
    'udhcpc-relay.sh',
    'echo "LEASE $1 ${ip:-} ${subnet:-} ${router:-} ${serverid:-}"',
  );
  const u = lab.spawnIn(lab.ns('c1'), 'udhcpc@c1', busybox, [
    'udhcpc',
    '-i',
    'c1',
    '-f',
    '-q',
    '-n',
    '-t',
    '5',
    '-T',
    '2',
    '-s',
    s,
  ]);
  assert.equal(await u.exit(), 0, u.output());
  const m = u.lines.map((l) => /^LEASE bound (\S+) (\S+) (\S+) (\S+)/.exec(l)).find((x) => x !== null);
  assert.ok(m, `udhcpc bound:\n${u.output()}`);
  assert.ok(inRange(m[1]!, sub, 100, 150), `udhcpc got ${m[1]} from the relayed pool`);
  assert.equal(m[2], '255.255.255.0');
  assert.equal(m[3], `${sub}.1`, "the relayed subnet's router, not the server LAN's");
  assert.equal(m[4], `${lan}.1`, 'server id: our server, two hops away');
  await server.event('lease for udhcpc', (e) => e.type === 'lease' && e.mac === '02:00:00:00:70:01');

  const d = await dhclient(lab, 'c2', 'c2', 1);
  assert.ok(inRange(d, sub, 100, 150), `dhclient got ${d} from the relayed pool`);
  assert.notEqual(d, m[1]);

  // Both leases are bound, so their four replies were sent; wait until tcpdump has printed them.
  const replies = (): string[] => packets(capture).filter((p) => p.includes(`${lan}.1.67 > ${sub}.1.67`));
  await capture
    .until('four replies to the relay', () => (replies().length >= 4 ? true : undefined))
    .catch(() => undefined);
  await capture.stop('SIGINT');
  const seen = packets(capture);
  const toRelay = replies();
  assert.ok(
    toRelay.length >= 4,
    `OFFER and ACK for each client went to the relay (giaddr):\n${seen.join('\n')}`,
  );
  for (const p of toRelay)
    assert.match(p, /Agent-Information/, `every reply to the relay echoes option 82:\n${p}`);
  assert.ok(
    seen.some((p) => /> 10\.69\.\d+\.1\.67/.test(p) && /Agent-Information/.test(p) && /Circuit-ID/.test(p)),
    'the relay added option 82 with a circuit id',
  );
});

test('proxy mode through a real relay: dnsmasq gives the address, we give the boot file, then port 4011 across the router', async (t) => {
  const dnsmasq = requireProgram('dnsmasq', 'dnsmasq-base');
  const lab = await relayedLab(t);
  const { lan, sub } = lab;
  const dns = lab.spawnIn(lab.ns('d'), 'dnsmasq', dnsmasq, [
    '--no-daemon',
    '--conf-file=/dev/null',
    '--port=0',
    '--user=root',
    '--interface=d0',
    '--bind-interfaces',
    // A range on the relayed subnet: dnsmasq answers relayed requests whose giaddr falls in it.
    `--dhcp-range=${sub}.50,${sub}.60,255.255.255.0,10m`,
    `--dhcp-leasefile=${join(lab.dir, 'dnsmasq.leases')}`,
    `--pid-file=${join(lab.dir, 'dnsmasq.pid')}`,
    '--log-dhcp',
    '--log-facility=-',
  ]);
  await dns.line('dnsmasq ready', /DHCP, IP range/);
  await startServer(lab, 'proxy', {
    mode: 'proxy',
    interface: 'lan0',
    serverIp: `${lan}.1`,
    subnets: [{ subnet: `${sub}.0/24` }],
  });
  await startRelay(lab, [`${lan}.2`, `${lan}.1`]);

  // The client has no address; a link route lets its socket send the limited broadcast.
  lab.ip('-n', lab.ns('c1'), 'route', 'add', 'default', 'dev', 'c1');
  const mac = '02:00:00:00:70:01';
  const client = lab.spawnIn(lab.ns('c1'), 'pxe-client', process.execPath, [
    '--enable-source-maps',
    PXE_CLIENT,
    'discover',
    mac,
    '68',
  ]);
  const fromSite = await client.event(
    'dnsmasq OFFER',
    (e) => e.type === 'reply' && e.serverId === `${lan}.2`,
  );
  const fromProxy = await client.event('proxy OFFER', (e) => e.type === 'reply' && e.serverId === `${lan}.1`);
  await client.stop();
  const leased = String(fromSite.yiaddr);
  assert.ok(inRange(leased, sub, 50, 60), `dnsmasq offered ${leased} on the relayed subnet`);
  assert.equal(fromProxy.yiaddr, '0.0.0.0', 'a proxyDHCP offer carries no address');
  assert.equal(fromProxy.siaddr, `${lan}.1`, 'next server: ours, across the router');
  assert.equal(fromProxy.file, 'undionly.kpxe');
  assert.equal(fromProxy.vendorClass, 'PXEClient');

  // PXE 2.1 step 9 from the relayed subnet: unicast to port 4011, routed, no relay.
  lab.ip('-n', lab.ns('c1'), 'addr', 'add', `${leased}/24`, 'dev', 'c1');
  lab.ip('-n', lab.ns('c1'), 'route', 'replace', 'default', 'via', `${sub}.1`);
  const req = lab.spawnIn(lab.ns('c1'), 'pxe-request', process.execPath, [
    '--enable-source-maps',
    PXE_CLIENT,
    'request',
    mac,
    `${lan}.1`,
    leased,
  ]);
  const ack = await req.event('proxy ACK on 4011', (e) => e.type === 'reply');
  assert.equal(ack.messageType, 5);
  assert.equal(ack.from, `${lan}.1:4011`);
  assert.equal(ack.file, 'undionly.kpxe');
  assert.equal(await req.exit(), 0);
});
