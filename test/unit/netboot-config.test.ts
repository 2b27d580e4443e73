// NetbootServer refuses to start when a file every client needs is missing,
// naming the file and the fix, before it binds anything.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NetbootServer } from '../../src/server/netboot.js';
import { isBootTorrentError } from '../../src/errors.js';
import { tempDir } from '../helpers/tmp.js';

test('missing iPXE binaries or phase-1 files: one clear error naming the file and the fix', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'vmlinuz'), 'k');
  const base = {
    interface: 'lo',
    serverIp: '127.0.0.1',
    dhcp: { mode: 'off' as const },
    httpPort: 0,
    tftpPort: 0,
    phase1: { dir, kernel: 'vmlinuz', initrds: ['initrd.img'], cmdline: '' },
  };
  const noIpxe = new NetbootServer({ ...base, ipxeDir: join(dir, 'no-ipxe-here') });
  await assert.rejects(
    noIpxe.listen(),
    (e: unknown) =>
      isBootTorrentError(e, 'BT_ERR_FILE') &&
      /no-ipxe-here\/undionly\.kpxe is missing: apt-get install ipxe/.test(e.message),
  );
  writeFileSync(join(dir, 'undionly.kpxe'), 'x');
  writeFileSync(join(dir, 'ipxe.efi'), 'x');
  const noInitrd = new NetbootServer({ ...base, ipxeDir: dir });
  await assert.rejects(
    noInitrd.listen(),
    (e: unknown) =>
      isBootTorrentError(e, 'BT_ERR_FILE') &&
      /initrd\.img is missing: run `boottorrent build-phase1`/.test(e.message),
  );
});
