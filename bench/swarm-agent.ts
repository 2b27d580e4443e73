/**
 * One benchmark client as the agent runs it: the BitTorrent client is
 * created and listening first (the agent does this before it shows its
 * menu), then the download starts when a line arrives on stdin (the menu's
 * choice). Same engine call as the agent's download step: the torrent, the
 * server's tracker and its seeder as a direct peer, PEX on.
 *
 *   node dist/bench/swarm-agent.js --torrent T --dir D --host IP [--port 6881]
 *        --tracker URL --seed HOST:PORT [--choker lan|standard] [--locality on|off]
 *
 * Prints "ready" once listening, "downloaded <secs>" when every piece is
 * verified, then seeds until SIGTERM. The benchmark starts its clock when
 * it sends the line, so N Node processes starting at once on a small
 * machine (a cost a real client pays before its menu) is not counted.
 */
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { BitTorrentClient } from '../src/swarm/client.js';
import { loadTorrentFile } from '../src/cli/swarm-common.js';
import { streamLogger } from '../src/util/logger.js';

const { values } = parseArgs({
  options: {
    torrent: { type: 'string' },
    dir: { type: 'string' },
    host: { type: 'string' },
    port: { type: 'string', default: '6881' },
    tracker: { type: 'string' },
    seed: { type: 'string' },
    choker: { type: 'string', default: 'lan' },
    locality: { type: 'string', default: 'on' },
  },
});
if (!values.torrent || !values.dir || !values.host || !values.tracker || !values.seed) {
  throw new Error('--torrent, --dir, --host, --tracker and --seed are required');
}
if (values.choker !== 'lan' && values.choker !== 'standard') throw new Error('--choker lan|standard');
const choker = values.choker;
if (values.locality !== 'on' && values.locality !== 'off') throw new Error('--locality on|off');
const meta = await loadTorrentFile(values.torrent);
const client = new BitTorrentClient(
  { host: values.host, port: Number(values.port) },
  { logger: streamLogger(process.stderr, { level: 'warn' }) },
);
await client.listen();
process.stdout.write('ready\n');

const stop = () => {
  void client.close().finally(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (line.trim() !== 'go') continue;
  const started = Date.now();
  const cpuAtGo = process.cpuUsage();
  const session = await client.add({
    meta,
    dir: values.dir,
    mode: 'download',
    choker,
    trackers: [values.tracker],
    peers: [values.seed],
    pex: true,
    ...(values.locality === 'off' ? { locality: false as const } : {}),
  });
  await session.whenComplete();
  const st = session.stats();
  const cpu = process.cpuUsage(cpuAtGo);
  process.stdout.write(
    `downloaded ${((Date.now() - started) / 1000).toFixed(1)} s: ${st.downloaded} bytes of data received, ` +
      `${st.wasted} wasted (duplicates), ${st.hashFailures} hash failures, ` +
      `CPU ${(cpu.user / 1e6).toFixed(2)} s user + ${(cpu.system / 1e6).toFixed(2)} s system since go\n`,
  );
  break;
}
