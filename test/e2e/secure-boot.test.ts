// Secure Boot clients (#22 items 1 and 2): `start` with `server.uefi_chain:
// signed` in a namespace LAN; two QEMU (TCG) machines with OVMF's Secure Boot
// build and Microsoft's keys enrolled (Secure Boot enforced, as shop PCs
// ship) PXE-boot through Debian's signed shim and GRUB (TFTP) into phase 1.
// - vm-signed boots the default OS, whose kernel is this machine's Debian
//   kernel (signed by Debian): the agent reports Secure Boot on, loads it
//   with kexec_file_load (kexec -s) and it prints its marker.
// - vm-unsigned boots an OS whose kernel is the same kernel with its
//   signature removed: the locked-down kernel refuses it and the agent's
//   failure screen says so and names the ways out (read over serial).
// Each step has its own deadline; the VMs, the server and the namespace are
// stopped also when the runner kills this file (reaper.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NetLab, labEnvYaml, waitForOutput } from '../../src/demo/lab.js';
import { LabVm } from '../../src/demo/vm.js';
import { writeMarkerOs } from '../../src/demo/sample-os.js';
import { peCertificateTable, peHasSignature } from '../../src/boot/grub.js';
import type { ServerSnapshot } from '../../src/server/state.js';
import { BIN } from '../helpers/cli.js';
import { requireProgram } from '../helpers/programs.js';
import { onProcessEnd } from '../helpers/reaper.js';
import { tempDir } from '../helpers/tmp.js';

const qemu = requireProgram('qemu-system-x86_64', 'qemu-system-x86');
requireProgram('busybox', 'busybox-static');
const LAN = '10.87.0';
const NS_SIDE = '10.87.255.2';
const SIGNED_MAC = '52:54:00:81:00:04';
const UNSIGNED_MAC = '52:54:00:81:00:05';
const MIN = 60_000;

/** A PE image without its Authenticode signature: the certificate table entry zeroed and the signature cut off. */
function unsignedCopy(pe: Buffer): Buffer {
  const out = Buffer.from(pe);
  const table = peCertificateTable(out);
  assert.ok(table && peHasSignature(out), 'the kernel is a signed PE image to begin with');
  out.writeUInt32LE(0, table.entry);
  out.writeUInt32LE(0, table.entry + 4);
  return out.subarray(0, table.at);
}

test(
  'Secure Boot VMs boot through shim and GRUB; a signed kernel is kexec-ed, an unsigned one refused with the ways out',
  { timeout: 60 * MIN },
  async (t) => {
    const dir = tempDir(t);
    const id = Date.now().toString(36).toUpperCase();
    const markerSigned = `BT-SB-SIGNED-${id}`;
    const markerUnsigned = `BT-SB-UNSIGNED-${id}`;
    const env = join(dir, 'env');
    const oss = join(env, 'oss');
    writeMarkerOs(oss, 'signed', 'Signed Linux', markerSigned);
    const unsigned = writeMarkerOs(oss, 'unsigned', 'Unsigned Linux', markerUnsigned);
    writeFileSync(join(unsigned, 'vmlinuz'), unsignedCopy(readFileSync(join(unsigned, 'vmlinuz'))));
    writeFileSync(
      join(env, 'Boottorrent.yaml'),
      labEnvYaml({
        lan: LAN,
        range: [100, 200],
        defaultOs: 'signed',
        timeout: 0,
        seedTime: 0,
        uefiChain: 'signed',
        hosts: { [UNSIGNED_MAC]: '{ default_os: unsigned }' },
      }),
    );

    const lab = new NetLab('sb', `${LAN}.1/24`);
    const forget = onProcessEnd(() => lab.destroy());
    t.after(() => {
      lab.destroy();
      forget();
    });
    lab.linkToHost('10.87.255.1/30', `${NS_SIDE}/30`);
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

    const opts = { dir, qemu, memoryMb: 1024, firmware: 'uefi-secureboot' as const };
    const signedVm = new LabVm(lab, { ...opts, name: 'vm-sb-signed', mac: SIGNED_MAC });
    const unsignedVm = new LabVm(lab, { ...opts, name: 'vm-sb-unsigned', mac: UNSIGNED_MAC });
    const closeVms = () => {
      signedVm.close();
      unsignedVm.close();
    };
    const forgetVms = onProcessEnd(closeVms);
    t.after(() => {
      closeVms();
      forgetVms();
    });
    try {
      const started = Date.now();
      // OVMF's PXE, shim and GRUB over TFTP, phase 1 over TFTP under TCG.
      await signedVm.waitFor(/BootTorrent: loading phase 1 \(signed chain\)/, 10 * MIN);
      const grubAt = (Date.now() - started) / 1000;
      await signedVm.waitFor(/boottorrent-agent: starting/, 20 * MIN);
      const agentAt = (Date.now() - started) / 1000;
      t.diagnostic(
        `Secure Boot VM: GRUB's script after ${grubAt.toFixed(0)} s, the agent after ${agentAt.toFixed(0)} s`,
      );
      await signedVm.waitFor(/UEFI Secure Boot is on/, 5 * MIN);
      const m = await signedVm.waitFor(new RegExp(`${markerSigned} cmdline: (.*)`), 10 * MIN);
      assert.match(m[1]!, /bt\.os=signed/);
      assert.match(signedVm.serial(), /kexec -s -l /, 'loaded with kexec_file_load');

      await unsignedVm.waitFor(/is not signed by a key this machine trusts/, 15 * MIN);
      const screen = unsignedVm.serial();
      assert.match(screen, /qemu method/);
      assert.match(screen, /sbsign/);
      assert.match(screen, /turn Secure Boot off/);
      assert.doesNotMatch(screen, new RegExp(`${markerUnsigned} cmdline`), 'the unsigned kernel never ran');

      // The screen can show the refusal before the agent's report of it reaches the server: wait for it (bounded).
      let snap = (await (await fetch(`http://${NS_SIDE}:8480/api/v1/status`)).json()) as ServerSnapshot;
      for (let i = 0; i < 60 && snap.clients.find((c) => c.mac === UNSIGNED_MAC)?.stage !== 'failed'; i++) {
        await new Promise((r) => setTimeout(r, 500));
        snap = (await (await fetch(`http://${NS_SIDE}:8480/api/v1/status`)).json()) as ServerSnapshot;
      }
      const rows = new Map(snap.clients.map((c) => [c.mac, c]));
      assert.equal(rows.get(SIGNED_MAC)?.secureBoot, true, 'the agent reported Secure Boot on');
      assert.equal(rows.get(UNSIGNED_MAC)?.secureBoot, true);
      assert.equal(rows.get(UNSIGNED_MAC)?.stage, 'failed');
      assert.match(rows.get(UNSIGNED_MAC)?.error ?? '', /not signed/);
    } catch (err) {
      t.diagnostic(`server log:\n${server.output().slice(-5000)}`);
      throw err;
    }
  },
);
