/**
 * Our TFTP server against the real clients from Debian: tftp-hpa's `tftp`
 * (RFC 1350 only: it sends no options) and atftp (RFC 2347-2349 and RFC 7440
 * windowsize). Files are compared by SHA-256. Both on 127.0.0.1 only.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readFileSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { TftpServer } from '../../src/tftp/server.js';
import type { TransferInfo } from '../../src/tftp/server.js';
import { memoryLogger } from '../../src/util/logger.js';
import { requireProgram } from '../helpers/programs.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';

const HOST = '127.0.0.1';
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const shaFile = (p: string) => sha(readFileSync(p));

interface Run {
  code: number | null;
  out: string;
}

/** Runs a client to completion; it is killed when the test ends, pass or fail. */
function run(t: TestContext, cmd: string, args: string[], cwd: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    t.after(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out }));
  });
}

async function setup(t: TestContext) {
  const tftp = requireProgram('tftp', 'tftp-hpa');
  const atftp = requireProgram('atftp', 'atftp');
  const root = tempDir(t, 'bt-tftp-interop-');
  const work = tempDir(t, 'bt-tftp-client-');
  mkdirSync(join(root, 'boot'));
  writeFileSync(join(root, 'boot/undionly.kpxe'), pseudoRandomBytes(71_111, 11));
  writeFileSync(join(root, 'medium.bin'), pseudoRandomBytes(3_000_000, 12));
  writeFileSync(join(root, 'exact.bin'), pseudoRandomBytes(1428 * 40, 13));
  writeFileSync(join(root, 'boot.ipxe'), '#!ipxe\r\necho line\nchain http://x/y\n');
  const logger = memoryLogger();
  const server = new TftpServer(
    { host: HOST, port: 0, root, maxBlockSize: 65464, timeoutMs: 1000 },
    { logger },
  );
  const { port } = await server.listen();
  t.after(() => server.close());
  const transfers: TransferInfo[] = [];
  server.on('transfer', (i) => transfers.push(i));
  /** The server's record of the transfer of `file` (waits for it: the client may exit first). */
  const record = (file: string) =>
    new Promise<TransferInfo>((resolve) => {
      const seen = transfers.find((i) => i.file === file);
      if (seen) return resolve(seen);
      const on = (i: TransferInfo) => {
        if (i.file !== file) return;
        server.off('transfer', on);
        resolve(i);
      };
      server.on('transfer', on);
    });
  return { tftp, atftp, root, work, port, record, logger, server };
}

test('tftp-hpa downloads in binary mode (no options: plain RFC 1350 lock-step)', async (t) => {
  const { tftp, root, work, port, record, server } = await setup(t);
  let want = 0;
  for (const name of ['boot/undionly.kpxe', 'medium.bin', 'exact.bin']) {
    // Lock-step with 512-byte blocks: each block's 4-byte header, a last short (or empty) block.
    const size = statSync(join(root, name)).size;
    want += size + 4 * (Math.floor(size / 512) + 1);
    const local = join(work, name.replace('/', '_'));
    const r = await run(t, tftp, ['-m', 'binary', HOST, String(port), '-c', 'get', name, local], work);
    assert.equal(r.code, 0, r.out);
    assert.equal(shaFile(local), shaFile(join(root, name)), name);
    const info = await record(name);
    assert.equal(info.result, 'ok');
    assert.equal(info.blockSize, 512);
  }
  // The server's own figure (#16): every DATA byte with its header; a retransmission on a busy machine adds a block.
  assert.ok(server.sentBytes >= want, `sentBytes ${server.sentBytes} < ${want}`);
  assert.ok(server.sentBytes <= want + 64 * 516, `sentBytes ${server.sentBytes} far above ${want}`);
});

test('tftp-hpa: a leading slash is the root; netascii mode round-trips line ends', async (t) => {
  const { tftp, root, work, port } = await setup(t);
  const abs = await run(
    t,
    tftp,
    ['-m', 'binary', HOST, String(port), '-c', 'get', '/boot/undionly.kpxe', 'abs.bin'],
    work,
  );
  assert.equal(abs.code, 0, abs.out);
  assert.equal(shaFile(join(work, 'abs.bin')), shaFile(join(root, 'boot/undionly.kpxe')));
  // tftp-hpa's default mode is netascii; it turns CR LF back into LF, CR NUL into CR.
  const txt = await run(t, tftp, ['-v', HOST, String(port), '-c', 'get', 'boot.ipxe', 'boot.ipxe'], work);
  assert.match(txt.out, /netascii/);
  assert.deepEqual(readFileSync(join(work, 'boot.ipxe')), readFileSync(join(root, 'boot.ipxe')));
});

test('tftp-hpa: traversal and missing files fail with a TFTP error', async (t) => {
  const { tftp, work, port, logger } = await setup(t);
  for (const [name, code] of [
    ['../etc/passwd', 2],
    ['/../../etc/passwd', 2],
    ['boot/../../etc/passwd', 2],
    ['missing.bin', 1],
  ] as const) {
    const local = join(work, 'bad');
    const r = await run(t, tftp, ['-m', 'binary', HOST, String(port), '-c', 'get', name, local], work);
    // tftp-hpa 5.2 exits 0 even after an error packet; its message is the evidence.
    assert.match(r.out, new RegExp(`Error code ${code}:`), `${name}: ${r.out}`);
    assert.ok(!existsSync(local) || statSync(local).size === 0, `${name}: nothing written`);
  }
  // One line for this source a minute, not one per refusal (#14: bad input is counted).
  assert.equal(logger.lines.filter((l) => l.msg === 'RRQ refused').length, 1);
});

test('atftp with default options, blksize 1428 + tsize, and blksize 65464', async (t) => {
  const { atftp, root, work, port, record } = await setup(t);
  const want = shaFile(join(root, 'medium.bin'));
  const plain = await run(t, atftp, ['-g', '-r', 'medium.bin', '-l', 'a.bin', HOST, String(port)], work);
  assert.equal(plain.code, 0, plain.out);
  assert.equal(shaFile(join(work, 'a.bin')), want);

  const opts = await run(
    t,
    atftp,
    [
      '--trace',
      '--option',
      'blksize 1428',
      '--option',
      'tsize enable',
      '-g',
      '-r',
      'exact.bin',
      '-l',
      'b.bin',
      HOST,
      String(port),
    ],
    work,
  );
  assert.equal(opts.code, 0, opts.out);
  assert.match(opts.out, /received OACK <[^>]*blksize: 1428/);
  assert.match(opts.out, new RegExp(`received OACK <[^>]*tsize: ${1428 * 40}`));
  assert.equal(shaFile(join(work, 'b.bin')), shaFile(join(root, 'exact.bin')));
  const info = await record('exact.bin');
  assert.equal(info.blockSize, 1428);
  assert.equal(info.result, 'ok');

  const big = await run(
    t,
    atftp,
    ['--option', 'blksize 65464', '-g', '-r', 'medium.bin', '-l', 'c.bin', HOST, String(port)],
    work,
  );
  assert.equal(big.code, 0, big.out);
  assert.equal(shaFile(join(work, 'c.bin')), want);
});

test('atftp with windowsize 4 and 16 (RFC 7440)', async (t) => {
  const { atftp, root, work, port, record } = await setup(t);
  const want = shaFile(join(root, 'medium.bin'));
  for (const w of [4, 16]) {
    const r = await run(
      t,
      atftp,
      [
        '--trace',
        '--option',
        'blksize 1468',
        '--option',
        `windowsize ${w}`,
        '-g',
        '-r',
        'medium.bin',
        '-l',
        `w${w}.bin`,
        HOST,
        String(port),
      ],
      work,
    );
    assert.equal(r.code, 0, r.out.slice(0, 2000));
    assert.match(r.out, new RegExp(`received OACK <[^>]*windowsize: ${w}`));
    assert.equal(shaFile(join(work, `w${w}.bin`)), want);
  }
  assert.equal((await record('medium.bin')).windowSize, 4);
});

test('atftp: traversal attempts fail with a TFTP error', async (t) => {
  const { atftp, work, port } = await setup(t);
  for (const name of ['../etc/passwd', '/../../etc/passwd', 'a/../../x']) {
    const r = await run(t, atftp, ['-g', '-r', name, '-l', 'bad', HOST, String(port)], work);
    assert.notEqual(r.code, 0, name);
    assert.match(r.out, /error received from server <access violation/, `${name}: ${r.out}`);
  }
});

test('both clients follow block numbers past 65535 (a 33.6 MB file at 512-byte blocks)', async (t) => {
  const { tftp, atftp, root, work, port } = await setup(t);
  const size = 65600 * 512 + 100;
  const fd = openSync(join(root, 'big.img'), 'w');
  try {
    ftruncateSync(fd, size);
    writeSync(fd, pseudoRandomBytes(32 * 1024, 21), 0, 32 * 1024, 65535 * 512 - 16 * 1024);
    writeSync(fd, pseudoRandomBytes(4000, 22), 0, 4000, size - 4000);
  } finally {
    closeSync(fd);
  }
  const want = shaFile(join(root, 'big.img'));
  const hpa = await run(
    t,
    tftp,
    ['-m', 'binary', HOST, String(port), '-c', 'get', 'big.img', 'hpa.img'],
    work,
  );
  assert.equal(hpa.code, 0, hpa.out);
  assert.equal(shaFile(join(work, 'hpa.img')), want);
  const at = await run(
    t,
    atftp,
    ['--option', 'windowsize 16', '-g', '-r', 'big.img', '-l', 'at.img', HOST, String(port)],
    work,
  );
  assert.equal(at.code, 0, at.out);
  assert.equal(shaFile(join(work, 'at.img')), want);
});
