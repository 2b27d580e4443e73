/** `boottorrent tracker`: a standalone tracker (HTTP and UDP on one port). */
import { readFile } from 'node:fs/promises';
import { once } from 'node:events';
import { TrackerServer } from '../tracker/server.js';
import { parseTorrent } from '../torrent/metainfo.js';
import { BootTorrentError } from '../errors.js';
import { EXIT_OK, UsageError, parse, parsePort, type Io } from './common.js';

const HELP = `Usage: boottorrent tracker [options]

Runs a BitTorrent tracker: HTTP announce/scrape and UDP (BEP 15) on one port.
By default it answers only the torrents it is told to serve.

  --host H              address to listen on (default 0.0.0.0)
  --port N              TCP and UDP port (default 6969; 0 picks a free one)
  --torrent FILE        serve this torrent's infohash; repeatable
  --infohash HEX        serve this infohash (40 hex digits); repeatable
  --open                serve any infohash (an open tracker)
  --interval SECONDS    announce interval asked of clients (default 60)
  -v, --verbose         log every announce, not only starts, completions and stops`;

export async function run(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(
    argv,
    {
      host: { type: 'string' },
      port: { type: 'string' },
      torrent: { type: 'string', multiple: true },
      infohash: { type: 'string', multiple: true },
      open: { type: 'boolean' },
      interval: { type: 'string' },
      verbose: { type: 'boolean', short: 'v' },
    },
    HELP,
  );
  if (values.help) {
    io.stdout.write(`${HELP}\n`);
    return EXIT_OK;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`, HELP);
  const hashes: string[] = [];
  for (const h of values.infohash ?? []) {
    if (!/^[0-9a-fA-F]{40}$/.test(h)) throw new UsageError(`--infohash ${h}: expected 40 hex digits`, HELP);
    hashes.push(h.toLowerCase());
  }
  for (const file of values.torrent ?? []) {
    const bytes = await readFile(file).catch((err: unknown) => {
      throw new BootTorrentError('BT_ERR_FILE', `cannot read ${file}: ${(err as Error).message}`, {
        cause: err,
      });
    });
    hashes.push(parseTorrent(bytes, file).infoHashHex);
  }
  let interval: number | undefined;
  if (values.interval !== undefined) {
    interval = Number(values.interval);
    if (!Number.isInteger(interval) || interval < 1) {
      throw new UsageError(`--interval ${values.interval}: expected a whole number of seconds >= 1`, HELP);
    }
  }
  const log = (line: string) => io.stdout.write(`${new Date().toISOString()} ${line}\n`);
  const server = new TrackerServer(
    {
      host: values.host ?? '0.0.0.0',
      port: values.port === undefined ? 6969 : parsePort(values.port, '--port', HELP),
      open: values.open ?? false,
      ...(interval !== undefined ? { intervalSeconds: interval } : {}),
    },
    { logger: { debug: () => {}, warn: (m) => log(`warning: ${m}`) } },
  );
  for (const h of hashes) server.add(h);
  server.on('announce', ({ infoHash, event, peer }) => {
    if (event === 'none' && !values.verbose) return;
    const pct = peer.left === 0 ? 'complete' : `left ${peer.left} B`;
    log(`${infoHash.slice(0, 12)} ${event} ${peer.ip}:${peer.port} ${peer.peerIdText} (${pct})`);
  });
  server.on('peer-expired', ({ infoHash, peer }) =>
    log(`${infoHash.slice(0, 12)} expired ${peer.ip}:${peer.port}`),
  );
  const { host, port } = await server.listen();
  log(`tracker on http://${host}:${port}/announce and udp://${host}:${port}`);
  if (values.open) log('open tracker: any infohash is served');
  else if (hashes.length === 0)
    log('serving no infohash yet: every announce is refused (add --torrent FILE or --open)');
  else log(`serving ${hashes.length} infohash(es): ${hashes.join(', ')}`);
  if (!io.signal.aborted) await once(io.signal, 'abort');
  log('stopping');
  await server.close();
  return EXIT_OK;
}
