/**
 * probeDhcpServers against a real DHCP server: dnsmasq in a namespace LAN
 * answers our DISCOVER and is reported; with no server the probe returns []
 * after its timeout; a server whose id is ours is ignored. The probe runs in
 * a child node process inside the probing namespace (it binds port 68 there).
 */
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Lab, waitForOutput } from '../helpers/netns.js';
import { requireProgram } from '../helpers/programs.js';
import { tempDir } from '../helpers/tmp.js';
import type { DhcpServerSeen } from '../../src/dhcp/probe.js';

const PROBE = new URL('../../src/dhcp/probe.js', import.meta.url).pathname;
const OURS = '10.44.0.1';
const THEIRS = '10.44.0.2';

function lan(t: TestContext): { lab: Lab; probeNs: string; otherNs: string } {
  const lab = new Lab(t);
  const probeNs = lab.ns('probe');
  lab.bridge(probeNs, 'br0', `${OURS}/24`);
  const otherNs = lab.ns('otherdhcp');
  lab.link(probeNs, 'br0', otherNs, 'eth0', `${THEIRS}/24`);
  return { lab, probeNs, otherNs };
}

async function probeIn(lab: Lab, ns: string, opts: Record<string, unknown>): Promise<DhcpServerSeen[]> {
  const code = `import { probeDhcpServers } from ${JSON.stringify(PROBE)};
const r = await probeDhcpServers(${JSON.stringify(opts)});
console.log('RESULT ' + JSON.stringify(r));`;
  const proc = lab.spawn(ns, process.execPath, ['--input-type=module', '-e', code]);
  const m = await waitForOutput(proc, /^RESULT (.*)$/m, 20_000, 'probe');
  return JSON.parse(m[1]!) as DhcpServerSeen[];
}

function startDnsmasq(t: TestContext, lab: Lab, ns: string): ReturnType<Lab['spawn']> {
  const dir = tempDir(t);
  return lab.spawn(ns, requireProgram('dnsmasq', 'dnsmasq-base'), [
    '--no-daemon',
    '--conf-file=/dev/null',
    '--port=0',
    '--interface=eth0',
    '--bind-interfaces',
    '--dhcp-range=10.44.0.150,10.44.0.160,1h',
    `--dhcp-leasefile=${join(dir, 'dnsmasq.leases')}`,
    `--pid-file=${join(dir, 'dnsmasq.pid')}`,
    '--log-dhcp',
  ]);
}

test('the probe finds dnsmasq on the LAN, with its server id and the offered address', async (t) => {
  requireProgram('dnsmasq', 'dnsmasq-base');
  const { lab, probeNs, otherNs } = lan(t);
  const dnsmasq = startDnsmasq(t, lab, otherNs);
  await waitForOutput(dnsmasq, /DHCP, IP range/, 10_000, 'dnsmasq');
  const seen = await probeIn(lab, probeNs, { interface: 'br0', serverIp: OURS, timeoutMs: 5000 });
  assert.equal(seen.length, 1, `${JSON.stringify(seen)}\n${dnsmasq.output()}`);
  assert.equal(seen[0]!.serverId, THEIRS);
  assert.equal(seen[0]!.address, THEIRS);
  assert.match(seen[0]!.offeredIp, /^10\.44\.0\.1(5\d|60)$/);
  // It was a DISCOVER only: dnsmasq offered, nobody requested, no lease was committed.
  assert.match(dnsmasq.output(), /DHCPOFFER\(eth0\)/);
  assert.doesNotMatch(dnsmasq.output(), /DHCPACK/);

  // The same server named as ours is not "another" server.
  assert.deepEqual(await probeIn(lab, probeNs, { interface: 'br0', serverIp: THEIRS, timeoutMs: 5000 }), []);
});

test('with no other DHCP server the probe returns [] after the timeout', async (t) => {
  const { lab, probeNs } = lan(t);
  assert.deepEqual(await probeIn(lab, probeNs, { interface: 'br0', serverIp: OURS, timeoutMs: 1500 }), []);
});

test('the probe names a missing interface', async (t) => {
  const { lab, probeNs } = lan(t);
  const proc = lab.spawn(probeNs, process.execPath, [
    '--input-type=module',
    '-e',
    `import { probeDhcpServers } from ${JSON.stringify(PROBE)};
try { await probeDhcpServers({ interface: 'nope0', timeoutMs: 100 }); } catch (e) { console.log('ERR ' + e.code + ' ' + e.message); }`,
  ]);
  const m = await waitForOutput(proc, /^ERR (\S+) (.*)$/m, 10_000, 'probe');
  assert.equal(m[1], 'BT_ERR_DHCP_CONFIG');
  assert.match(m[2]!, /nope0/);
});
