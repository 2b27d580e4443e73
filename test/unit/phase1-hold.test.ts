// A holder's fetch (src/agent/phase1-hold.ts) against a server and "peers"
// on loopback: it asks with its token, waits when told, refuses a file whose
// SHA-256 is not the one its kernel line names (and says so, so the server
// drops that source), and ends with nothing when the server wants no more
// holders.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fetchHeldFiles } from '../../src/agent/phase1-hold.js';
import { silentLogger } from '../../src/util/logger.js';
import { tempDir } from '../helpers/tmp.js';

const MAC = '52:54:00:00:09:01';
const kernel = Buffer.alloc(70_000, 1);
const initrd = Buffer.alloc(30_000, 2);
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const FILES = [
  { name: 'vmlinuz', sha256: sha(kernel) },
  { name: 'stage0-grub.img', sha256: sha(initrd) },
];

async function serve(
  t: TestContext,
  handler: (req: IncomingMessage) => { status?: number; body: Buffer | string },
) {
  const s = createServer((req, res) => {
    const r = handler(req);
    res.writeHead(r.status ?? 200).end(r.body);
  });
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  t.after(() => s.close());
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
}

test('a holder: waits when told, refuses a wrong file and says so, then holds the checked files and their signatures', async (t) => {
  const liar = await serve(t, () => ({ body: Buffer.alloc(70_000, 9) }));
  const questions: string[] = [];
  let server = '';
  server = await serve(t, (req) => {
    if (req.url!.startsWith('/api/v1/phase1-loader/')) {
      assert.equal(req.headers['x-boottorrent-token'], 'tok');
      questions.push(req.url!);
      if (questions.length === 1) return { body: 'wait 1\n' };
      if (questions.length === 2) return { body: `get ${liar}/phase1/\n` };
      return { body: `get ${server}/phase1/\n` };
    }
    if (req.url === '/phase1/vmlinuz') return { body: kernel };
    if (req.url === '/phase1/stage0-grub.img') return { body: initrd };
    if (req.url!.endsWith('.sig')) return { body: `sig of ${req.url}` };
    return { status: 404, body: '' };
  });
  const dir = tempDir(t);
  const held = await fetchHeldFiles({
    server,
    mac: MAC,
    token: 'tok',
    files: FILES,
    dir: join(dir, 'held'),
    signal: new AbortController().signal,
    log: silentLogger,
  });
  assert.ok(held);
  assert.deepEqual([...held.keys()].sort(), [
    '/phase1/stage0-grub.img',
    '/phase1/stage0-grub.img.sig',
    '/phase1/vmlinuz',
    '/phase1/vmlinuz.sig',
  ]);
  assert.deepEqual(readFileSync(held.get('/phase1/vmlinuz')!), kernel);
  assert.equal(readFileSync(held.get('/phase1/vmlinuz.sig')!, 'utf8'), 'sig of /phase1/vmlinuz.sig');
  assert.equal(questions.length, 3);
  assert.equal(
    questions[2],
    `/api/v1/phase1-loader/${MAC}?failed=${encodeURIComponent(`${liar}/phase1/`)}&why=bad`,
  );
});

test('no holder when the server wants none, refuses, or the fetch is aborted', async (t) => {
  const dir = tempDir(t);
  const base = { mac: MAC, token: 'tok', files: FILES, dir: join(dir, 'held'), log: silentLogger };
  const none = await serve(t, () => ({ body: 'none\n' }));
  assert.equal(
    await fetchHeldFiles({ ...base, server: none, signal: new AbortController().signal }),
    undefined,
  );
  const refused = await serve(t, () => ({ status: 403, body: 'no token' }));
  assert.equal(
    await fetchHeldFiles({ ...base, server: refused, signal: new AbortController().signal }),
    undefined,
  );
  const waits = await serve(t, () => ({ body: 'wait 30\n' }));
  const abort = new AbortController();
  setTimeout(() => abort.abort(), 300);
  const started = Date.now();
  assert.equal(await fetchHeldFiles({ ...base, server: waits, signal: abort.signal }), undefined);
  assert.ok(Date.now() - started < 10_000, 'an abort ends the wait');
});
