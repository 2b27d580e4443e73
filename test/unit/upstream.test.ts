/**
 * A satellite's upstream (src/server/upstream.ts) against upstreams on
 * loopback that lie: the real OS library and seeder on the satellite's
 * side, a real seeder holding the OS's data, and an HTTP server in the
 * upstream's place whose catalog and torrent the test chooses (what a
 * man in the middle, or a broken upstream, would send).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import {
  CATALOG_KIND,
  CATALOG_VERSION,
  parseCatalog,
  type BootOs,
  type Catalog,
} from '../../src/boot-config.js';
import { OsLibrary } from '../../src/server/os-library.js';
import { signatureFor } from '../../src/server/signing.js';
import { Upstream } from '../../src/server/upstream.js';
import { BitTorrentClient } from '../../src/swarm/client.js';
import { createTorrent } from '../../src/torrent/create.js';
import { memoryLogger } from '../../src/util/logger.js';
import { until } from '../helpers/faults-peers.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';

interface Origin {
  url: string;
  key: KeyObject;
  publicPem: string;
  /** What the fake upstream answers next. */
  catalog: Catalog;
  torrents: Map<string, Buffer>;
  /** Sign with another key (a man in the middle without the upstream's key). */
  forge?: KeyObject;
  requests: string[];
  seedPort: number;
  os: BootOs;
  files: Record<string, Buffer>;
}

/**
 * OS folder `alpha` holding `files`, its torrent seeded on loopback by its
 * own client (at most `uploadLimit` bytes/s), and each file's catalog entry.
 */
async function seededAlpha(t: TestContext, files: Record<string, Buffer>, uploadLimit?: number) {
  const dir = tempDir(t, 'bt-origin-');
  mkdirSync(join(dir, 'alpha'));
  for (const [n, d] of Object.entries(files)) writeFileSync(join(dir, 'alpha', n), d);
  const { torrent, meta } = await createTorrent(join(dir, 'alpha'), { name: 'alpha', pieceLength: 65536 });
  const seeder = new BitTorrentClient({ host: '127.0.0.1', port: 0 });
  await seeder.listen();
  t.after(() => seeder.close());
  await seeder.add({
    meta,
    dir,
    mode: 'seed',
    trackers: [],
    pex: false,
    locality: false,
    ...(uploadLimit ? { uploadLimit } : {}),
  });
  const bootFiles = Object.entries(files)
    .map(([path, d]) => ({ path, length: d.length, sha256: createHash('sha256').update(d).digest('hex') }))
    .sort((a, b) => a.path.localeCompare(b.path));
  return { torrent, meta, seeder, bootFiles };
}

/** An OS folder (two files), its torrent seeded on loopback, and an HTTP upstream serving a catalog of it. */
async function origin(t: TestContext): Promise<Origin> {
  const files = { vmlinuz: pseudoRandomBytes(300_000, 7), 'initrd.img': pseudoRandomBytes(500_000, 8) };
  const { torrent, meta, seeder, bootFiles } = await seededAlpha(t, files);
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const o = {
    url: '',
    key: privateKey,
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    torrents: new Map([['alpha', torrent]]),
    requests: [] as string[],
    seedPort: seeder.listenPort,
    files,
  } as unknown as Origin;
  o.os = {
    id: 'alpha',
    name: 'Alpha',
    torrentUrl: 'http://x/api/v1/torrent/alpha.torrent',
    infoHash: meta.infoHashHex,
    files: bootFiles,
    method: 'kexec',
    kernel: 'vmlinuz',
    initrd: ['initrd.img'],
    cmdline: 'quiet',
  };
  const srv: Server = createServer((req, res) => {
    o.requests.push(req.url ?? '');
    if (req.url === '/api/v1/catalog') {
      const body = Buffer.from(JSON.stringify(o.catalog));
      res.writeHead(200, { 'x-boottorrent-signature': signatureFor(o.forge ?? o.key, body) }).end(body);
    } else if (req.url === '/api/v1/server-key.pem') res.end(o.publicPem);
    else if (req.url?.startsWith('/api/v1/torrent/')) {
      const id = decodeURIComponent(req.url.slice('/api/v1/torrent/'.length).replace(/\.torrent$/, ''));
      const tb = o.torrents.get(id);
      if (tb) res.end(tb);
      else res.writeHead(404).end();
    } else res.writeHead(404).end();
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.after(() => new Promise((r) => srv.close(r)));
  o.url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  o.catalog = catalogOf(o, [o.os]);
  return o;
}

function catalogOf(o: Origin, oss: BootOs[], issued = Date.now()): Catalog {
  return {
    kind: CATALOG_KIND,
    version: CATALOG_VERSION,
    server: o.url,
    issued,
    defaultOs: oss[0]?.id ?? null,
    trackers: [],
    seeds: [`127.0.0.1:${o.seedPort}`],
    oss,
  };
}

/** A satellite's library and upstream on loopback; closed with the test. */
async function satellite(t: TestContext, o: Origin, opts: { stateDir?: string; pinned?: boolean } = {}) {
  const stateDir = opts.stateDir ?? tempDir(t, 'bt-sat-state-');
  const log = memoryLogger();
  let keyFile: string | null = null;
  if (opts.pinned !== false) {
    keyFile = join(stateDir, '..', `pinned-${Date.now()}.pem`);
    writeFileSync(keyFile, o.publicPem);
  }
  const library = new OsLibrary(
    { cacheDir: join(stateDir, 'torrents'), seedPort: 0, seedTrackers: [], pex: false },
    { logger: log, onListenerError: () => undefined },
  );
  const up = new Upstream(
    { url: o.url, keyFile, stateDir, pollMs: 3_600_000, timeoutMs: 5000 },
    { library, logger: log },
  );
  await up.load();
  await library.listen();
  t.after(async () => {
    await up.close();
    await library.close();
  });
  const said = (re: RegExp) => log.lines.some((l) => re.test(`${l.msg} ${JSON.stringify(l.fields ?? {})}`));
  /** Until the library offers `id` (the log in the failure message). */
  const served = (id: string) =>
    until(
      () => library.get(id) !== undefined,
      20_000,
      () => JSON.stringify(log.lines),
    );
  return { up, library, log, said, served, stateDir };
}

test('upstream: a signed catalog is fetched from the swarm, checked and served; kept for a restart with the upstream gone', async (t) => {
  const o = await origin(t);
  const s = await satellite(t, o);
  await s.up.sync();
  await s.served('alpha');
  const e = s.library.get('alpha')!;
  assert.equal(e.meta.infoHashHex, o.os.infoHash);
  assert.deepEqual(e.files, o.os.files);
  assert.match(e.os.dir, /upstream\/data\/[0-9a-f]{40}\/alpha$/);
  assert.equal(s.up.status().reachable, true);
  assert.equal(s.up.defaultOs(), 'alpha');

  // A second satellite process on the same state folder, the upstream unreachable: it serves what it kept.
  await s.up.close();
  await s.library.close();
  const gone = { ...o, url: 'http://127.0.0.1:9' };
  const again = await satellite(t, gone, { stateDir: s.stateDir });
  assert.equal(again.library.get('alpha')?.meta.infoHashHex, o.os.infoHash, 'served from the kept catalog');
  await again.up.sync();
  assert.equal(again.up.status().reachable, false);
  assert.ok(again.said(/cannot take the catalog from the upstream/));
  assert.equal(again.library.get('alpha')?.meta.infoHashHex, o.os.infoHash, 'still served');
});

test('upstream: a forged signature, an older catalog and a torrent that is not the catalog one are refused', async (t) => {
  const o = await origin(t);
  const s = await satellite(t, o);
  // Signed with another key: refused, nothing kept, nothing served.
  o.forge = generateKeyPairSync('ed25519').privateKey;
  await s.up.sync();
  assert.ok(s.said(/not signed by the upstream's key/));
  assert.equal(existsSync(join(s.stateDir, 'upstream', 'catalog.signed')), false);
  assert.equal(s.library.entries().length, 0);
  delete o.forge;

  // The torrent the upstream gives has another infohash than its catalog: not fetched.
  const liar = { ...o.os, infoHash: 'f'.repeat(40) };
  o.catalog = catalogOf(o, [liar], Date.now());
  await s.up.sync();
  assert.ok(s.said(/does not match its catalog: its infohash is/), JSON.stringify(s.log.lines));
  assert.equal(s.library.entries().length, 0);

  // The genuine catalog, then an older one (a replay): the older one is refused, the OS stays.
  o.catalog = catalogOf(o, [o.os], Date.now() + 1000);
  await s.up.sync();
  await s.served('alpha');
  o.catalog = catalogOf(o, [], Date.now() - 60_000);
  await s.up.sync();
  assert.ok(s.said(/older than the one this server has/));
  assert.ok(s.library.get('alpha'), 'a replayed empty catalog does not remove the OS');
});

test('upstream: data that does not match the catalog SHA-256 is never served, removed, and not fetched again at once', async (t) => {
  const o = await origin(t);
  // The catalog says another SHA-256 for one file (the torrent and data agree with each other).
  const bad = { ...o.os, files: o.os.files.map((f, i) => (i === 0 ? { ...f, sha256: '0'.repeat(64) } : f)) };
  o.catalog = catalogOf(o, [bad]);
  const s = await satellite(t, o);
  await s.up.sync();
  await until(
    () => s.said(/does not match its catalog; not served/),
    20_000,
    () => JSON.stringify(s.log.lines),
  );
  assert.equal(s.library.get('alpha'), undefined);
  assert.deepEqual(readdirSync(join(s.stateDir, 'upstream', 'data')), [], 'its data is removed');
  const torrentAsks = () => o.requests.filter((r) => r.startsWith('/api/v1/torrent/')).length;
  const before = torrentAsks();
  await s.up.sync();
  assert.equal(torrentAsks(), before, 'not fetched again on the next look');
});

test('upstream: without a pinned key the first key is kept, and a later different key is refused', async (t) => {
  const o = await origin(t);
  const s = await satellite(t, o, { pinned: false });
  await s.up.sync();
  assert.ok(existsSync(join(s.stateDir, 'upstream-key.pem')));
  assert.ok(s.said(/kept the upstream's key as first seen/));
  await s.served('alpha');
  // A new key pair answers now (a rogue server in the upstream's place).
  const rogue = generateKeyPairSync('ed25519');
  o.key = rogue.privateKey;
  o.publicPem = rogue.publicKey.export({ type: 'spki', format: 'pem' }).toString();
  o.catalog = catalogOf(o, [], Date.now() + 1000);
  await s.up.sync();
  assert.ok(s.said(/not signed by the upstream's key/));
  assert.ok(s.library.get('alpha'), 'the rogue catalog changed nothing');
});

test('upstream: a new version of an OS is fetched while the old one is served, then replaces it (old data removed)', async (t) => {
  const o = await origin(t);
  const s = await satellite(t, o);
  await s.up.sync();
  await s.served('alpha');
  const v1 = s.library.get('alpha')!;
  // Version 2: other data, seeded by its own client (throttled, so the switch can be watched).
  const files = { vmlinuz: pseudoRandomBytes(300_000, 17), 'initrd.img': pseudoRandomBytes(900_000, 18) };
  const { torrent, meta, seeder, bootFiles } = await seededAlpha(t, files, 400_000);
  const v2: BootOs = { ...o.os, infoHash: meta.infoHashHex, files: bootFiles };
  o.torrents.set('alpha', torrent);
  o.catalog = { ...catalogOf(o, [v2], Date.now() + 1000), seeds: [`127.0.0.1:${seeder.listenPort}`] };
  await s.up.sync();
  // While version 2 comes (about 3 s at 400 kB/s), version 1 is served, its data in place.
  assert.equal(s.library.get('alpha')?.meta.infoHashHex, v1.meta.infoHashHex);
  assert.ok(existsSync(join(v1.os.dir, 'vmlinuz')), 'the served version keeps its data');
  assert.deepEqual(
    s.up.status().fetching.map((f) => f.id),
    ['alpha'],
  );
  await until(
    () => s.library.get('alpha')?.meta.infoHashHex === meta.infoHashHex,
    30_000,
    () => JSON.stringify(s.log.lines),
  );
  assert.deepEqual(s.library.get('alpha')!.files, v2.files);
  // The new version is served first; the old one's data goes right after (not in the same tick).
  await until(
    () => !existsSync(v1.os.dir),
    10_000,
    () => `the old version is removed once replaced: ${v1.os.dir} is still there`,
  );
});

test('parseCatalog: only a catalog (kind), each OS once, each file path once, safe ids', () => {
  const os = {
    id: 'alpha',
    name: 'Alpha',
    torrentUrl: 'http://x/t',
    infoHash: 'a'.repeat(40),
    files: [{ path: 'k', length: 1, sha256: 'b'.repeat(64) }],
    method: 'bin',
    bin: 'k',
    args: [],
  };
  const cat = (over: Record<string, unknown>) =>
    JSON.stringify({
      kind: CATALOG_KIND,
      version: CATALOG_VERSION,
      server: 'http://10.0.0.1',
      issued: 1,
      defaultOs: 'alpha',
      trackers: [],
      seeds: [],
      oss: [os],
      ...over,
    });
  assert.equal(parseCatalog(cat({})).oss[0]!.id, 'alpha');
  assert.throws(() => parseCatalog(cat({ kind: undefined, mac: '02:00:00:00:00:01' })), /kind/);
  assert.throws(() => parseCatalog(cat({ oss: [os, os] })), /twice/);
  assert.throws(
    () =>
      parseCatalog(
        cat({ oss: [{ ...os, files: [os.files[0], { ...os.files[0], sha256: 'c'.repeat(64) }] }] }),
      ),
    /lists one path twice/,
  );
  for (const id of ['..', '.', 'a/b', 'a\\b'])
    assert.throws(() => parseCatalog(cat({ oss: [{ ...os, id }], defaultOs: null })), /id/, id);
  assert.equal(parseCatalog(cat({ defaultOs: 'nope' })).defaultOs, null, 'a default not in the list is none');
});
