/**
 * DHCP load: N simulated PXE clients (one process, distinct MACs) ask our
 * DHCP server in full mode at once, across a namespace LAN; then the server
 * is stopped and started again from its leases file and the same clients ask
 * again. Reports the time for all N exchanges, retransmissions, failures,
 * whether every lease is unique and whether every client got its address
 * back after the restart.
 *
 *   npm run build && node dist/bench/load-dhcp.js [--clients 200]
 *
 * Needs root (namespaces). Everything runs in namespaces it creates and
 * removes (bench/netlab.ts); links are unshaped in effect (1 Gbit/s tbf).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { DhcpServer } from '../src/dhcp/server.js';
import { streamLogger } from '../src/util/logger.js';
import { runDhcpClients } from './load-dhcp-clients.js';
import type { DhcpClientsReport } from './load-dhcp-clients.js';
import { NetLab, waitFor } from './netlab.js';

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '200' },
    role: { type: 'string' },
    iface: { type: 'string' },
    ip: { type: 'string' },
    leases: { type: 'string' },
  },
});

const SUBNET = '10.78.0';

async function serve(): Promise<void> {
  const server = new DhcpServer(
    {
      mode: 'full',
      interface: values.iface!,
      serverIp: values.ip!,
      rangeStart: `${SUBNET}.10`,
      rangeEnd: `${SUBNET}.250`,
      leaseTimeSeconds: 3600,
      leasesFile: values.leases!,
    },
    { logger: streamLogger(process.stderr, { level: process.env.BT_LOAD_DEBUG ? 'debug' : 'warn' }) },
  );
  await server.listen();
  console.log(`READY leases=${server.leases().length}`);
  const stop = (): void => {
    void server.close().then(() => console.log(`STOPPED leases=${server.leases().length}`));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

async function clients(): Promise<void> {
  const n = Number(values.clients);
  const r = await runDhcpClients({
    n,
    serverAddress: '255.255.255.255',
    serverPort: 67,
    clientPort: 68,
    sendAddress: values.ip!,
  });
  console.log(`RESULT ${JSON.stringify(r)}`);
}

function summary(name: string, r: DhcpClientsReport): string {
  const ips = r.results.map((x) => x.ip).filter((x) => x !== null);
  return `${name}: ${r.results.length} clients in ${(r.ms / 1000).toFixed(2)} s, ${r.retries} retransmissions, ${r.failures} failures, ${r.sendErrors} send errors, ${new Set(ips).size} distinct addresses`;
}

async function main(): Promise<void> {
  const n = Number(values.clients);
  const lab = new NetLab(SUBNET);
  const dir = mkdtempSync(join(tmpdir(), 'bt-load-dhcp-'));
  try {
    const gbit = 1_000_000_000;
    const srv = lab.host('dhcpd', 1, gbit, gbit);
    const cli = lab.host('pxe', 2, gbit, gbit);
    const self = new URL(import.meta.url).pathname;
    const serverArgs = [
      self,
      '--role',
      'server',
      '--iface',
      srv.ifname,
      '--ip',
      srv.ip,
      '--leases',
      join(dir, 'leases.json'),
    ];
    const runClients = async (): Promise<DhcpClientsReport> => {
      const c = lab.spawn(cli, process.execPath, [
        self,
        '--role',
        'clients',
        '--clients',
        String(n),
        '--ip',
        cli.ip,
      ]);
      const m = await waitFor(c, /^RESULT (.*)$/m, 300_000, 'clients');
      return JSON.parse(m[1]!) as DhcpClientsReport;
    };

    let server = lab.spawn(srv, process.execPath, serverArgs);
    await waitFor(server, /READY/, 10_000, 'server');
    const first = await runClients();
    if (process.env.BT_LOAD_DEBUG) console.log(server.output());
    await lab.stop([server]);
    server = lab.spawn(srv, process.execPath, serverArgs);
    const ready = await waitFor(server, /READY leases=(\d+)/, 10_000, 'server');
    const second = await runClients();
    await lab.stop([server]);

    // Datagrams the kernel dropped because a socket's receive buffer was full
    // (the server's, while it fsyncs each lease before the ACK; or the clients').
    const rcvbufErrors = (ns: string): string => {
      const snmp = execFileSync('ip', ['netns', 'exec', ns, 'cat', '/proc/net/snmp'], { encoding: 'utf8' });
      const [head, vals] = snmp.split('\n').filter((l) => l.startsWith('Udp:'));
      const i = head!.split(' ').indexOf('RcvbufErrors');
      return vals!.split(' ')[i]!;
    };
    const before = new Map(first.results.map((r) => [r.mac, r.ip]));
    const changed = second.results.filter((r) => before.get(r.mac) !== r.ip).length;
    console.log(summary('first run', first));
    console.log(`restart: the server loaded ${ready[1]} leases from its file`);
    console.log(summary('after restart', second));
    console.log(`clients whose address changed across the restart: ${changed}`);
    console.log(`UDP receive-buffer drops: server ${rcvbufErrors(srv.ns)}, clients ${rcvbufErrors(cli.ns)}`);
  } finally {
    lab.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (values.role === 'server') await serve();
else if (values.role === 'clients') await clients();
else await main();
