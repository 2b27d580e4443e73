/**
 * The one place a ServerSnapshot (what `status`, the dashboard and
 * /api/v1/status show) is put together: the clients from the store, each
 * OS's swarm from the library (what the server's seeder sent) and the
 * tracker (what the peers announced), and the totals over them.
 */
import type { Environment } from '../env/types.js';
import type { SwarmState } from '../tracker/server.js';
import type { CatalogEntry } from './catalog.js';
import type { RoomSummary } from '../http/snapshot.js';
import type { ClientState, ServerSent, ServerSnapshot, SwarmSummary } from './state.js';
import { NOTHING_SENT } from './traffic.js';

export interface SnapshotSources {
  /** Epoch ms the server started. */
  readonly startedAt: number;
  readonly environment: Environment;
  readonly store: { list(): ClientState[]; readonly phase1Loads: number };
  /** Bytes of one phase 1 (kernel and initramfs), and what the server sent by stage (traffic.ts). */
  readonly phase1Size?: number;
  readonly sent?: () => ServerSent;
  readonly library: {
    entries(): readonly CatalogEntry[];
    /** The server's seeding session of this OS (bytes sent), if it seeds it. */
    stats(os: string): { readonly uploaded: number } | undefined;
    /** The seeder's peer id in hex, to tell its own announces from the clients'. */
    readonly seederPeerId: string | undefined;
  };
  /** Absent when the environment turns the tracker off. */
  readonly tracker?: { swarms(): readonly SwarmState[] } | undefined;
  readonly now?: () => number;
  /** A client's name, groups and next boot (app.ts, from the environment and next-boot.json). */
  readonly machine?: (mac: string) => Pick<ClientState, 'name' | 'groups' | 'nextBoot'>;
  readonly room?: RoomSummary;
  /** OSs fetched from their web seeds, not yet offered (src/server/fetched-os.ts). */
  readonly fetching?: NonNullable<ServerSnapshot['server']['fetching']>;
  /** A satellite's upstream state (src/server/upstream.ts). */
  readonly upstream?: NonNullable<ServerSnapshot['server']['upstream']>;
}

export function buildSnapshot(s: SnapshotSources): ServerSnapshot {
  const swarmsByHash = new Map((s.tracker?.swarms() ?? []).map((t) => [t.infoHash, t]));
  const seederId = s.library.seederPeerId;
  const swarms: SwarmSummary[] = s.library.entries().map((e) => {
    const t = swarmsByHash.get(e.meta.infoHashHex);
    return {
      os: e.os.id,
      name: e.os.name,
      infoHash: e.meta.infoHashHex,
      size: e.meta.length,
      seeders: t?.seeders ?? 0,
      leechers: t?.leechers ?? 0,
      completed: t?.completed ?? 0,
      serverUploaded: s.library.stats(e.os.id)?.uploaded ?? 0,
      // Everything peers announced they uploaded (also those gone since), less the server's own seeder.
      peerUploaded: t ? t.uploaded - (t.peers.find((p) => p.peerId === seederId)?.uploaded ?? 0) : 0,
    };
  });
  const machine = s.machine;
  const clients: ClientState[] = machine
    ? s.store.list().map((c) => ({ ...c, ...machine(c.mac) }))
    : s.store.list();
  const env = s.environment;
  const phase1Size = s.phase1Size ?? 0;
  const deliveredOs = clients.reduce((n, c) => n + c.downloaded, 0);
  const deliveredPhase1 = s.store.phase1Loads * phase1Size;
  return {
    startedAt: s.startedAt,
    now: (s.now ?? Date.now)(),
    ...(s.room ? { room: s.room } : {}),
    server: {
      address: env.server.address,
      interface: env.server.interface,
      httpPort: env.server.httpPort,
      dhcp: env.dhcp.mode,
      environment: env.dir,
      phase1Size,
      ...(s.fetching && s.fetching.length > 0 ? { fetching: s.fetching } : {}),
      ...(s.upstream ? { upstream: s.upstream } : {}),
    },
    clients,
    swarms,
    totals: {
      serverUploaded: swarms.reduce((n, w) => n + w.serverUploaded, 0),
      delivered: deliveredPhase1 + deliveredOs,
      deliveredPhase1,
      deliveredOs,
      sent: s.sent?.() ?? NOTHING_SENT,
      booted: clients.filter((c) => c.stage === 'booting' || c.stage === 'running').length,
      failed: clients.filter((c) => c.stage === 'failed').length,
    },
  };
}
