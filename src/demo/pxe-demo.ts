/**
 * `boottorrent demo`: a virtual lab on this machine. One network namespace
 * with a bridge; `boottorrent start` serving a sample OS there (full DHCP,
 * console on the serial line); N QEMU clients PXE-boot from it at once, get
 * phase 1, download the OS from each other and kexec it, which prints a
 * marker on each serial console. Everything lives in a temporary folder and
 * the namespace, and is removed at the end, on failure and on Ctrl-C.
 */
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NetLab, labEnvYaml, waitForOutput, type LabProcess } from './lab.js';
import { LabVm } from './vm.js';
import { writeMarkerOs } from './sample-os.js';
import { BootTorrentError } from '../errors.js';
import type { ServerSent, ServerSnapshot } from '../server/state.js';
import { NOTHING_SENT } from '../server/traffic.js';

export const DEMO_BIN = fileURLToPath(new URL('../../../bin/boottorrent.js', import.meta.url));

export interface PxeDemoOptions {
  readonly clients: number;
  /** Folder with vmlinuz + initrd.img from build-phase1. */
  readonly phase1Dir: string;
  readonly qemu: string;
  /** Menu timeout and seed time the sample environment uses (seconds). */
  readonly menuTimeout?: number;
  readonly seedTime?: number;
  /** Give up after this long (ms). */
  readonly timeoutMs?: number;
  readonly memoryMb?: number;
  /** The server seeder's upload cap in bytes/s (default 1 MB/s). */
  readonly serverUploadLimit?: number;
  /** Keep the lab folder (serial logs, server log) instead of deleting it. */
  readonly keep?: boolean;
  /** Seconds between two clients' power-on (default 0: all at once). */
  readonly staggerSeconds?: number;
  /** Clients serve phase 1 to later clients (default true). */
  readonly phase1Peers?: boolean;
  /** Every client's firmware (default bios); uefi-secureboot serves the signed chain (uefi_chain: signed). */
  readonly firmware?: 'bios' | 'uefi' | 'uefi-secureboot';
}

export interface PxeDemoServices {
  readonly signal?: AbortSignal;
  readonly log: (line: string) => void;
  /** About once a second: the server's view. */
  readonly onStatus?: (snap: ServerSnapshot, elapsedMs: number) => void;
}

export interface PxeDemoResult {
  readonly booted: number;
  readonly clients: number;
  readonly seconds: number;
  /** Seconds from each VM's start to its marker. */
  readonly perClient: readonly number[];
  /** Each VM as the server last saw it. */
  readonly machines: readonly {
    readonly name: string;
    readonly mac: string;
    /** Seconds from VM start to the marker; null if it did not boot. */
    readonly seconds: number | null;
    readonly downloaded: number;
    readonly uploaded: number;
    readonly peakRss: number | null;
  }[];
  readonly memoryMb: number;
  /** Everything the server sent, by stage (phase 1, OS). */
  readonly sent: ServerSent;
  /** Phase 1 and OS bytes the clients got. */
  readonly delivered: number;
  /** Bytes clients uploaded to each other, as the server's tracker saw them. */
  readonly peerUploaded: number;
  /** The same, as the clients' tracker announces said. */
  readonly trackerPeerUploaded: number;
  readonly snapshot: ServerSnapshot | undefined;
  readonly dashboardUrl: string;
  readonly dir: string;
}

const LAN = '10.77.0';
const HOST_SIDE = '10.77.255.1';
const NS_SIDE = '10.77.255.2';

export function demoMac(i: number): string {
  return `52:54:00:77:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 0xff).toString(16).padStart(2, '0')}`;
}

async function fetchStatus(url: string): Promise<ServerSnapshot | undefined> {
  try {
    const res = await fetch(new URL('api/v1/status', url), { signal: AbortSignal.timeout(3000) });
    return res.ok ? ((await res.json()) as ServerSnapshot) : undefined;
  } catch {
    return undefined;
  }
}

export async function runPxeDemo(o: PxeDemoOptions, s: PxeDemoServices): Promise<PxeDemoResult> {
  if (typeof process.getuid === 'function' && process.getuid() !== 0)
    throw new BootTorrentError(
      'BT_ERR_DEMO',
      'the demo builds a virtual LAN (network namespaces, a bridge, tap devices): run it as root',
    );
  const dir = await mkdtemp(join(tmpdir(), 'boottorrent-demo-'));
  const marker = `BOOTTORRENT-DEMO-${Date.now().toString(36).toUpperCase()}`;
  let lab: NetLab | undefined;
  let server: LabProcess | undefined;
  const vms: LabVm[] = [];
  try {
    // The environment: full DHCP on the lab's bridge, one sample OS.
    const env = join(dir, 'env');
    await mkdir(join(env, 'oss'), { recursive: true });
    const osDir = writeMarkerOs(
      join(env, 'oss'),
      'demo-linux',
      'Demo Linux (Debian kernel + marker)',
      marker,
    );
    // A client needs the OS's size (it lives in RAM) plus 512 MB: give the VMs no more.
    const imageMb = Math.ceil(
      (statSync(join(osDir, 'vmlinuz')).size + statSync(join(osDir, 'initrd.img')).size) / 2 ** 20,
    );
    const memoryMb = o.memoryMb ?? imageMb + 512;
    await writeFile(
      join(env, 'Boottorrent.yaml'),
      labEnvYaml({
        lan: LAN,
        range: [100, 250],
        defaultOs: 'demo-linux',
        timeout: o.menuTimeout ?? 3,
        // A client serves phase 1 only while its agent runs: with clients
        // powering on far apart, it seeds long enough for the next to find it.
        seedTime: o.seedTime ?? Math.max(5, Math.ceil(o.staggerSeconds ?? 0)),
        peers: true,
        phase1Peers: o.phase1Peers ?? true,
        // Secure Boot firmware runs only signed loaders: Debian's shim and GRUB.
        ...(o.firmware === 'uefi-secureboot' ? { uefiChain: 'signed' as const } : {}),
      }),
    );
    lab = new NetLab('demo', `${LAN}.1/24`);
    lab.linkToHost(`${HOST_SIDE}/30`, `${NS_SIDE}/30`);
    s.log(`lab: namespace ${lab.ns}, bridge br0 ${LAN}.1/24, files in ${dir}`);
    server = lab.spawn(process.execPath, [
      '--enable-source-maps',
      DEMO_BIN,
      'start',
      '--env',
      env,
      '--phase1',
      o.phase1Dir,
      '--console',
      'serial',
      '--dashboard',
      `${NS_SIDE}:8480`,
      // The lab's one server link is what a room of machines competes for; the
      // VMs' virtual links are far faster than their CPUs, so the cap stands in
      // for it and lets the swarm show what it saves.
      '--upload-limit',
      String(o.serverUploadLimit ?? 1_000_000),
    ]);
    const ready = await waitForOutput(server, /dashboard (http:\S+)/, 120_000, 'boottorrent start', s.signal);
    const dashboardUrl = ready[1]!.replace(/;$/, '');
    s.log(
      `server: running, seeding capped at ${((o.serverUploadLimit ?? 1_000_000) / 1e6).toFixed(1)} MB/s ` +
        `like one busy server link (dashboard ${dashboardUrl} from this machine)`,
    );

    const started = Date.now();
    const startedAt: number[] = [];
    const stagger = (o.staggerSeconds ?? 0) * 1000;
    /** Powers on every client whose time has come (all at once without --stagger). */
    const powerOn = (): void => {
      while (vms.length < o.clients && Date.now() >= started + vms.length * stagger) {
        const i = vms.length;
        vms.push(
          new LabVm(lab!, {
            name: `pc${i + 1}`,
            mac: demoMac(i + 1),
            dir,
            qemu: o.qemu,
            memoryMb,
            ...(o.firmware && o.firmware !== 'bios' ? { firmware: o.firmware } : {}),
          }),
        );
        startedAt.push(Date.now());
        if (stagger > 0) s.log(`pc${i + 1} (${demoMac(i + 1)}) powers on`);
      }
    };
    powerOn();
    s.log(
      `clients: ${o.clients} QEMU machines with ${memoryMb} MB each PXE-booting` +
        `${stagger > 0 ? `, ${o.staggerSeconds} s apart` : ''} (TCG: slow CPUs, so give them a few minutes)`,
    );
    const done = new Map<number, number>();
    const deadline = started + (o.timeoutMs ?? 20 * 60_000) + stagger * (o.clients - 1);
    let snapshot: ServerSnapshot | undefined;
    let lastStatus = 0;
    while (done.size < o.clients) {
      if (s.signal?.aborted) throw new BootTorrentError('BT_ERR_ABORTED', 'interrupted');
      powerOn();
      for (const [i, vm] of vms.entries()) {
        if (done.has(i)) continue;
        if (vm.serial().includes(`${marker} cmdline:`)) {
          done.set(i, (Date.now() - startedAt[i]!) / 1000);
          s.log(
            `${vm.options.name} (${vm.options.mac}) booted the OS it downloaded after ${done.get(i)!.toFixed(1)} s`,
          );
        } else if (vm.exited) {
          done.set(i, -1);
          s.log(`${vm.options.name} stopped without booting; its console:\n${vm.serial().slice(-2000)}`);
        }
      }
      if (server.child.exitCode !== null || server.child.signalCode !== null)
        throw new BootTorrentError('BT_ERR_DEMO', `the server stopped:\n${server.output().slice(-3000)}`);
      if (Date.now() > deadline) {
        s.log(`giving up after ${Math.round((Date.now() - started) / 1000)} s`);
        break;
      }
      if (Date.now() - lastStatus >= 1000) {
        lastStatus = Date.now();
        snapshot = (await fetchStatus(dashboardUrl)) ?? snapshot;
        if (snapshot) s.onStatus?.(snapshot, Date.now() - started);
      }
      await new Promise((r) => setTimeout(r, 500));
    }
    const seconds = (Date.now() - started) / 1000;
    snapshot = (await fetchStatus(dashboardUrl)) ?? snapshot;
    const perClient = [...done.values()].filter((v) => v >= 0);
    const machines = vms.map((vm, i) => {
      const row = snapshot?.clients.find((c) => c.mac === vm.options.mac);
      const secs = done.get(i);
      return {
        name: vm.options.name,
        mac: vm.options.mac,
        seconds: secs !== undefined && secs >= 0 ? secs : null,
        downloaded: row?.downloaded ?? 0,
        uploaded: row?.uploaded ?? 0,
        peakRss: row?.peakRss ?? null,
      };
    });
    return {
      booted: perClient.length,
      clients: o.clients,
      seconds,
      perClient,
      machines,
      memoryMb,
      sent: snapshot?.totals.sent ?? NOTHING_SENT,
      delivered: snapshot?.totals.delivered ?? 0,
      peerUploaded: snapshot?.clients.reduce((n, c) => n + c.uploaded, 0) ?? 0,
      trackerPeerUploaded: snapshot?.swarms.reduce((n, w) => n + (w.peerUploaded ?? 0), 0) ?? 0,
      snapshot,
      dashboardUrl,
      dir,
    };
  } finally {
    for (const vm of vms) vm.close();
    if (lab && server) await lab.stop(server).catch(() => undefined);
    if (server && o.keep) await writeFile(join(dir, 'server.log'), server.output()).catch(() => undefined);
    lab?.destroy();
    if (!o.keep) await rm(dir, { recursive: true, force: true });
  }
}
