/**
 * The server's boot-config signing key (src/server/signing.ts) and the
 * agent's check (bootConfigSignatureValid, src/boot-config.ts): the key is
 * made once with mode 0600 and kept; a signature verifies only for the exact
 * body and the right key; the key archive is a cpio that `cpio` reads.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import {
  lstatSync,
  readFileSync,
  readdirSync,
  statSync,
  symlinkSync,
  writeFileSync,
  chmodSync,
} from 'node:fs';
import { join } from 'node:path';
import { PHASE1_SERVER_KEY_PATH, bootConfigSignatureValid } from '../../src/boot-config.js';
import { PUBLIC_KEY_FILE, SIGNING_KEY_FILE, loadSigningKey } from '../../src/server/signing.js';
import { tempDir } from '../helpers/tmp.js';

test('the signing key is created once (0600), kept across starts, and its public half written beside it', async (t) => {
  const dir = join(tempDir(t), 'state');
  const a = await loadSigningKey(dir);
  assert.equal(statSync(join(dir, SIGNING_KEY_FILE)).mode & 0o777, 0o600);
  const b = await loadSigningKey(dir);
  assert.equal(b.publicPem, a.publicPem, 'the same key on the next start');
  assert.equal(readFileSync(join(dir, PUBLIC_KEY_FILE), 'utf8'), a.publicPem);
  // Loosened by hand: tightened again.
  chmodSync(join(dir, SIGNING_KEY_FILE), 0o644);
  await loadSigningKey(dir);
  assert.equal(statSync(join(dir, SIGNING_KEY_FILE)).mode & 0o777, 0o600);
});

test('links in the state folder are not followed: a linked key is refused, a linked public key is replaced', async (t) => {
  const dir = tempDir(t);
  const elsewhere = join(dir, 'elsewhere');
  const good = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  writeFileSync(elsewhere, good, { mode: 0o644 });
  const state = join(dir, 'state');
  await loadSigningKey(state); // makes the folder
  const keyFile = join(state, SIGNING_KEY_FILE);
  const pubFile = join(state, PUBLIC_KEY_FILE);
  const { rmSync } = await import('node:fs');
  rmSync(keyFile);
  symlinkSync(elsewhere, keyFile);
  await assert.rejects(
    loadSigningKey(state),
    (err: Error) => err.message.includes(keyFile) && /not a link/.test(err.message),
  );
  assert.equal(statSync(elsewhere).mode & 0o777, 0o644, 'the link target was not chmod-ed');
  rmSync(keyFile);
  rmSync(pubFile);
  const victim = join(dir, 'victim');
  writeFileSync(victim, 'keep me');
  symlinkSync(victim, pubFile);
  await loadSigningKey(state);
  assert.equal(readFileSync(victim, 'utf8'), 'keep me', 'not written through the link');
  assert.ok(lstatSync(pubFile).isFile());
});

test('starts at the same time agree on one key and leave no temporary file', async (t) => {
  const dir = join(tempDir(t), 'state');
  const keys = await Promise.all(Array.from({ length: 8 }, () => loadSigningKey(dir)));
  assert.equal(new Set(keys.map((k) => k.publicPem)).size, 1);
  assert.deepEqual(readdirSync(dir).sort(), [SIGNING_KEY_FILE, PUBLIC_KEY_FILE].sort());
});

test('a key file that is not Ed25519 is a clear error naming the file', async (t) => {
  const dir = tempDir(t);
  const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 });
  writeFileSync(join(dir, SIGNING_KEY_FILE), rsa.privateKey.export({ type: 'pkcs8', format: 'pem' }), {
    mode: 0o600,
  });
  await assert.rejects(
    loadSigningKey(dir),
    (err: Error) => err.message.includes(join(dir, SIGNING_KEY_FILE)) && /not an Ed25519/.test(err.message),
  );
});

test('a signature verifies for the exact body and key only; malformed headers are refused', async (t) => {
  const key = await loadSigningKey(tempDir(t));
  const pub = createPublicKey(key.publicPem);
  const other = createPublicKey((await loadSigningKey(tempDir(t))).publicPem);
  const body = Buffer.from('{"version":1,"mac":"52:54:00:12:34:56"}\n');
  const sig = key.sign(body);
  assert.match(sig, /^ed25519=[A-Za-z0-9+/]{86}==$/);
  assert.equal(bootConfigSignatureValid(body, sig, pub), true);
  assert.equal(
    bootConfigSignatureValid(Buffer.from(body.toString().replace('56', '57')), sig, pub),
    false,
    'changed body',
  );
  assert.equal(
    bootConfigSignatureValid(Buffer.concat([body, Buffer.from(' ')]), sig, pub),
    false,
    'one byte more',
  );
  assert.equal(bootConfigSignatureValid(body, sig, other), false, 'another key');
  for (const bad of [
    null,
    '',
    'ed25519=',
    sig.replace('ed25519=', 'rsa='),
    `${sig}x`,
    sig.slice(0, -4),
    'ed25519=' + 'A'.repeat(86) + '==',
  ]) {
    assert.equal(bootConfigSignatureValid(body, bad, pub), false, JSON.stringify(bad));
  }
});

test('the key archive holds the public key at the path the agent reads, as a cpio archive', async (t) => {
  const dir = tempDir(t);
  const key = await loadSigningKey(join(dir, 'state'));
  const listed = execFileSync('cpio', ['-it', '--quiet'], { input: key.keyCpio, encoding: 'utf8' })
    .trim()
    .split('\n');
  assert.deepEqual(listed, ['etc', 'etc/boottorrent', PHASE1_SERVER_KEY_PATH.slice(1)]);
  execFileSync('cpio', ['-idm', '--quiet'], { input: key.keyCpio, cwd: dir });
  assert.equal(readFileSync(join(dir, PHASE1_SERVER_KEY_PATH), 'utf8'), key.publicPem);
});
