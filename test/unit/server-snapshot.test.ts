// The snapshot builder (src/server/snapshot.ts) from stand-ins for the
// store, the OS library and the tracker: each OS's swarm and the totals
// `status` and the dashboard print.
import { NOTHING_SENT } from '../../src/server/traffic.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Environment } from '../../src/env/types.js';
import type { CatalogEntry } from '../../src/server/catalog.js';
import { buildSnapshot } from '../../src/server/snapshot.js';
import type { ClientState } from '../../src/server/state.js';
import type { SwarmState } from '../../src/tracker/server.js';

const SEEDER = 'aa'.repeat(20);
const env = {
  dir: '/srv/lab',
  server: { address: '10.0.0.1', interface: 'eth1', httpPort: 80 },
  dhcp: { mode: 'proxy' },
} as unknown as Environment;
const entry = (id: string, hash: string, length: number) =>
  ({ os: { id, name: id.toUpperCase() }, meta: { infoHashHex: hash, length } }) as unknown as CatalogEntry;
const client = (mac: string, stage: ClientState['stage'], downloaded: number) =>
  ({ mac, stage, downloaded }) as unknown as ClientState;

test('snapshot: per-OS swarm from library and tracker, less the seeder; totals over OSs and clients', () => {
  const swarm = {
    infoHash: '11'.repeat(20),
    seeders: 2,
    leechers: 3,
    completed: 4,
    uploaded: 1000,
    downloaded: 0,
    peers: [
      { peerId: SEEDER, uploaded: 600 },
      { peerId: 'bb'.repeat(20), uploaded: 400 },
    ],
  } as unknown as SwarmState;
  const snap = buildSnapshot({
    startedAt: 5,
    now: () => 9,
    environment: env,
    store: {
      list: () => [
        client('52:54:00:00:00:01', 'booting', 100),
        client('52:54:00:00:00:02', 'running', 200),
        client('52:54:00:00:00:03', 'failed', 30),
        client('52:54:00:00:00:04', 'downloading', 7),
      ],
      phase1Loads: 3,
    },
    phase1Size: 1000,
    library: {
      entries: () => [entry('deb', '11'.repeat(20), 5000), entry('alp', '22'.repeat(20), 700)],
      stats: (os) => (os === 'deb' ? { uploaded: 650 } : os === 'alp' ? { uploaded: 50 } : undefined),
      seederPeerId: SEEDER,
    },
    tracker: { swarms: () => [swarm] },
  });
  assert.deepEqual(snap.swarms, [
    {
      os: 'deb',
      name: 'DEB',
      infoHash: '11'.repeat(20),
      size: 5000,
      seeders: 2,
      leechers: 3,
      completed: 4,
      serverUploaded: 650,
      peerUploaded: 400,
    },
    {
      os: 'alp',
      name: 'ALP',
      infoHash: '22'.repeat(20),
      size: 700,
      seeders: 0,
      leechers: 0,
      completed: 0,
      serverUploaded: 50,
      peerUploaded: 0,
    },
  ]);
  assert.deepEqual(snap.totals, {
    serverUploaded: 700,
    // Three phase 1s of 1000 bytes, and the OS bytes the clients reported.
    delivered: 3337,
    deliveredPhase1: 3000,
    deliveredOs: 337,
    sent: NOTHING_SENT,
    booted: 2,
    failed: 1,
  });
  assert.deepEqual(snap.server, {
    address: '10.0.0.1',
    interface: 'eth1',
    httpPort: 80,
    dhcp: 'proxy',
    environment: '/srv/lab',
    phase1Size: 1000,
  });
  assert.equal(snap.startedAt, 5);
  assert.equal(snap.now, 9);
  assert.equal(snap.clients.length, 4);
});

test('snapshot: without a tracker or a seeding session every OS still has its row, at zero', () => {
  const snap = buildSnapshot({
    startedAt: 0,
    environment: env,
    store: { list: () => [], phase1Loads: 0 },
    library: {
      entries: () => [entry('deb', '11'.repeat(20), 5000)],
      stats: () => undefined,
      seederPeerId: undefined,
    },
  });
  assert.equal(snap.swarms.length, 1);
  assert.equal(snap.swarms[0]!.serverUploaded, 0);
  assert.equal(snap.swarms[0]!.peerUploaded, 0);
  assert.deepEqual(snap.totals, {
    serverUploaded: 0,
    delivered: 0,
    deliveredPhase1: 0,
    deliveredOs: 0,
    sent: NOTHING_SENT,
    booted: 0,
    failed: 0,
  });
});
