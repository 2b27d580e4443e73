/**
 * Fault: the server restarts while the clients download. `boottorrent
 * start` serves full DHCP on a bridge in its own namespace; three client
 * namespaces, each with a veth on that bridge, get their addresses from it
 * with busybox udhcpc, then run host-mode agents (`--no-network`: udhcpc
 * configured them). Once every agent is >= 20 % into the download the
 * server gets SIGTERM, and is started again with the same environment.
 * The clients ask for an address again and keep the one they had (leases
 * persist in <env>/.boottorrent/leases.json), and the agents finish: every
 * file verified against the boot config.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NetLab, waitForOutput, type LabProcess } from '../../src/demo/lab.js';
import { BIN } from '../helpers/cli.js';
import { startProc, until, type Proc } from '../helpers/faults-peers.js';
import { startAgent, writeFaultEnv } from '../helpers/faults-server.js';
import { Lab, removedWithTest } from '../helpers/netns.js';
import { requireProgram } from '../helpers/programs.js';
import { tempDir } from '../helpers/tmp.js';

const SRV = '10.92.0.1';
const CLIENTS = 3;
const mac = (i: number) => `02:00:00:92:00:${String(i + 1).padStart(2, '0')}`;

/** busybox udhcpc: one DHCP exchange, then exit; returns the address it was given. */
async function udhcpc(
  after: (fn: () => unknown) => void,
  busybox: string,
  script: string,
  ns: string,
): Promise<string> {
  const p = startProc(after, 'ip', [
    'netns',
    'exec',
    ns,
    busybox,
    'udhcpc',
    '-i',
    'eth0',
    '-f',
    '-q',
    '-n',
    '-t',
    '10',
    '-T',
    '1',
    '-s',
    script,
  ]);
  const { code } = await p.exited;
  const ip = /^LEASE bound (\S+)/m.exec(p.output())?.[1];
  assert.equal(code, 0, p.output());
  assert.ok(ip, p.output());
  return ip;
}

test('faults: the server restarts mid-download; clients keep their DHCP addresses and the agents finish', async (t) => {
  const busybox = requireProgram('busybox', 'busybox-static');
  const dir = tempDir(t, 'bt-faults-restart-');
  const env = writeFaultEnv(dir, {
    iface: 'br0',
    address: SRV,
    dhcp: ['  mode: full', '  range: 10.92.0.100-10.92.0.150'],
    seedTime: 2,
    kernelBytes: 4 << 20,
    initrdBytes: 20 << 20,
  });
  const script = join(dir, 'udhcpc.sh');
  // udhcpc runs its script with the event as $1 and the lease in the environment.
  writeFileSync(script, '#!/bin/sh\necho "LEASE $1 ${ip:-} ${serverid:-}"\n');
  chmodSync(script, 0o755);

  const lab = removedWithTest(t, new NetLab('frst', `${SRV}/24`));
  const clientsLab = new Lab(t);
  const after = (fn: () => unknown) => t.after(fn);
  const clients = Array.from({ length: CLIENTS }, (_, i) => {
    const ns = clientsLab.ns(`frc${i}`);
    const br = `vfr${clientsLab.id}${i}`;
    execFileSync('ip', [
      'link',
      'add',
      br,
      'netns',
      lab.ns,
      'type',
      'veth',
      'peer',
      'name',
      'eth0',
      'netns',
      ns,
    ]);
    lab.ip('link', 'set', br, 'master', 'br0', 'up');
    clientsLab.ip(ns, 'link', 'set', 'eth0', 'address', mac(i));
    clientsLab.ip(ns, 'link', 'set', 'eth0', 'up');
    return {
      ns,
      mac: mac(i),
      dir: tempDir(t, 'bt-faults-restart-agent-'),
      ip: '',
      agent: undefined as Proc | undefined,
    };
  });

  const startServer = async (): Promise<LabProcess> => {
    const p = lab.spawn(process.execPath, [
      '--enable-source-maps',
      BIN,
      'start',
      '--env',
      env.envDir,
      '--phase1',
      env.phase1,
      '--dashboard',
      `${SRV}:8480`,
      '--upload-limit',
      '2M',
    ]);
    await waitForOutput(p, /dashboard http:\/\/\S+; Ctrl-C stops/, 90_000, 'start');
    return p;
  };
  const first = await startServer();

  for (const c of clients) {
    c.ip = await udhcpc(after, busybox, script, c.ns);
    assert.match(c.ip, /^10\.92\.0\.(1[0-4]\d|150)$/);
    clientsLab.ip(c.ns, 'addr', 'add', `${c.ip}/24`, 'dev', 'eth0');
  }
  assert.equal(new Set(clients.map((c) => c.ip)).size, CLIENTS, 'distinct addresses');
  for (const c of clients)
    c.agent = startAgent(after, `http://${SRV}`, c.mac, c.dir, ['ip', 'netns', 'exec', c.ns]);

  // SIGTERM the server once every agent shows >= 20 %.
  const percent = (p: Proc) =>
    Math.max(0, ...[...p.output().matchAll(/downloading alpha:\s+([\d.]+)%/g)].map((m) => Number(m[1])));
  await until(
    () => clients.every((c) => percent(c.agent!) >= 20),
    120_000,
    () => clients.map((c) => `${c.mac}: ${c.agent!.output().slice(-500)}`).join('\n'),
  );
  const before = clients.map((c) => percent(c.agent!));
  await lab.stop(first, 10_000);
  assert.equal(first.child.exitCode, 0, first.output());
  assert.ok(
    clients.every((c) => !/verified \d+ files/.test(c.agent!.output())),
    `no agent had finished when the server stopped (${before.join(', ')} %)`,
  );

  const second = await startServer();
  const leases = readFileSync(join(env.envDir, '.boottorrent', 'leases.json'), 'utf8');
  for (const c of clients) {
    assert.match(leases, new RegExp(c.mac.replace(/:/g, '.'), 'i'), 'the lease was kept on disk');
    const again = await udhcpc(after, busybox, script, c.ns);
    assert.equal(again, c.ip, `${c.mac} keeps its address across the restart`);
  }

  for (const c of clients) {
    const a = c.agent!;
    await until(
      () => a.child.exitCode !== null || a.child.signalCode !== null,
      150_000,
      () => `${c.mac} did not finish: ${a.output().slice(-3000)}`,
    );
    assert.equal(a.child.exitCode, 0, a.output());
    assert.doesNotMatch(a.output(), /stage=failed/, 'the download went on through the restart');
    assert.match(a.output(), /boottorrent-agent: verified \d+ files of alpha/);
    assert.match(a.output(), /dry-run: would run: kexec -l/);
    for (const [name, data] of Object.entries(env.files))
      assert.equal(
        createHash('sha256')
          .update(readFileSync(join(c.dir, 'alpha', name)))
          .digest('hex'),
        createHash('sha256').update(data).digest('hex'),
        `${c.mac} ${name}`,
      );
  }
  await lab.stop(second, 10_000);
  t.diagnostic(`progress when the server stopped: ${before.join(', ')} %`);
});
