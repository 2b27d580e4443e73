// The phase-1 payload's block list (src/server/phase1-blocks.ts) and the
// agent's Range answers (src/agent/phase1-share.ts parseRange): what stage
// 0 reads with busybox and asks with `wget -c`, and the agent's server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { hashPayload } from '../../src/server/phase1-blocks.js';
import { PhaseOneShare, parseRange } from '../../src/agent/phase1-share.js';
import { rawGet } from '../helpers/http.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

test('the block list: a header a shell can read, one SHA-256 per block, the last one short; its own digest', async (t) => {
  const dir = tempDir(t);
  const data = pseudoRandomBytes(2 * 4096 + 100, 7);
  const file = join(dir, 'p');
  writeFileSync(file, data);
  const h = await hashPayload(file, 4096);
  assert.equal(h.sha256, sha(data));
  assert.equal(
    h.blocks,
    `boottorrent-blocks 1 4096 8292 3\n${sha(data.subarray(0, 4096))}\n${sha(data.subarray(4096, 8192))}\n${sha(data.subarray(8192))}\n`,
  );
  assert.equal(h.blocksSha256, sha(h.blocks));
  // A multiple of the block size has no empty last block.
  writeFileSync(file, data.subarray(0, 8192));
  assert.match((await hashPayload(file, 4096)).blocks, /^boottorrent-blocks 1 4096 8192 2\n/);
});

test('Range: bytes=N- and N-M and -K; past the end is unsatisfiable; anything else is the whole file', () => {
  assert.deepEqual(parseRange('bytes=100-', 1000), [100, 999]);
  assert.deepEqual(parseRange('bytes=100-199', 1000), [100, 199]);
  assert.deepEqual(parseRange('bytes=100-5000', 1000), [100, 999]);
  assert.deepEqual(parseRange('bytes=-10', 1000), [990, 999]);
  assert.equal(parseRange('bytes=1000-', 1000), 'unsatisfiable');
  assert.equal(parseRange('bytes=-0', 1000), 'unsatisfiable');
  assert.equal(parseRange(undefined, 1000), undefined);
  assert.equal(parseRange('bytes=5-1', 1000), undefined);
  assert.equal(parseRange('bytes=1-2,5-6', 1000), undefined);
  assert.equal(parseRange('items=1-2', 1000), undefined);
  assert.equal(parseRange(`bytes=${'9'.repeat(40)}-`, 1000), undefined);
});

test('the agent serves its payload whole and from an offset, with Content-Length spelt as GRUB reads it', async (t) => {
  const dir = tempDir(t);
  const data = pseudoRandomBytes(3000, 11);
  const file = join(dir, 'payload');
  writeFileSync(file, data);
  const share = new PhaseOneShare({ file, port: 0, host: '127.0.0.1' });
  const port = await share.start();
  assert.ok(port);
  t.after(() => share.close());
  const get = (range?: string) => rawGet(port, '/phase1/payload', range ? { range } : {});
  const whole = await get();
  assert.equal(whole.status, 200);
  assert.deepEqual(whole.body, data);
  assert.ok(whole.rawHeaders.includes('Content-Length'), whole.rawHeaders.join(' '));
  const rest = await get('bytes=1000-');
  assert.equal(rest.status, 206);
  assert.deepEqual(rest.body, data.subarray(1000));
  assert.equal(rest.rawHeaders[rest.rawHeaders.indexOf('Content-Length') + 1], '2000');
});
