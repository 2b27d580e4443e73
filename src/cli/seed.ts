/** `boottorrent seed <file.torrent> <data-path>`: serve a torrent's data to peers until stopped. */
import { existsSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { once } from 'node:events';
import { BitTorrentClient } from '../swarm/client.js';
import { streamLogger } from '../util/logger.js';
import { EXIT_OK, Progress, UsageError, formatBytes, parse, parseSize, type Io } from './common.js';
import { PEER_OPTIONS, loadTorrentFile, peerSettings, progressLine } from './swarm-common.js';

const HELP = `Usage: boottorrent seed <file.torrent> <data-path> [options]

Checks the data against the torrent, then serves it to peers until Ctrl-C.
<data-path> is the file or folder the torrent was made from, or the folder
that holds it.

  --port N            TCP port for peers (default 6881; 0 picks a free one)
  --host H            address to accept peers on (default 0.0.0.0)
  --tracker URL       announce here instead of the torrent's trackers; repeatable
  --peer HOST:PORT    connect to this peer too; repeatable
  --upload-limit R    cap the upload rate (bytes/s, e.g. 10M)
  --choker MODE       lan (unchoke every interested peer, default) or standard
  --lsd ADDRESS       find peers on this interface's LAN by Local Service Discovery
                      (BEP 14; give the interface's IPv4 address)
  -v, --verbose       log peers and pieces`;

export async function run(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(
    argv,
    {
      ...PEER_OPTIONS,
      'upload-limit': { type: 'string' },
    },
    HELP,
  );
  if (values.help) {
    io.stdout.write(`${HELP}\n`);
    return EXIT_OK;
  }
  if (positionals.length !== 2) throw new UsageError('seed takes <file.torrent> and <data-path>', HELP);
  const net = peerSettings(values, HELP);
  const meta = await loadTorrentFile(positionals[0]!);
  const data = resolve(positionals[1]!);
  // The torrent's root (file or folder) is <dir>/<name>: accept either form.
  const dir = basename(data) === meta.name && existsSync(data) ? dirname(data) : data;
  const logger = streamLogger(io.stderr, { level: net.verbose ? 'debug' : 'warn' });
  const client = new BitTorrentClient({ host: net.host, port: net.port }, { logger, signal: io.signal });
  const progress = new Progress(io.stderr);
  try {
    const port = await client.listen();
    io.stdout.write(`checking ${formatBytes(meta.length)} of ${meta.name} in ${dir}\n`);
    const session = await client.add({
      meta,
      dir,
      mode: 'seed',
      choker: net.choker,
      ...(net.trackers ? { trackers: net.trackers } : {}),
      peers: net.peers,
      ...(net.lsdInterface ? { lsdInterface: net.lsdInterface } : {}),
      ...(values['upload-limit']
        ? { uploadLimit: parseSize(values['upload-limit'], '--upload-limit', HELP) }
        : {}),
    });
    io.stdout.write(`seeding ${meta.infoHashHex} on port ${port}; Ctrl-C stops\n`);
    const timer = setInterval(() => progress.update(progressLine(session.stats())), 1000);
    try {
      if (!io.signal.aborted) await once(io.signal, 'abort');
    } finally {
      clearInterval(timer);
      progress.done();
    }
    const s = session.stats();
    io.stdout.write(`stopped: uploaded ${formatBytes(s.uploaded)} (ratio ${s.ratio.toFixed(2)})\n`);
    return EXIT_OK;
  } finally {
    await client.close();
  }
}
