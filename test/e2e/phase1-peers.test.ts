// Phase 1 served by peers (#16) on QEMU machines (TCG), with real stage 0s:
// `boottorrent start` with peers.phase1 on, in a namespace LAN.
// - pc1 loads phase 1 from the server (no peer yet) and waits at its menu
//   (a per-host `timeout: -1`), serving its phase 1.
// - pc2 loads the kernel and stage 0 from the server and the rest from pc1,
//   checks it and boots the OS from the swarm.
// - pc1 is told to boot (Enter on its console): it leaves, so it is no
//   longer offered. Two fake peers then report that they serve phase 1: one
//   from an address where nothing listens (an agent that is gone), one that
//   serves wrong bytes. pc3's stage 0 is sent to both in turn, refuses the
//   wrong bytes, falls back to the server and boots.
// Each step has its own deadline; the VMs, the fake peers, the server and
// the namespace are stopped also when the runner kills this file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NetLab, labEnvYaml, waitForOutput } from '../../src/demo/lab.js';
import { LabVm } from '../../src/demo/vm.js';
import { writeMarkerOs } from '../../src/demo/sample-os.js';
import type { ServerSnapshot } from '../../src/server/state.js';
import { BIN } from '../helpers/cli.js';
import { requireProgram } from '../helpers/programs.js';
import { onProcessEnd } from '../helpers/reaper.js';
import { tempDir } from '../helpers/tmp.js';

const qemu = requireProgram('qemu-system-x86_64', 'qemu-system-x86');
const LAN = '10.81.0';
const NS_SIDE = '10.81.255.2';
const PC1 = '52:54:00:81:00:01';
const PC2 = '52:54:00:81:00:02';
const PC3 = '52:54:00:81:00:03';
const GONE = { ip: `${LAN}.50`, mac: '52:54:00:81:00:50' };
const BAD = { ip: `${LAN}.51`, mac: '52:54:00:81:00:51' };
const FAKES = new URL('fixtures/fake-phase1-peers.js', import.meta.url).pathname;
const MIN = 60_000;

test(
  'phase 1 from a peer: pc2 loads it from pc1; pc3 skips a gone peer and a lying one, then loads it from the server',
  { timeout: 60 * MIN },
  async (t) => {
    const dir = tempDir(t);
    const marker = `BT-P1PEERS-${Date.now().toString(36).toUpperCase()}`;
    const env = join(dir, 'env');
    mkdirSync(join(env, 'oss'), { recursive: true });
    writeMarkerOs(join(env, 'oss'), 'alpha', 'Alpha Linux', marker);
    writeFileSync(
      join(env, 'Boottorrent.yaml'),
      labEnvYaml({
        lan: LAN,
        range: [100, 200],
        defaultOs: 'alpha',
        timeout: 3,
        seedTime: 2,
        phase1Peers: true,
        hosts: { [PC1]: '{ timeout: -1 }' },
      }),
    );
    const lab = new NetLab('p1e2e', `${LAN}.1/24`);
    const vms: LabVm[] = [];
    const stopAll = () => {
      for (const vm of vms) vm.close();
      lab.destroy();
    };
    const forget = onProcessEnd(stopAll);
    t.after(() => {
      stopAll();
      forget();
    });
    lab.linkToHost('10.81.255.1/30', `${NS_SIDE}/30`);
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
      // The fake peers report from these two addresses.
      '--report-from',
      `${LAN}.50/31`,
    ]);
    await waitForOutput(server, /phase 1: (reusing|built) base image/, 30 * MIN, 'start: phase 1');
    await waitForOutput(server, /Ctrl-C stops/, 2 * MIN, 'start');
    assert.match(server.output(), /phase 1 is served by peers/);
    const status = async () =>
      (await (await fetch(`http://${NS_SIDE}:8480/api/v1/status`)).json()) as ServerSnapshot;

    try {
      const vm = (name: string, mac: string, interactive = false) => {
        const v = new LabVm(lab, { name, mac, dir, qemu, memoryMb: 640, interactive });
        vms.push(v);
        return v;
      };
      // pc1: from the server, then serves at its menu.
      const pc1 = vm('pc1', PC1, true);
      await pc1.waitFor(
        /stage 0: fetching phase 1 from http:\/\/10\.81\.0\.1\/phase1\/initrd\.img/,
        15 * MIN,
      );
      await pc1.waitFor(/stage 0: phase 1 checked/, 5 * MIN);
      await pc1.waitFor(/serving phase 1 to later clients on port 8470/, 5 * MIN);
      await pc1.waitFor(/stage=menu/, 5 * MIN);
      const pc1Ip = (await status()).clients.find((c) => c.mac === PC1)?.ip;
      assert.ok(pc1Ip, 'pc1 has an address');

      // pc2: the payload from pc1, checked, then the OS.
      const pc2 = vm('pc2', PC2);
      await pc2.waitFor(
        new RegExp(
          `stage 0: fetching phase 1 from http://${pc1Ip.replace(/\./g, '\\.')}:8470/phase1/payload`,
        ),
        15 * MIN,
      );
      await pc2.waitFor(/stage 0: phase 1 checked/, 5 * MIN);
      await pc2.waitFor(new RegExp(`${marker} cmdline`), 10 * MIN);
      await waitForOutput(server, new RegExp(`client ${PC2} .*loads phase 1 from peer ${PC1}`), 5000, 'log');

      // pc1 boots: it lets its phase-1 clients finish, then leaves; no longer offered.
      await pc1.type('\r');
      await pc1.waitFor(new RegExp(`${marker} cmdline`), 10 * MIN);
      let seen = '';
      for (const deadline = Date.now() + MIN; ;) {
        const row = (await status()).clients.find((c) => c.mac === PC1);
        seen = row?.stage ?? '?';
        if (seen === 'booting' || seen === 'running') break;
        assert.ok(Date.now() < deadline, `pc1 still ${seen} at the server`);
        await new Promise((r) => setTimeout(r, 500));
      }

      // The fake peers: their addresses on the LAN, then their reports.
      for (const p of [GONE, BAD])
        execFileSync('ip', ['netns', 'exec', lab.ns, 'ip', 'addr', 'add', `${p.ip}/24`, 'dev', 'br0']);
      const fakes = lab.spawn(process.execPath, [
        FAKES,
        `http://${LAN}.1`,
        GONE.ip,
        GONE.mac,
        BAD.ip,
        BAD.mac,
      ]);
      await waitForOutput(fakes, /fake peers ready/, MIN, 'fake peers');
      await new Promise((r) => setTimeout(r, 4000));

      const pc3 = vm('pc3', PC3);
      await pc3.waitFor(/stage 0: phase 1 checked/, 20 * MIN);
      const serial = pc3.serial();
      assert.match(
        serial,
        new RegExp(`stage 0: http://${GONE.ip.replace(/\./g, '\\.')}:8470/phase1/payload does not answer`),
      );
      assert.match(
        serial,
        new RegExp(
          `stage 0: block 0 from http://${BAD.ip.replace(/\./g, '\\.')}:8470/phase1/payload is not the server's phase 1`,
        ),
      );
      assert.match(serial, /stage 0: fetching phase 1 from http:\/\/10\.81\.0\.1\/phase1\/initrd\.img/);
      await pc3.waitFor(new RegExp(`${marker} cmdline`), 10 * MIN);
      await lab.stop(fakes, 5000);

      // The server sent two payloads (pc1's and pc3's), not three; every client got a kernel and stage 0.
      const snap = await status();
      const size = snap.server.phase1Size;
      const copies = snap.totals.sent.phase1 / size;
      t.diagnostic(`server sent ${copies.toFixed(2)} copies of phase 1 for 3 clients`);
      assert.ok(copies < 2.9, `phase 1 copies sent: ${copies}`);
      assert.ok(copies > 1.5, `phase 1 copies sent: ${copies}`);
    } catch (err) {
      t.diagnostic(`server log:\n${server.output().slice(-6000)}`);
      for (const v of vms) t.diagnostic(`${v.options.name} serial:\n${v.serial().slice(-3000)}`);
      throw err;
    }
  },
);
