/**
 * Interface compliance (#15): the same table of cases runs against both
 * FileProviders of src/tftp/files.ts, each set up to serve the same file
 * under the same name, so the TFTP server can rely on one contract: a
 * ServedFile with the size and random-access reads, undefined for "not
 * found" (TFTP error 1), BT_ERR_TFTP_ACCESS for a refusal (error 2).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isBootTorrentError } from '../../src/errors.js';
import { FixedFileProvider, RootFileProvider, type FileProvider } from '../../src/tftp/files.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';

const CLIENT = { address: '127.0.0.1', port: 40000 };
const CONTENT = pseudoRandomBytes(3000, 7);

/** Each provider serving CONTENT as "ipxe.efi" (and nothing called "missing.efi"). */
const implementations: Record<string, (t: TestContext) => FileProvider> = {
  RootFileProvider: (t) => {
    const root = join(tempDir(t), 'root');
    mkdirSync(root);
    writeFileSync(join(root, 'ipxe.efi'), CONTENT);
    return new RootFileProvider(root);
  },
  FixedFileProvider: (t) => {
    const dir = tempDir(t);
    writeFileSync(join(dir, 'ipxe.efi'), CONTENT);
    return new FixedFileProvider({ 'ipxe.efi': join(dir, 'ipxe.efi'), 'missing.efi': join(dir, 'nope') });
  },
};

const refusedWithAccess = (err: unknown) => isBootTorrentError(err) && err.code === 'BT_ERR_TFTP_ACCESS';

const cases: { name: string; check: (p: FileProvider) => Promise<void> }[] = [
  {
    name: 'a served file has its size and reads back byte for byte at any offset',
    check: async (p) => {
      const f = await p.open('ipxe.efi', CLIENT);
      assert.ok(f);
      try {
        assert.equal(f.size, CONTENT.length);
        assert.deepEqual(await f.read(0, 512), CONTENT.subarray(0, 512));
        assert.deepEqual(await f.read(1000, 512), CONTENT.subarray(1000, 1512));
      } finally {
        await f.close();
      }
    },
  },
  {
    name: 'a read past the end returns only what is left, then nothing',
    check: async (p) => {
      const f = await p.open('ipxe.efi', CLIENT);
      assert.ok(f);
      try {
        assert.deepEqual(await f.read(2900, 512), CONTENT.subarray(2900));
        assert.equal((await f.read(CONTENT.length, 512)).length, 0);
      } finally {
        await f.close();
      }
    },
  },
  {
    name: 'a leading slash names the same file (firmware asks for "/ipxe.efi")',
    check: async (p) => {
      const f = await p.open('/ipxe.efi', CLIENT);
      assert.ok(f);
      assert.equal(f.size, CONTENT.length);
      await f.close();
    },
  },
  {
    name: 'a name it does not serve, or whose file is gone, is not found (undefined)',
    check: async (p) => {
      assert.equal(await p.open('missing.efi', CLIENT), undefined);
      assert.equal(await p.open('toString', CLIENT), undefined);
    },
  },
  {
    name: 'a path that climbs is refused with BT_ERR_TFTP_ACCESS',
    check: async (p) => {
      for (const path of ['../ipxe.efi', 'a/../ipxe.efi', '..\\ipxe.efi', 'ipxe.efi\0'])
        await assert.rejects(p.open(path, CLIENT), refusedWithAccess, path);
    },
  },
];

for (const [impl, make] of Object.entries(implementations))
  for (const c of cases) test(`FileProvider ${impl}: ${c.name}`, (t) => c.check(make(t)));
