/** `boottorrent status [--env DIR] [--json]`: clients and swarms as the running server sees them. */
import { BootTorrentError } from '../errors.js';
import { readServerInfo } from './server-api.js';
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
  const { info, envDir, file: infoFile } = await readServerInfo(values.env ?? '.');
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
      `${sentSummary(snap.totals.sent, snap.totals.delivered)}\n` +
      upstreamText(snap) +
      (snap.server.fetching?.length
        ? `fetching from web seeds (not offered yet): ${snap.server.fetching.map((f) => `${f.id} ${Math.round(f.progress * 100)} %`).join(', ')}\n`
        : ''),
  );
  if (snap.clients.length) {
    const nameWidth = Math.max(4, ...snap.clients.map((c) => (c.name ?? '-').length));
    io.stdout.write(
      `\n${'NAME'.padEnd(nameWidth)} MAC                IP               FIRMWARE        STAGE        OS             PROGRESS  PEERS  RATIO  NEXT BOOT\n`,
    );
    for (const c of snap.clients)
      io.stdout.write(
        `${(c.name ?? '-').padEnd(nameWidth)} ${c.mac.padEnd(18)} ${(c.ip ?? '-').padEnd(16)} ${firmwareText(c).padEnd(15)} ${c.stage.padEnd(12)} ${(c.os ?? '-').padEnd(14)} ` +
          `${`${Math.round(c.progress * 100)} %`.padStart(8)}  ${String(c.peers).padStart(5)}  ${c.seedRatio.toFixed(2).padStart(5)}  ${nextText(c.nextBoot).padEnd(9)}` +
          `${c.error ? `  ${c.error}` : ''}\n`,
      );
  }
  const groups = snap.room?.groups ?? [];
  if (groups.length > 0) {
    io.stdout.write('\nGROUP          NEXT BOOT\n');
    for (const g of groups) io.stdout.write(`${g.name.padEnd(14)} ${nextText(g.nextBoot)}\n`);
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

/** "exam (once)", "exam", or "-". */
export function nextText(n: { os: string; once: boolean } | null | undefined): string {
  return n ? `${n.os}${n.once ? ' (once)' : ''}` : '-';
}

/** A satellite's line: its upstream, whether it answers, what is still being fetched. */
function upstreamText(snap: ServerSnapshot): string {
  const u = snap.server.upstream;
  if (!u) return '';
  const state =
    u.reachable === null
      ? 'not asked yet'
      : u.reachable
        ? 'answers'
        : `does not answer (${u.error ?? 'unknown error'})${u.lastContact ? `, last answered ${Math.round((snap.now - u.lastContact) / 1000)} s ago` : ''}; booting with what this server has`;
  const fetching = u.fetching.map((f) => `${f.id} ${Math.round(f.progress * 100)} %`).join(', ');
  return `satellite of ${u.url}: ${state}${fetching ? `; fetching ${fetching}` : ''}\n`;
}
