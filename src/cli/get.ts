/** `boottorrent get <file.torrent>`: download, verify, optionally keep seeding. */
import { setTimeout as sleep } from 'node:timers/promises';
import { BitTorrentClient } from '../swarm/client.js';
import { streamLogger } from '../util/logger.js';
import { EXIT_OK, Progress, UsageError, formatBytes, parse, type Io } from './common.js';
import { PEER_OPTIONS, formatRate, loadTorrentFile, peerSettings, progressLine } from './swarm-common.js';
import { parseMagnet } from '../torrent/magnet.js';
import { fetchMetadata } from '../swarm/metadata-fetch.js';

const HELP = `Usage: boottorrent get <file.torrent | magnet:?xt=urn:btih:...> [options]

Downloads a torrent, checking every piece, into -o DIR (default: here).
With a magnet link the torrent's metadata is first fetched from peers (BEP 9).
Data already there is checked and kept (resume).

  -o, --output DIR      where to put the data (default: current folder)
  --seed-time SECONDS   keep seeding this long after the download (default 0)
  --port N              TCP port for peers (default 6881; 0 picks a free one)
  --host H              address to accept peers on (default 0.0.0.0)
  --tracker URL         announce here instead of the torrent's trackers; repeatable
  --peer HOST:PORT      connect to this peer too (e.g. the server's seeder); repeatable
  --choker MODE         lan (default) or standard
  --lsd ADDRESS         find peers on this interface's LAN by Local Service Discovery
                        (BEP 14; give the interface's IPv4 address)
  -v, --verbose         log peers and pieces`;

export async function run(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(
    argv,
    {
      output: { type: 'string', short: 'o' },
      'seed-time': { type: 'string' },
      ...PEER_OPTIONS,
    },
    HELP,
  );
  if (values.help) {
    io.stdout.write(`${HELP}\n`);
    return EXIT_OK;
  }
  if (positionals.length !== 1) throw new UsageError('get takes one <file.torrent> or magnet link', HELP);
  const seedTime = Number(values['seed-time'] ?? 0);
  if (!Number.isFinite(seedTime) || seedTime < 0) {
    throw new UsageError(`--seed-time ${values['seed-time']}: expected seconds >= 0`, HELP);
  }
  const net = peerSettings(values, HELP);
  const source = positionals[0]!;
  const magnet = source.startsWith('magnet:') ? parseMagnet(source) : undefined;
  let meta = magnet ? undefined : await loadTorrentFile(source);
  const dir = values.output ?? '.';
  const logger = streamLogger(io.stderr, { level: net.verbose ? 'debug' : 'warn' });
  const client = new BitTorrentClient({ host: net.host, port: net.port }, { logger, signal: io.signal });
  const progress = new Progress(io.stderr);
  try {
    await client.listen();
    if (magnet) {
      io.stdout.write(`fetching the torrent's metadata for ${magnet.infoHashHex} from peers\n`);
      meta = await fetchMetadata(
        { magnet, peerId: client.peerId, listenPort: client.listenPort, peers: net.peers },
        { logger, signal: io.signal, trackerClient: client.tracker },
      );
      io.stdout.write(
        `metadata: ${meta.name}, ${formatBytes(meta.length)} in ${meta.files.length} file(s)\n`,
      );
    }
    if (!meta) throw new Error('unreachable: no metainfo');
    const started = Date.now();
    const session = await client.add({
      meta,
      dir,
      mode: 'download',
      choker: net.choker,
      ...(net.trackers ? { trackers: net.trackers } : {}),
      peers: [...net.peers, ...(magnet?.peers ?? [])],
      ...(net.lsdInterface ? { lsdInterface: net.lsdInterface } : {}),
    });
    session.on('warning', (w) => {
      progress.done();
      io.stderr.write(`warning: ${w}\n`);
    });
    const have = session.stats();
    if (have.piecesHave > 0)
      io.stdout.write(`resuming: ${have.piecesHave} of ${have.pieceCount} pieces already here\n`);
    const timer = setInterval(() => progress.update(progressLine(session.stats())), 1000);
    try {
      await session.whenComplete();
    } finally {
      clearInterval(timer);
      progress.done();
    }
    const secs = (Date.now() - started) / 1000;
    const s = session.stats();
    io.stdout.write(
      `downloaded ${meta.name} (${formatBytes(meta.length)}, every piece verified) in ${secs.toFixed(1)} s, ` +
        `${formatRate(s.downloaded / Math.max(secs, 0.001))}\n${session.paths.join('\n')}\n`,
    );
    if (seedTime > 0) {
      io.stdout.write(`seeding for ${seedTime} s; Ctrl-C stops\n`);
      const timer2 = setInterval(() => progress.update(progressLine(session.stats())), 1000);
      try {
        await sleep(seedTime * 1000, undefined, { signal: io.signal }).catch(() => undefined);
      } finally {
        clearInterval(timer2);
        progress.done();
      }
      io.stdout.write(
        `uploaded ${formatBytes(session.stats().uploaded)} (ratio ${session.stats().ratio.toFixed(2)})\n`,
      );
    }
    return EXIT_OK;
  } finally {
    await client.close();
  }
}
