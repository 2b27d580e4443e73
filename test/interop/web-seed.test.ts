/**
 * Web seeds (BEP 19, #21 item 3) against real HTTP servers on loopback:
 * nginx (Debian's nginx-light) and our own boot HTTP server. A torrent
 * session with no peer at all downloads a single-file and a multi-file
 * torrent from them by Range requests; a copy with a wrong byte is caught by
 * the piece hash and that web seed dropped; servers that ignore Range, send
 * more than asked or answer 404 are dropped too, and one answering 503 is
 * tried again.
 */
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { createTorrent } from '../../src/torrent/create.js';
import type { Metainfo } from '../../src/torrent/metainfo.js';
import { TorrentSession } from '../../src/swarm/session.js';
import { newPeerId } from '../../src/swarm/client.js';
import { BootHttpServer } from '../../src/http/server.js';
import type { HttpBootPolicy } from '../../src/http/server.js';
import { freePort, freePorts } from '../helpers/env.js';
import { requireProgram } from '../helpers/programs.js';
import { stopWithTest } from '../helpers/reaper.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';
import { BootServer } from '../../src/server/app.js';
import { loadEnvironment } from '../../src/env/index.js';
import { memoryLogger } from '../../src/util/logger.js';
import { AGENT_MAIN } from '../helpers/agent-fixture.js';
import { startProc } from '../helpers/faults-peers.js';

/** Hang guard for one wait; a pass never depends on it. */
const WAIT_MS = 60_000;
const PIECE = 256 * 1024;

interface Fixture {
  dir: string;
  /** Served folder: image.bin (single file) and os/ (multi-file), and bad/ with a wrong byte per piece. */
  root: string;
  single: Metainfo;
  multi: Metainfo;
}

async function fixture(t: TestContext): Promise<Fixture> {
  const dir = tempDir(t, 'bt-webseed-');
  const root = join(dir, 'srv');
  mkdirSync(join(root, 'os', 'sub'), { recursive: true });
  mkdirSync(join(root, 'bad'), { recursive: true });
  // More than one request round (4 MiB): no run asks for the whole file, so a 200 is never an answer.
  const image = pseudoRandomBytes(5 * 1024 * 1024 + 1234, 7);
  writeFileSync(join(root, 'image.bin'), image);
  // Files that do not fall on piece boundaries: runs cross from one file into the next.
  writeFileSync(join(root, 'os', 'a kernel.bin'), pseudoRandomBytes(PIECE + 4321, 8));
  writeFileSync(join(root, 'os', 'sub', 'initrd.img'), pseudoRandomBytes(600 * 1024 + 17, 9));
  writeFileSync(join(root, 'os', 'sub', 'z.txt'), 'tail\n');
  const bad = Buffer.from(image);
  for (let i = 0; i < bad.length; i += PIECE) bad[i + 100] = bad[i + 100]! ^ 0xff;
  writeFileSync(join(root, 'bad', 'image.bin'), bad);
  const single = (await createTorrent(join(root, 'image.bin'), { pieceLength: PIECE })).meta;
  const multi = (await createTorrent(join(root, 'os'), { pieceLength: PIECE })).meta;
  return { dir, root, single, multi };
}

/** nginx serving `root` under /files/ on loopback, logging every request with its status. */
async function nginx(t: TestContext, dir: string, root: string): Promise<{ base: string; log: string }> {
  const bin = requireProgram('nginx', 'nginx-light');
  const port = await freePort();
  const d = join(dir, 'nginx');
  mkdirSync(join(d, 'tmp'), { recursive: true });
  const log = join(d, 'access.log');
  const tmp = (k: string): string => `${k} ${join(d, 'tmp')};`;
  writeFileSync(
    join(d, 'nginx.conf'),
    [
      'master_process off;',
      'worker_processes 1;',
      `pid ${join(d, 'nginx.pid')};`,
      `error_log ${join(d, 'error.log')} warn;`,
      'events { worker_connections 64; }',
      'http {',
      "  log_format ranges '$status $request_method $uri $http_range $body_bytes_sent';",
      `  access_log ${log} ranges;`,
      '  default_type application/octet-stream;',
      `  ${tmp('client_body_temp_path')} ${tmp('proxy_temp_path')} ${tmp('fastcgi_temp_path')}`,
      `  ${tmp('uwsgi_temp_path')} ${tmp('scgi_temp_path')}`,
      `  server { listen 127.0.0.1:${port}; location /files/ { alias ${root}/; } }`,
      '}',
      '',
    ].join('\n'),
  );
  const child = spawn(bin, ['-p', d, '-c', join(d, 'nginx.conf'), '-g', 'daemon off;'], { stdio: 'ignore' });
  stopWithTest(t, child, 'SIGTERM', 5_000);
  const base = `http://127.0.0.1:${port}/files/`;
  // nginx prints nothing when it is up: poll until it answers.
  for (let i = 0; ; i++) {
    const ok = await fetch(`${base}image.bin`, { method: 'HEAD' }).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (i > 200 || child.exitCode !== null) throw new Error(`nginx did not start: ${readLog(d)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { base, log };
}

function readLog(d: string): string {
  try {
    return readFileSync(join(d, 'error.log'), 'utf8');
  } catch {
    return '(no error log)';
  }
}

async function download(
  t: TestContext,
  meta: Metainfo,
  webSeeds: string[],
  extra: Partial<ConstructorParameters<typeof TorrentSession>[0]> = {},
): Promise<{ session: TorrentSession; dir: string }> {
  const dir = tempDir(t, 'bt-webseed-dl-');
  const session = new TorrentSession({
    meta,
    dir,
    mode: 'download',
    peerId: newPeerId(),
    listenPort: 1,
    trackers: [],
    webSeeds,
    ...extra,
  });
  t.after(() => session.stop());
  await session.start();
  return { session, dir };
}

async function until(what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`no ${what} within ${WAIT_MS} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function sameFiles(meta: Metainfo, got: string, want: string): void {
  for (const f of meta.files) {
    const rel = meta.singleFile ? [meta.name] : [meta.name, ...f.path];
    assert.ok(
      readFileSync(join(got, ...rel)).equals(readFileSync(join(want, ...(meta.singleFile ? [] : f.path)))),
      `${rel.join('/')} is byte for byte the served file`,
    );
  }
}

test('a session with no peers downloads a single-file torrent from nginx and a multi-file one from our HTTP server, by Range requests', async (t) => {
  const fx = await fixture(t);
  const ng = await nginx(t, fx.dir, fx.root);
  const { session, dir } = await download(t, fx.single, [`${ng.base}image.bin`]);
  await session.whenComplete();
  sameFiles(fx.single, dir, join(fx.root, 'image.bin'));
  const st = session.stats().webSeeds[0]!;
  assert.equal(st.downloaded, fx.single.length, 'every byte came from the web seed');
  assert.notEqual(st.state, 'dropped');
  const lines = readFileSync(ng.log, 'utf8')
    .trim()
    .split('\n')
    .filter((l) => l.includes('/files/image.bin'));
  const gets = lines.filter((l) => / GET /.test(l));
  assert.ok(
    gets.length >= 1 && gets.every((l) => /^206 GET \/files\/image\.bin bytes=\d+-\d+ \d+$/.test(l)),
    gets.join('\n'),
  );
  const served = gets.reduce((n, l) => n + Number(l.split(' ').at(-1)), 0);
  assert.equal(served, fx.single.length, 'nginx sent each byte once');

  // Ours: a folder URL (ending in "/") holding the torrent's folder, names with spaces percent-encoded.
  const policy: HttpBootPolicy = {
    phaseOneFor: () => ({ refused: 'no' }),
    bootConfigFor: () => undefined,
    payloadSourceFor: () => undefined,
    payloadBlocks: () => undefined,
  } as unknown as HttpBootPolicy;
  const http = new BootHttpServer({ host: '127.0.0.1', port: 0, mounts: { '/oss/': fx.root } }, { policy });
  const port = await http.listen();
  t.after(() => http.close());
  const multi = await download(t, fx.multi, [`http://127.0.0.1:${port}/oss/`]);
  await multi.session.whenComplete();
  sameFiles(fx.multi, multi.dir, join(fx.root, 'os'));
  assert.equal(multi.session.stats().webSeeds[0]!.downloaded, fx.multi.length);
  assert.ok(
    multi.session.stats().webSeeds[0]!.requests > fx.multi.pieceCount / 16,
    'one request per file a run crosses',
  );
});

test('a wrong byte from a web seed is caught by the piece hash and that web seed is dropped; a good one finishes', async (t) => {
  const fx = await fixture(t);
  const ng = await nginx(t, fx.dir, fx.root);
  // The bad copy alone: its first piece fails, it is dropped, nothing of it is kept.
  const alone = await download(t, fx.single, [`${ng.base}bad/image.bin`]);
  await until('bad web seed dropped', () => alone.session.stats().webSeeds[0]!.state === 'dropped');
  const st = alone.session.stats();
  assert.match(String(st.webSeeds[0]!.reason), /failed the hash check of piece \d+/);
  assert.ok(st.hashFailures >= 1);
  assert.equal(st.piecesHave, 0, 'no piece of the bad copy was kept');
  await alone.session.stop();

  // Bad and good together (one request round each at a time): the download completes, correct.
  const both = await download(t, fx.single, [`${ng.base}bad/image.bin`, `${ng.base}image.bin`], {});
  // Bounded: a download that cannot finish (both seeds dropped: a piece both filled in
  // endgame used to drop them both) fails here instead of holding the file's process.
  await until('the download with a bad and a good web seed', () => both.session.stats().complete);
  sameFiles(fx.single, both.dir, join(fx.root, 'image.bin'));
  const [bad, good] = both.session.stats().webSeeds;
  assert.equal(good!.state === 'dropped', false);
  // The bad seed either served a piece (and was dropped for it) or never got one before the good seed finished.
  if (bad!.downloaded > 0) assert.equal(bad!.state, 'dropped');
});

test('servers that cannot be web seeds are dropped with the reason; a busy one (503) is tried again', async (t) => {
  const fx = await fixture(t);
  const image = readFileSync(join(fx.root, 'image.bin'));
  let busy = 2;
  const server = createServer((req, res) => {
    const m = /bytes=(\d+)-(\d+)/.exec(req.headers.range ?? '');
    const [a, b] = m ? [Number(m[1]), Number(m[2])] : [0, image.length - 1];
    if (req.url === '/ignores-range') return res.writeHead(200).end(image);
    if (req.url === '/missing') return res.writeHead(404).end('no');
    if (req.url === '/too-long') {
      res.writeHead(206, { 'content-range': `bytes ${a}-${b}/${image.length}` });
      return res.end(Buffer.concat([image.subarray(a, b + 1), Buffer.alloc(1000)]));
    }
    if (req.url === '/wrong-range') {
      res.writeHead(206, { 'content-range': `bytes ${a + 1}-${b + 1}/${image.length}` });
      return res.end(image.subarray(a + 1, b + 2));
    }
    if (req.url === '/busy' && busy > 0) {
      busy--;
      return res.writeHead(503, { 'retry-after': '0' }).end();
    }
    res.writeHead(206, { 'content-range': `bytes ${a}-${b}/${image.length}` });
    res.end(image.subarray(a, b + 1));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const cases: [string, RegExp][] = [
    ['/ignores-range', /ignores Range requests/],
    ['/missing', /answered 404/],
    ['/too-long', /sent more than the \d+ bytes asked for/],
    // (the first request is for any piece: the picker starts with a few random ones)
    ['/wrong-range', /answered Content-Range "bytes (\d+)-\d+\/\d+" to a request for bytes (\d+)-/],
  ];
  for (const [path, reason] of cases) {
    const { session } = await download(t, fx.single, [base + path]);
    await until(`${path} dropped`, () => session.stats().webSeeds[0]!.state === 'dropped');
    const why = String(session.stats().webSeeds[0]!.reason);
    assert.match(why, reason, path);
    const shifted = reason.exec(why);
    if (path === '/wrong-range') assert.equal(Number(shifted![1]), Number(shifted![2]) + 1, why);
    assert.equal(session.stats().piecesHave, 0, `${path}: nothing kept`);
    await session.stop();
  }
  const { session } = await download(t, fx.single, [`${base}/busy`], { webSeedRetryMs: 50 });
  await session.whenComplete();
  assert.equal(busy, 0, 'the 503s were answered');
  assert.notEqual(session.stats().webSeeds[0]!.state, 'dropped');
});

test('a web seed waits while enough peers unchoke us (minPeers), and never fetches for a complete torrent', async (t) => {
  const fx = await fixture(t);
  let requests = 0;
  const server = createServer((_req, res) => {
    requests++;
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/x`;
  // minPeers 0: "fewer than 0 peers" is never true, so it never asks.
  const { session } = await download(t, fx.single, [url], { webSeedMinPeers: 0 });
  await new Promise((resolve) => setTimeout(resolve, 1500));
  assert.equal(requests, 0);
  assert.equal(session.stats().webSeeds[0]!.state, 'idle');
  // A seed (complete data) makes no web seed at all.
  const seed = new TorrentSession({
    meta: fx.single,
    dir: fx.root,
    mode: 'seed',
    peerId: newPeerId(),
    listenPort: 1,
    trackers: [],
    webSeeds: [url],
  });
  t.after(() => seed.stop());
  await seed.start();
  assert.deepEqual(seed.stats().webSeeds, []);
  assert.equal(requests, 0);
});

/**
 * `start` with an OS named by a .torrent (`torrent:` in its config) and no
 * local copy: the server fetches the files from the torrent's web seed
 * (nginx), checks every piece, takes each file's SHA-256 and only then
 * offers the OS; a host-mode agent boots it from the server. A restart
 * offers it at once from what was fetched. A web seed serving wrong bytes
 * gets the OS nowhere: never offered.
 */
test('start fetches an OS named by a .torrent from its web seed (nginx), serves it only once checked, keeps it for a restart', async (t) => {
  const dir = tempDir(t, 'bt-webseed-start-');
  const root = join(dir, 'srv');
  mkdirSync(join(root, 'alpha'), { recursive: true });
  mkdirSync(join(root, 'bad', 'alpha'), { recursive: true });
  const files = { vmlinuz: pseudoRandomBytes(700_000, 21), 'initrd.img': pseudoRandomBytes(1_300_000, 22) };
  for (const [n, d] of Object.entries(files)) {
    writeFileSync(join(root, 'alpha', n), d);
    const bad = Buffer.from(d);
    bad[1000] = bad[1000]! ^ 0xff;
    writeFileSync(join(root, 'bad', 'alpha', n), bad);
  }
  writeFileSync(join(root, 'image.bin'), 'up'); // what nginx() polls until it answers
  const { base } = await nginx(t, dir, root);

  const envDir = join(dir, 'env');
  const ipxe = join(dir, 'ipxe');
  mkdirSync(ipxe);
  for (const f of ['undionly.kpxe', 'ipxe.efi']) writeFileSync(join(ipxe, f), 'ipxe');
  const [httpPort, trackerPort] = (await freePorts(2)) as [number, number];
  mkdirSync(join(envDir, 'oss', 'alpha'), { recursive: true });
  mkdirSync(join(envDir, 'oss', 'beta'), { recursive: true });
  writeFileSync(
    join(envDir, 'Boottorrent.yaml'),
    [
      'version: 1',
      'server:',
      '  interface: lo',
      '  address: 127.0.0.1',
      `  http_port: ${httpPort}`,
      `  ipxe_dir: ${ipxe}`,
      'dhcp:',
      '  mode: off',
      'tracker:',
      `  port: ${trackerPort}`,
      'boot:',
      '  default_os: alpha',
      '  timeout: 0',
      '  seed_time: 0',
      '',
    ].join('\n'),
  );
  const torrentOf = async (folder: string, name: string, urlList: string[]) =>
    (await createTorrent(folder, { name, pieceLength: 64 * 1024, urlList })).torrent;
  writeFileSync(
    join(envDir, 'oss', 'alpha', 'alpha.torrent'),
    await torrentOf(join(root, 'alpha'), 'alpha', [base]),
  );
  writeFileSync(
    join(envDir, 'oss', 'alpha', 'config.yaml'),
    'name: Alpha\nmethod: kexec\nkernel: vmlinuz\ninitrd: [initrd.img]\ncmdline: quiet\ntorrent: alpha.torrent\n',
  );
  // beta: the good data's torrent, but its only web seed holds a copy with a wrong byte per file.
  mkdirSync(join(root, 'beta-src'));
  const betaDir = join(root, 'beta-src', 'beta');
  mkdirSync(betaDir);
  for (const [n, d] of Object.entries(files)) writeFileSync(join(betaDir, n), d);
  mkdirSync(join(root, 'bad', 'beta'));
  for (const n of Object.keys(files))
    writeFileSync(join(root, 'bad', 'beta', n), readFileSync(join(root, 'bad', 'alpha', n)));
  writeFileSync(
    join(envDir, 'oss', 'beta', 'beta.torrent'),
    await torrentOf(betaDir, 'beta', [`${base}bad/`]),
  );
  writeFileSync(
    join(envDir, 'oss', 'beta', 'config.yaml'),
    'name: Beta\nmethod: kexec\nkernel: vmlinuz\ninitrd: [initrd.img]\ncmdline: quiet\ntorrent: beta.torrent\n',
  );
  const phase1 = join(dir, 'phase1');
  mkdirSync(phase1);
  writeFileSync(join(phase1, 'vmlinuz'), 'k');
  writeFileSync(join(phase1, 'initrd.img'), 'i');

  const serve = async () => {
    const log = memoryLogger();
    const server = new BootServer(
      {
        environment: await loadEnvironment(envDir, { machineChecks: false }),
        phase1: { dir: phase1, kernel: 'vmlinuz', initrds: ['initrd.img'], cmdline: '' },
        dashboardPort: 0,
        seedPort: 0,
        tftpPort: 0,
        reloadIntervalMs: 60_000,
      },
      { logger: log },
    );
    t.after(() => server.close());
    await server.start();
    const said = (re: RegExp) => log.lines.some((l) => re.test(`${l.msg} ${JSON.stringify(l.fields ?? {})}`));
    return { server, said, log };
  };
  const first = await serve();
  // Not in the folder: the OS folder holds only its config and .torrent.
  assert.deepEqual(readdirSync(join(envDir, 'oss', 'alpha')).sort(), ['alpha.torrent', 'config.yaml']);
  await until('alpha checked and served', () =>
    first.said(/OS from its web seeds checked and served.*alpha/),
  );
  await until('the bad web seed dropped', () => first.said(/web seed dropped.*bad/));
  // status shows beta as still being fetched (nothing of it offered).
  assert.deepEqual(
    first.server.snapshot().server.fetching?.map((f) => [f.id, f.progress]),
    [['beta', 0]],
  );
  const config = first.server.bootConfig('02:00:00:00:00:01');
  assert.deepEqual(
    config.oss.map((o) => o.id),
    ['alpha'],
    'beta, whose only web seed is wrong, is never offered',
  );
  const sha = (d: Buffer) => createHash('sha256').update(d).digest('hex');
  assert.deepEqual(
    Object.fromEntries(config.oss[0]!.files.map((f) => [f.path, f.sha256])),
    Object.fromEntries(Object.entries(files).map(([n, d]) => [n, sha(d)])),
  );

  // A host-mode agent boots alpha from the server (tracker and seeder on loopback).
  const agentDir = tempDir(t, 'bt-webseed-agent-');
  const agent = startProc((f) => t.after(f), process.execPath, [
    AGENT_MAIN,
    '--server',
    `http://127.0.0.1:${httpPort}`,
    '--mac',
    '02:00:00:00:00:01',
    '--dir',
    agentDir,
    '--no-network',
    '--dry-run',
    '--port',
    '0',
  ]);
  const { code } = await agent.exited;
  assert.equal(code, 0, agent.output());
  assert.match(agent.output(), /verified 2 files of alpha/);
  for (const [n, d] of Object.entries(files))
    assert.equal(sha(readFileSync(join(agentDir, 'alpha', n))), sha(d));

  // A restart serves alpha at once from what it fetched (no request to the web seed needed).
  await first.server.close();
  const second = await serve();
  assert.deepEqual(
    second.server.bootConfig('02:00:00:00:00:01').oss.map((o) => o.id),
    ['alpha'],
    'offered from the kept copy right after start',
  );
  assert.ok(!second.said(/fetching OS from its web seeds.*alpha/));
});
