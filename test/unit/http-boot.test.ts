import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey } from 'node:crypto';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseRange } from '../../src/http/range.js';
import { phaseOneScript } from '../../src/http/ipxe.js';
import { normalizeMac } from '../../src/util/address.js';
import { BootHttpServer, type HttpBootPolicy } from '../../src/http/server.js';
import { bootConfigSignatureValid, parseBootConfig } from '../../src/boot-config.js';
import { ServerBootPolicy } from '../../src/server/boot-policy.js';
import { PHASE1_KEY_URL } from '../../src/server/netboot.js';
import { loadSigningKey } from '../../src/server/signing.js';
import { fixedBootConfig } from '../helpers/boot-policy.js';
import { rawGet } from '../helpers/http.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';

test('table: Range header against a 1000-byte resource', () => {
  const cases: [string | undefined, ReturnType<typeof parseRange>][] = [
    [undefined, { kind: 'full' }],
    ['bytes=0-99', { kind: 'partial', start: 0, end: 99 }],
    ['bytes=900-', { kind: 'partial', start: 900, end: 999 }],
    ['bytes=-100', { kind: 'partial', start: 900, end: 999 }],
    ['bytes=-5000', { kind: 'partial', start: 0, end: 999 }],
    ['bytes=500-5000', { kind: 'partial', start: 500, end: 999 }],
    ['bytes=1000-', { kind: 'unsatisfiable' }],
    ['bytes=-0', { kind: 'unsatisfiable' }],
    ['bytes=5-2', { kind: 'full' }],
    ['bytes=0-1,5-6', { kind: 'full' }],
    ['items=0-1', { kind: 'full' }],
    ['bytes=-', { kind: 'full' }],
  ];
  for (const [h, want] of cases) assert.deepEqual(parseRange(h, 1000), want, String(h));
});

test('MACs are normalised; scripts carry server and MAC and keep ${} inert', () => {
  assert.equal(normalizeMac('52-54-00-AB-cd-01'), '52:54:00:ab:cd:01');
  assert.equal(normalizeMac('525400abcd01'), '52:54:00:ab:cd:01');
  assert.equal(normalizeMac('52:54:00:ab:cd'), undefined);
  assert.equal(normalizeMac('zz:54:00:ab:cd:01'), undefined);
  const s = phaseOneScript({
    mac: '52:54:00:ab:cd:01',
    image: {
      kernelUrl: 'http://10.0.0.1/phase1/vmlinuz',
      initrdUrls: ['http://10.0.0.1/phase1/a.img', 'http://10.0.0.1/phase1/b.img'],
      cmdline: 'console=ttyS0 quiet',
    },
    serverUrl: 'http://10.0.0.1',
    scriptUrl: 'http://10.0.0.1/boot.ipxe?mac=52:54:00:ab:cd:01',
  });
  assert.match(s, /^#!ipxe\n/);
  assert.match(
    s,
    /kernel http:\/\/10\.0\.0\.1\/phase1\/vmlinuz initrd=initrd0 initrd=initrd1 console=ttyS0 quiet boottorrent\.server=http:\/\/10\.0\.0\.1 boottorrent\.mac=52:54:00:ab:cd:01 \|\| goto failed/,
  );
  assert.match(s, /initrd --name initrd1 http:\/\/10\.0\.0\.1\/phase1\/b\.img/);
  for (const cmdline of ['a\nshell', 'x=${evil}']) {
    assert.throws(
      () =>
        phaseOneScript({
          mac: '52:54:00:ab:cd:01',
          image: { kernelUrl: 'http://x/k', initrdUrls: [], cmdline },
          serverUrl: 'http://x',
          scriptUrl: 'http://x/boot.ipxe',
        }),
      /BT_ERR_CONFIG_FIELD|must be one line|must not contain/,
    );
  }
});

test('boot server: script per MAC, refusal, menu API, Range files, confinement', async (t) => {
  const dir = tempDir(t);
  const root = join(dir, 'phase1');
  mkdirSync(join(root, 'sub'), { recursive: true });
  const kernel = pseudoRandomBytes(5000, 3);
  writeFileSync(join(root, 'vmlinuz'), kernel);
  writeFileSync(join(root, 'sub', 'x'), 'x');
  writeFileSync(join(dir, 'secret'), 'do not serve');
  symlinkSync(join(dir, 'secret'), join(root, 'leak'));
  symlinkSync('vmlinuz', join(root, 'inside-link'));
  const policy: HttpBootPolicy = {
    phaseOneFor: (mac) =>
      mac === '52:54:00:00:00:09'
        ? { refused: 'not in the allow-list' }
        : {
            kernelUrl: 'http://s/phase1/vmlinuz',
            initrdUrls: ['http://s/phase1/initrd'],
            cmdline: 'console=ttyS0',
          },
    bootConfigFor: (mac) => (mac === '52:54:00:00:00:09' ? undefined : fixedBootConfig(mac)),
  };
  const server = new BootHttpServer({ host: '127.0.0.1', port: 0, mounts: { '/phase1/': root } }, { policy });
  const port = await server.listen();
  t.after(() => server.close());

  const script = await rawGet(port, '/boot.ipxe?mac=52-54-00-00-00-01');
  assert.equal(script.status, 200);
  assert.match(script.body.toString(), /boottorrent\.mac=52:54:00:00:00:01/);
  assert.match(script.body.toString(), new RegExp(`boottorrent\\.server=http://127\\.0\\.0\\.1:${port}`));
  const refused = await rawGet(port, '/boot.ipxe?mac=52:54:00:00:00:09');
  assert.match(refused.body.toString(), /not in the allow-list/);
  assert.match((await rawGet(port, '/boot.ipxe')).body.toString(), /needs \?mac=/);

  const menu = await rawGet(port, '/api/v1/boot/52:54:00:00:00:01');
  assert.deepEqual(JSON.parse(menu.body.toString()), fixedBootConfig('52:54:00:00:00:01'));
  assert.equal((await rawGet(port, '/api/v1/boot/52:54:00:00:00:09')).status, 403);
  assert.equal((await rawGet(port, '/api/v1/boot/nonsense')).status, 400);

  const whole = await rawGet(port, '/phase1/vmlinuz');
  assert.equal(whole.status, 200);
  assert.deepEqual(whole.body, kernel);
  // Spelt so: GRUB 2.06's http module (the verifying loader, src/boot/grub-verify.ts) reads no other case.
  assert.ok(whole.rawHeaders.includes('Content-Length'), whole.rawHeaders.join(' '));
  const part = await rawGet(port, '/phase1/vmlinuz', { range: 'bytes=100-199' });
  assert.equal(part.status, 206);
  assert.equal(part.headers['content-range'], 'bytes 100-199/5000');
  assert.deepEqual(part.body, kernel.subarray(100, 200));
  assert.equal((await rawGet(port, '/phase1/vmlinuz', { range: 'bytes=9000-' })).status, 416);
  assert.deepEqual(
    (await rawGet(port, '/phase1/inside-link')).body,
    kernel,
    'a symlink inside the root is fine',
  );

  for (const evil of [
    '/phase1/../secret',
    '/phase1/%2e%2e/secret',
    '/phase1/sub/..%2f..%2fsecret',
    '/phase1/..%5csecret',
    '/phase1/leak',
    '/phase1//etc/passwd',
    '/phase1/%00',
    '/phase1/%zz',
  ]) {
    const r = await rawGet(port, evil);
    assert.equal(r.status, 404, evil);
    assert.doesNotMatch(r.body.toString(), /do not serve|root:/, evil);
  }
});

test('boot server signs each boot config with its key and echoes the agent nonce inside the signed body', async (t) => {
  const key = await loadSigningKey(join(tempDir(t), 'state'));
  const pub = createPublicKey(key.publicPem);
  const policy: HttpBootPolicy = {
    phaseOneFor: () => ({ kernelUrl: 'http://s/phase1/vmlinuz', initrdUrls: [], cmdline: '' }),
    bootConfigFor: (mac) => fixedBootConfig(mac),
  };
  const server = new BootHttpServer({ host: '127.0.0.1', port: 0 }, { policy, signConfig: key.sign });
  const port = await server.listen();
  t.after(() => server.close());
  const nonce = 'ab12'.repeat(8);
  const res = await rawGet(port, `/api/v1/boot/52:54:00:00:00:01?nonce=${nonce}`);
  assert.equal(res.status, 200);
  const header = res.headers['x-boottorrent-signature'];
  assert.equal(typeof header, 'string');
  assert.equal(
    bootConfigSignatureValid(res.body, header as string, pub),
    true,
    'signed over the exact bytes sent',
  );
  const config = parseBootConfig(res.body.toString());
  assert.equal(config.nonce, nonce);
  assert.equal(config.mac, '52:54:00:00:00:01');
  // Without a nonce (an older agent): signed, no nonce in it.
  const plain = await rawGet(port, '/api/v1/boot/52:54:00:00:00:01');
  assert.equal(
    bootConfigSignatureValid(plain.body, plain.headers['x-boottorrent-signature'] as string, pub),
    true,
  );
  assert.equal(parseBootConfig(plain.body.toString()).nonce, undefined);
  // A nonce that is not 32-64 hex digits is refused before anything is signed.
  for (const bad of ['xyz', 'ab', 'AB12'.repeat(8), 'a'.repeat(65)]) {
    const r = await rawGet(port, `/api/v1/boot/52:54:00:00:00:01?nonce=${bad}`);
    assert.equal(r.status, 400, bad);
    assert.equal(r.headers['x-boottorrent-signature'], undefined);
  }
});

test('the phase-1 script loads the server key archive after the initramfs, also with stage 0', () => {
  const base = {
    serverIp: '10.0.0.1',
    httpPort: 80,
    uefiLoader: 'ipxe.efi' as const,
    publicUrl: 'http://10.0.0.1',
  };
  const plain = new ServerBootPolicy({
    ...base,
    phase1: { kernel: 'vmlinuz', initrds: ['initrd.img'], cmdline: '', keyArchive: PHASE1_KEY_URL },
  });
  const image = plain.phaseOneFor('52:54:00:00:00:01');
  assert.ok(!('refused' in image));
  assert.deepEqual(image.initrdUrls, [
    'http://10.0.0.1/phase1/initrd.img?mac=52:54:00:00:00:01',
    'http://10.0.0.1/phase1-key/server-key.cpio?mac=52:54:00:00:00:01',
  ]);
  const staged = new ServerBootPolicy(
    {
      ...base,
      phase1: {
        kernel: 'vmlinuz',
        initrds: ['initrd.img'],
        cmdline: '',
        keyArchive: PHASE1_KEY_URL,
        stage0: {
          file: 'stage0.img',
          payloadSha256: 'a'.repeat(64),
          blocks: '',
          blocksSha256: 'b'.repeat(64),
        },
      },
    },
    { payloadSource: () => ({ kind: 'server' }) as never },
  );
  const s0 = staged.phaseOneFor('52:54:00:00:00:01');
  assert.ok(!('refused' in s0));
  assert.deepEqual(s0.initrdUrls, [
    'http://10.0.0.1/phase1/stage0.img?mac=52:54:00:00:00:01',
    'http://10.0.0.1/phase1-key/server-key.cpio?mac=52:54:00:00:00:01',
  ]);
});
