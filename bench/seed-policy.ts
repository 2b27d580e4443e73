/**
 * The seed policy on loopback: one upload-capped seeder and N leechers of
 * ours through our tracker, `plain` (serve every request) against `spread`
 * (reject a piece already sent elsewhere while others never left the seed).
 *
 *   npm run bench:seed-policy -- [--clients 8] [--size 64M] [--seeder-rate 16M] [--runs 3]
 *
 * Appends a block to bench/results/seed-policy.md. Loopback has no link
 * limits but the seeder's cap, so this isolates what the policy changes:
 * copies the seeder sends and the time until every leecher is done.
 */
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { randomBytes } from 'node:crypto';
import { createTorrent } from '../src/torrent/create.js';
import { BitTorrentClient } from '../src/swarm/client.js';
import { TrackerServer } from '../src/tracker/server.js';

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '8' },
    size: { type: 'string', default: '64M' },
    'seeder-rate': { type: 'string', default: '16M' },
    runs: { type: 'string', default: '3' },
  },
});
const MiB = 1 << 20;
const parse = (s: string) =>
  Number(/^\d+/.exec(s)![0]) * ({ K: 1024, M: MiB, G: 1024 * MiB }[s.at(-1)!.toUpperCase()] ?? 1);
const N = Number(values.clients);
const size = parse(values.size);
const rate = parse(values['seeder-rate']);
const runs = Number(values.runs);

async function once(policy: 'plain' | 'spread') {
  const dir = mkdtempSync(join(tmpdir(), 'bt-bench-seed-'));
  const clients: BitTorrentClient[] = [];
  const tracker = new TrackerServer({ host: '127.0.0.1', port: 0, intervalSeconds: 5 });
  try {
    const { port } = await tracker.listen();
    mkdirSync(join(dir, 'seed'));
    writeFileSync(join(dir, 'seed', 'img'), randomBytes(size));
    const { meta } = await createTorrent(join(dir, 'seed', 'img'), {
      pieceLength: 256 * 1024,
      announce: [[`http://127.0.0.1:${port}/announce`]],
    });
    tracker.add(meta.infoHash);
    const add = async (d: string, mode: 'seed' | 'download', extra = {}) => {
      const c = new BitTorrentClient({ host: '127.0.0.1', port: 0 });
      clients.push(c);
      await c.listen();
      // Every client here is 127.0.0.1: lift the per-address cap a LAN needs.
      return c.add({ meta, dir: d, mode, establishedPerIp: Infinity, ...extra });
    };
    const seed = await add(join(dir, 'seed'), 'seed', { uploadLimit: rate, seedPolicy: policy });
    const t0 = Date.now();
    const leechers = [];
    for (let i = 0; i < N; i++) leechers.push(await add(join(dir, `l${i}`), 'download'));
    await Promise.all(leechers.map((l) => l.whenComplete()));
    return { secs: (Date.now() - t0) / 1000, copies: seed.stats().uploaded / meta.length };
  } finally {
    for (const c of clients) await c.close();
    await tracker.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const rows: string[] = [];
for (const policy of ['plain', 'spread'] as const) {
  const r = [];
  for (let i = 0; i < runs; i++) r.push(await once(policy));
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  rows.push(
    `| ${policy} | ${med(r.map((x) => x.secs)).toFixed(2)} | ${med(r.map((x) => x.copies)).toFixed(2)} | ${r.map((x) => `${x.secs.toFixed(2)} s / ${x.copies.toFixed(2)}`).join(', ')} |`,
  );
}
const block = [
  `## ${new Date().toISOString()}`,
  '',
  `- machine: ${cpus().length} x ${cpus()[0]?.model ?? '?'}, Node ${process.version}`,
  `- command: \`npm run bench:seed-policy -- --clients ${N} --size ${values.size} --seeder-rate ${values['seeder-rate']} --runs ${runs}\``,
  `- ${N} leechers of ours, one seeder capped at ${values['seeder-rate']}iB/s, ${values.size}iB image, 256 KiB pieces, loopback; lower bound F/u_s = ${(size / rate).toFixed(1)} s; median of ${runs}`,
  '',
  '| policy | time until all done (s) | copies the seeder sent | runs (time / copies) |',
  '| --- | ---: | ---: | --- |',
  ...rows,
  '',
].join('\n');
process.stdout.write(block);
const out = new URL('../../bench/results/seed-policy.md', import.meta.url).pathname;
if (!existsSync(out)) appendFileSync(out, '# Seed policy: plain against spread\n\n');
appendFileSync(out, `${block}\n`);
