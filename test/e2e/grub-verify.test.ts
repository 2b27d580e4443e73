/**
 * The verifying GRUB (src/boot/grub-verify.ts) in real UEFI firmware
 * (OVMF, QEMU under TCG): built by our code with our OpenPGP key file
 * (src/boot/openpgp.ts), it loads a kernel and initramfs over HTTP from a
 * "peer" first and from the "server" when the peer's file fails its check.
 * An honest peer's files boot; a lying peer's (a kernel with one byte
 * changed, an initramfs signed by the liar's own key) are refused and the
 * server's boot instead. The guest reaches only the two HTTP servers, which
 * run in a network namespace of the test's own (QEMU's user network there
 * leads to that namespace's loopback and nowhere else).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pgpKey, pgpPublicKeyFile, pgpSign, type PgpKey } from '../../src/boot/openpgp.js';
import { buildVerifyingGrub, grubLoadFromFirst } from '../../src/boot/grub-verify.js';
import { Lab, waitForOutput } from '../helpers/netns.js';
import { debianKernel, markerInitrd } from '../helpers/marker-os.js';
import { tempDir } from '../helpers/tmp.js';

const PEER = '10.0.2.2:8001';
const SERVER = '10.0.2.2:8002';

/**
 * Serves the files of `dir` read-only on 127.0.0.1:`port` (in the namespace
 * it runs in). `Content-Length` spelt so: GRUB 2.06's http reads no other
 * case, and without it a file is cut at the connection's end.
 */
const STATIC_SERVER = `
const http = require('node:http'), fs = require('node:fs'), path = require('node:path');
const [dir, port] = process.argv.slice(1);
http.createServer((req, res) => {
  const name = path.basename(decodeURIComponent(req.url.split('?')[0]));
  fs.readFile(path.join(dir, name), (err, data) => {
    console.log(req.method, req.url, err ? 404 : 200);
    if (err) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { 'Content-Length': data.length });
    res.end(data);
  });
}).listen(Number(port), '127.0.0.1', () => console.log('listening'));
`;

function serve(dir: string, files: Record<string, Buffer>): string {
  mkdirSync(dir, { recursive: true });
  for (const [name, data] of Object.entries(files)) writeFileSync(join(dir, name), data);
  return dir;
}

/** A signed pair: the file and its detached signature by `key`. */
function signed(name: string, data: Buffer, key: PgpKey): Record<string, Buffer> {
  return { [name]: data, [`${name}.sig`]: pgpSign(key, data) };
}

async function bootThroughGrub(
  t: TestContext,
  peerFiles: Record<string, Buffer>,
  serverFiles: Record<string, Buffer>,
  key: PgpKey,
): Promise<string> {
  const dir = tempDir(t);
  const esp = join(dir, 'esp');
  mkdirSync(join(esp, 'EFI', 'BOOT'), { recursive: true });
  const args = 'console=ttyS0 panic=-1';
  await buildVerifyingGrub({
    publicKey: pgpPublicKeyFile(key, 'BootTorrent test server'),
    out: join(esp, 'EFI', 'BOOT', 'BOOTX64.EFI'),
    script: [
      'echo "boottorrent: grub check_signatures=$check_signatures"',
      'net_bootp',
      `configfile (http,${SERVER})/grub.cfg`,
      // Not reached when the kernel runs; otherwise end the VM rather than wait at a prompt.
      'echo "boottorrent: nothing to boot"',
      'reboot',
      '',
    ].join('\n'),
  });
  // The config with the choices, from the server and signed like the files it loads.
  const config = Buffer.from(
    [
      grubLoadFromFirst('linux', [PEER, SERVER], '/vmlinuz', args),
      grubLoadFromFirst('initrd', [PEER, SERVER], '/initrd.img'),
      'boot',
      '',
    ].join('\n'),
  );
  const served = { ...serverFiles, ...signed('grub.cfg', config, key) };
  const lab = new Lab(t);
  const ns = lab.ns('grub');
  const peer = lab.spawn(ns, process.execPath, [
    '-e',
    STATIC_SERVER,
    serve(join(dir, 'peer'), peerFiles),
    '8001',
  ]);
  const server = lab.spawn(ns, process.execPath, [
    '-e',
    STATIC_SERVER,
    serve(join(dir, 'server'), served),
    '8002',
  ]);
  await waitForOutput(peer, /listening/, 30_000, 'the peer');
  await waitForOutput(server, /listening/, 30_000, 'the server');
  const vm = lab.spawn(ns, 'qemu-system-x86_64', [
    '-accel',
    'tcg',
    '-m',
    '512',
    '-display',
    'none',
    '-monitor',
    'none',
    '-serial',
    'stdio',
    '-no-reboot',
    '-bios',
    '/usr/share/ovmf/OVMF.fd',
    // An IDE disk, as OVMF boots it by default; vvfat cannot be read-only
    // on IDE, and its writes stay in QEMU's own overlay.
    '-drive',
    `file=fat:rw:${esp},format=raw`,
    '-nic',
    'user,model=virtio-net-pci',
  ]);
  // OVMF under TCG on a loaded 2-core machine: minutes, not seconds, at
  // worst. GRUB waiting for a key after an error ends the wait at once.
  await waitForOutput(vm, /MARKER-\w+ cmdline|nothing to boot|Press any key/, 240_000, 'the VM');
  return `${vm.output()}\n--- peer:\n${peer.output()}\n--- server:\n${server.output()}`;
}

test('GRUB loads a peer’s signed kernel and initramfs, refuses a lying peer’s and loads the server’s', async (t) => {
  const key = pgpKey(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey, 1_700_000_000);
  const liar = pgpKey(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey, 1_700_000_000);
  const kernel = readFileSync(debianKernel());
  const serverFiles = {
    ...signed('vmlinuz', kernel, key),
    ...signed('initrd.img', markerInitrd('MARKER-SERVER'), key),
  };

  await t.test('an honest peer: both files from it', async (t) => {
    const out = await bootThroughGrub(
      t,
      { ...signed('vmlinuz', kernel, key), ...signed('initrd.img', markerInitrd('MARKER-PEER'), key) },
      serverFiles,
      key,
    );
    assert.match(out, /grub check_signatures=enforce/);
    assert.match(out, new RegExp(`linux /vmlinuz from ${PEER}`));
    assert.match(out, new RegExp(`initrd /initrd.img from ${PEER}`));
    assert.match(out, /MARKER-PEER cmdline: .*console=ttyS0/);
    assert.doesNotMatch(out, /MARKER-SERVER/);
  });

  await t.test(
    'a lying peer: a changed kernel and an initramfs signed by its own key are refused',
    async (t) => {
      const changed = Buffer.from(kernel);
      changed[changed.length >> 1] = changed[changed.length >> 1]! ^ 0x40;
      const out = await bootThroughGrub(
        t,
        {
          // The real kernel's signature beside a changed kernel.
          vmlinuz: changed,
          'vmlinuz.sig': serverFiles['vmlinuz.sig']!,
          ...signed('initrd.img', markerInitrd('MARKER-PEER'), liar),
        },
        serverFiles,
        key,
      );
      assert.match(out, /bad signature/);
      assert.match(out, /public key [0-9a-f]+ not found/);
      assert.match(out, new RegExp(`linux /vmlinuz from ${SERVER}`));
      assert.match(out, new RegExp(`initrd /initrd.img from ${SERVER}`));
      assert.match(out, /MARKER-SERVER cmdline/);
      assert.doesNotMatch(out, /MARKER-PEER/);
      // GRUB did ask the peer for both, and their signatures.
      assert.match(out, /GET \/vmlinuz\.sig 200[\s\S]*--- server/);
      assert.match(out, /GET \/initrd\.img\.sig 200[\s\S]*--- server/);
    },
  );
});
