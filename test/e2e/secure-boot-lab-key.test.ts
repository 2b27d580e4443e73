// The lab-key path (issue #22 item 4): `server.uefi_chain: uki` makes
// `start` build phase 1 as one EFI image (systemd's stub, the kernel, the
// initramfs with the server's key, the command line) signed with the lab's
// key. Debian's snakeoil key stands in for the lab's: OVMF's Secure Boot
// build with OVMF_VARS_4M.snakeoil.fd has it as its only db key. One VM
// PXE-boots the image (the firmware verifies it whole), its agent finds
// its NIC from the firmware's BootCurrent (the image's command line names
// no MAC), reports Secure Boot on and kexecs a kernel signed with the lab's
// key with kexec_file_load (the kernel trusts the firmware's db keys). Then the same image with one byte changed in its
// initramfs is refused by the same firmware.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NetLab, labEnvYaml, waitForOutput } from '../../src/demo/lab.js';
import { LabVm, SNAKEOIL, secureBootFirmware } from '../../src/demo/vm.js';
import { writeMarkerOs } from '../../src/demo/sample-os.js';
import type { ServerSnapshot } from '../../src/server/state.js';
import { BIN } from '../helpers/cli.js';
import { requireProgram } from '../helpers/programs.js';
import { onProcessEnd, stopSync } from '../helpers/reaper.js';
import { tempDir } from '../helpers/tmp.js';
import { childEnded } from '../helpers/wait.js';

const qemu = requireProgram('qemu-system-x86_64', 'qemu-system-x86');
requireProgram('busybox', 'busybox-static');
requireProgram('sbsign', 'sbsigntool');
requireProgram('openssl', 'openssl');
const LAN = '10.84.0';
const NS_SIDE = '10.84.255.2';
const MAC = '52:54:00:84:00:01';
const MIN = 60_000;

test(
  "a phase 1 signed with the lab's key boots under Secure Boot with that key enrolled; a tampered copy is refused",
  { timeout: 60 * MIN },
  async (t) => {
    const dir = tempDir(t);
    const id = Date.now().toString(36).toUpperCase();
    const marker = `BT-LABKEY-${id}`;
    const env = join(dir, 'env');
    const osDir = writeMarkerOs(join(env, 'oss'), 'signed', 'Signed Linux', marker);
    // The lab's key as a sysadmin keeps it: unencrypted, readable by root only.
    mkdirSync(join(env, 'keys'));
    const key = join(env, 'keys', 'lab.key');
    execFileSync('openssl', [
      'pkey',
      '-in',
      SNAKEOIL.key,
      '-passin',
      `pass:${SNAKEOIL.passphrase}`,
      '-out',
      key,
    ]);
    chmodSync(key, 0o600);
    copyFileSync(SNAKEOIL.cert, join(env, 'keys', 'lab.pem'));
    // Without shim nothing gives phase 1's kernel Debian's key: the OS kernel is signed with the
    // lab's key, which the firmware's db holds (the kernel checks kexec -s against it).
    const kernel = join(osDir, 'vmlinuz');
    execFileSync('sbattach', ['--remove', kernel]);
    execFileSync('sbsign', [
      '--key',
      key,
      '--cert',
      join(env, 'keys', 'lab.pem'),
      '--output',
      kernel,
      kernel,
    ]);
    writeFileSync(
      join(env, 'Boottorrent.yaml'),
      labEnvYaml({
        lan: LAN,
        range: [100, 200],
        defaultOs: 'signed',
        timeout: 0,
        seedTime: 0,
        uefiChain: 'uki',
        uki: { key: 'keys/lab.key', cert: 'keys/lab.pem' },
      }),
    );

    const lab = new NetLab('labkey', `${LAN}.1/24`);
    const forget = onProcessEnd(() => lab.destroy());
    t.after(() => {
      lab.destroy();
      forget();
    });
    lab.linkToHost('10.84.255.1/30', `${NS_SIDE}/30`);
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
    await waitForOutput(server, /lab-signed phase 1 ready/, 5 * MIN, 'start: the signed image');
    await waitForOutput(server, /Ctrl-C stops/, 2 * MIN, 'start');
    const ukiDir = join(env, '.boottorrent', 'uki');
    const image = readdirSync(ukiDir).find((f) => f.endsWith('.efi'));
    assert.ok(image, `a signed image in ${ukiDir}`);
    const signed = readFileSync(join(ukiDir, image));
    const verify = execFileSync('sbverify', ['--cert', SNAKEOIL.cert, join(ukiDir, image)], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    assert.match(verify, /Signature verification OK/);

    const vm = new LabVm(lab, {
      name: 'vm-labkey',
      mac: MAC,
      dir,
      qemu,
      memoryMb: 1024,
      firmware: 'uefi-secureboot-lab',
    });
    const forgetVm = onProcessEnd(() => vm.close());
    t.after(() => {
      vm.close();
      forgetVm();
    });
    try {
      const started = Date.now();
      // Phase 1's command line says quiet: the agent's lines are the first on serial after the firmware's.
      await vm.waitFor(/NBP file downloaded successfully/, 15 * MIN);
      const loadedAt = (Date.now() - started) / 1000;
      await vm.waitFor(new RegExp(`booted from the NIC ${MAC} \\(as the firmware says\\)`), 10 * MIN);
      await vm.waitFor(/boottorrent-agent: starting/, 5 * MIN);
      t.diagnostic(
        `lab-key VM: signed image loaded over TFTP after ${loadedAt.toFixed(0)} s, agent after ${((Date.now() - started) / 1000).toFixed(0)} s`,
      );
      await vm.waitFor(/UEFI Secure Boot is on/, 5 * MIN);
      const m = await vm.waitFor(new RegExp(`${marker} cmdline: (.*)`), 10 * MIN);
      assert.match(m[1]!, /bt\.os=signed/);
      assert.match(vm.serial(), /kexec -s -l /);
      const snap = (await (await fetch(`http://${NS_SIDE}:8480/api/v1/status`)).json()) as ServerSnapshot;
      assert.equal(snap.clients.find((c) => c.mac === MAC)?.secureBoot, true);
    } catch (err) {
      t.diagnostic(`server log:\n${server.output().slice(-5000)}`);
      t.diagnostic(`serial:\n${vm.serial().slice(-5000)}`);
      throw err;
    }

    // The same image with one byte of its initramfs changed, from a disk: the firmware refuses it.
    const tampered = Buffer.from(signed);
    const initrdAt = sectionOffset(tampered, '.initrd');
    tampered[initrdAt + 4096]! ^= 0x01;
    const esp = join(dir, 'esp', 'EFI', 'BOOT');
    mkdirSync(esp, { recursive: true });
    writeFileSync(join(esp, 'BOOTX64.EFI'), tampered);
    const serial = join(dir, 'tampered.serial');
    const child = spawn(
      qemu,
      [
        '-accel',
        'tcg',
        '-m',
        '1024',
        '-display',
        'none',
        '-monitor',
        'none',
        '-serial',
        `file:${serial}`,
        '-no-reboot',
        '-net',
        'none',
        ...secureBootFirmware(dir, 'vm-tampered', 'lab'),
        '-drive',
        `file=fat:rw:${join(dir, 'esp')},format=raw,if=virtio`,
      ],
      { stdio: 'ignore' },
    );
    const ended = childEnded(child);
    const forgetChild = onProcessEnd(() => stopSync(child.pid, 'SIGKILL', 0));
    t.after(() => {
      stopSync(child.pid, 'SIGKILL', 0);
      forgetChild();
    });
    const deadline = Date.now() + 10 * MIN;
    const text = () => {
      try {
        return readFileSync(serial, 'latin1');
      } catch {
        return '';
      }
    };
    while (!/No bootable option or device was found/.test(text())) {
      if (Date.now() > deadline || child.exitCode !== null)
        throw new Error(`the tampered image's VM never ended its boot attempts:\n${text().slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 1000));
    }
    stopSync(child.pid, 'SIGKILL', 0);
    await ended;
    assert.match(text(), /failed to load Boot\d+ "UEFI Misc Device".*: Access Denied/);
    assert.doesNotMatch(text(), /Linux version/, 'the tampered image never ran');
  },
);

/** File offset of a PE section's data. */
function sectionOffset(pe: Buffer, name: string): number {
  const at = pe.readUInt32LE(0x3c);
  const count = pe.readUInt16LE(at + 6);
  const optSize = pe.readUInt16LE(at + 20);
  const table = at + 24 + optSize;
  for (let i = 0; i < count; i++) {
    const s = table + i * 40;
    if (pe.toString('latin1', s, s + 8).replace(/\0+$/, '') === name) return pe.readUInt32LE(s + 20);
  }
  throw new Error(`no section ${name}`);
}
