// A firmware we cannot serve, for real (#18 item 5): 32-bit UEFI (OVMF's
// IA32 build, Debian's ovmf-ia32) PXE-boots against `boottorrent start` in a
// namespace LAN. Debian's iPXE has no 32-bit UEFI build, so the server must
// offer it no file (before, every firmware got a file name, and one that
// does not exist failed at TFTP with no reason), log why, and show the
// machine in status as failed with "architecture not served".
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NetLab, waitForOutput } from '../../src/demo/lab.js';
import type { ServerSnapshot } from '../../src/server/state.js';
import { BIN } from '../helpers/cli.js';
import { removedWithTest } from '../helpers/netns.js';
import { requireProgram } from '../helpers/programs.js';
import { tempDir } from '../helpers/tmp.js';

const qemu = requireProgram('qemu-system-x86_64', 'qemu-system-x86');
const OVMF32_CODE = '/usr/share/OVMF/OVMF32_CODE_4M.secboot.fd';
const OVMF32_VARS = '/usr/share/OVMF/OVMF32_VARS_4M.fd';
const SRV = '10.86.0.1';
const LINK = '10.86.255.2';
const MAC = '52:54:00:86:00:01';

test('32-bit UEFI PXE firmware gets no boot file; the server logs why and status shows "architecture not served"', async (t) => {
  if (!existsSync(OVMF32_CODE))
    throw new Error(`${OVMF32_CODE} is missing: run \`apt-get install ovmf-ia32\` (or bash .ci/run)`);
  const dir = tempDir(t);
  const envDir = join(dir, 'env');
  mkdirSync(join(envDir, 'oss', 'hello'), { recursive: true });
  writeFileSync(
    join(envDir, 'Boottorrent.yaml'),
    [
      'version: 1',
      'server:',
      '  interface: br0',
      `  address: ${SRV}`,
      'dhcp:',
      '  mode: full',
      '  range: 10.86.0.100-10.86.0.120',
      'boot:',
      '  default_os: hello',
      '',
    ].join('\n'),
  );
  writeFileSync(join(envDir, 'oss', 'hello', 'config.yaml'), 'name: Hello\nmethod: bin\nbin: hello\n');
  writeFileSync(join(envDir, 'oss', 'hello', 'hello'), '#!/bin/sh\necho hello\n');
  const phase1 = join(dir, 'phase1');
  mkdirSync(phase1);
  writeFileSync(join(phase1, 'vmlinuz'), 'k');
  writeFileSync(join(phase1, 'initrd.img'), 'i');

  const lab = removedWithTest(t, new NetLab('arch', `${SRV}/24`));
  lab.linkToHost('10.86.255.1/30', `${LINK}/30`);
  const server = lab.spawn(process.execPath, [
    BIN,
    'start',
    '--env',
    envDir,
    '--phase1',
    phase1,
    '--dashboard',
    `${LINK}:8480`,
  ]);
  await waitForOutput(server, /Ctrl-C stops/, 60_000, 'start');

  lab.tap('tap0');
  const vars = join(dir, 'vars.fd');
  copyFileSync(OVMF32_VARS, vars);
  const vm = lab.spawn(qemu, [
    '-accel',
    'tcg',
    '-machine',
    'q35,smm=on',
    '-global',
    'driver=cfi.pflash01,property=secure,value=on',
    '-drive',
    `if=pflash,format=raw,unit=0,readonly=on,file=${OVMF32_CODE}`,
    '-drive',
    `if=pflash,format=raw,unit=1,file=${vars}`,
    '-m',
    '256',
    '-display',
    'none',
    '-monitor',
    'none',
    '-serial',
    'none',
    '-boot',
    'n',
    '-netdev',
    'tap,id=n0,ifname=tap0,script=no,downscript=no',
    // No option ROM: the firmware's own PXE, as on a real 32-bit UEFI tablet or PC.
    '-device',
    `virtio-net-pci,netdev=n0,mac=${MAC},romfile=`,
  ]);

  // The firmware's DHCP (client architecture 6) reaches the server; it
  // takes a while under TCG, so wait on what the server sees, not a clock.
  let row: ServerSnapshot['clients'][number] | undefined;
  let snap: ServerSnapshot;
  const deadline = Date.now() + 8 * 60_000;
  for (;;) {
    if (vm.child.exitCode !== null) throw new Error(`QEMU exited:\n${vm.output()}`);
    snap = (await (await fetch(`http://${LINK}:8480/api/v1/status`)).json()) as ServerSnapshot;
    row = snap.clients.find((c) => c.mac === MAC);
    if (row?.stage === 'failed') break;
    if (Date.now() > deadline)
      throw new Error(
        `the 32-bit UEFI client did not show as failed within 8 min:\n${server.output().slice(-3000)}`,
      );
    await new Promise((r) => setTimeout(r, 1000));
  }
  assert.equal(row.firmware, 'uefi-ia32');
  assert.match(
    row.error ?? '',
    /^architecture not served: 32-bit UEFI \(client architecture 6\); the iPXE folder has no 32-bit UEFI build/,
  );
  assert.match(
    server.output(),
    new RegExp(`client ${MAC} failed error="?architecture not served: 32-bit UEFI`),
    'one log line says why',
  );
  // Its DHCP retries change nothing: one failed line, and no boot file was
  // offered, so TFTP sent nothing (the firmware retries its DHCP for a while).
  await new Promise((r) => setTimeout(r, 10_000));
  assert.equal(server.output().split(`client ${MAC} failed`).length - 1, 1, server.output());
  snap = (await (await fetch(`http://${LINK}:8480/api/v1/status`)).json()) as ServerSnapshot;
  assert.equal(snap.totals.sent.parts.tftp ?? 0, 0, 'no TFTP bytes: no file was offered');
  assert.ok(
    (snap.totals.sent.parts.dhcp ?? 0) > 0,
    'the DHCP replies (an address, no boot file) are counted',
  );
  await lab.stop(vm, 5000);
  await lab.stop(server, 10_000);
  assert.equal(server.child.exitCode, 0, server.output());
});
