// Our OpenPGP key and signatures (src/boot/openpgp.ts) checked by a second,
// independent implementation: GnuPG imports the key file and verifies each
// detached signature, and refuses it for a changed file or another key.
// (GRUB, the real consumer, checks them in test/e2e/grub-verify.test.ts.)
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pgpKey, pgpPublicKeyFile, pgpSign, pgpSignFile } from '../../src/boot/openpgp.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';

const rsa = (bits = 2048) => generateKeyPairSync('rsa', { modulusLength: bits }).privateKey;

/** gpg with a keyring of its own in a fresh folder. */
function gpg(t: TestContext) {
  const home = join(tempDir(t), 'gnupg');
  mkdirSync(home, { mode: 0o700 });
  const run = (...args: string[]) =>
    spawnSync('gpg', ['--homedir', home, '--batch', '--no-tty', '--status-fd', '1', ...args], {
      encoding: 'utf8',
    });
  t.after(() => spawnSync('gpgconf', ['--homedir', home, '--kill', 'all']));
  return run;
}

test('gpg imports our key file and verifies our detached signatures (in memory and streamed from a file)', async (t) => {
  const key = pgpKey(rsa(), 1_700_000_000);
  const dir = tempDir(t);
  const run = gpg(t);
  writeFileSync(join(dir, 'key.gpg'), pgpPublicKeyFile(key, 'BootTorrent phase 1 (test)'));
  const imported = run('--import', join(dir, 'key.gpg'));
  assert.equal(imported.status, 0, imported.stderr);
  assert.match(
    imported.stdout,
    new RegExp(`IMPORT_OK \\d+ ${key.fingerprint.toString('hex').toUpperCase()}`),
  );

  // 3 MiB: the file is read in many chunks.
  const data = pseudoRandomBytes(3 << 20, 7);
  writeFileSync(join(dir, 'vmlinuz'), data);
  writeFileSync(join(dir, 'vmlinuz.sig'), await pgpSignFile(key, join(dir, 'vmlinuz')));
  const good = run('--verify', join(dir, 'vmlinuz.sig'), join(dir, 'vmlinuz'));
  assert.equal(good.status, 0, good.stderr);
  assert.match(good.stdout, new RegExp(`VALIDSIG ${key.fingerprint.toString('hex').toUpperCase()}`));

  writeFileSync(join(dir, 'small'), 'hello');
  writeFileSync(join(dir, 'small.sig'), pgpSign(key, Buffer.from('hello')));
  assert.equal(run('--verify', join(dir, 'small.sig'), join(dir, 'small')).status, 0);

  // One byte changed: refused.
  data[12345] = data[12345]! ^ 1;
  writeFileSync(join(dir, 'vmlinuz'), data);
  const bad = run('--verify', join(dir, 'vmlinuz.sig'), join(dir, 'vmlinuz'));
  assert.notEqual(bad.status, 0);
  assert.match(bad.stdout, /BADSIG/);
});

test('a signature by another key is not good for ours', (t) => {
  const ours = pgpKey(rsa(), 1_700_000_000);
  const theirs = pgpKey(rsa(), 1_700_000_000);
  const dir = tempDir(t);
  const run = gpg(t);
  writeFileSync(join(dir, 'key.gpg'), pgpPublicKeyFile(ours, 'ours'));
  assert.equal(run('--import', join(dir, 'key.gpg')).status, 0);
  writeFileSync(join(dir, 'f'), 'data');
  writeFileSync(join(dir, 'f.sig'), pgpSign(theirs, Buffer.from('data')));
  const r = run('--verify', join(dir, 'f.sig'), join(dir, 'f'));
  assert.notEqual(r.status, 0);
  assert.match(r.stdout, new RegExp(`NO_PUBKEY ${theirs.keyId.toString('hex').toUpperCase()}`));
});

test('a key GRUB cannot use is refused with the reason', () => {
  assert.throws(() => pgpKey(generateKeyPairSync('ed25519').privateKey, 0), /must be RSA.*ed25519/);
  assert.throws(() => pgpKey(rsa(1024), 0), /1024 bits; use at least 2048/);
});
