// The GRUB loader's server side (src/server/phase1-loader.ts) over real
// HTTP: the GRUB build, signatures gpg accepts, per-MAC configs that name a
// holder first and the server second (or "wait" while the server's slots
// are taken), the holders' question, and the bounds a hostile client meets.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PhaseOneLoader, MAX_HOLDERS } from '../../src/server/phase1-loader.js';
import { silentLogger } from '../../src/util/logger.js';
import { rawGet } from '../helpers/http.js';
import { tempDir } from '../helpers/tmp.js';

const SERVER = 'http://10.9.0.1';
const mac = (n: number) => `52:54:00:00:01:${n.toString(16).padStart(2, '0')}`;

function gpgVerify(t: TestContext, key: Buffer, data: Buffer, sig: Buffer): boolean {
  const home = tempDir(t);
  mkdirSync(join(home, 'g'), { mode: 0o700 });
  const g = (...args: string[]) =>
    spawnSync('gpg', ['--homedir', join(home, 'g'), '--batch', '--no-tty', '--status-fd', '1', ...args], {
      encoding: 'utf8',
    });
  t.after(() => spawnSync('gpgconf', ['--homedir', join(home, 'g'), '--kill', 'all']));
  writeFileSync(join(home, 'key.gpg'), key);
  writeFileSync(join(home, 'data'), data);
  writeFileSync(join(home, 'data.sig'), sig);
  assert.equal(g('--import', join(home, 'key.gpg')).status, 0);
  return /\[GNUPG:\] GOODSIG/.test(g('--verify', join(home, 'data.sig'), join(home, 'data')).stdout);
}

async function setup(t: TestContext) {
  const dir = tempDir(t);
  const files = { kernel: join(dir, 'vmlinuz'), stage0: join(dir, 'stage0.img'), key: join(dir, 'key.cpio') };
  writeFileSync(files.kernel, Buffer.alloc(100_000, 7));
  writeFileSync(files.stage0, Buffer.alloc(50_000, 9));
  writeFileSync(files.key, 'key archive');
  let now = 1_000_000;
  const loader = await PhaseOneLoader.prepare({
    stateDir: join(dir, 'state'),
    publicUrl: SERVER,
    kernel: { name: 'vmlinuz', path: files.kernel },
    stage0: { name: 'stage0.img', path: files.stage0 },
    serverOnly: [{ urlPath: '/phase1-key/server-key.cpio', path: files.key }],
    log: silentLogger,
    now: () => now,
  });
  const configs: string[] = [];
  const http = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const handled = loader.route(
      req,
      res,
      path,
      '10.9.0.99',
      (m) =>
        m === mac(0xee)
          ? undefined
          : {
              kernel: '/phase1/vmlinuz',
              initrds: ['/phase1/stage0.img', '/phase1-key/server-key.cpio'],
              cmdline: `quiet boottorrent.mac=${m}`,
            },
      (m) => configs.push(m),
    );
    if (!handled) res.writeHead(418).end();
  });
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  t.after(() => http.close());
  const port = (http.address() as AddressInfo).port;
  const get = (path: string, method = 'GET') =>
    rawGet(port, path, {}, method).then((r) => ({ ...r, text: r.body.toString('latin1') }));
  return { loader, files, get, configs, tick: (ms: number) => (now += ms) };
}

test('the GRUB build, and signatures of the phase-1 files and of each config that gpg accepts', async (t) => {
  const { loader, files, get } = await setup(t);
  const efi = await get('/boottorrent/grub/grubx64.efi');
  assert.equal(efi.status, 200);
  assert.equal(efi.body.subarray(0, 2).toString('latin1'), 'MZ');
  assert.ok(efi.rawHeaders.includes('Content-Length'), 'GRUB reads only Content-Length spelt so');
  const key = loader.publicKeyFile();
  const { readFileSync } = await import('node:fs');
  for (const [path, file] of [
    ['/phase1/vmlinuz', files.kernel],
    ['/phase1/stage0.img', files.stage0],
    ['/phase1-key/server-key.cpio', files.key],
  ] as const) {
    const sig = await get(`${path}.sig`);
    assert.equal(sig.status, 200, path);
    assert.ok(gpgVerify(t, key, readFileSync(file), sig.body), `${path}.sig verifies`);
    assert.equal(gpgVerify(t, key, Buffer.concat([readFileSync(file), Buffer.from('x')]), sig.body), false);
  }
  const cfg = await get(`/boottorrent/grub/${mac(1)}.cfg`);
  const cfgSig = await get(`/boottorrent/grub/${mac(1)}.cfg.sig`);
  assert.equal(cfg.status, 200);
  assert.ok(gpgVerify(t, key, cfg.body, cfgSig.body), 'the config is signed');
  assert.match(loader.holdArg(), /^boottorrent\.hold=vmlinuz:[0-9a-f]{64},stage0\.img:[0-9a-f]{64}$/);
});

test('configs: the server while it has slots, then wait; a holder first once one reports; the config loads from it', async (t) => {
  const { loader, get, configs, tick } = await setup(t);
  for (let i = 1; i <= 4; i++) {
    const c = (await get(`/boottorrent/grub/${mac(i)}.cfg`)).text;
    assert.match(c, /if linux \(http,10\.9\.0\.1\)\/phase1\/vmlinuz quiet boottorrent\.mac=/, c);
    assert.doesNotMatch(c, /8470/);
    assert.match(c, /\nboot\n/);
  }
  const waiting = (await get(`/boottorrent/grub/${mac(5)}.cfg`)).text;
  assert.match(
    waiting,
    /sleep 3\nconfigfile \(http,10\.9\.0\.1\)\/boottorrent\/grub\/52:54:00:00:01:05\.cfg/,
  );
  assert.doesNotMatch(waiting, /linux/);
  assert.deepEqual(configs.slice(0, 5), [1, 2, 3, 4, 5].map(mac));

  // A holder reports (its agent serves the kernel and stage 0 on 8470).
  loader.report(mac(1), '10.9.0.7', { stage: 'menu', phase1Port: 8470, phase1Loader: true });
  tick(2_500);
  const c = (await get(`/boottorrent/grub/${mac(5)}.cfg`)).text;
  const linuxPeer = c.indexOf('if linux (http,10.9.0.7:8470)/phase1/vmlinuz');
  const linuxServer = c.indexOf('if linux (http,10.9.0.1)/phase1/vmlinuz');
  assert.ok(linuxPeer >= 0 && linuxServer > linuxPeer, c);
  assert.match(
    c,
    /if initrd \(http,10\.9\.0\.7:8470\)\/phase1\/stage0\.img \(http,10\.9\.0\.1\)\/phase1-key\/server-key\.cpio; then/,
  );
  // pc1's report freed its server slot; the holder serves one client at a time: the next one waits.
  assert.doesNotMatch((await get(`/boottorrent/grub/${mac(6)}.cfg`)).text, /sleep|8470/);
  assert.match((await get(`/boottorrent/grub/${mac(7)}.cfg`)).text, /sleep 3/);
  // An agent that reports without phase1Loader (or leaves) is no longer named.
  loader.report(mac(1), '10.9.0.7', { stage: 'booting' });
  loader.arrived(mac(2));
  tick(2_500);
  const after = (await get(`/boottorrent/grub/${mac(8)}.cfg`)).text;
  assert.doesNotMatch(after, /10\.9\.0\.7/);
  assert.match(after, /if linux \(http,10\.9\.0\.1\)/);
});

test('holders: the agent is told where to fetch; none once enough clients hold the files', async (t) => {
  const { loader, get } = await setup(t);
  assert.equal((await get(`/api/v1/phase1-loader/${mac(1)}`)).text, `get ${SERVER}/phase1/\n`);
  for (let i = 1; i <= MAX_HOLDERS; i++)
    loader.report(mac(i), `10.9.0.${i + 10}`, { stage: 'menu', phase1Port: 8470, phase1Loader: true });
  assert.equal((await get(`/api/v1/phase1-loader/${mac(40)}`)).text, 'none\n');
  assert.equal((await get('/api/v1/phase1-loader/not-a-mac')).status, 400);
});

test('a hostile client: unknown paths and MACs, refused MACs, other methods, a flood of configs', async (t) => {
  const { get, tick } = await setup(t);
  assert.equal((await get('/boottorrent/grub/..%2f..%2fetc%2fpasswd')).status, 404);
  assert.equal((await get('/boottorrent/grub/x.cfg')).status, 404);
  assert.equal((await get(`/boottorrent/grub/${mac(0xee)}.cfg`)).status, 404, 'a MAC not allowed');
  assert.equal((await get(`/boottorrent/grub/${mac(9)}.cfg.sig`)).status, 404, 'no config written yet');
  assert.equal((await get(`/boottorrent/grub/${mac(9)}.cfg`, 'POST')).status, 405);
  assert.equal((await get('/phase1/initrd.img.sig')).status, 418, 'not ours: the next route answers');
  // The clock stands still: 100 signatures, then 503 until it moves.
  const statuses = [];
  for (let i = 0; i < 120; i++)
    statuses.push(
      (await get(`/boottorrent/grub/52:54:00:00:02:${i.toString(16).padStart(2, '0')}.cfg`)).status,
    );
  assert.equal(statuses.filter((s) => s === 200).length, 100);
  assert.equal(statuses.filter((s) => s === 503).length, 20);
  tick(1000);
  assert.equal((await get(`/boottorrent/grub/52:54:00:00:03:01.cfg`)).status, 200);
});
