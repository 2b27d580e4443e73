// Regression: Debian's /usr/lib/ipxe/ipxe.efi is a symlink into /boot, so a
// confined folder refused it and OVMF got "PXE-E23 TFTP error". The iPXE
// builds are now served by exact name, links followed, nothing else.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FixedFileProvider } from '../../src/tftp/files.js';
import { isBootTorrentError } from '../../src/errors.js';
import { tempDir } from '../helpers/tmp.js';

test('fixed names are served through symlinks; any other name is not found', async (t) => {
  const dir = tempDir(t);
  mkdirSync(join(dir, 'boot'));
  mkdirSync(join(dir, 'lib'));
  writeFileSync(join(dir, 'boot', 'ipxe.efi'), 'EFI BINARY');
  writeFileSync(join(dir, 'lib', 'secret'), 'no');
  symlinkSync(join(dir, 'boot', 'ipxe.efi'), join(dir, 'lib', 'ipxe.efi'));
  const p = new FixedFileProvider({
    'ipxe.efi': join(dir, 'lib', 'ipxe.efi'),
    'missing.kpxe': join(dir, 'nope'),
  });
  const f = await p.open('/ipxe.efi');
  assert.ok(f);
  assert.equal(f.size, 10);
  assert.equal((await f.read(0, 100)).toString(), 'EFI BINARY');
  await f.close();
  assert.equal(await p.open('secret'), undefined);
  assert.equal(await p.open('missing.kpxe'), undefined);
  assert.equal(await p.open('toString'), undefined, 'no prototype names');
  await assert.rejects(p.open('../lib/secret'), (e: unknown) => isBootTorrentError(e, 'BT_ERR_TFTP_ACCESS'));
});
