// GET /metrics of a running `boottorrent start` (issue #19 item 4), read by
// Prometheus's own parser and linter (`promtool check metrics`, Debian
// package prometheus) and by the strict reader in test/helpers: the server
// runs in a namespace LAN with full DHCP and TFTP; a real DHCP client
// (busybox udhcpc) takes a lease, this test is iPXE asking for its script,
// a TFTP client (one file fetched, one missing, one junk packet), agents
// reporting several stages (two failures, one with an OS id made to break
// the format), a peer announcing to the tracker and a report that does not
// parse. Every value asserted is what the test did, or what the server's
// own status and log say.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { parseBootConfig } from '../../src/boot-config.js';
import { ERROR_CODES } from '../../src/errors.js';
import { CLIENT_STAGES } from '../../src/http/snapshot.js';
import type { ServerSnapshot } from '../../src/server/state.js';
import { NetnsLab } from '../../src/util/netns.js';
import { BIN } from '../helpers/cli.js';
import { removedWithTest, waitForOutput } from '../helpers/netns.js';
import { parseExposition, sampleValue, type ParsedFamily } from '../helpers/prometheus-text.js';
import { requireProgram } from '../helpers/programs.js';
import { tempDir } from '../helpers/tmp.js';

const N = randomInt(100, 200);
const SRV = `10.${N}.1.1`;
/** The server namespace's end of the link to this test. */
const UPLINK = `10.${N}.255.2`;
const DASH = `http://${UPLINK}:8480`;
const BOOT = `http://${UPLINK}`;
const mac = (n: number) => `52:54:00:19:${N.toString(16)}:${n.toString(16).padStart(2, '0')}`;

function writeEnv(dir: string): { envDir: string; phase1: string } {
  const envDir = join(dir, 'env');
  const ipxe = join(dir, 'ipxe');
  mkdirSync(ipxe, { recursive: true });
  for (const f of ['undionly.kpxe', 'ipxe.efi']) writeFileSync(join(ipxe, f), `${f} stand-in`);
  for (const os of ['alpha', 'beta']) {
    mkdirSync(join(envDir, 'oss', os), { recursive: true });
    writeFileSync(
      join(envDir, 'oss', os, 'config.yaml'),
      `name: ${os}\nmethod: kexec\nkernel: vmlinuz\ninitrd: [initrd.img]\ncmdline: quiet\n`,
    );
    writeFileSync(join(envDir, 'oss', os, 'vmlinuz'), `${os} kernel`);
    writeFileSync(join(envDir, 'oss', os, 'initrd.img'), `${os} initrd`);
  }
  writeFileSync(
    join(envDir, 'Boottorrent.yaml'),
    [
      'version: 1',
      'server:',
      '  interface: br0',
      `  address: ${SRV}`,
      '  tftp: true',
      `  ipxe_dir: ${ipxe}`,
      'dhcp:',
      '  mode: full',
      `  range: 10.${N}.1.100-10.${N}.1.150`,
      'tracker:',
      '  enabled: true',
      'boot:',
      '  default_os: alpha',
      '',
    ].join('\n'),
  );
  const phase1 = join(dir, 'phase1');
  mkdirSync(phase1);
  writeFileSync(join(phase1, 'vmlinuz'), 'k');
  writeFileSync(join(phase1, 'initrd.img'), 'i');
  return { envDir, phase1 };
}

/**
 * One UDP exchange from a fresh socket: sends `packet` to host:port and
 * collects replies while `onReply` (which may answer, to the port the
 * reply came from) returns true; rejects after 10 s without an end.
 */
async function udpAsk(
  host: string,
  port: number,
  packet: Buffer,
  onReply?: (reply: Buffer, answer: (b: Buffer) => void) => boolean,
): Promise<Buffer[]> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, () => r()));
  const replies: Buffer[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no reply from ${host}:${port}`)), 10_000);
      s.on('message', (msg, rinfo) => {
        replies.push(msg);
        const more = onReply?.(msg, (b) => s.send(b, rinfo.port, rinfo.address)) ?? false;
        if (!more) {
          clearTimeout(timer);
          // Let the last send (an ACK) leave before the socket closes.
          setTimeout(resolve, 200);
        }
      });
      s.send(packet, port, host);
    });
  } finally {
    s.close();
  }
  return replies;
}

const rrq = (file: string) => Buffer.concat([Buffer.from([0, 1]), Buffer.from(`${file}\0octet\0`, 'latin1')]);

/** A request with an explicit Host header; resolves with status, headers and body. */
function get(
  url: string,
  init: { method?: string; host?: string } = {},
): Promise<{ status: number; type: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = httpRequest(
      {
        host: u.hostname,
        port: u.port,
        path: u.pathname + u.search,
        method: init.method ?? 'GET',
        headers: init.host ? { host: init.host } : {},
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], body }),
        );
      },
    );
    req.on('error', reject);
    req.end();
  });
}

test('GET /metrics of a running server: promtool reads it clean; clients in several stages, DHCP, TFTP, swarm and errors as they happened', async (t) => {
  const promtool = requireProgram('promtool', 'prometheus');
  const busybox = requireProgram('busybox', 'busybox-static');
  const testStart = Date.now() / 1000;
  const dir = tempDir(t, 'bt-metrics-');
  const { envDir, phase1 } = writeEnv(dir);

  //   [server ns] br0 SRV/24 --veth-- eth0 [client ns: udhcpc]
  //               uplink UPLINK/30 --veth-- this test
  const lab = removedWithTest(t, new NetnsLab());
  const srvNs = lab.ns('msrv');
  lab.bridge(srvNs, 'br0', `${SRV}/24`);
  const cliNs = lab.ns('mcli');
  lab.veth(srvNs, 'br0', cliNs, 'eth0');
  lab.linkToHost(srvNs, `10.${N}.255.1/30`, `${UPLINK}/30`);
  const dhcpMac = /link\/ether (\S+)/.exec(lab.ip(cliNs, 'link', 'show', 'eth0'))![1]!;

  const server = lab.spawn(srvNs, process.execPath, [
    '--enable-source-maps',
    BIN,
    'start',
    '--env',
    envDir,
    '--phase1',
    phase1,
    '--dashboard',
    `${UPLINK}:8480`,
    '--report-from',
    `10.${N}.255.0/30`,
    '--force-dhcp',
    '--verbose',
  ]);
  t.after(() => lab.stop(server));
  await waitForOutput(server, /dashboard http:\/\/\S+; Ctrl-C stops/, 60_000, 'start');

  // 1. A real DHCP client takes a lease (DISCOVER/OFFER, REQUEST/ACK): a client in stage dhcp.
  const script = join(dir, 'udhcpc.sh');
  writeFileSync(script, '#!/bin/sh\necho "LEASE $1 ${ip:-}"\n', { mode: 0o755 });
  const dhcp = spawnSync(
    'ip',
    [
      'netns',
      'exec',
      cliNs,
      busybox,
      'udhcpc',
      '-i',
      'eth0',
      '-f',
      '-q',
      '-n',
      '-t',
      '5',
      '-T',
      '1',
      '-s',
      script,
    ],
    { encoding: 'utf8', timeout: 30_000 },
  );
  assert.equal(dhcp.status, 0, `udhcpc: ${dhcp.stdout}${dhcp.stderr}`);
  assert.match(dhcp.stdout, new RegExp(`LEASE bound 10\\.${N}\\.1\\.1\\d\\d`));

  // 2. iPXE asking for its script: a client in stage ipxe.
  assert.equal((await get(`${BOOT}/boot.ipxe?mac=${mac(1)}`)).status, 200);

  // 3. TFTP: one file fetched to the end, one missing, one junk packet.
  const got = await udpAsk(UPLINK, 69, rrq('undionly.kpxe'), (reply, answer) => {
    // DATA block n: ACK it to the transfer's own port (its TID); a block under 512 bytes is the last.
    if (reply.readUInt16BE(0) !== 3) return false;
    const ack = Buffer.from([0, 4, 0, 0]);
    ack.writeUInt16BE(reply.readUInt16BE(2), 2);
    answer(ack);
    return reply.length - 4 === 512;
  });
  assert.equal(got.map((b) => b.subarray(4).toString()).join(''), 'undionly.kpxe stand-in');
  const missing = await udpAsk(UPLINK, 69, rrq('nothing-here.efi'));
  assert.equal(missing[0]?.readUInt16BE(0), 5, 'ERROR for a missing file');
  const junk = createSocket('udp4');
  await new Promise<void>((r) => junk.send(Buffer.from([0, 42, 1]), 69, UPLINK, () => r()));
  junk.close();
  await waitForOutput(server, /\[tftp[^\]]*\] transfer .*result=ok/, 10_000, 'TFTP transfer logged');

  // 4. Agents: boot configs (tokens: this test's address is in --report-from), then reports.
  const config = async (m: string) => parseBootConfig(await (await fetch(`${BOOT}/api/v1/boot/${m}`)).text());
  const report = async (m: string, body: string) => {
    const cfg = await config(m);
    return fetch(cfg.reportUrl.replace(`http://${SRV}`, BOOT), {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-boottorrent-token': cfg.reportToken },
      body,
    });
  };
  const hostile = 'x"} 1\nboottorrent_pwned{os="\\';
  const reports: [string, object][] = [
    [mac(2), { stage: 'menu' }],
    [mac(3), { stage: 'downloading', os: 'alpha', progress: 0.3 }],
    [mac(4), { stage: 'downloading', os: 'alpha', progress: 0.9 }],
    [mac(4), { stage: 'booting', os: 'alpha' }],
    [mac(5), { stage: 'failed', os: 'beta', error: 'bad checksum' }],
    [mac(6), { stage: 'failed', os: hostile, error: 'made up' }],
  ];
  for (const [m, body] of reports) assert.equal((await report(m, JSON.stringify(body))).status, 204, m);
  assert.equal((await report(mac(7), '{"stage": "nonsense"')).status, 400, 'a report that does not parse');

  // 5. A peer announces to the tracker that it has sent 12345 bytes of alpha to others.
  const alpha = (await config(mac(3))).oss.find((o) => o.id === 'alpha')!;
  const infoHash = Buffer.from(alpha.infoHash, 'hex');
  const q = new URLSearchParams({
    peer_id: '-XX0001-metricstest1',
    port: '51413',
    uploaded: '12345',
    downloaded: '0',
    left: '100',
    compact: '1',
  });
  const announce = await fetch(
    `http://${UPLINK}:6969/announce?info_hash=${[...infoHash].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('')}&${q.toString()}`,
  );
  assert.equal(announce.status, 200);
  assert.doesNotMatch(Buffer.from(await announce.arrayBuffer()).toString('latin1'), /failure reason/);
  // The server's own seeder announces both OSs at start: wait until the tracker has them.
  for (let i = 0; ; i++) {
    const s = (await (await fetch(`${DASH}/api/v1/status`)).json()) as ServerSnapshot;
    if (s.swarms.every((w) => w.seeders >= 1)) break;
    assert.ok(i < 100, `the seeder announces: ${JSON.stringify(s.swarms)}`);
    await new Promise((r) => setTimeout(r, 100));
  }

  // 6. The scrape, as Prometheus makes it.
  let text = '';
  let status: ServerSnapshot | undefined;
  for (let i = 0; i < 5; i++) {
    const before = await (await fetch(`${DASH}/api/v1/status`)).text();
    const res = await get(`${DASH}/metrics`);
    assert.equal(res.status, 200);
    assert.equal(res.type, 'text/plain; version=0.0.4; charset=utf-8');
    text = res.body;
    const after = await (await fetch(`${DASH}/api/v1/status`)).text();
    const [b, a] = [before, after].map((s) => JSON.parse(s) as ServerSnapshot);
    // The same bytes sent on both sides of the scrape (a re-announce may land between).
    if (JSON.stringify(b!.totals.sent) === JSON.stringify(a!.totals.sent)) {
      status = a;
      break;
    }
  }
  assert.ok(status, 'a scrape between two equal status answers');

  const check = spawnSync(promtool, ['check', 'metrics'], { input: text, encoding: 'utf8' });
  assert.equal(check.status, 0, `promtool check metrics: ${check.stdout}${check.stderr}\n${text}`);
  assert.equal(`${check.stdout}${check.stderr}`.trim(), '', 'no lint findings');

  const m = parseExposition(text);
  const all = (name: string): ParsedFamily => {
    const f = m.get(name);
    assert.ok(f, `${name} is there`);
    return f;
  };

  // Clients by stage: the rows this test made, every stage a series.
  const stages: Record<string, number> = { dhcp: 1, ipxe: 1, menu: 1, downloading: 1, booting: 1, failed: 2 };
  for (const stage of CLIENT_STAGES)
    assert.equal(sampleValue(m, 'boottorrent_clients', { stage }), stages[stage] ?? 0, stage);
  assert.equal(all('boottorrent_clients').samples.length, CLIENT_STAGES.length);
  assert.equal(
    all('boottorrent_clients').samples.reduce((n, s) => n + s.value, 0),
    status.clients.length,
    "the same clients as status's",
  );
  assert.ok(
    status.clients.some((c) => c.mac === dhcpMac && c.stage === 'dhcp'),
    'the udhcpc client',
  );

  // Boots and failures by OS; the made-up OS id is no label, and nowhere in the text.
  assert.equal(sampleValue(m, 'boottorrent_boots_total', { os: 'alpha' }), 1);
  assert.equal(sampleValue(m, 'boottorrent_boots_total', { os: 'beta' }), 0);
  assert.equal(sampleValue(m, 'boottorrent_boot_failures_total', { os: 'beta' }), 1);
  assert.equal(sampleValue(m, 'boottorrent_boot_failures_total', { os: 'alpha' }), 0);
  assert.equal(sampleValue(m, 'boottorrent_boot_failures_total', { os: '' }), 1);
  assert.doesNotMatch(text, /pwned/);
  for (const f of m.values())
    for (const s of f.samples) assert.ok(!Object.values(s.labels).includes(hostile), f.name);

  // Server bytes: status's parts, under status's stages; DHCP, TFTP and the script are in phase 1.
  const sent = all('boottorrent_server_sent_bytes_total');
  assert.deepEqual(
    Object.fromEntries(sent.samples.map((s) => [s.labels.part, s.value])),
    status.totals.sent.parts,
  );
  for (const stage of ['phase1', 'os', 'other'] as const)
    assert.equal(
      sent.samples.filter((s) => s.labels.stage === stage).reduce((n, s) => n + s.value, 0),
      status.totals.sent[stage],
      stage,
    );
  for (const part of ['dhcp', 'tftp', 'scripts'])
    assert.ok(sampleValue(m, 'boottorrent_server_sent_bytes_total', { stage: 'phase1', part }) > 0, part);

  // Swarms: the server's seeder in both, the announcing peer in alpha's, and what it said it sent.
  assert.equal(sampleValue(m, 'boottorrent_swarm_peers', { os: 'alpha' }), 2);
  assert.equal(sampleValue(m, 'boottorrent_swarm_seeders', { os: 'alpha' }), 1);
  assert.equal(sampleValue(m, 'boottorrent_swarm_peers', { os: 'beta' }), 1);
  assert.equal(sampleValue(m, 'boottorrent_swarm_seeders', { os: 'beta' }), 1);
  assert.equal(sampleValue(m, 'boottorrent_peer_sent_bytes_total', { os: 'alpha' }), 12345);
  assert.equal(sampleValue(m, 'boottorrent_peer_sent_bytes_total', { os: 'beta' }), 0);
  for (const w of status.swarms)
    assert.equal(sampleValue(m, 'boottorrent_seeder_payload_bytes_total', { os: w.os }), w.serverUploaded);

  // DHCP: one lease; the replies are the ones the server logged (-v logs OFFERs too).
  const out = server.output();
  const logged = (re: RegExp) => out.split('\n').filter((l) => re.test(l)).length;
  assert.equal(sampleValue(m, 'boottorrent_dhcp_leases'), 1);
  const offers = logged(/\[dhcp[^\]]*\] DHCP OFFER /);
  const acks = logged(/\[dhcp[^\]]*\] DHCP ACK /);
  assert.ok(offers >= 1 && acks >= 1, out.slice(-3000));
  assert.equal(sampleValue(m, 'boottorrent_dhcp_replies_total', { type: 'offer' }), offers);
  assert.equal(sampleValue(m, 'boottorrent_dhcp_replies_total', { type: 'ack' }), acks);
  assert.equal(sampleValue(m, 'boottorrent_dhcp_replies_total', { type: 'nak' }), 0);

  // TFTP: the transfer and the refusal; none left running.
  assert.equal(sampleValue(m, 'boottorrent_tftp_transfers_total', { result: 'ok' }), 1);
  assert.equal(sampleValue(m, 'boottorrent_tftp_transfers_total', { result: 'refused' }), 1);
  assert.equal(sampleValue(m, 'boottorrent_tftp_transfers_total', { result: 'timeout' }), 0);
  assert.equal(sampleValue(m, 'boottorrent_tftp_transfers_active'), 0);

  // Errors by code: the junk TFTP packet and the report that did not parse; every code a series.
  const errors: Record<string, number> = { BT_ERR_TFTP_CODEC: 1, BT_ERR_BOOT_CONFIG: 1 };
  for (const code of ERROR_CODES)
    assert.equal(sampleValue(m, 'boottorrent_errors_total', { code }), errors[code] ?? 0, code);

  // What runs, since when.
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  assert.equal(sampleValue(m, 'boottorrent_build_info', { version: pkg.version }), 1);
  const started = sampleValue(m, 'process_start_time_seconds');
  assert.ok(started >= testStart - 1 && started <= Date.now() / 1000, `${started} vs ${testStart}`);

  // HTTP conventions of the dashboard port: HEAD, other methods, a foreign Host (DNS rebinding).
  const head = await get(`${DASH}/metrics`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.type, 'text/plain; version=0.0.4; charset=utf-8');
  assert.equal(head.body, '');
  assert.equal((await get(`${DASH}/metrics`, { method: 'POST' })).status, 405);
  assert.equal((await get(`${DASH}/metrics`, { host: 'rebind.evil.example:8480' })).status, 421);
  assert.equal((await get(`${DASH}/metrics`, { host: `${UPLINK}:8480` })).status, 200);

  await lab.stop(server);
  assert.equal(server.child.exitCode, 0, server.output().slice(-2000));
});
