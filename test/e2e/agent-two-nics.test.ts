// The agent uses the NIC the server booted (#18 item 6), for real: phase 1
// (the base image, prebuilt by the test runner) boots in a QEMU VM with two
// NICs on two networks, each with a DHCP server (QEMU's user networks,
// restrict=on: no packet leaves QEMU). The first NIC is another network's;
// boottorrent.mac names the second. The agent must ask DHCP on the second
// only and leave the first alone; before, it ran DHCP on every NIC and took
// whichever lease came first.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildPhase1, defaultCacheDir } from '../../src/phase1/build.js';
import { requireProgram } from '../helpers/programs.js';
import { stopWithTest } from '../helpers/reaper.js';
import { tempDir } from '../helpers/tmp.js';

const BOOTED = '52:54:00:12:34:56';
const OTHER = '52:54:00:99:00:01';

test('phase 1 with two NICs on two networks: the agent leases on the one whose MAC the server booted, and leaves the other alone', async (t) => {
  const qemu = requireProgram('qemu-system-x86_64', 'qemu-system-x86');
  // The image start and the runner build (scripts/prebuild-phase1.js): reused, not rebuilt.
  const built = await buildPhase1({
    outDir: join(defaultCacheDir(), '..', 'phase1-image', 'base'),
    flavor: 'base',
  });
  const dir = tempDir(t, 'bt-two-nics-');
  const log = join(dir, 'serial.log');
  const vm = spawn(
    qemu,
    [
      ...['-accel', 'tcg', '-m', '512'],
      ...['-kernel', join(built.outDir, 'vmlinuz'), '-initrd', join(built.outDir, 'initrd.img')],
      // The server URL is the guest's own loopback: the config fetch fails at
      // once and the agent waits on its failure screen, which ends the test.
      ...[
        '-append',
        `console=ttyS0 boottorrent.server=http://127.0.0.1:9 boottorrent.mac=${BOOTED} boottorrent.debug=1`,
      ],
      ...['-display', 'none', '-serial', `file:${log}`, '-no-reboot', '-monitor', 'none'],
      // eth0: another network (10.0.9.0/24), first in PCI order, with a DHCP server of its own.
      ...['-nic', `user,restrict=on,net=10.0.9.0/24,model=e1000,mac=${OTHER}`],
      // eth1: the network the machine booted from (10.0.2.0/24).
      ...['-nic', `user,restrict=on,model=e1000,mac=${BOOTED}`],
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  stopWithTest(t, vm);
  let stderr = '';
  vm.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const serialLog = () => (existsSync(log) ? readFileSync(log, 'utf8') : '');
  // Deadline from the VM's own progress: the agent's failed stage (it cannot
  // reach the server) is the end; QEMU exiting first is a failure.
  const serial = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      clearInterval(poll);
      reject(new Error(`the agent never reached its failure screen; serial log:\n${serialLog()}`));
    }, 600_000);
    const poll = setInterval(() => {
      const text = serialLog();
      if (/boottorrent-agent: stage=failed/.test(text)) {
        clearTimeout(timer);
        clearInterval(poll);
        resolve(text);
      }
    }, 1000);
    vm.on('exit', (c) => {
      clearTimeout(timer);
      clearInterval(poll);
      reject(new Error(`QEMU exited (${c}) first: ${stderr}\n${serialLog()}`));
    });
  });
  vm.kill('SIGKILL');
  // Both NICs exist in phase 1 (its e1000 driver), in this order.
  assert.match(serial, new RegExp(`^\\d+: eth0: .*link/ether ${OTHER}`, 'm'), serial);
  assert.match(serial, new RegExp(`^\\d+: eth1: .*link/ether ${BOOTED}`, 'm'), serial);
  // DHCP on the booted NIC alone, and its lease.
  assert.match(serial, /boottorrent-agent: network: asking DHCP on eth1\r?\n/, serial);
  assert.doesNotMatch(serial, /asking DHCP on [^\n]*eth0/, serial);
  assert.match(serial, /boottorrent-agent: network up: eth1 10\.0\.2\.15/, serial);
  assert.doesNotMatch(serial, /10\.0\.9\.\d+/, 'nothing from the other network');
});
