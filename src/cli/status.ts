/** `boottorrent status [--env DIR] [--json]`: clients and swarms as the running server sees them. */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { BootTorrentError } from '../errors.js';
import { SERVER_INFO, STATE_DIR, type ServerInfoFile } from '../server/app.js';
import type { ServerSnapshot } from '../server/state.js';
import { sentSummary } from '../server/traffic.js';
import { EXIT_OK, UsageError, formatBytes, parse, type Io } from './common.js';

const HELP = `Usage: boottorrent status [--env DIR] [--json] [--traffic]

Asks the server running the environment in DIR (default .) for its clients
and swarms. --json prints the server's snapshot as JSON. --traffic adds
what the server sent by part (DHCP, TFTP, iPXE over HTTP, boot scripts,
phase-1 files, boot configs, API, tracker, seeder).`;

export async function run(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(
    argv,
    { env: { type: 'string', short: 'e' }, json: { type: 'boolean' }, traffic: { type: 'boolean' } },
    HELP,
  );
  if (values.help) {
    io.stdout.write(`${HELP}\n`);
    return EXIT_OK;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`, HELP);
  const envDir = resolve(values.env ?? '.');
  const infoFile = join(envDir, STATE_DIR, SERVER_INFO);
  let info: ServerInfoFile;
  try {
    info = JSON.parse(await readFile(infoFile, 'utf8')) as ServerInfoFile;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EACCES')
      throw new BootTorrentError(
        'BT_ERR_SERVER',
        `cannot read ${infoFile} (permission denied): run status as root, or as the user that runs the server`,
      );
    throw new BootTorrentError(
      'BT_ERR_SERVER',
      `no server is running for ${envDir} (${infoFile} is missing); start one with \`boottorrent start --env ${envDir}\``,
    );
  }
  let snap: ServerSnapshot;
  try {
    const res = await fetch(new URL('api/v1/status', info.dashboardUrl), {
      signal: AbortSignal.timeout(5000),
    });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    snap = (await res.json()) as ServerSnapshot;
  } catch (err) {
    throw new BootTorrentError(
      'BT_ERR_SERVER',
      `the server for ${envDir} (pid ${info.pid}, ${info.dashboardUrl}) does not answer: ${(err as Error).message}; ` +
        `if it was killed, remove ${infoFile} and start it again`,
    );
  }
  if (values.json) {
    io.stdout.write(`${JSON.stringify(snap, null, 2)}\n`);
    return EXIT_OK;
  }
  const up = Math.round((snap.now - snap.startedAt) / 1000);
  io.stdout.write(
    `server ${snap.server.address} (DHCP ${snap.server.dhcp}), up ${up} s, dashboard ${info.dashboardUrl}\n` +
      `${snap.clients.length} clients: ${snap.totals.booted} booted, ${snap.totals.failed} failed; ` +
      `${sentSummary(snap.totals.sent, snap.totals.delivered)}\n`,
  );
  if (snap.clients.length) {
    io.stdout.write(
      '\nMAC                IP               FIRMWARE        STAGE        OS             PROGRESS  PEERS  RATIO\n',
    );
    for (const c of snap.clients)
      io.stdout.write(
        `${c.mac.padEnd(18)} ${(c.ip ?? '-').padEnd(16)} ${firmwareText(c).padEnd(15)} ${c.stage.padEnd(12)} ${(c.os ?? '-').padEnd(14)} ` +
          `${`${Math.round(c.progress * 100)} %`.padStart(8)}  ${String(c.peers).padStart(5)}  ${c.seedRatio.toFixed(2)}` +
          `${c.error ? `  ${c.error}` : ''}\n`,
      );
  }
  if (values.traffic) {
    io.stdout.write('\nSENT BY PART\n');
    for (const [part, bytes] of Object.entries(snap.totals.sent.parts))
      io.stdout.write(`${part.padEnd(14)} ${formatBytes(bytes).padStart(11)}\n`);
  }
  io.stdout.write('\nOS             SIZE        SEEDERS  LEECHERS  COMPLETED  SERVER SENT\n');
  for (const s of snap.swarms)
    io.stdout.write(
      `${s.os.padEnd(14)} ${formatBytes(s.size).padStart(10)}  ${String(s.seeders).padStart(7)}  ${String(s.leechers).padStart(8)}  ` +
        `${String(s.completed).padStart(9)}  ${formatBytes(s.serverUploaded).padStart(11)}\n`,
    );
  return EXIT_OK;
}

/**
 * The firmware as DHCP saw it, and "SB" when the agent reports Secure Boot
 * enforced (what the client says of itself; only UEFI firmware has it).
 */
export function firmwareText(c: { firmware: string | null; secureBoot: boolean | null }): string {
  const sb = c.secureBoot === true && (c.firmware ?? 'uefi').startsWith('uefi');
  return `${c.firmware ?? '-'}${sb ? ' SB' : ''}`;
}
