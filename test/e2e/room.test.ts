// Running a room (issue #17) on real (virtual) machines: `boottorrent
// start` in a namespace LAN with a group room-b (two named VMs, a kernel
// command line, an overlay holding /etc/hostname rendered from {{name}}).
// `boottorrent next-boot lab-a beta --once` (the CLI, through the running
// server's token-protected API) makes lab-a boot beta while lab-b boots the
// default, alpha; each kexec'd OS prints its rendered hostname on serial;
// lab-a's next boot, once used, is gone: booted again it comes up in alpha.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { NetLab, labEnvYaml, waitForOutput } from '../../src/demo/lab.js';
import { LabVm } from '../../src/demo/vm.js';
import { writeMarkerOs } from '../../src/demo/sample-os.js';
import type { ServerSnapshot } from '../../src/server/state.js';
import { BIN } from '../helpers/cli.js';
import { requireProgram } from '../helpers/programs.js';
import { onProcessEnd } from '../helpers/reaper.js';
import { tempDir } from '../helpers/tmp.js';

const qemu = requireProgram('qemu-system-x86_64', 'qemu-system-x86');
requireProgram('busybox', 'busybox-static');
const LAN = '10.83.0';
const NS_SIDE = '10.83.255.2';
const MAC_A = '52:54:00:83:00:0a';
const MAC_B = '52:54:00:83:00:0b';
const MIN = 60_000;

test(
  'next-boot --once sends one VM of a group to another OS for one boot; each kexec-ed OS shows its overlay hostname',
  { timeout: 60 * MIN },
  async (t) => {
    const dir = tempDir(t);
    const id = Date.now().toString(36).toUpperCase();
    const markerAlpha = `BT-ROOM-ALPHA-${id}`;
    const markerBeta = `BT-ROOM-BETA-${id}`;
    const env = join(dir, 'env');
    writeMarkerOs(join(env, 'oss'), 'alpha', 'Alpha Linux', markerAlpha);
    writeMarkerOs(join(env, 'oss'), 'beta', 'Beta Linux', markerBeta);
    mkdirSync(join(env, 'overlays', 'room-b', 'etc'), { recursive: true });
    writeFileSync(join(env, 'overlays', 'room-b', 'etc', 'hostname'), '{{name}}\n');
    chmodSync(join(env, 'overlays', 'room-b', 'etc', 'hostname'), 0o600);
    writeFileSync(
      join(env, 'Boottorrent.yaml'),
      labEnvYaml({
        lan: LAN,
        range: [100, 200],
        defaultOs: 'alpha',
        timeout: 0,
        seedTime: 0,
        hosts: { [MAC_A]: '{ name: lab-a }', [MAC_B]: '{ name: lab-b }' },
      }) +
        [
          'groups:',
          '  room-b:',
          `    range: ${MAC_A}-${MAC_B}`,
          '    cmdline: room=b',
          '    overlay: overlays/room-b',
          '',
        ].join('\n'),
    );

    const lab = new NetLab('room', `${LAN}.1/24`);
    const forget = onProcessEnd(() => lab.destroy());
    t.after(() => {
      lab.destroy();
      forget();
    });
    lab.linkToHost('10.83.255.1/30', `${NS_SIDE}/30`);
    const server = lab.spawn(process.execPath, [
      '--enable-source-maps',
      BIN,
      'start',
      '--env',
      env,
      '--console',
      'serial',
      '--dashboard',
      `${NS_SIDE}:8480`,
    ]);
    await waitForOutput(server, /phase 1: (reusing|built) base image/, 30 * MIN, 'start: phase 1');
    await waitForOutput(server, /Ctrl-C stops/, 2 * MIN, 'start');
    const status = async () =>
      (await (await fetch(`http://${NS_SIDE}:8480/api/v1/status`)).json()) as ServerSnapshot;

    // The CLI, as the sysadmin types it, against the running server.
    const cli = promisify(execFile);
    const set = await cli(process.execPath, [BIN, 'next-boot', '--env', env, 'lab-a', 'beta', '--once']);
    assert.match(set.stdout, /host lab-a: boots beta next \(once\)/);
    const refused = await cli(process.execPath, [BIN, 'next-boot', '--env', env, 'lab-c', 'beta']).then(
      () => undefined,
      (err: Error & { stderr?: string }) => err.stderr ?? err.message,
    );
    assert.match(refused ?? 'accepted', /lab-c: not a MAC address, nor the name of a host or group/);
    const nextFile = JSON.parse(readFileSync(join(env, '.boottorrent', 'next-boot.json'), 'utf8')) as {
      macs: Record<string, { os: string; once: boolean }>;
    };
    assert.deepEqual(
      { os: nextFile.macs[MAC_A]?.os, once: nextFile.macs[MAC_A]?.once },
      { os: 'beta', once: true },
    );

    const opts = { dir, qemu, memoryMb: 512 };
    const vmA = new LabVm(lab, { ...opts, name: 'vm-lab-a', mac: MAC_A });
    const vmB = new LabVm(lab, { ...opts, name: 'vm-lab-b', mac: MAC_B });
    let vmA2: LabVm | undefined;
    const closeVms = () => {
      vmA.close();
      vmB.close();
      vmA2?.close();
    };
    const forgetVms = onProcessEnd(closeVms);
    t.after(() => {
      closeVms();
      forgetVms();
    });
    try {
      await vmA.waitFor(/boottorrent-agent: starting/, 15 * MIN);
      const a = await vmA.waitFor(new RegExp(`${markerBeta} cmdline: (.*)`), 10 * MIN);
      assert.match(a[1]!, /bt\.os=beta/);
      assert.match(a[1]!, /room=b/, "the group's command line");
      await vmA.waitFor(new RegExp(`${markerBeta} hostname: lab-a`), 2 * MIN);
      assert.match(vmA.serial(), /overlay of this machine: .* checked/);
      assert.doesNotMatch(vmA.serial(), new RegExp(`${markerAlpha} cmdline`));

      const b = await vmB.waitFor(new RegExp(`${markerAlpha} cmdline: (.*)`), 15 * MIN);
      assert.match(b[1]!, /room=b/);
      await vmB.waitFor(new RegExp(`${markerAlpha} hostname: lab-b`), 2 * MIN);

      let snap = await status();
      const rows = new Map(snap.clients.map((c) => [c.mac, c]));
      assert.equal(rows.get(MAC_A)?.name, 'lab-a');
      assert.deepEqual(rows.get(MAC_A)?.groups, ['room-b']);
      assert.equal(rows.get(MAC_A)?.os, 'beta');
      assert.equal(rows.get(MAC_A)?.nextBoot, null, 'used up by the boot');
      assert.equal(rows.get(MAC_B)?.os, 'alpha');
      assert.match(server.output(), /client lab-a used its next boot \(once\)/);
      assert.match(server.output(), /client lab-b \(52:54:00:83:00:0b/);

      // lab-a again: its once entry is gone, so the group's default.
      const powerOff = Date.now() + 2 * MIN;
      while (!vmA.exited && Date.now() < powerOff) await new Promise((r) => setTimeout(r, 500));
      vmA.close();
      vmA2 = new LabVm(lab, { ...opts, name: 'vm-lab-a-again', mac: MAC_A });
      await vmA2.waitFor(new RegExp(`${markerAlpha} hostname: lab-a`), 20 * MIN);
      assert.doesNotMatch(vmA2.serial(), new RegExp(`${markerBeta} cmdline`));
      snap = await status();
      assert.equal(snap.clients.find((c) => c.mac === MAC_A)?.os, 'alpha');
    } catch (err) {
      t.diagnostic(`server log:\n${server.output().slice(-5000)}`);
      throw err;
    }
  },
);
