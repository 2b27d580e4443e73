/**
 * What the server shows about itself: the snapshot `status`, the dashboard
 * (SSE) and /api/v1/status serve. Types only; src/server/state.ts keeps the
 * store that fills them. They sit here, below server/, so the dashboard
 * imports them downward.
 */
import type { AgentStage } from '../boot-config.js';

/** Where a client is in its boot: the phase-1 steps the server sees, then the agent's own stages. */
export type ClientStage = 'dhcp' | 'ipxe' | 'phase1' | AgentStage;

export interface ClientState {
  readonly mac: string;
  readonly ip: string | null;
  /** What the firmware said it is: 'bios', 'uefi-x64', 'uefi-http', 'ipxe', or null if unknown. */
  readonly firmware: string | null;
  readonly stage: ClientStage;
  /** OS id it chose, once known. */
  readonly os: string | null;
  /** 0..1 of the chosen OS. */
  readonly progress: number;
  readonly downloadRate: number;
  readonly uploadRate: number;
  readonly downloaded: number;
  readonly uploaded: number;
  readonly peers: number;
  /** uploaded / size of the chosen OS (copies it gave back to the swarm). */
  readonly seedRatio: number;
  readonly error: string | null;
  /** Epoch ms of the first packet seen from it in this boot. */
  readonly firstSeen: number;
  readonly updatedAt: number;
  /** Seconds from firstSeen to stage 'booting', once it got there. */
  readonly bootSeconds: number | null;
  /** Clients in progress (seen, not yet booting/failed) when this one was first seen, itself included. */
  readonly concurrent: number;
  readonly peakRss: number | null;
}

export interface SwarmSummary {
  readonly os: string;
  readonly name: string;
  readonly infoHash: string;
  readonly size: number;
  readonly seeders: number;
  readonly leechers: number;
  /** Completed downloads the tracker counted. */
  readonly completed: number;
  /** Bytes the server's seeder sent for this OS. */
  readonly serverUploaded: number;
  /** Bytes the clients say (in their tracker announces) they uploaded, to each other. */
  readonly peerUploaded?: number;
}

export interface ServerSnapshot {
  readonly startedAt: number;
  readonly now: number;
  readonly server: {
    readonly address: string;
    readonly interface: string | null;
    readonly httpPort: number;
    readonly dhcp: 'full' | 'proxy' | 'off';
    readonly environment: string;
  };
  readonly clients: readonly ClientState[];
  readonly swarms: readonly SwarmSummary[];
  readonly totals: {
    /** Bytes the server's seeder sent, all OSs. */
    readonly serverUploaded: number;
    /** Bytes clients reported downloaded, all OSs. */
    readonly delivered: number;
    readonly booted: number;
    readonly failed: number;
  };
}
