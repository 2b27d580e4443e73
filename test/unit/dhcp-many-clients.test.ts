/**
 * 50 clients ask our DHCP server (full mode) at once: every one gets a
 * lease, no address is given twice, and after a restart from the leases
 * file every client gets its same address back. The 200-client version with
 * timings is bench/load-dhcp.ts (bench/results/load.md). Loopback only:
 * requests go to 127.0.0.1, replies are broadcast to 127.255.255.255.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { join } from 'node:path';
import { DhcpServer } from '../../src/dhcp/server.js';
import type { DhcpServerOptions } from '../../src/dhcp/server.js';
import { runDhcpClients } from '../../bench/load-dhcp-clients.js';
import { tempDir } from '../helpers/tmp.js';

const N = 50;

test(`${N} clients at once: unique leases, all kept across a server restart`, async (t) => {
  const dir = tempDir(t);
  const base = randomInt(20_000, 60_000);
  const options: DhcpServerOptions = {
    mode: 'full',
    interface: 'lo',
    serverIp: '127.0.0.1',
    broadcastAddress: '127.255.255.255',
    serverPort: base,
    clientPort: base + 1,
    pxePort: base + 2,
    rangeStart: '127.0.60.10',
    rangeEnd: '127.0.60.250',
    leaseTimeSeconds: 3600,
    leasesFile: join(dir, 'leases.json'),
  };
  const clients = {
    n: N,
    serverAddress: '127.0.0.1',
    serverPort: base,
    clientPort: base + 1,
    retransmitMs: 1000,
  };

  const first = new DhcpServer(options);
  await first.listen();
  let firstClosed = false;
  t.after(() => (firstClosed ? undefined : first.close()));
  const before = await runDhcpClients(clients);
  t.diagnostic(`first run: ${before.ms.toFixed(0)} ms, ${before.retries} retransmissions`);
  assert.deepEqual(
    before.results.filter((r) => r.error),
    [],
  );
  const ips = before.results.map((r) => r.ip);
  assert.equal(new Set(ips).size, N, 'every client has its own address');
  assert.equal(new Set(before.results.map((r) => r.mac)).size, N);
  assert.deepEqual(
    first
      .leases()
      .map((l) => `${l.mac}=${l.ip}`)
      .sort(),
    before.results.map((r) => `${r.mac}=${r.ip}`).sort(),
  );
  await first.close();
  firstClosed = true;

  const second = new DhcpServer(options);
  await second.listen();
  t.after(() => second.close());
  assert.equal(second.leases().length, N, 'the leases file brought every lease back');
  const after = await runDhcpClients(clients);
  t.diagnostic(`after restart: ${after.ms.toFixed(0)} ms, ${after.retries} retransmissions`);
  assert.deepEqual(
    after.results.filter((r) => r.error),
    [],
  );
  assert.deepEqual(
    after.results.map((r) => `${r.mac}=${r.ip}`),
    before.results.map((r) => `${r.mac}=${r.ip}`),
    'each client got its address back after the restart',
  );
});
