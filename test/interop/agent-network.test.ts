/**
 * The agent's network stage for real: in a client namespace created here,
 * the agent brings up its only NIC with busybox udhcpc and its own lease
 * script (dnsmasq answers from a server namespace), then fetches the boot
 * config from the test server running in that server namespace, downloads
 * over the veth and runs the OS's program.
 *
 *   [server ns] sa 10.N.1.1/24  <-- veth -->  eth0 (DHCP)  [client ns]
 *     dnsmasq (DHCP only), test server + seeder        the agent
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomInt } from 'node:crypto';
import { Lab, waitForOutput } from '../helpers/netns.js';
import { requireProgram } from '../helpers/programs.js';
import { tempDir } from '../helpers/tmp.js';
import { TOKEN, runAgent } from '../helpers/agent-fixture.js';

const SERVER_MAIN = new URL('../helpers/agent-server-main.js', import.meta.url).pathname;

test('agent: DHCP with its own udhcpc script on the only NIC, then config, download and run over the LAN', async (t) => {
  requireProgram('ip', 'iproute2');
  const busybox = requireProgram('busybox', 'busybox-static');
  const dnsmasq = requireProgram('dnsmasq', 'dnsmasq-base');
  const dir = tempDir(t, 'bt-agent-net-');
  const lab = new Lab(t);
  const s = lab.ns('as');
  const c = lab.ns('ac');
  // The lease script may write resolv.conf: `ip netns exec` binds this file over /etc/resolv.conf.
  const hadEtcNetns = existsSync('/etc/netns');
  const etcNetns = `/etc/netns/${c}`;
  t.after(() => rmSync(hadEtcNetns ? etcNetns : '/etc/netns', { recursive: true, force: true }));
  mkdirSync(etcNetns, { recursive: true });
  writeFileSync(join(etcNetns, 'resolv.conf'), '');

  const prefix = `10.${randomInt(100, 200)}.1`;
  execFileSync('ip', ['link', 'add', 'sa', 'netns', s, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', c]);
  lab.ip(s, 'addr', 'add', `${prefix}.1/24`, 'dev', 'sa');
  lab.ip(s, 'link', 'set', 'sa', 'up');
  lab.ip(c, 'link', 'set', 'eth0', 'address', '52:54:00:12:34:56');

  const dns = lab.spawn(s, dnsmasq, [
    '--no-daemon',
    '--conf-file=/dev/null',
    '--port=0',
    '--user=root',
    '--interface=sa',
    '--bind-interfaces',
    `--dhcp-range=${prefix}.50,${prefix}.60,255.255.255.0,10m`,
    `--dhcp-option=option:router,${prefix}.1`,
    `--dhcp-leasefile=${join(dir, 'leases')}`,
    `--pid-file=${join(dir, 'dnsmasq.pid')}`,
    '--log-dhcp',
    '--log-facility=-',
  ]);
  await waitForOutput(dns, /DHCP, IP range/, 10_000, 'dnsmasq');

  const marker = `NET-MARKER-${process.pid}`;
  mkdirSync(join(dir, 'oss'));
  const server = lab.spawn(s, process.execPath, [
    '--enable-source-maps',
    SERVER_MAIN,
    `${prefix}.1`,
    join(dir, 'oss'),
    marker,
  ]);
  const ready = await waitForOutput(server, /READY (\S+)/, 20_000, 'agent test server');

  // busybox provides udhcpc in phase 1; here a folder on PATH does.
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  symlinkSync(busybox, join(bin, 'udhcpc'));
  const agent = runAgent(t, ready[1]!, [], {
    prefix: ['ip', 'netns', 'exec', c],
    network: true,
    env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}` },
  });
  await agent.waitFor(/boottorrent-agent: stage=network/);
  await agent.waitFor(/asking DHCP on eth0/);
  const up = await agent.waitFor(/network up: eth0 (\S+)/, 60_000);
  assert.match(up[1]!, new RegExp(`^${prefix.replace(/\./g, '\\.')}\\.(5\\d|60)$`));
  assert.match(
    lab.ip(c, '-4', 'addr', 'show', 'dev', 'eth0'),
    new RegExp(`inet ${up[1]!.replace(/\./g, '\\.')}/24`),
  );
  assert.match(
    lab.ip(c, 'route', 'show', 'default'),
    new RegExp(`default via ${prefix.replace(/\./g, '\\.')}\\.1 dev eth0`),
  );

  await agent.waitFor(/verified 2 files of netos/, 60_000);
  await agent.waitFor(new RegExp(marker));
  await agent.waitFor(/netos exited with status 0/);
  agent.send('q');
  assert.equal((await agent.exited).code, 0, agent.output());
  await waitForOutput(server, /REPORT \S+ \{"stage":"running"/, 10_000, 'reports');
  for (const line of server
    .output()
    .split('\n')
    .filter((l) => l.startsWith('REPORT '))) {
    assert.equal(line.split(' ')[1], TOKEN);
  }
});
