// The verifying GRUB's builder and config lines (src/boot/grub-verify.ts):
// what reaches GRUB's script is checked, and a missing grub-mkimage is an
// error naming the package. (It boots in OVMF in test/e2e/grub-verify.test.ts.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { buildVerifyingGrub, grubLoadFromFirst } from '../../src/boot/grub-verify.js';
import { pgpKey, pgpPublicKeyFile } from '../../src/boot/openpgp.js';
import { tempDir } from '../helpers/tmp.js';

test('grubLoadFromFirst: one nested if per source, the last one says none was good', () => {
  const lines = grubLoadFromFirst('linux', ['10.0.0.5:8470', '10.0.0.1'], '/phase1/vmlinuz', 'quiet bt.x=1');
  assert.equal(
    lines,
    [
      'if linux (http,10.0.0.5:8470)/phase1/vmlinuz quiet bt.x=1; then',
      '  echo "boottorrent: linux /phase1/vmlinuz from 10.0.0.5:8470"',
      'else',
      '  if linux (http,10.0.0.1)/phase1/vmlinuz quiet bt.x=1; then',
      '    echo "boottorrent: linux /phase1/vmlinuz from 10.0.0.1"',
      '  else',
      '    echo "boottorrent: no source had a good /phase1/vmlinuz"',
      '  fi',
      'fi',
      '',
    ].join('\n'),
  );
});

test('grubLoadFromFirst refuses what GRUB would not read as given', () => {
  const bad: [string[], string, string][] = [
    [[], '/vmlinuz', ''],
    [['10.0.0.5:8470 ; reboot'], '/vmlinuz', ''],
    [['10.0.0.5)/x (http,evil'], '/vmlinuz', ''],
    [['10.0.0.5'], 'vmlinuz', ''],
    [['10.0.0.5'], '/vm linuz', ''],
    [['10.0.0.5'], '/vmlinuz', 'a"b'],
    [['10.0.0.5'], '/vmlinuz', 'init=$x'],
    [['10.0.0.5'], '/vmlinuz', 'a\nreboot'],
    [['10.0.0.5'], '/vmlinuz', 'a; reboot'],
    [['10.0.0.5'], '/vmlinuz', 'quiet #x'],
    [['10.0.0.5'], '/vmlinuz', 'a { reboot }'],
    [['10.0.0.5'], '/vmlinuz', 'a >x'],
    [['10.0.0.5'], '/vmlinuz', 'a\tb'],
    [['10.0.0.5'], '/vmlinuz', 'a\\b'],
    [['10.0.0.5'], '/vmlinuz', 'caf\u00e9'],
  ];
  for (const [sources, file, args] of bad)
    assert.throws(
      () => grubLoadFromFirst('initrd', sources, file, args),
      Error,
      JSON.stringify([sources, file, args]),
    );
});

test('buildVerifyingGrub writes an EFI program, or names the package when grub-mkimage is missing', async (t) => {
  const dir = tempDir(t);
  const publicKey = pgpPublicKeyFile(
    pgpKey(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey, 1_700_000_000),
    'test',
  );
  const out = join(dir, 'grub.efi');
  await buildVerifyingGrub({ publicKey, script: 'echo hi\n', out });
  // A PE file ("MZ") of a few hundred KiB with every module built in.
  const size = statSync(out).size;
  assert.ok(size > 100_000, `size ${size}`);
  assert.equal(readFileSync(out).subarray(0, 2).toString('latin1'), 'MZ');

  const path = process.env.PATH;
  process.env.PATH = join(dir, 'no-such-bin');
  try {
    await assert.rejects(
      buildVerifyingGrub({ publicKey, script: 'echo hi\n', out: join(dir, 'other.efi') }),
      {
        code: 'BT_ERR_PHASE1',
        message: /grub-mkimage is not installed: apt-get install grub-efi-amd64-bin/,
      },
    );
  } finally {
    process.env.PATH = path;
  }
  assert.equal(existsSync(join(dir, 'other.efi')), false);
});
