/**
 * What the server shows about itself: the snapshot `status`, the dashboard
 * (SSE) and /api/v1/status serve. Types (and the list of client stages);
 * src/server/state.ts keeps the store that fills them. They sit here, below
 * server/, so the dashboard imports them downward.
 */
import { AGENT_STAGES } from '../boot-config.js';

/** Where a client is in its boot: the phase-1 steps the server sees, then the agent's own stages. */
export const CLIENT_STAGES = ['dhcp', 'ipxe', 'phase1', ...AGENT_STAGES] as const;
export type ClientStage = (typeof CLIENT_STAGES)[number];

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
  /** UEFI Secure Boot enforced on the client, as its agent reports; null before it says. */
  readonly secureBoot: boolean | null;
  /** Its name in the environment (hosts:), or null; groups it belongs to (issue #17). */
  readonly name?: string | null;
  readonly groups?: readonly string[];
  /** What it boots next, when `next-boot` set it (its own entry or its group's). */
  readonly nextBoot?: { readonly os: string; readonly once: boolean; readonly via: string } | null;
}

/** The environment's groups and what each boots next (issue #17). */
export interface RoomSummary {
  readonly groups: readonly {
    readonly name: string;
    readonly nextBoot: { readonly os: string; readonly once: boolean } | null;
  }[];
  /** Named machines (hosts: entries with a name). */
  readonly hosts: readonly { readonly mac: string; readonly name: string }[];
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

/**
 * Every byte the server's client-facing listeners sent (issue #16): DHCP,
 * TFTP, the boot HTTP server, the tracker's port and the seeder's peer
 * connections. Payload bytes written to sockets (no IP/TCP/UDP headers);
 * the dashboard port and LSD multicast (a few hundred bytes a minute) are
 * not in it.
 */
export interface ServerSent {
  /** All of it: phase1 + os + other. */
  readonly total: number;
  /** Before the agent runs: DHCP replies, TFTP, iPXE binaries and boot scripts over HTTP, the phase-1 kernel and initramfs. */
  readonly phase1: number;
  /** For the OS: boot configs, torrents and report answers, the tracker, the seeder's peer connections. */
  readonly os: number;
  /** What no request named: error answers Node wrote itself, HTTP paths outside the boot chain. */
  readonly other: number;
  /** The parts the three add up from, by name (dhcp, tftp, ipxeHttp, scripts, phase1Files, configs, api, tracker, seeder, ...). */
  readonly parts: Readonly<Record<string, number>>;
}

export interface ServerSnapshot {
  readonly startedAt: number;
  readonly room?: RoomSummary;
  readonly now: number;
  readonly server: {
    readonly address: string;
    readonly interface: string | null;
    readonly httpPort: number;
    readonly dhcp: 'full' | 'proxy' | 'off';
    readonly environment: string;
    /** Bytes of one phase 1 (kernel and initramfs files), so sent.phase1 / phase1Size is copies sent. */
    readonly phase1Size: number;
    /** OSs named by a .torrent (`torrent:`) still being fetched from their web seeds, not yet offered. */
    readonly fetching?: readonly { readonly id: string; readonly progress: number }[];
    /** A satellite's upstream (server.upstream) and how it answers; absent on a server that is not one. */
    readonly upstream?: {
      readonly url: string;
      readonly reachable: boolean | null;
      readonly lastContact: number | null;
      readonly error: string | null;
      readonly fetching: readonly { readonly id: string; readonly progress: number }[];
    };
  };
  readonly clients: readonly ClientState[];
  readonly swarms: readonly SwarmSummary[];
  readonly totals: {
    /** Bytes of OS data the server's seeder sent, all OSs (payload only; sent.parts.seeder is all its bytes). */
    readonly serverUploaded: number;
    /** What the clients got: deliveredPhase1 + deliveredOs. */
    readonly delivered: number;
    /** Phase 1 (kernel and initramfs) times the boots whose agent came up after loading it from this server. */
    readonly deliveredPhase1: number;
    /** Bytes clients reported downloaded, all OSs. */
    readonly deliveredOs: number;
    readonly sent: ServerSent;
    readonly booted: number;
    readonly failed: number;
  };
}
