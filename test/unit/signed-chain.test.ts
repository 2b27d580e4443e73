/**
 * The signed boot chain for Secure Boot (#22 items 1 and 2), its pure parts:
 * which file UEFI PXE firmware is offered, the GRUB script (quoting, the MAC
 * from GRUB, the server key last, stage 0), the TFTP names it needs, the
 * agent's reading of the firmware's Secure Boot state and its kexec command.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { grubConfig, peCertificateTable, peHasSignature } from '../../src/boot/grub.js';
import { hostKernel } from '../../src/demo/sample-os.js';
import { readFileSync } from 'node:fs';
import { parseAgentReport } from '../../src/boot-config.js';
import { kexecCommands, secureBootEnforced, signatureRefused } from '../../src/agent/steps.js';
import { ServerBootPolicy } from '../../src/server/boot-policy.js';
import { FixedFileProvider } from '../../src/tftp/files.js';
import { tempDir } from '../helpers/tmp.js';

const client = (arch: Parameters<ServerBootPolicy['bootFor']>[0]['arch'], ipxe = false) => ({
  mac: '52:54:00:00:00:01',
  arch,
  ipxe,
});

const phase1 = { kernel: 'vmlinuz', initrds: ['initrd.img'], cmdline: 'console=ttyS0 quiet' };

test('signed chain: UEFI PXE firmware gets shim over TFTP; BIOS, HTTP Boot and iPXE as before', () => {
  const p = new ServerBootPolicy({
    serverIp: '10.0.0.1',
    publicUrl: 'http://10.0.0.1',
    phase1,
    uefiPxeFile: 'shimx64.efi',
  });
  assert.deepEqual(p.bootFor(client('uefi-x64')), {
    kind: 'tftp',
    nextServer: '10.0.0.1',
    file: 'shimx64.efi',
  });
  assert.deepEqual(p.bootFor(client('bios')), {
    kind: 'tftp',
    nextServer: '10.0.0.1',
    file: 'undionly.kpxe',
  });
  assert.deepEqual(p.bootFor(client('uefi-x64-http')), { kind: 'http', url: 'http://10.0.0.1/ipxe.efi' });
  assert.equal(p.bootFor(client('uefi-x64', true))?.kind, 'ipxe-script');
  const plain = new ServerBootPolicy({ serverIp: '10.0.0.1', publicUrl: 'http://10.0.0.1', phase1 });
  assert.deepEqual(plain.bootFor(client('uefi-x64')), {
    kind: 'tftp',
    nextServer: '10.0.0.1',
    file: 'ipxe.efi',
  });
});

test('GRUB script: phase 1 over TFTP with the server key last, the MAC from GRUB, every word quoted', () => {
  const p = new ServerBootPolicy({
    serverIp: '10.0.0.1',
    httpPort: 8080,
    publicUrl: 'http://10.0.0.1:8080',
    phase1: { ...phase1, keyArchive: '/phase1-key/server-key.cpio' },
  });
  const image = p.grubPhaseOne();
  assert.deepEqual(image, {
    kernel: '/phase1/vmlinuz',
    initrds: ['/phase1/initrd.img', '/phase1-key/server-key.cpio'],
    cmdline: 'console=ttyS0 quiet',
    serverUrl: 'http://10.0.0.1:8080',
  });
  const cfg = grubConfig(image);
  assert.match(
    cfg,
    /^if linux '\/phase1\/vmlinuz' 'console=ttyS0' 'quiet' 'boottorrent\.server=http:\/\/10\.0\.0\.1:8080' "boottorrent\.mac=\$\{net_default_mac\}"; then$/m,
  );
  assert.match(cfg, /^ {2}if initrd '\/phase1\/initrd\.img' '\/phase1-key\/server-key\.cpio'; then$/m);
  assert.match(cfg, /^configfile '\/grub\/grub\.cfg'$/m, 'a failed load retries');
  for (const bad of ["quiet 'x", 'a\0b'])
    assert.throws(() => grubConfig({ ...image, cmdline: bad }), /one line without a single quote/);
});

test('GRUB script with phase 1 from peers: the kernel and stage 0 with its payload hashes', () => {
  const p = new ServerBootPolicy(
    {
      serverIp: '10.0.0.1',
      publicUrl: 'http://10.0.0.1',
      phase1: {
        ...phase1,
        stage0: {
          file: 'stage0.img',
          payloadSha256: 'ab'.repeat(32),
          blocks: 'x',
          blocksSha256: 'cd'.repeat(32),
        },
      },
    },
    { payloadSource: () => ({ kind: 'wait', seconds: 1 }) },
  );
  const image = p.grubPhaseOne();
  assert.deepEqual(image.initrds, ['/phase1/stage0.img']);
  assert.match(
    image.cmdline,
    new RegExp(`boottorrent\\.payload=${'ab'.repeat(32)} boottorrent\\.blocks=${'cd'.repeat(32)}`),
  );
});

test('TFTP serves a generated file by exact name, in ranges, and nothing beside it', async () => {
  const files = new FixedFileProvider({ 'grub/grub.cfg': Buffer.from('set timeout=0\n') });
  const f = await files.open('/grub/grub.cfg');
  assert.equal(f?.size, 14);
  assert.equal((await f.read(4, 7)).toString(), 'timeout');
  assert.equal((await f.read(11, 100)).toString(), '=0\n');
  assert.equal(await files.open('grub/x86_64-efi/grub.cfg'), undefined);
});

test('agent: Secure Boot read from boot_params (3 is enabled), kexec -s under it, the refusal recognised', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'data');
  const params = Buffer.alloc(4096);
  params[0x1ec] = 3;
  writeFileSync(file, params);
  assert.equal(await secureBootEnforced(file), true);
  params[0x1ec] = 2; // disabled
  writeFileSync(file, params);
  assert.equal(await secureBootEnforced(file), false);
  assert.equal(await secureBootEnforced(join(dir, 'none')), undefined, 'not there: unknown');
  assert.deepEqual(kexecCommands('/k', '/i', 'quiet', true)[0].args, [
    '-s',
    '-l',
    '/k',
    '--initrd=/i',
    '--command-line=quiet',
  ]);
  assert.deepEqual(kexecCommands('/k', undefined, 'quiet')[0].args, ['-l', '/k', '--command-line=quiet']);
  assert.ok(signatureRefused('kexec_file_load failed: Key was rejected by service'));
  assert.ok(signatureRefused('kexec_file_load failed: Required key not available'));
  // What Debian's 6.1 kernel says under Secure Boot for a kernel with no signature (seen in the e2e).
  assert.ok(signatureRefused('kexec_file_load failed: No data available'));
  assert.ok(!signatureRefused('Cannot open /k: No such file or directory'));
  assert.equal(parseAgentReport('{"stage":"menu","secureBoot":true}').secureBoot, true);
  assert.throws(() => parseAgentReport('{"stage":"menu","secureBoot":"yes"}'), /secureBoot/);
});

test('a signed kernel is told from one without a signature (PE certificate table)', () => {
  const kernel = readFileSync(hostKernel());
  assert.ok(peHasSignature(kernel), `${hostKernel()}: Debian's kernel is signed`);
  const stripped = Buffer.from(kernel);
  // PE32+: the certificate table's entry is data directory 4, 112 + 32 bytes into the optional header.
  const entry = stripped.readUInt32LE(0x3c) + 24 + 112 + 32;
  assert.equal(peCertificateTable(kernel)?.entry, entry);
  stripped.writeUInt32LE(0, entry);
  stripped.writeUInt32LE(0, entry + 4);
  assert.ok(!peHasSignature(stripped));
  assert.ok(!peHasSignature(Buffer.from('not a PE image at all, just text that is long enough to read')));
  assert.ok(!peHasSignature(kernel.subarray(0, 1024)), 'a table pointing past the end is no signature');
});
