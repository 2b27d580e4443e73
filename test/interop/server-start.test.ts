// `boottorrent start` as a process in its own namespace, reached from this
// test over a veth: the agent's API (boot config, torrent, reports with and
// without the token), a real download of an OS with `boottorrent get`
// checked against the boot config's SHA-256s, hot reload of a new OS
// folder, `status`, and a clean stop on SIGTERM.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { NetLab, waitForOutput } from '../../src/demo/lab.js';
import { parseBootConfig } from '../../src/boot-config.js';
import { parseTorrent } from '../../src/torrent/metainfo.js';
import type { ServerSnapshot } from '../../src/server/state.js';
import { BIN, runCli } from '../helpers/cli.js';
import { Lab, waitForOutput as labWait, removedWithTest } from '../helpers/netns.js';
import { requireProgram } from '../helpers/programs.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';

const SRV = '10.78.255.2';
const MAC = '52:54:00:78:00:01';

/** GET over a fresh connection; every byte the server wrote to it (headers and body) counted here. */
function rawGet(host: string, port: number, path: string): Promise<{ bytes: number; text: string }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = connect({ host, port }, () =>
      s.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`),
    );
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('error', reject);
    s.on('close', () => {
      const all = Buffer.concat(chunks);
      resolve({ bytes: all.length, text: all.toString('latin1') });
    });
  });
}

function env(dir: string): void {
  mkdirSync(join(dir, 'oss', 'alpha'), { recursive: true });
  writeFileSync(
    join(dir, 'Boottorrent.yaml'),
    [
      'version: 1',
      'server:',
      '  interface: uplink',
      `  address: ${SRV}`,
      'dhcp:',
      '  mode: off',
      'boot:',
      '  default_os: alpha',
      '  timeout: 7',
      '  seed_time: 3',
      'hosts:',
      `  '${MAC}': { timeout: -1 }`,
      '',
    ].join('\n'),
  );
  writeFileSync(
    join(dir, 'oss', 'alpha', 'config.yaml'),
    'name: Alpha\nmethod: kexec\nkernel: vmlinuz\ninitrd: [initrd.img, extra.img]\ncmdline: quiet\n',
  );
  writeFileSync(join(dir, 'oss', 'alpha', 'vmlinuz'), pseudoRandomBytes(3 << 20, 1));
  writeFileSync(join(dir, 'oss', 'alpha', 'initrd.img'), pseudoRandomBytes(5 << 20, 2));
  writeFileSync(join(dir, 'oss', 'alpha', 'extra.img'), pseudoRandomBytes(1000, 3));
}

test('start serves boot configs, torrents, reports and status; reloads OS folders; stops cleanly', async (t) => {
  const dir = tempDir(t);
  const envDir = join(dir, 'env');
  env(envDir);
  const phase1 = join(dir, 'phase1');
  mkdirSync(phase1);
  writeFileSync(join(phase1, 'vmlinuz'), 'k');
  writeFileSync(join(phase1, 'initrd.img'), 'i');
  const lab = removedWithTest(t, new NetLab('start', '10.78.0.1/24'));
  lab.linkToHost('10.78.255.1/30', `${SRV}/30`);
  // This test is the client MAC: the server hands MAC's report token only to
  // the address its neighbour table ties to MAC (issue #14 item 7).
  const hostLink = /^\d+:\s+(\S+)/.exec(
    execFileSync('ip', ['-o', '-4', 'addr', 'show', 'to', '10.78.255.1/32'], { encoding: 'utf8' }),
  )?.[1];
  assert.ok(hostLink, 'the host side of the veth');
  execFileSync('ip', ['link', 'set', 'dev', hostLink, 'address', MAC]);
  const server = lab.spawn(process.execPath, [
    '--enable-source-maps',
    BIN,
    'start',
    '--env',
    envDir,
    '--phase1',
    phase1,
    '--dashboard',
    `${SRV}:8480`,
  ]);
  await waitForOutput(server, /dashboard http:\/\/\S+; Ctrl-C stops/, 60_000, 'start');
  const base = `http://${SRV}`;

  // Phase 1 as iPXE fetches it: the script, then the kernel and initramfs it names.
  const script = await rawGet(SRV, 80, `/boot.ipxe?mac=${MAC}`);
  assert.match(script.text, /^HTTP\/1\.1 200[\s\S]*#!ipxe/);
  const kernel = await rawGet(SRV, 80, `/phase1/vmlinuz?mac=${MAC}`);
  const initrd = await rawGet(SRV, 80, `/phase1/initrd.img?mac=${MAC}`);
  assert.match(kernel.text, /^HTTP\/1\.1 200[\s\S]*\r\n\r\nk$/);
  assert.match(initrd.text, /^HTTP\/1\.1 200[\s\S]*\r\n\r\ni$/);

  // The boot config parses with the agent's own parser and names the host's override.
  const cfgRes = await fetch(`${base}/api/v1/boot/${MAC}`);
  assert.equal(cfgRes.status, 200);
  const cfg = parseBootConfig(await cfgRes.text());
  assert.equal(cfg.menu.default, 'alpha');
  assert.equal(cfg.menu.timeout, -1, "the host's timeout override");
  assert.equal(cfg.seedTime, 3);
  const alpha = cfg.oss.find((o) => o.id === 'alpha');
  assert.ok(alpha && alpha.method === 'kexec');
  assert.deepEqual(alpha.initrd, ['initrd.img', 'extra.img']);
  const want = (name: string) =>
    createHash('sha256')
      .update(readFileSync(join(envDir, 'oss', 'alpha', name)))
      .digest('hex');
  assert.equal(alpha.files.find((f) => f.path === 'vmlinuz')?.sha256, want('vmlinuz'));
  assert.ok(cfg.peers.seeds.length > 0 && cfg.peers.trackers.length > 0);

  // The torrent behind it has the advertised infohash.
  const torrent = Buffer.from(await (await fetch(alpha.torrentUrl)).arrayBuffer());
  assert.equal(parseTorrent(torrent).infoHashHex, alpha.infoHash);
  assert.equal((await fetch(`${base}/api/v1/torrent/nope.torrent`)).status, 404);

  // Reports: refused without the token, recorded with it.
  const post = (token: string, body: object) =>
    fetch(cfg.reportUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-boottorrent-token': token },
      body: JSON.stringify(body),
    });
  assert.equal(cfg.reportToken.length, 32, 'the MAC at this address gets its report token');
  assert.equal((await post('wrong', { stage: 'menu' })).status, 403);
  // Another MAC's config, asked from this address, comes without a token.
  const other = parseBootConfig(await (await fetch(`${base}/api/v1/boot/52:54:00:78:00:02`)).text());
  assert.equal(other.reportToken, '', 'no token for a MAC this address is not');
  const info = JSON.parse(readFileSync(join(envDir, '.boottorrent', 'server.json'), 'utf8')) as {
    token: string;
  };
  assert.notEqual(cfg.reportToken, info.token, 'the dashboard token stays out of boot configs');
  assert.equal(
    (await post(cfg.reportToken, { stage: 'downloading', os: 'alpha', progress: -1 })).status,
    400,
  );
  assert.equal((await post(cfg.reportToken, { stage: 'bogus' })).status, 400);
  assert.equal(
    (await post(cfg.reportToken, { stage: 'downloading', os: 'alpha', progress: 0.4, peers: 2 })).status,
    204,
  );
  const snap = (await (await fetch(`http://${SRV}:8480/api/v1/status`)).json()) as ServerSnapshot;
  const row = snap.clients.find((c) => c.mac === MAC);
  assert.equal(row?.stage, 'downloading');
  assert.equal(row?.progress, 0.4);
  // Honest accounting (#16): the server's figures are the bytes this test received, to the byte.
  const sent = snap.totals.sent;
  assert.equal(sent.parts.scripts, script.bytes, 'boot script bytes, headers included');
  assert.equal(sent.parts.phase1Files, kernel.bytes + initrd.bytes, 'phase-1 file bytes, headers included');
  assert.equal(sent.phase1, script.bytes + kernel.bytes + initrd.bytes, 'no DHCP or TFTP in this test');
  assert.ok(sent.parts.configs! > 0 && sent.parts.api! > 0, JSON.stringify(sent.parts));
  assert.equal(sent.total, sent.phase1 + sent.os + sent.other);
  assert.equal(snap.server.phase1Size, 2, 'kernel "k" and initramfs "i"');
  assert.equal(snap.totals.deliveredPhase1, 2, 'the agent reported after its phase 1: one phase 1 delivered');
  assert.equal(snap.totals.delivered, 2 + snap.totals.deliveredOs);
  assert.equal(snap.swarms[0]?.os, 'alpha');
  const page = await fetch(`http://${SRV}:8480/`);
  assert.equal(page.status, 200);
  assert.match(await page.text(), /<html/i, 'the dashboard page');
  assert.equal((await fetch(`http://${SRV}:8480/api/v1/actions/anything`, { method: 'POST' })).status, 401);
  // A request target URL() cannot parse, and a Host that is not the server's (DNS rebinding):
  // each answered, and the server still up.
  const raw = (path: string, host?: string) =>
    new Promise<number>((resolve, reject) => {
      const req = httpRequest({ host: SRV, port: 8480, path, headers: host ? { host } : {} }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end();
    });
  assert.equal(await raw('//'), 400);
  assert.equal(await raw('/\\'), 400);
  assert.equal(await raw('/api/v1/status', 'rebind.evil.example:8480'), 421);
  assert.equal(await raw('/api/v1/status'), 200, 'still serving');
  await waitForOutput(
    server,
    new RegExp(`client ${MAC} .*chose an OS: downloading.* os=alpha`),
    5000,
    'event log',
  );

  // A real download from the server's seeder through its tracker, checked against the boot config.
  writeFileSync(join(dir, 'alpha.torrent'), torrent);
  const got = await runCli(['get', join(dir, 'alpha.torrent'), '-o', join(dir, 'dl')], {
    timeoutMs: 120_000,
  });
  assert.equal(got.code, 0, got.stderr);
  for (const f of alpha.files)
    assert.equal(
      createHash('sha256')
        .update(readFileSync(join(dir, 'dl', 'alpha', f.path)))
        .digest('hex'),
      f.sha256,
      f.path,
    );

  // The seeder's figure holds the whole OS it just sent, with the wire's own bytes on top.
  const afterGet = (await (await fetch(`http://${SRV}:8480/api/v1/status`)).json()) as ServerSnapshot;
  const alphaSize = (3 << 20) + (5 << 20) + 1000;
  assert.ok(afterGet.totals.sent.parts.seeder! >= alphaSize, JSON.stringify(afterGet.totals.sent.parts));
  assert.ok(
    afterGet.totals.sent.parts.seeder! < alphaSize * 1.05,
    JSON.stringify(afterGet.totals.sent.parts),
  );
  assert.ok(afterGet.totals.sent.os >= afterGet.totals.sent.parts.seeder!);

  // Hot reload: a new OS folder shows up in the next boot config, without a restart,
  // and is seeded, even when another folder was only touched in the same moment.
  const later = new Date(Date.now() + 60_000);
  utimesSync(join(envDir, 'oss', 'alpha', 'vmlinuz'), later, later);
  mkdirSync(join(envDir, 'oss', 'beta'));
  writeFileSync(join(envDir, 'oss', 'beta', 'tool.sh'), '#!/bin/sh\necho beta\n');
  writeFileSync(join(envDir, 'oss', 'beta', 'config.yaml'), 'name: Beta tool\nmethod: bin\nbin: tool.sh\n');
  let ids: string[] = [];
  for (let i = 0; i < 60 && !ids.includes('beta'); i++) {
    await new Promise((r) => setTimeout(r, 500));
    ids = parseBootConfig(await (await fetch(`${base}/api/v1/boot/${MAC}`)).text()).oss.map((o) => o.id);
  }
  assert.deepEqual(ids.sort(), ['alpha', 'beta']);
  await waitForOutput(server, /environment reloaded.*added.*beta/, 5000, 'reload log');
  const beta = parseBootConfig(await (await fetch(`${base}/api/v1/boot/${MAC}`)).text()).oss.find(
    (o) => o.id === 'beta',
  )!;
  assert.equal(
    parseBootConfig(await (await fetch(`${base}/api/v1/boot/${MAC}`)).text()).oss.find(
      (o) => o.id === 'alpha',
    )?.infoHash,
    alpha.infoHash,
    'a touched folder keeps its torrent',
  );
  writeFileSync(join(dir, 'beta.torrent'), Buffer.from(await (await fetch(beta.torrentUrl)).arrayBuffer()));
  const gotBeta = await runCli(['get', join(dir, 'beta.torrent'), '-o', join(dir, 'dl')], {
    timeoutMs: 60_000,
  });
  assert.equal(gotBeta.code, 0, `the new OS is seeded: ${gotBeta.stderr}`);
  assert.equal(readFileSync(join(dir, 'dl', 'beta', 'tool.sh'), 'utf8'), '#!/bin/sh\necho beta\n');

  // status from the same namespace (the dashboard listens there).
  const status = lab.spawn(process.execPath, [BIN, 'status', '--env', envDir]);
  await waitForOutput(status, /OS\s+SIZE/, 20_000, 'status');
  assert.match(status.output(), new RegExp(`${MAC}.*downloading.*alpha`));
  assert.match(
    status.output(),
    /server sent [\d.]+ MB \(phase 1 0\.0 MB, OS [\d.]+ MB\) for [\d.]+ MB delivered/,
  );
  const traffic = lab.spawn(process.execPath, [BIN, 'status', '--env', envDir, '--traffic']);
  await waitForOutput(traffic, /OS\s+SIZE/, 20_000, 'status --traffic');
  assert.match(traffic.output(), /SENT BY PART[\s\S]*phase1Files[\s\S]*seeder/);

  // SIGTERM: exits 0, removes its server file.
  await lab.stop(server, 10_000);
  assert.equal(server.child.exitCode, 0, server.output());
  assert.equal(existsSync(join(envDir, '.boottorrent', 'server.json')), false);
});

test('start refuses full DHCP when another DHCP server (dnsmasq) answers on the interface, and says proxy', async (t) => {
  requireProgram('dnsmasq', 'dnsmasq-base');
  const dir = tempDir(t);
  const envDir = join(dir, 'env');
  env(envDir);
  writeFileSync(
    join(envDir, 'Boottorrent.yaml'),
    [
      'version: 1',
      'server:',
      '  interface: br0',
      '  address: 10.82.0.1',
      'dhcp:',
      '  mode: full',
      '  range: 10.82.0.100-10.82.0.150',
      'boot:',
      '  default_os: alpha',
      '',
    ].join('\n'),
  );
  const phase1 = join(dir, 'phase1');
  mkdirSync(phase1);
  writeFileSync(join(phase1, 'vmlinuz'), 'k');
  writeFileSync(join(phase1, 'initrd.img'), 'i');
  const lab = new Lab(t);
  const ns = lab.ns('probe');
  lab.bridge(ns, 'br0', '10.82.0.1/24');
  const other = lab.ns('otherdhcp');
  lab.link(ns, 'br0', other, 'eth0', '10.82.0.2/24');
  const dnsmasq = lab.spawn(other, 'dnsmasq', [
    '--no-daemon',
    '--conf-file=/dev/null',
    '--port=0',
    '--interface=eth0',
    '--bind-interfaces',
    '--dhcp-range=10.82.0.200,10.82.0.210,1h',
    `--dhcp-leasefile=${join(dir, 'dnsmasq.leases')}`,
    `--pid-file=${join(dir, 'dnsmasq.pid')}`,
  ]);
  await labWait(dnsmasq, /DHCP, IP range/, 10_000, 'dnsmasq');
  const start = lab.spawn(ns, process.execPath, [BIN, 'start', '--env', envDir, '--phase1', phase1]);
  const code = await new Promise<number | null>((resolve) => start.child.on('exit', (c) => resolve(c)));
  const out = start.output();
  assert.equal(code, 1, out);
  assert.match(out, /another DHCP server answers on br0: 10\.82\.0\.2 \(offered 10\.82\.0\.2\d\d\)/);
  assert.match(out, /set dhcp\.mode: proxy/);
  assert.match(out, /--force-dhcp/);
  assert.doesNotMatch(out, /\n\s+at /, 'no stack trace');
});

test('init: the environment it writes starts as written and offers its example OS', async (t) => {
  const dir = tempDir(t);
  const envDir = join(dir, 'lab');
  const phase1 = join(dir, 'phase1');
  mkdirSync(phase1);
  writeFileSync(join(phase1, 'vmlinuz'), 'k');
  writeFileSync(join(phase1, 'initrd.img'), 'i');
  const lab = removedWithTest(t, new NetLab('init', '10.83.0.1/24'));
  lab.linkToHost('10.83.255.1/30', '10.83.255.2/30');
  const init = lab.spawn(process.execPath, [BIN, 'init', envDir, '--interface', 'uplink']);
  await waitForOutput(init, /Next: boottorrent validate/, 20_000, 'init');
  assert.match(init.output(), /serving on uplink \(10\.83\.255\.2\), DHCP proxy/);
  const server = lab.spawn(process.execPath, [BIN, 'start', '--env', envDir, '--phase1', phase1]);
  await waitForOutput(server, /Ctrl-C stops/, 60_000, 'start');
  const cfg = parseBootConfig(await (await fetch('http://10.83.255.2/api/v1/boot/52:54:00:83:00:01')).text());
  assert.deepEqual(
    cfg.oss.map((o) => o.id),
    ['hello'],
  );
  await lab.stop(server, 10_000);
  assert.equal(server.child.exitCode, 0, server.output());
});

test('server.tftp false leaves UDP 69 closed, log_level error prints no info lines, and start runs unprivileged on high ports', async (t) => {
  const dir = tempDir(t);
  // The unprivileged user must reach the environment (and write its state folder) and phase 1.
  chmodSync(dir, 0o711);
  const srv = '10.84.255.2';
  const envDir = join(dir, 'env');
  env(envDir);
  writeFileSync(
    join(envDir, 'Boottorrent.yaml'),
    readFileSync(join(envDir, 'Boottorrent.yaml'), 'utf8')
      .replace(`  address: ${SRV}`, `  tftp: false\n  http_port: 8080\n  address: ${srv}`)
      .replace('dhcp:', 'log_level: error\ntracker:\n  port: 16969\ndhcp:'),
  );
  const phase1 = join(dir, 'phase1');
  mkdirSync(phase1);
  writeFileSync(join(phase1, 'vmlinuz'), 'k');
  writeFileSync(join(phase1, 'initrd.img'), 'i');
  execFileSync('chown', ['-R', 'nobody:nogroup', envDir, phase1]);
  const lab = removedWithTest(t, new NetLab('unpriv', '10.84.0.1/24'));
  lab.linkToHost('10.84.255.1/30', `${srv}/30`);
  const inLab = (cmd: string, ...args: string[]) =>
    execFileSync('ip', ['netns', 'exec', lab.ns, cmd, ...args], { encoding: 'utf8' });
  // validate accepts it as written (it throws with the problems otherwise).
  inLab(process.execPath, BIN, 'validate', '--env', envDir);
  const server = lab.spawn('setpriv', [
    '--reuid=nobody',
    '--regid=nogroup',
    '--clear-groups',
    '--inh-caps=-all',
    process.execPath,
    BIN,
    'start',
    '--env',
    envDir,
    '--phase1',
    phase1,
    '--dashboard',
    `${srv}:8480`,
  ]);
  await waitForOutput(server, /Ctrl-C stops/, 60_000, 'start as nobody');
  // setpriv execs node in place: the process the lab started is the server, as nobody.
  const owner = execFileSync('ps', ['-o', 'user=', '-p', String(server.child.pid)], { encoding: 'utf8' });
  assert.equal(owner.trim(), 'nobody');
  const sockets = inLab('ss', '-H', '-uln');
  assert.doesNotMatch(sockets, /:69\s/, `UDP 69 must stay closed with server.tftp false:\n${sockets}`);
  assert.match(inLab('ss', '-H', '-tln'), /:8080\s/, 'the boot HTTP server on its high port');
  // Work that logs at info level when asked to: a boot config and a script.
  const cfg = await fetch(`http://${srv}:8080/api/v1/boot/${MAC}`);
  assert.equal(cfg.status, 200);
  assert.equal((await fetch(`http://${srv}:8080/boot.ipxe?mac=${MAC}`)).status, 200);
  await lab.stop(server, 10_000);
  assert.equal(server.child.exitCode, 0, server.output());
  const logLines = server
    .output()
    .split('\n')
    .filter((l) => /^\d{4}-\d\d-\d\dT[\d:.]+Z /.test(l));
  assert.deepEqual(
    logLines.filter((l) => !/Z error: /.test(l)),
    [],
    'log_level error: no debug, info or warn lines',
  );
  const stateOwner = statSync(join(envDir, '.boottorrent')).uid;
  assert.equal(stateOwner, 65534, 'state written by the unprivileged user');
});

test("a version 0 environment as the older tool's examples wrote it (settings it ignores, a quoted port) starts, with a warning line for each", async (t) => {
  const dir = tempDir(t);
  const srv = '10.85.255.2';
  const envDir = join(dir, 'env');
  mkdirSync(join(envDir, 'oss', 'linuxos'), { recursive: true });
  writeFileSync(
    join(envDir, 'Boottorrent.yaml'),
    [
      'boottorrent:',
      '    version: 0',
      '    timeout: 30',
      '    default_os: linuxos',
      '    seed_time: 30',
      `    host_ip: ${srv}`,
      'dnsmasq:',
      '    enable_dhcp: False',
      '    interface: uplink',
      '    bind_interfaces: True',
      '    enable_tftp: False',
      'opentracker:',
      '    enable: True',
      '    port: "10001"',
      'aria2:',
      '    bt_enable_lpd: False',
      '    enable_peer_exchange: True',
      '    enable_dht: False',
      '    check_integrity: True',
      '    console_log_level: notice',
      '',
    ].join('\n'),
  );
  writeFileSync(
    join(envDir, 'oss', 'linuxos', 'config.yaml'),
    'dispname: TestOS\nmethod: kexec\nkernel: vmlinuz\ninitrd: initramfs.img\ncmdline: "break"\n',
  );
  writeFileSync(join(envDir, 'oss', 'linuxos', 'vmlinuz'), pseudoRandomBytes(1 << 20, 4));
  writeFileSync(join(envDir, 'oss', 'linuxos', 'initramfs.img'), pseudoRandomBytes(1 << 20, 5));
  const phase1 = join(dir, 'phase1');
  mkdirSync(phase1);
  writeFileSync(join(phase1, 'vmlinuz'), 'k');
  writeFileSync(join(phase1, 'initrd.img'), 'i');
  const lab = removedWithTest(t, new NetLab('v0', '10.85.0.1/24'));
  lab.linkToHost('10.85.255.1/30', `${srv}/30`);
  // Also the log as a collector reads it (#19 item 3): one JSON object per line.
  const server = lab.spawn(process.execPath, [
    BIN,
    'start',
    '--env',
    envDir,
    '--phase1',
    phase1,
    '--log-format',
    'json',
  ]);
  await waitForOutput(server, /Ctrl-C stops/, 60_000, 'start (version 0)');
  const out = server.output();
  assert.match(
    out,
    /^warning: \S+Boottorrent\.yaml:14:11: opentracker\.port: quoted number "10001" read as 10001/m,
  );
  assert.match(
    out,
    /^warning: \S+Boottorrent\.yaml:18:5: aria2\.enable_dht: unknown field 'enable_dht' in aria2 is ignored/m,
  );
  assert.match(out, /^warning: \S+Boottorrent\.yaml:19:5: aria2\.check_integrity: unknown field/m);
  const cfg = parseBootConfig(await (await fetch(`http://${srv}/api/v1/boot/52:54:00:85:00:01`)).text());
  assert.deepEqual(
    cfg.oss.map((o) => o.id),
    ['linuxos'],
  );
  // The quoted port is the tracker's port.
  assert.match(
    execFileSync('ip', ['netns', 'exec', lab.ns, 'ss', '-H', '-uln'], { encoding: 'utf8' }),
    /:10001\s/,
  );
  await lab.stop(server, 10_000);
  assert.equal(server.child.exitCode, 0, server.output());
  const records = server
    .output()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { time?: string; level: string; msg: string; scope?: string });
  assert.ok(
    records.some((r) => r.level === 'info' && r.msg === 'ready' && typeof r.time === 'string'),
    server.output(),
  );
  assert.ok(records.some((r) => r.scope === 'catalog'));
  assert.doesNotMatch(server.output(), /^\d{4}-\d\d-\d\dT/m, 'no text log lines');
});
