/**
 * Where the agent learns its server and MAC (pure): the kernel command line
 * in phase 1 (`boottorrent.server=`, `boottorrent.mac=`, put there by the
 * iPXE script, src/http/ipxe.ts), or flags in host mode (tests, bench).
 */
import { parseArgs } from 'node:util';
import { BootTorrentError } from '../errors.js';
import { normalizeMac } from '../util/address.js';
import { PHASE1_PAYLOAD_PATH, PHASE1_SERVER_KEY_PATH, PHASE1_SHARE_PORT } from '../boot-config.js';

export interface AgentArgs {
  /** Server base URL, no trailing slash. */
  readonly server: string;
  /** Lower-case colon MAC. */
  readonly mac: string;
  /** Download folder. */
  readonly dir: string;
  /** Bring up NICs and run DHCP (phase 1); false in host mode with --no-network. */
  readonly network: boolean;
  /** Do everything up to the load, print what would run, exit 0. */
  readonly dryRun: boolean;
  /** True when started with flags on a normal host (never kexec there). */
  readonly hostMode: boolean;
  /** Print debug log lines (engine, reports) on stderr. */
  readonly verbose: boolean;
  /** Seconds without a downloaded byte before the download is declared stalled. */
  readonly stallSeconds: number;
  /** TCP port for peers (0: any free port). */
  readonly port: number;
  /** The phase-1 payload to serve to later clients (#16), if this client has one. */
  readonly shareFile?: string;
  /** TCP port it is served on (0: any free port). */
  readonly sharePort: number;
  /**
   * The server's public key (PEM): boot configs must carry its signature.
   * Phase 1 always has one (PHASE1_SERVER_KEY_PATH); host mode with
   * --server-key only.
   */
  readonly serverKey?: string;
  /**
   * Phase-1 files this client may fetch once more and serve to later
   * clients' GRUB (`boottorrent.hold=`, src/server/phase1-loader.ts): names
   * in the phase-1 folder and their SHA-256, from the server.
   */
  readonly hold?: readonly HoldFile[];
}

export interface HoldFile {
  readonly name: string;
  readonly sha256: string;
}

/**
 * `name:sha256,name:sha256` (at most 4 files, plain names); undefined when
 * absent or not of that form (then this client simply holds nothing).
 */
export function parseHold(raw: string | undefined): HoldFile[] | undefined {
  if (raw === undefined || raw.length > 400) return undefined;
  const files = raw.split(',').map((w) => /^([A-Za-z0-9._-]{1,64}):([0-9a-f]{64})$/.exec(w));
  if (files.length > 4 || files.some((m) => !m || m[1] === '.' || m[1] === '..')) return undefined;
  return files.map((m) => ({ name: m![1]!, sha256: m![2]! }));
}

export const DEFAULT_DIR = '/tmp/boottorrent';
export const DEFAULT_STALL_SECONDS = 60;
export const DEFAULT_PORT = 6881;

export const HOST_USAGE = `Usage: node dist/src/agent/main.js --server URL --mac MAC [options]

Runs the BootTorrent agent on this host instead of inside phase 1.
  --server URL        the BootTorrent server, e.g. http://127.0.0.1:8080
  --mac MAC           the MAC to ask the boot menu for (aa:bb:cc:dd:ee:ff)
  --dir DIR           download folder (default ${DEFAULT_DIR})
  --no-network        do not bring up NICs or run DHCP (use the host's network)
  --dry-run           do everything up to the load, print what would run, exit 0
  --port N            TCP port for peers (default ${DEFAULT_PORT}; 0 picks a free one)
  --stall-timeout S   seconds without progress before a download fails (default ${DEFAULT_STALL_SECONDS})
  --share-phase1 FILE serve FILE as this client's phase-1 payload to later clients (as phase 1 does)
  --share-port N      its TCP port (default ${PHASE1_SHARE_PORT}; 0 picks a free one)
  --hold NAME:SHA,... with --share-phase1: when the server asks, fetch these phase-1 files
                      (SHA-256 checked) and serve them to later clients' GRUB too
  --server-key FILE   refuse boot configs not signed by this public key (the server's
                      <env>/.boottorrent/signing-key.pub.pem; phase 1 always checks)
  -v, --verbose       debug lines on stderr`;

function usage(message: string): never {
  throw new BootTorrentError('BT_ERR_USAGE', `${message}\n\n${HOST_USAGE}`);
}

function checkServer(raw: string, where: string): string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return usage(`${where}: not a URL: ${JSON.stringify(raw)}`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') usage(`${where}: must be an http:// URL`);
  return raw.replace(/\/+$/, '');
}

function checkMac(raw: string, where: string): string {
  return normalizeMac(raw) ?? usage(`${where}: not a MAC address: ${JSON.stringify(raw)}`);
}

/** `boottorrent.mac=auto`, resolved by main.ts (efi-boot-nic.ts) before the agent starts. */
export const AUTO_MAC = 'auto';

/** `key=value` words of a kernel command line (ours has no quoting). */
export function kernelParams(text: string): Map<string, string> {
  const params = new Map<string, string>();
  for (const word of text.trim().split(/\s+/)) {
    const eq = word.indexOf('=');
    if (eq > 0) params.set(word.slice(0, eq), word.slice(eq + 1));
  }
  return params;
}

/** The phase-1 settings from /proc/cmdline's text; throws BT_ERR_USAGE naming what is missing. */
export function argsFromKernelCmdline(text: string): AgentArgs {
  const p = kernelParams(text);
  const server = p.get('boottorrent.server');
  const mac = p.get('boottorrent.mac');
  if (server === undefined || mac === undefined) {
    throw new BootTorrentError(
      'BT_ERR_USAGE',
      `the kernel command line lacks ${server === undefined ? 'boottorrent.server=' : 'boottorrent.mac='}: ` +
        "phase 1 must be started by the BootTorrent server's iPXE script",
    );
  }
  return {
    server: checkServer(server, 'boottorrent.server'),
    // A signed phase-1 image has one command line for all: the agent asks the firmware (main.ts).
    mac: mac === 'auto' ? AUTO_MAC : checkMac(mac, 'boottorrent.mac'),
    dir: DEFAULT_DIR,
    network: true,
    dryRun: false,
    hostMode: false,
    verbose: p.has('boottorrent.debug'),
    stallSeconds: DEFAULT_STALL_SECONDS,
    port: DEFAULT_PORT,
    // Stage 0 leaves it there when phase 1 came through it; otherwise there is nothing to serve.
    shareFile: PHASE1_PAYLOAD_PATH,
    sharePort: PHASE1_SHARE_PORT,
    serverKey: PHASE1_SERVER_KEY_PATH,
    ...(parseHold(p.get('boottorrent.hold')) ? { hold: parseHold(p.get('boottorrent.hold'))! } : {}),
  };
}

/** Host mode: the flags after `main.js`. Throws BT_ERR_USAGE with the usage text. */
export function argsFromFlags(argv: readonly string[]): AgentArgs {
  let values;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      options: {
        server: { type: 'string' },
        mac: { type: 'string' },
        dir: { type: 'string' },
        'no-network': { type: 'boolean' },
        'dry-run': { type: 'boolean' },
        port: { type: 'string' },
        'stall-timeout': { type: 'string' },
        'share-phase1': { type: 'string' },
        'share-port': { type: 'string' },
        'server-key': { type: 'string' },
        hold: { type: 'string' },
        verbose: { type: 'boolean', short: 'v' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    return usage((err as Error).message);
  }
  if (values.server === undefined) usage('--server is required');
  if (values.mac === undefined) usage('--mac is required');
  const port = Number(values.port ?? DEFAULT_PORT);
  if (!Number.isInteger(port) || port < 0 || port > 65535) usage(`--port ${values.port}: expected 0..65535`);
  const stall = Number(values['stall-timeout'] ?? DEFAULT_STALL_SECONDS);
  if (!Number.isFinite(stall) || stall <= 0)
    usage(`--stall-timeout ${values['stall-timeout']}: expected seconds > 0`);
  const hold = values.hold === undefined ? undefined : parseHold(values.hold);
  if (values.hold !== undefined && !hold)
    usage(`--hold ${values.hold}: expected NAME:SHA256[,NAME:SHA256...]`);
  const sharePort = Number(values['share-port'] ?? PHASE1_SHARE_PORT);
  if (!Number.isInteger(sharePort) || sharePort < 0 || sharePort > 65535)
    usage(`--share-port ${values['share-port']}: expected 0..65535`);
  return {
    server: checkServer(values.server, '--server'),
    mac: checkMac(values.mac, '--mac'),
    dir: values.dir ?? DEFAULT_DIR,
    network: !(values['no-network'] ?? false),
    dryRun: values['dry-run'] ?? false,
    hostMode: true,
    verbose: values.verbose ?? false,
    stallSeconds: stall,
    port,
    ...(values['share-phase1'] !== undefined ? { shareFile: values['share-phase1'] } : {}),
    sharePort,
    ...(values['server-key'] !== undefined ? { serverKey: values['server-key'] } : {}),
    ...(hold ? { hold } : {}),
  };
}
