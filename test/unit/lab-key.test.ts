// The lab-key path (issue #22 item 4): validate's checks of uefi_chain: uki
// and its key files, the phase-1 image built and signed by the real objcopy
// and sbsign (checked with sbverify against the certificate), and the
// agent's reading of its boot NIC from UEFI variables.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildSignedUki } from '../../src/boot/uki.js';
import { inspectEnvironment } from '../../src/env/load.js';
import { SNAKEOIL } from '../../src/demo/vm.js';
import {
  efiBootMac,
  macOfLoadOption,
  parseBootCurrent,
  resolveAutoMac,
} from '../../src/agent/efi-boot-nic.js';
import { argsFromKernelCmdline } from '../../src/agent/cmdline.js';
import { BASE_V1, expectProblem, v1Env } from '../helpers/env.js';
import { requireProgram } from '../helpers/programs.js';
import { tempDir } from '../helpers/tmp.js';

const NO_MACHINE = { machineChecks: false } as const;
const MAIN = /Boottorrent\.yaml$/;
const GLOBAL = '8be4df61-93ca-11d2-aa0d-00e098032b8c';

function withUki(extra: string): string {
  return BASE_V1.replace('  address: 10.0.0.1', `  address: 10.0.0.1\n  uefi_chain: uki${extra}`);
}

function plainKey(dir: string): string {
  const key = join(dir, 'lab.key');
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
  return key;
}

test('validate: uefi_chain uki needs a readable unencrypted key and a certificate; a key others can read warns', async (t) => {
  requireProgram('openssl', 'openssl');
  const missing = v1Env(t, withUki(''));
  const p1 = (await inspectEnvironment(missing, NO_MACHINE)).problems;
  expectProblem(p1, {
    file: MAIN,
    field: 'server.uki_key',
    message: /uefi_chain is uki but server\.uki_key is not set/,
  });
  expectProblem(p1, { file: MAIN, field: 'server.uki_cert', message: /not set/ });

  const dir = v1Env(t, withUki('\n  uki_key: keys/lab.key\n  uki_cert: keys/lab.pem'));
  mkdirSync(join(dir, 'keys'));
  copyFileSync(SNAKEOIL.key, join(dir, 'keys', 'lab.key')); // encrypted, as Debian ships it
  writeFileSync(join(dir, 'keys', 'lab.pem'), 'not a certificate');
  const p2 = (await inspectEnvironment(dir, NO_MACHINE)).problems;
  expectProblem(p2, {
    file: MAIN,
    field: 'server.uki_key',
    message: /encrypted with a passphrase/,
    fix: /openssl pkey -in .*lab\.key/,
  });
  expectProblem(p2, { file: MAIN, field: 'server.uki_cert', message: /not a PEM certificate/ });

  const keyDir = tempDir(t);
  copyFileSync(plainKey(keyDir), join(dir, 'keys', 'lab.key'));
  chmodSync(join(dir, 'keys', 'lab.key'), 0o644);
  copyFileSync(SNAKEOIL.cert, join(dir, 'keys', 'lab.pem'));
  const r = await inspectEnvironment(dir, NO_MACHINE);
  assert.deepEqual(r.problems, []);
  expectProblem(r.warnings, {
    file: MAIN,
    field: 'server.uki_key',
    message: /readable by other users/,
    fix: /chmod 600/,
  });
  assert.deepEqual(r.env?.server.uki, {
    key: join(dir, 'keys', 'lab.key'),
    cert: join(dir, 'keys', 'lab.pem'),
  });

  const noTftp = v1Env(t, withUki('\n  tftp: false\n  uki_key: /k\n  uki_cert: /c'));
  expectProblem((await inspectEnvironment(noTftp, NO_MACHINE)).problems, {
    file: MAIN,
    field: 'server.tftp',
    message: /uefi_chain is uki/,
  });
  const ignored = v1Env(t, BASE_V1.replace('  address: 10.0.0.1', '  address: 10.0.0.1\n  uki_key: /k'));
  expectProblem((await inspectEnvironment(ignored, NO_MACHINE)).warnings, {
    file: MAIN,
    field: 'server.uki_key',
    message: /ignored: server\.uefi_chain is ipxe/,
  });
});

test('the signed image: sections in order, one initramfs of every part, signature verified by sbverify; cached by content', async (t) => {
  requireProgram('sbsign', 'sbsigntool');
  requireProgram('openssl', 'openssl');
  const dir = tempDir(t);
  writeFileSync(join(dir, 'vmlinuz'), readFileSync(readdirKernel()));
  writeFileSync(join(dir, 'a.img'), Buffer.from('abcde'));
  writeFileSync(join(dir, 'b.cpio'), Buffer.from('07070100'));
  const inputs = {
    kernel: join(dir, 'vmlinuz'),
    initrds: [join(dir, 'a.img'), join(dir, 'b.cpio')],
    cmdline: 'console=ttyS0 boottorrent.server=http://10.0.0.1 boottorrent.mac=auto',
    key: plainKey(dir),
    cert: SNAKEOIL.cert,
  };
  const out = await buildSignedUki(join(dir, 'uki'), inputs);
  assert.match(
    execFileSync('sbverify', ['--cert', SNAKEOIL.cert, out], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
    /Signature verification OK/,
  );
  const sections = execFileSync('objdump', ['-h', out], { encoding: 'utf8' });
  const names = [...sections.matchAll(/^\s*\d+\s+(\.\w+)/gm)].map((m) => m[1]);
  assert.deepEqual(names.slice(-4), ['.osrel', '.cmdline', '.linux', '.initrd']);
  const section = (name: string) => {
    const file = join(dir, `section${name}`);
    execFileSync('objcopy', ['-O', 'binary', `--only-section=${name}`, out, file]);
    return readFileSync(file);
  };
  const initrd = section('.initrd');
  assert.deepEqual(
    initrd.subarray(0, 16),
    Buffer.from('abcde\0\0\x0007070100', 'latin1'),
    '4-byte aligned parts',
  );
  const cmdline = section('.cmdline');
  assert.equal(cmdline.toString(), inputs.cmdline);
  assert.equal(await buildSignedUki(join(dir, 'uki'), inputs), out, 'unchanged inputs: the same file');
  assert.notEqual(await buildSignedUki(join(dir, 'uki'), { ...inputs, cmdline: 'x' }), out);
  await assert.rejects(
    buildSignedUki(join(dir, 'uki'), { ...inputs, key: SNAKEOIL.key }),
    /encrypted with a passphrase/,
  );
});

function readdirKernel(): string {
  const k = execFileSync('sh', ['-c', 'ls /boot/vmlinuz-*-amd64 | tail -1'], { encoding: 'utf8' }).trim();
  assert.ok(k, 'a Debian kernel in /boot');
  return k;
}

/** A Boot#### variable as efivarfs shows it: attributes, then EFI_LOAD_OPTION with the device path. */
function loadOption(description: string, path: Buffer[]): Buffer {
  const desc = Buffer.from(`${description}\0`, 'utf16le');
  const list = Buffer.concat([...path, Buffer.from([0x7f, 0xff, 4, 0])]);
  const head = Buffer.alloc(6);
  head.writeUInt32LE(1, 0);
  head.writeUInt16LE(list.length, 4);
  return Buffer.concat([Buffer.from([7, 0, 0, 0]), head, desc, list]);
}

function node(type: number, sub: number, data: Buffer): Buffer {
  const b = Buffer.alloc(4);
  b[0] = type;
  b[1] = sub;
  b.writeUInt16LE(4 + data.length, 2);
  return Buffer.concat([b, data]);
}

test('the boot NIC from UEFI variables: BootCurrent, then the MAC node of that Boot#### option', async (t) => {
  const mac = Buffer.concat([
    Buffer.from([0x52, 0x54, 0x00, 0x84, 0x00, 0x01]),
    Buffer.alloc(26),
    Buffer.from([1]),
  ]);
  const pxe = loadOption('UEFI PXEv4 (MAC:525400840001)', [
    node(2, 1, Buffer.from([0x00, 0x00, 0x00, 0x00, 0x0a, 0x0a, 0x0a, 0x0a])), // ACPI
    node(1, 1, Buffer.from([0, 3])), // PCI
    node(3, 0x0b, mac),
    node(3, 0x0c, Buffer.alloc(23)), // IPv4
  ]);
  assert.equal(macOfLoadOption(pxe), '52:54:00:84:00:01');
  assert.equal(macOfLoadOption(loadOption('UEFI Shell', [node(4, 6, Buffer.alloc(16))])), undefined);
  assert.equal(macOfLoadOption(Buffer.from([7, 0, 0, 0, 1])), undefined, 'truncated');
  const broken = Buffer.from(pxe);
  broken.writeUInt16LE(0xffff, 4 + 4); // FilePathListLength beyond the data
  assert.doesNotThrow(() => macOfLoadOption(broken));
  assert.equal(parseBootCurrent(Buffer.from([6, 0, 0, 0, 3, 0])), 3);

  const vars = tempDir(t);
  writeFileSync(join(vars, `BootCurrent-${GLOBAL}`), Buffer.from([6, 0, 0, 0, 0x0a, 0]));
  writeFileSync(join(vars, `Boot000A-${GLOBAL}`), pxe);
  assert.equal(await efiBootMac(vars), '52:54:00:84:00:01');
  // No UEFI: the machine's only NIC; two NICs: an error that says why.
  const sys = tempDir(t);
  for (const [n, a] of [
    ['lo', '00:00:00:00:00:00'],
    ['eth0', '52:54:00:00:00:05'],
  ] as const) {
    mkdirSync(join(sys, n));
    writeFileSync(join(sys, n, 'address'), `${a}\n`);
  }
  assert.equal(await resolveAutoMac({ efivars: join(vars, 'none'), sysNet: sys }), '52:54:00:00:00:05');
  mkdirSync(join(sys, 'eth1'));
  writeFileSync(join(sys, 'eth1', 'address'), '52:54:00:00:00:06\n');
  await assert.rejects(
    resolveAutoMac({ efivars: join(vars, 'none'), sysNet: sys }),
    /does not say which NIC.*2 NICs/,
  );
  assert.equal(
    await resolveAutoMac({ efivars: vars, sysNet: sys }),
    '52:54:00:84:00:01',
    'the firmware wins',
  );
  assert.equal(argsFromKernelCmdline('boottorrent.server=http://10.0.0.1 boottorrent.mac=auto').mac, 'auto');
});
