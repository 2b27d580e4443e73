// A graphical qemu guest on the client's screen (#18 item 1): `start` with
// the screen as the clients' main console, one QEMU (TCG) machine PXE-boots
// and runs the `qemu` OS nested in phase 1. The guest is a boot sector that
// switches to VGA mode 13h and paints the screen red, waits for a key, then
// paints it blue. Its args choose no display, and the client has a
// framebuffer (the bochs DRM driver on QEMU's VGA), so the agent runs QEMU
// with its screen on a loopback VNC server and directvnc draws it on the
// framebuffer. The test looks at the client's own screen (QMP screendump of
// the outer machine): red; presses a key on the client's keyboard (QMP
// send-key: PS/2 -> evdev -> directvnc -> VNC -> the guest's BIOS); blue.
// Each step has its own deadline; the VM, the server and the namespace are
// stopped also when the runner kills this file (reaper.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NetLab, labEnvYaml, waitForOutput } from '../../src/demo/lab.js';
import { LabVm } from '../../src/demo/vm.js';
import type { ServerSnapshot } from '../../src/server/state.js';
import { BIN } from '../helpers/cli.js';
import { countPixels, paintSector, readPpm } from '../helpers/marker-os.js';
import { requireProgram } from '../helpers/programs.js';
import { onProcessEnd } from '../helpers/reaper.js';
import { tempDir } from '../helpers/tmp.js';

const qemu = requireProgram('qemu-system-x86_64', 'qemu-system-x86');
requireProgram('directvnc', 'directvnc');
const LAN = '10.78.0';
const NS_SIDE = '10.78.255.2';
const MAC = '52:54:00:78:00:05';
const MIN = 60_000;
// Mode 13h is 320x200: the viewer draws at least that many pixels of it.
const GUEST_PIXELS = 320 * 200;
const isRed = (r: number, g: number, b: number) => r > 120 && g < 60 && b < 60;
const isBlue = (r: number, g: number, b: number) => b > 120 && r < 60 && g < 60;

test(
  'a graphical qemu guest shows on the client screen through the framebuffer, and the client keyboard reaches it',
  { timeout: 60 * MIN },
  async (t) => {
    const dir = tempDir(t);
    const env = join(dir, 'env');
    mkdirSync(join(env, 'oss', 'paint'), { recursive: true });
    writeFileSync(join(env, 'oss', 'paint', 'boot.img'), paintSector());
    writeFileSync(
      join(env, 'oss', 'paint', 'config.yaml'),
      'name: Paint\nmethod: qemu\nargs: "-drive format=raw,file=boot.img -monitor none -accel tcg -no-reboot -m 16"\n',
    );
    writeFileSync(
      join(env, 'Boottorrent.yaml'),
      labEnvYaml({ lan: LAN, range: [100, 200], defaultOs: 'paint', timeout: 0, seedTime: 1 }),
    );

    const lab = new NetLab('gfx', `${LAN}.1/24`);
    const forget = onProcessEnd(() => lab.destroy());
    t.after(() => {
      lab.destroy();
      forget();
    });
    lab.linkToHost('10.78.255.1/30', `${NS_SIDE}/30`);
    // --console screen: the clients' screen is their main console (the kernel also logs on serial).
    const server = lab.spawn(process.execPath, [
      '--enable-source-maps',
      BIN,
      'start',
      '--env',
      env,
      '--console',
      'screen',
      '--dashboard',
      `${NS_SIDE}:8480`,
    ]);
    await waitForOutput(server, /phase 1: (reusing|built) qemu image/, 30 * MIN, 'start: phase 1');
    await waitForOutput(server, /Ctrl-C stops/, 2 * MIN, 'start');

    const vm = new LabVm(lab, { name: 'vm-gfx', mac: MAC, dir, qemu, memoryMb: 512 + 16, qmp: true });
    const forgetVm = onProcessEnd(() => vm.close());
    t.after(() => {
      vm.close();
      forgetVm();
    });
    const shot = join(dir, 'screen.ppm');
    const screen = async () => {
      await vm.qmp('screendump', { filename: shot });
      return readPpm(readFileSync(shot));
    };
    const waitForScreen = async (what: string, pick: typeof isRed, ms: number) => {
      const deadline = Date.now() + ms;
      let last = 0;
      for (;;) {
        const ppm = await screen();
        last = countPixels(ppm, pick);
        if (last >= GUEST_PIXELS * 0.9) return ppm;
        if (Date.now() > deadline)
          throw new Error(
            `the client's screen (${ppm.width}x${ppm.height}) had ${last} ${what} pixels, not ${GUEST_PIXELS}, within ${ms / 1000} s`,
          );
        await new Promise((r) => setTimeout(r, 2000));
      }
    };
    // The agent writes on the client's screen, its main console here; the
    // serial line has only the kernel's messages. Follow it through the server.
    const stageOf = async () => {
      const res = await fetch(`http://${NS_SIDE}:8480/api/v1/status`, {
        signal: AbortSignal.timeout(10_000),
      });
      const snap = (await res.json()) as ServerSnapshot;
      return snap.clients.find((c) => c.mac === MAC);
    };
    try {
      const runDeadline = Date.now() + 20 * MIN;
      for (;;) {
        const row = await stageOf().catch(() => undefined);
        if (row?.stage === 'running' && row.os === 'paint') break;
        if (row?.stage === 'failed') throw new Error(`the client failed: ${JSON.stringify(row)}`);
        if (Date.now() > runDeadline || vm.exited)
          throw new Error(`the client did not run the paint OS within 20 min: ${JSON.stringify(row)}`);
        await new Promise((r) => setTimeout(r, 2000));
      }
      // Nested TCG: the guest's BIOS and the viewer's first frame take a while.
      const red = await waitForScreen('red', isRed, 5 * MIN);
      t.diagnostic(`client screen ${red.width}x${red.height}: ${countPixels(red, isRed)} red pixels`);
      // A key on the client's keyboard; the guest paints blue once its BIOS has it.
      const blueDeadline = Date.now() + 3 * MIN;
      let blue: Awaited<ReturnType<typeof screen>> | undefined;
      while (blue === undefined) {
        await vm.qmp('send-key', { keys: [{ type: 'qcode', data: 'spc' }] });
        try {
          blue = await waitForScreen('blue', isBlue, 20_000);
        } catch (err) {
          if (Date.now() > blueDeadline) throw err;
        }
      }
      assert.ok(countPixels(blue, isRed) < GUEST_PIXELS * 0.1, 'the red picture is gone');
    } catch (err) {
      t.diagnostic(`server log:\n${server.output().slice(-4000)}`);
      throw err;
    }
  },
);
