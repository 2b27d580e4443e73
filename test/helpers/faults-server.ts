/**
 * `boottorrent start` environments and host-mode agents for the fault
 * tests: an environment with one OS (a kexec kernel and initrd of chosen
 * sizes, booted at once), a fake phase-1 folder, the status API, and the
 * agent run as a child process (optionally inside a namespace).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ServerSnapshot } from '../../src/server/state.js';
import { AGENT_MAIN } from './agent-fixture.js';
import { startProc, type Proc } from './faults-peers.js';
import { pseudoRandomBytes } from './tmp.js';

export interface FaultEnv {
  envDir: string;
  phase1: string;
  /** The OS's files, by name. */
  files: Record<string, Buffer>;
}

/** Writes Boottorrent.yaml, oss/alpha (kernel + initrd) and a fake phase-1 folder under `dir`. */
export function writeFaultEnv(
  dir: string,
  opts: {
    iface: string;
    address: string;
    /** Lines of the dhcp: section (default: mode off). */
    dhcp?: string[];
    seedTime: number;
    kernelBytes: number;
    initrdBytes: number;
    /** More top-level lines (e.g. a peers: section). */
    extra?: string[];
  },
): FaultEnv {
  const envDir = join(dir, 'env');
  mkdirSync(join(envDir, 'oss', 'alpha'), { recursive: true });
  writeFileSync(
    join(envDir, 'Boottorrent.yaml'),
    [
      'version: 1',
      'server:',
      `  interface: ${opts.iface}`,
      `  address: ${opts.address}`,
      'dhcp:',
      ...(opts.dhcp ?? ['  mode: off']),
      'boot:',
      '  default_os: alpha',
      '  timeout: 0',
      `  seed_time: ${opts.seedTime}`,
      ...(opts.extra ?? []),
      '',
    ].join('\n'),
  );
  writeFileSync(
    join(envDir, 'oss', 'alpha', 'config.yaml'),
    'name: Alpha\nmethod: kexec\nkernel: vmlinuz\ninitrd: [initrd.img]\ncmdline: quiet\n',
  );
  const files = {
    vmlinuz: pseudoRandomBytes(opts.kernelBytes, 91),
    'initrd.img': pseudoRandomBytes(opts.initrdBytes, 92),
  };
  for (const [name, data] of Object.entries(files)) writeFileSync(join(envDir, 'oss', 'alpha', name), data);
  const phase1 = join(dir, 'phase1');
  mkdirSync(phase1, { recursive: true });
  writeFileSync(join(phase1, 'vmlinuz'), 'k');
  writeFileSync(join(phase1, 'initrd.img'), 'i');
  return { envDir, phase1, files };
}

/** The server's status API. */
export async function status(dashboard: string, timeoutMs = 30_000): Promise<ServerSnapshot> {
  const res = await fetch(`http://${dashboard}/api/v1/status`, { signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok) throw new Error(`status: HTTP ${res.status} ${await res.text()}`);
  const snap = (await res.json()) as ServerSnapshot;
  if (!Array.isArray(snap.clients))
    throw new Error(`status: no clients list in ${JSON.stringify(snap).slice(0, 200)}`);
  return snap;
}

/**
 * A host-mode agent in dry-run (`--no-network`: the test configured the
 * network): it downloads, verifies, seeds, prints what it would run, exits 0.
 */
export function startAgent(
  after: (fn: () => unknown) => void,
  server: string,
  mac: string,
  dir: string,
  prefix: string[] = [],
): Proc {
  const [cmd, ...pre] = [...prefix, process.execPath];
  return startProc(after, cmd, [
    ...pre,
    '--enable-source-maps',
    AGENT_MAIN,
    '--server',
    server,
    '--mac',
    mac,
    '--dir',
    dir,
    '--no-network',
    '--dry-run',
    '--port',
    '0',
  ]);
}
