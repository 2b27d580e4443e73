// The whole product, end to end: `boottorrent start` in a namespace LAN and
// QEMU (TCG) machines that PXE-boot from it at the same time. Three take the
// default OS after the menu's timeout, download it from the swarm (the
// server's seeder and each other), verify it, kexec it, and its marker
// appears on their serial consoles. A fourth waits at its menu (a per-host
// override) and is driven through its serial console: arrow keys pick the
// `bin` OS, which runs and prints its own marker. Each VM has the image
// size plus 512 MB of RAM, no more.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NetLab, waitForOutput } from '../../src/demo/lab.js';
import { LabVm } from '../../src/demo/vm.js';
import { writeMarkerOs } from '../../src/demo/sample-os.js';
import { buildPhase1, defaultCacheDir } from '../../src/phase1/build.js';
import type { ServerSnapshot } from '../../src/server/state.js';
import { BIN } from '../helpers/cli.js';
import { requireProgram } from '../helpers/programs.js';
import { tempDir } from '../helpers/tmp.js';

const qemu = requireProgram('qemu-system-x86_64', 'qemu-system-x86');
requireProgram('busybox', 'busybox-static');
const LAN = '10.79.0';
const NS_SIDE = '10.79.255.2';
const DEFAULT_MACS = ['52:54:00:79:00:01', '52:54:00:79:00:02', '52:54:00:79:00:03'];
const MENU_MAC = '52:54:00:79:00:04';

async function status(): Promise<ServerSnapshot> {
  const res = await fetch(`http://${NS_SIDE}:8480/api/v1/status`);
  return (await res.json()) as ServerSnapshot;
}

test(
  'three VMs PXE-boot at once, share the default OS, kexec it; a fourth picks the bin OS from its menu',
  { timeout: 25 * 60_000 },
  async (t) => {
    const dir = tempDir(t);
    const phase1 = await buildPhase1({ outDir: join(defaultCacheDir(), '..', 'phase1-image', 'base') });
    const id = Date.now().toString(36).toUpperCase();
    const markerA = `BT-E2E-A-${id}`;
    const markerB = `BT-E2E-B-${id}`;
    const markerBin = `BT-E2E-BIN-${id}`;

    // The environment: two kexec OSs and a bin one; 04 waits at its menu.
    const env = join(dir, 'env');
    mkdirSync(join(env, 'oss'), { recursive: true });
    writeMarkerOs(join(env, 'oss'), 'alpha', 'Alpha Linux', markerA);
    writeMarkerOs(join(env, 'oss'), 'beta', 'Beta Linux', markerB);
    mkdirSync(join(env, 'oss', 'tool'));
    writeFileSync(join(env, 'oss', 'tool', 'run.sh'), `#!/bin/sh\necho "${markerBin} args: $*"\n`);
    chmodSync(join(env, 'oss', 'tool', 'run.sh'), 0o755);
    writeFileSync(
      join(env, 'oss', 'tool', 'config.yaml'),
      'name: Tool\nmethod: bin\nbin: run.sh\nbinargs: "one two"\n',
    );
    writeFileSync(
      join(env, 'Boottorrent.yaml'),
      [
        'version: 1',
        'server:',
        '  interface: br0',
        `  address: ${LAN}.1`,
        'dhcp:',
        '  mode: full',
        `  range: ${LAN}.100-${LAN}.200`,
        'boot:',
        '  default_os: alpha',
        '  timeout: 3',
        '  seed_time: 20',
        'hosts:',
        `  '${MENU_MAC}': { timeout: -1 }`,
        '',
      ].join('\n'),
    );
    const imageBytes =
      statSync(join(env, 'oss', 'alpha', 'vmlinuz')).size +
      statSync(join(env, 'oss', 'alpha', 'initrd.img')).size;
    const memoryMb = Math.ceil(imageBytes / 2 ** 20) + 512;

    const lab = new NetLab('e2e', `${LAN}.1/24`);
    t.after(() => lab.destroy());
    lab.linkToHost('10.79.255.1/30', `${NS_SIDE}/30`);
    const server = lab.spawn(process.execPath, [
      '--enable-source-maps',
      BIN,
      'start',
      '--env',
      env,
      '--phase1',
      phase1.outDir,
      '--console',
      'serial',
      '--dashboard',
      `${NS_SIDE}:8480`,
    ]);
    await waitForOutput(server, /Ctrl-C stops/, 60_000, 'start');

    const started = Date.now();
    const vms = DEFAULT_MACS.map(
      (mac, i) => new LabVm(lab, { name: `vm${i + 1}`, mac, dir, qemu, memoryMb }),
    );
    const menuVm = new LabVm(lab, { name: 'vm4', mac: MENU_MAC, dir, qemu, memoryMb, interactive: true });
    t.after(() => {
      for (const vm of [...vms, menuVm]) vm.close();
    });
    try {
      // The menu VM: wait for its menu, go down twice (alpha, beta, tool), Enter.
      await menuVm.waitFor(/stage=menu/, 10 * 60_000);
      await menuVm.type('\x1b[B');
      await new Promise((r) => setTimeout(r, 500));
      await menuVm.type('\x1b[B');
      await new Promise((r) => setTimeout(r, 500));
      await menuVm.type('\r');
      const times: number[] = [];
      for (const vm of vms) {
        const m = await vm.waitFor(new RegExp(`${markerA} cmdline: (.*)`), 15 * 60_000);
        times.push((Date.now() - started) / 1000);
        assert.match(m[1]!, /bt\.os=alpha/, 'the kernel got the OS config cmdline');
        assert.match(vm.serial(), /boottorrent-agent: verified \d+ files of alpha/);
      }
      const bin = await menuVm.waitFor(new RegExp(`${markerBin} args: (.*)`), 10 * 60_000);
      assert.equal(bin[1]!.trim(), 'one two');
      assert.match(menuVm.serial(), /boottorrent-agent: chose tool/);
      assert.doesNotMatch(menuVm.serial(), new RegExp(markerA), 'the menu VM did not boot the default');
      t.diagnostic(`VM start to marker (s): ${times.map((x) => x.toFixed(1)).join(', ')}`);

      // The server saw it all: the clients uploaded to each other, and each agent stayed under 150 MB.
      const snap = await status();
      const rows = snap.clients.filter((c) => DEFAULT_MACS.includes(c.mac));
      assert.equal(rows.length, 3, JSON.stringify(snap.clients));
      for (const r of rows) {
        assert.equal(r.os, 'alpha');
        assert.ok(r.peakRss !== null && r.peakRss < 150e6, `agent peak RSS ${r.peakRss} of ${r.mac}`);
      }
      const peerUpload = rows.reduce((n, r) => n + r.uploaded, 0);
      assert.ok(peerUpload > 0, `clients uploaded to each other: ${peerUpload} bytes`);
      const alpha = snap.swarms.find((s) => s.os === 'alpha')!;
      t.diagnostic(
        `alpha ${alpha.size} B; server sent ${alpha.serverUploaded} B; clients sent each other ${peerUpload} B; ` +
          `agent peak RSS ${rows.map((r) => Math.round((r.peakRss ?? 0) / 1e6)).join(', ')} MB`,
      );
    } catch (err) {
      t.diagnostic(`server log:\n${server.output().slice(-6000)}`);
      throw err;
    }
  },
);
