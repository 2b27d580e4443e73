// Phase 2 on real (virtual) machines, beyond the default kexec boot that
// the demo test covers: `boottorrent start` in a namespace LAN and two QEMU
// (TCG) machines that PXE-boot from it at once.
// - vm-menu waits at its menu (a per-host `timeout: -1`) and is driven over
//   its serial console: the arrow keys pick the `bin` OS, which runs in
//   phase 1 and prints its marker with its arguments.
// - vm-qemu boots the `qemu` OS by default (a per-host default): the agent
//   runs qemu-system-x86_64 inside phase 1 (the qemu flavor, which `start`
//   picks because an OS uses that method) on a tiny guest, a boot sector
//   that prints its own marker on the nested machine's screen (VGA text);
//   its args choose no display, so the agent shows it with QEMU's curses
//   interface on the client's console (#18 item 1), read here over serial.
// Each VM has the size of what it boots plus 512 MB of RAM, no more.
// Each step (phase 1 ready, each VM's agent starting, the menu, the marker)
// has its own deadline, so a slow machine fails at the step that stalled and
// not at one fixed timeout over everything; the VMs, the server and the
// namespace are stopped also when the runner kills this file (reaper.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NetLab, labEnvYaml, waitForOutput } from '../../src/demo/lab.js';
import { LabVm } from '../../src/demo/vm.js';
import { writeMarkerOs } from '../../src/demo/sample-os.js';
import type { ServerSnapshot } from '../../src/server/state.js';
import { BIN } from '../helpers/cli.js';
import { markerScreenSector, screenText } from '../helpers/marker-os.js';
import { requireProgram } from '../helpers/programs.js';
import { onProcessEnd } from '../helpers/reaper.js';
import { tempDir } from '../helpers/tmp.js';

const qemu = requireProgram('qemu-system-x86_64', 'qemu-system-x86');
requireProgram('busybox', 'busybox-static');
const LAN = '10.79.0';
const NS_SIDE = '10.79.255.2';
const MENU_MAC = '52:54:00:79:00:04';
const QEMU_MAC = '52:54:00:79:00:05';
const MIN = 60_000;

test(
  'a VM driven over serial picks the bin OS from its menu; another runs the qemu OS nested in phase 1',
  // A backstop only: the sum of the steps' deadlines below.
  { timeout: 60 * MIN },
  async (t) => {
    const dir = tempDir(t);
    const id = Date.now().toString(36).toUpperCase();
    const markerA = `BT-E2E-A-${id}`;
    const markerBin = `BT-E2E-BIN-${id}`;
    const markerGuest = `BT-E2E-GUEST-${id}`;

    const env = join(dir, 'env');
    mkdirSync(join(env, 'oss'), { recursive: true });
    writeMarkerOs(join(env, 'oss'), 'alpha', 'Alpha Linux', markerA);
    mkdirSync(join(env, 'oss', 'tool'));
    writeFileSync(join(env, 'oss', 'tool', 'run.sh'), `#!/bin/sh\necho "${markerBin} args: $*"\n`);
    chmodSync(join(env, 'oss', 'tool', 'run.sh'), 0o755);
    writeFileSync(
      join(env, 'oss', 'tool', 'config.yaml'),
      'name: Tool\nmethod: bin\nbin: run.sh\nbinargs: "one two"\n',
    );
    mkdirSync(join(env, 'oss', 'guest'));
    writeFileSync(join(env, 'oss', 'guest', 'boot.img'), markerScreenSector(markerGuest));
    writeFileSync(
      join(env, 'oss', 'guest', 'config.yaml'),
      'name: Tiny guest\nmethod: qemu\nargs: "-drive format=raw,file=boot.img -monitor none -accel tcg -no-reboot -m 16"\n',
    );
    writeFileSync(
      join(env, 'Boottorrent.yaml'),
      labEnvYaml({
        lan: LAN,
        range: [100, 200],
        defaultOs: 'alpha',
        timeout: 3,
        seedTime: 2,
        hosts: { [MENU_MAC]: '{ timeout: -1 }', [QEMU_MAC]: '{ default_os: guest, timeout: 0 }' },
      }),
    );

    const lab = new NetLab('e2e', `${LAN}.1/24`);
    const forget = onProcessEnd(() => lab.destroy());
    t.after(() => {
      lab.destroy();
      forget();
    });
    lab.linkToHost('10.79.255.1/30', `${NS_SIDE}/30`);
    // No --phase1: start builds (or reuses) the qemu flavor by itself.
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
    // The test runner builds the image first (scripts/prebuild-phase1.js), so
    // this is a reuse; run alone on a cold cache, the build's own budget.
    await waitForOutput(server, /phase 1: (reusing|built) qemu image/, 30 * MIN, 'start: phase 1');
    await waitForOutput(server, /Ctrl-C stops/, 2 * MIN, 'start');

    // The bin OS and the boot sector are tiny; 16 MB for the nested guest.
    const menuVm = new LabVm(lab, {
      name: 'vm-menu',
      mac: MENU_MAC,
      dir,
      qemu,
      memoryMb: 512,
      interactive: true,
    });
    const qemuVm = new LabVm(lab, { name: 'vm-qemu', mac: QEMU_MAC, dir, qemu, memoryMb: 512 + 16 });
    const closeVms = () => {
      menuVm.close();
      qemuVm.close();
    };
    const forgetVms = onProcessEnd(closeVms);
    t.after(() => {
      closeVms();
      forgetVms();
    });
    try {
      // PXE, the qemu flavor's large initrd over HTTP and its unpacking under TCG.
      await menuVm.waitFor(/boottorrent-agent: starting/, 15 * MIN);
      await menuVm.waitFor(/stage=menu/, 5 * MIN);
      // The menu lists alpha, guest, tool (folder order) with alpha selected: down twice.
      for (const key of ['\x1b[B', '\x1b[B', '\r']) {
        await menuVm.type(key);
        await new Promise((r) => setTimeout(r, 700));
      }
      await menuVm.waitFor(/boottorrent-agent: chose tool/, 2 * MIN);
      const bin = await menuVm.waitFor(new RegExp(`${markerBin} args: (.*)`), 5 * MIN);
      assert.equal(bin[1]!.trim(), 'one two');
      assert.match(menuVm.serial(), /boottorrent-agent: chose tool/);
      assert.match(menuVm.serial(), /boottorrent-agent: verified 2 files of tool/);
      assert.doesNotMatch(
        menuVm.serial(),
        new RegExp(`${markerA} cmdline`),
        'the menu VM did not boot the default',
      );

      // It booted alongside the menu VM: these steps are usually done already.
      await qemuVm.waitFor(/boottorrent-agent: starting/, 5 * MIN);
      await qemuVm.waitFor(/boottorrent-agent: running qemu-system-x86_64 /, 5 * MIN);
      // curses draws the guest's screen with control sequences between the characters.
      const guestDeadline = Date.now() + 5 * MIN;
      while (!screenText(qemuVm.serial()).includes(markerGuest)) {
        if (Date.now() > guestDeadline)
          throw new Error(`no ${markerGuest} on the console within 5 min:\n${qemuVm.serial().slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 1000));
      }
      assert.match(qemuVm.serial(), /boottorrent-agent: verified 2 files of guest/);
      assert.match(qemuVm.serial(), /boottorrent-agent: running qemu-system-x86_64 .* -display curses/);
      assert.doesNotMatch(qemuVm.serial(), /Could not convert font glyph/, 'the UTF-8 locale is in phase 1');

      const snap = (await (await fetch(`http://${NS_SIDE}:8480/api/v1/status`)).json()) as ServerSnapshot;
      const rows = new Map(snap.clients.map((c) => [c.mac, c]));
      assert.equal(rows.get(MENU_MAC)?.os, 'tool');
      assert.equal(rows.get(QEMU_MAC)?.os, 'guest');
      assert.equal(rows.get(QEMU_MAC)?.stage, 'running');
      for (const r of rows.values())
        assert.ok(r.peakRss !== null && r.peakRss < 150e6, `agent peak RSS ${r.peakRss} of ${r.mac}`);
    } catch (err) {
      t.diagnostic(`server log:\n${server.output().slice(-5000)}`);
      throw err;
    }
  },
);
