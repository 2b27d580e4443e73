// The GRUB loader's server side (src/server/phase1-loader.ts) over real
// HTTP: the GRUB build, the one-file initramfs, signatures gpg accepts (and
// the two keys kept apart), per-MAC configs that name a holder first and the
// server second (or "wait" while the server's slots are taken), a holder
// dropped once a client falls back from it, the holders' question, and the
// bounds a hostile client meets.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PhaseOneLoader, MAX_HOLDERS, STAGE0_GRUB } from '../../src/server/phase1-loader.js';
import { silentLogger } from '../../src/util/logger.js';
import { rawGet } from '../helpers/http.js';
import { tempDir } from '../helpers/tmp.js';

const SERVER = 'http://10.9.0.1';
const mac = (n: number) => `52:54:00:00:01:${n.toString(16).padStart(2, '0')}`;
const tokenOf = (m: string) => `token-${m}`;

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

function files(t: TestContext) {
  const dir = tempDir(t);
  const f = {
    dir,
    kernel: join(dir, 'vmlinuz'),
    stage0: join(dir, 'stage0.img'),
    key: join(dir, 'key.cpio'),
  };
  writeFileSync(f.kernel, Buffer.alloc(100_000, 7));
  writeFileSync(f.stage0, Buffer.alloc(50_001, 9));
  writeFileSync(f.key, 'key archive');
  return f;
}

async function setup(t: TestContext) {
  const f = files(t);
  let now = 1_000_000;
  const loader = await PhaseOneLoader.prepare({
    stateDir: join(f.dir, 'state'),
    publicUrl: SERVER,
    kernel: { name: 'vmlinuz', path: f.kernel },
    stage0: f.stage0,
    keyArchive: f.key,
    cmdline: 'quiet',
    tokenFor: tokenOf,
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
      // The asking address: tests name it (the server takes it from the socket).
      (req.headers['x-client'] as string | undefined) ?? '10.9.0.99',
      (m) => (m === mac(0xee) ? undefined : `quiet boottorrent.mac=${m}`),
      (m) => configs.push(m),
    );
    if (!handled) res.writeHead(418).end();
  });
  await new Promise<void>((r) => http.listen(0, '127.0.0.1', r));
  t.after(() => http.close());
  const port = (http.address() as AddressInfo).port;
  const get = (path: string, client = '10.9.0.99', headers: Record<string, string> = {}, method = 'GET') =>
    rawGet(port, path, { 'x-client': client, ...headers }, method).then((r) => ({
      ...r,
      text: r.body.toString('latin1'),
    }));
  /** The config for MAC number n, asked from its own address. */
  const cfg = async (n: number) => (await get(`/boottorrent/grub/${mac(n)}.cfg`, `10.9.1.${n}`)).text;
  return { loader, f, get, cfg, configs, tick: (ms: number) => (now += ms) };
}

test('the GRUB build, the one-file initramfs, and signatures by two keys kept apart', async (t) => {
  const { loader, f, get } = await setup(t);
  const efi = await get('/boottorrent/grub/grubx64.efi');
  assert.equal(efi.status, 200);
  assert.equal(efi.body.subarray(0, 2).toString('latin1'), 'MZ');
  assert.ok(efi.rawHeaders.includes('Content-Length'), 'GRUB reads only Content-Length spelt so');
  // Stage 0, zeros to a multiple of 4, then the key archive: as GRUB would load the two.
  const initrd = await get(`/phase1/${STAGE0_GRUB}`);
  assert.deepEqual(
    initrd.body,
    Buffer.concat([readFileSync(f.stage0), Buffer.alloc(3), readFileSync(f.key)]),
  );
  const keys = loader.publicKeyFiles();
  const kernelSig = (await get('/phase1/vmlinuz.sig')).body;
  const initrdSig = (await get(`/phase1/${STAGE0_GRUB}.sig`)).body;
  assert.ok(gpgVerify(t, keys.kernel, readFileSync(f.kernel), kernelSig), 'the kernel, by the kernel key');
  assert.ok(gpgVerify(t, keys.initrd, initrd.body, initrdSig), 'the initramfs, by the initrd key');
  assert.equal(
    gpgVerify(t, keys.initrd, readFileSync(f.kernel), kernelSig),
    false,
    'not the kernel by the initrd key',
  );
  assert.equal(
    gpgVerify(t, keys.kernel, Buffer.concat([readFileSync(f.kernel), Buffer.from('x')]), kernelSig),
    false,
  );
  const cfg = await get(`/boottorrent/grub/${mac(1)}.cfg`);
  const cfgSig = await get(`/boottorrent/grub/${mac(1)}.cfg.sig`);
  assert.equal(cfg.status, 200);
  assert.ok(gpgVerify(t, keys.kernel, cfg.body, cfgSig.body), 'the config, by the kernel key');
  assert.equal(gpgVerify(t, keys.initrd, cfg.body, cfgSig.body), false);
  assert.match(loader.holdArg(), /^boottorrent\.hold=vmlinuz:[0-9a-f]{64},stage0-grub\.img:[0-9a-f]{64}$/);
});

test('each start makes new keys: a signature from the last run no longer checks out', async (t) => {
  const a = await setup(t);
  const b = await setup(t);
  const sig = (await a.get('/phase1/vmlinuz.sig')).body;
  assert.equal(gpgVerify(t, b.loader.publicKeyFiles().kernel, readFileSync(a.f.kernel), sig), false);
});

test('configs: the server while it has slots, then wait; a holder first once one reports; dropped once a client falls back', async (t) => {
  const { loader, get, cfg, configs, tick } = await setup(t);
  // The server's two slots, then "wait and ask again".
  for (let i = 1; i <= 2; i++) {
    const c = await cfg(i);
    assert.match(c, /if linux \(http,10\.9\.0\.1\)\/phase1\/vmlinuz quiet boottorrent\.mac=/, c);
    // The kernel key is dropped before the initramfs loads.
    // The kernel key is dropped before the initramfs loads.
    assert.match(
      c,
      /\ndistrust [0-9a-f]{8}\nif initrd \(http,10\.9\.0\.1\)\/phase1\/stage0-grub\.img; then/,
      c,
    );
    assert.match(c, / panic=10; then/, 'a kernel that does not come up restarts the machine');
    assert.match(c, /\nboot\n/);
  }
  const waiting = await cfg(3);
  assert.match(
    waiting,
    /sleep 3\nconfigfile \(http,10\.9\.0\.1\)\/boottorrent\/grub\/52:54:00:00:01:03\.cfg/,
  );
  assert.doesNotMatch(waiting, /linux/);
  assert.deepEqual(configs.slice(0, 3), [1, 2, 3].map(mac));

  // A holder reports (its agent serves the kernel and initramfs on 8470); that also frees its own slot.
  loader.report(mac(1), '10.9.0.7', { stage: 'menu', phase1Port: 8470, phase1Loader: true });
  tick(2_500);
  const c = await cfg(3);
  const lines = c.split('\n');
  const at = (re: RegExp) => lines.findIndex((l) => re.test(l));
  const peerLinux = at(/^if linux \(http,10\.9\.0\.7:8470\)\/phase1\/vmlinuz quiet/);
  const serverLinux = at(/^ {2}if linux \(http,10\.9\.0\.1\)\/phase1\/vmlinuz quiet/);
  const distrust = at(/^distrust [0-9a-f]{8}$/);
  const ifPeer = at(/^if \[ "\$bt_from" = peer \]; then$/);
  assert.ok(peerLinux >= 0 && serverLinux > peerLinux && distrust > serverLinux && ifPeer > distrust, c);
  assert.equal(lines[peerLinux + 2], '  set bt_from=peer');
  assert.match(c, /if initrd \(http,10\.9\.0\.7:8470\)\/phase1\/stage0-grub\.img; then/);
  // The freed server slot; then the holder serves one client at a time and the server is full: wait.
  assert.doesNotMatch(await cfg(4), /sleep|8470/);
  assert.match(await cfg(5), /sleep 3/);

  // Client 3 (10.9.1.3) loads the kernel from the server after all: the holder failed it.
  await get('/phase1/vmlinuz', '10.9.1.3');
  loader.arrived(mac(3));
  loader.arrived(mac(2));
  tick(2_500);
  const after = await cfg(6);
  assert.doesNotMatch(after, /10\.9\.0\.7/);
  assert.match(after, /if linux \(http,10\.9\.0\.1\)/);
  // Its reports do not bring it back for a while.
  loader.report(mac(1), '10.9.0.7', { stage: 'menu', phase1Port: 8470, phase1Loader: true });
  loader.arrived(mac(4));
  tick(2_500);
  assert.doesNotMatch(await cfg(7), /10\.9\.0\.7/);
});

test('holders: only with the MAC’s token; the server’s copy only while nobody holds one; none once enough do', async (t) => {
  const { loader, get } = await setup(t);
  const ask = (n: number, token = tokenOf(mac(n))) =>
    get(`/api/v1/phase1-loader/${mac(n)}`, `10.9.2.${n}`, { 'x-boottorrent-token': token });
  assert.equal((await get(`/api/v1/phase1-loader/${mac(1)}`)).status, 403);
  assert.equal((await ask(1, 'token-of-someone-else-entirely!!')).status, 403);
  assert.equal((await ask(1)).text, `get ${SERVER}/phase1/\n`);
  // Client 1 fetches to hold: client 2 waits rather than take another copy from the server.
  assert.equal((await ask(2)).text, 'wait 3\n');
  loader.report(mac(1), '10.9.2.1', { stage: 'menu', phase1Port: 8470, phase1Loader: true });
  assert.equal((await ask(2)).text, 'get http://10.9.2.1:8470/phase1/\n');
  for (let i = 3; i <= MAX_HOLDERS + 1; i++)
    loader.report(mac(i), `10.9.2.${i}`, { stage: 'menu', phase1Port: 8470, phase1Loader: true });
  assert.equal((await ask(40)).text, 'none\n');
  // A report without phase1Loader (or a client that leaves) is no holder.
  loader.report(mac(3), '10.9.2.3', { stage: 'menu', phase1Port: 8470 });
  loader.report(mac(4), '10.9.2.4', { stage: 'booting' });
  assert.notEqual((await ask(41)).text, 'none\n');
  assert.equal((await get('/api/v1/phase1-loader/not-a-mac')).status, 400);
});

test('a hostile client: unknown paths and MACs, refused MACs, other methods, many MACs, a flood of configs', async (t) => {
  const { get, tick } = await setup(t);
  assert.equal((await get('/boottorrent/grub/..%2f..%2fetc%2fpasswd')).status, 404);
  assert.equal((await get('/boottorrent/grub/x.cfg')).status, 404);
  assert.equal((await get(`/boottorrent/grub/${mac(0xee)}.cfg`)).status, 404, 'a MAC not allowed');
  assert.equal((await get(`/boottorrent/grub/${mac(9)}.cfg.sig`)).status, 404, 'no config written yet');
  assert.equal((await get(`/boottorrent/grub/${mac(9)}.cfg`, '10.9.0.99', {}, 'POST')).status, 405);
  assert.equal((await get('/phase1/initrd.img.sig')).status, 418, 'not ours: the next route answers');
  // One address: configs for two MACs at a time, not a third.
  const three = [];
  for (let i = 0; i < 3; i++) three.push((await get(`/boottorrent/grub/52:54:00:00:04:0${i}.cfg`)).status);
  assert.deepEqual(three, [200, 200, 503]);
  // A config's signature is for the address that asked for it, so no one else can change it in between.
  assert.equal((await get(`/boottorrent/grub/52:54:00:00:04:00.cfg.sig`)).status, 200);
  assert.equal((await get(`/boottorrent/grub/52:54:00:00:04:00.cfg.sig`, '10.9.1.1')).status, 404);
  // Asked again within 2 s: the same config and signature, not a new one.
  const first = await get(`/boottorrent/grub/52:54:00:00:04:01.cfg`);
  const again = await get(`/boottorrent/grub/52:54:00:00:04:01.cfg`);
  assert.deepEqual(again.body, first.body);
  // Many addresses: 100 signatures a second in all, then 503 until the clock moves.
  tick(1_000);
  const statuses = [];
  for (let i = 0; i < 120; i++)
    statuses.push(
      (await get(`/boottorrent/grub/52:54:00:00:02:${i.toString(16).padStart(2, '0')}.cfg`, `10.9.4.${i}`))
        .status,
    );
  assert.equal(statuses.filter((s) => s === 200).length, 100);
  assert.equal(statuses.filter((s) => s === 503).length, 20);
  tick(1000);
  assert.equal((await get(`/boottorrent/grub/52:54:00:00:03:01.cfg`, '10.9.5.1')).status, 200);
});

test('prepare refuses a command line GRUB would change, and a file name it would not take', async (t) => {
  const f = files(t);
  const base = {
    stateDir: join(f.dir, 'state'),
    publicUrl: SERVER,
    kernel: { name: 'vmlinuz', path: f.kernel },
    stage0: f.stage0,
    cmdline: 'quiet',
    tokenFor: tokenOf,
    log: silentLogger,
  };
  await assert.rejects(PhaseOneLoader.prepare({ ...base, cmdline: 'quiet init=$x' }), {
    code: 'BT_ERR_PHASE1',
    message: /GRUB would change phase 1's kernel command line/,
  });
  await assert.rejects(PhaseOneLoader.prepare({ ...base, kernel: { name: 'vm linuz', path: f.kernel } }), {
    code: 'BT_ERR_PHASE1',
    message: /"vm linuz" is not one GRUB and the agents take/,
  });
});

test('a client back for a config without having reached stage 0 drops the holder that fed it', async (t) => {
  const { loader, cfg, tick } = await setup(t);
  // A holder; client 30 boots from it but asks for a config again without having reached stage 0.
  loader.report(mac(1), '10.9.0.7', { stage: 'menu', phase1Port: 8470, phase1Loader: true });
  tick(2_500);
  assert.match(await cfg(30), /10\.9\.0\.7:8470/);
  tick(20_000);
  assert.doesNotMatch(await cfg(30), /10\.9\.0\.7:8470/, 'that holder is dropped');
  loader.report(mac(1), '10.9.0.7', { stage: 'menu', phase1Port: 8470, phase1Loader: true });
  tick(2_500);
  loader.arrived(mac(30));
  assert.doesNotMatch(await cfg(31), /10\.9\.0\.7:8470/, 'and stays out a while');
});
