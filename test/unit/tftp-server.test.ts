import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createSocket } from 'node:dgram';
import type { Socket } from 'node:dgram';
import {
  closeSync,
  mkdirSync,
  openSync,
  symlinkSync,
  writeFileSync,
  writeSync,
  ftruncateSync,
  readFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { isBootTorrentError, BootTorrentError } from '../../src/errors.js';
import { decode, encode } from '../../src/tftp/codec.js';
import type { TftpPacket } from '../../src/tftp/codec.js';
import type { FileProvider } from '../../src/tftp/files.js';
import { TftpServer } from '../../src/tftp/server.js';
import type { TftpServerOptions, TransferInfo } from '../../src/tftp/server.js';
import { memoryLogger } from '../../src/util/logger.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';

const HOST = '127.0.0.1';

// ---------------------------------------------------------------------------
// A small TFTP read client, written for these tests (RFC 1350 + 2347 + 7440).

interface GetOptions {
  mode?: string;
  options?: Record<string, string>;
  /** Absolute block numbers whose ACK is not sent the first time. */
  dropAcks?: number[];
  /** Absolute block numbers ignored on first arrival (a lost DATA packet). */
  dropData?: number[];
  /** Send every ACK twice. */
  duplicateAcks?: boolean;
  /** Keep the bytes (default true); the hash is always computed. */
  keep?: boolean;
  /** Client retransmission timeout (default 1000 ms) and tries (default 10). */
  timeoutMs?: number;
  tries?: number;
}

interface GetResult {
  data: Buffer;
  sha256: string;
  size: number;
  oack: Map<string, string> | undefined;
  error: { code: number; message: string } | undefined;
  /** DATA packets received from the server's TID, duplicates included. */
  dataPackets: number;
  /** Blocks received again after they were already accepted. */
  duplicates: number;
  acksSent: number;
  /** Times the wire block number wrapped from 65535 to 0. */
  wraps: number;
  serverTid: number | undefined;
}

function tftpGet(port: number, filename: string, o: GetOptions = {}): Promise<GetResult> {
  return new Promise((resolve, reject) => {
    const sock = createSocket('udp4');
    const hash = createHash('sha256');
    const chunks: Buffer[] = [];
    const dropAcks = new Set(o.dropAcks);
    const dropData = new Set(o.dropData);
    const r: GetResult = {
      data: Buffer.alloc(0),
      sha256: '',
      size: 0,
      oack: undefined,
      error: undefined,
      dataPackets: 0,
      duplicates: 0,
      acksSent: 0,
      wraps: 0,
      serverTid: undefined,
    };
    let blksize = 512;
    let window = 1;
    let next = 1; // absolute number of the block we expect
    let sinceAck = 0;
    // Built by hand so a test can send any spelling of the mode.
    let last: Buffer = Buffer.from(
      [filename, o.mode ?? 'octet', ...Object.entries(o.options ?? {}).flat()].map((f) => `${f}\0`).join(''),
    );
    last = Buffer.concat([Buffer.of(0, 1), last]);
    let tries = 0;
    let timer: NodeJS.Timeout | undefined;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        if (++tries > (o.tries ?? 10))
          return finish(new Error(`client gave up on ${filename} at block ${next}`));
        send(last, r.serverTid ?? port);
        arm();
      }, o.timeoutMs ?? 1000);
    };
    let inflight = 0;
    let closing = false;
    const send = (b: Buffer, to: number) => {
      if (closing) return;
      inflight++;
      sock.send(b, to, HOST, () => {
        if (--inflight === 0 && closing) sock.close();
      });
    };
    const ack = (n: number) => {
      last = encode({ type: 'ACK', block: n & 0xffff });
      sinceAck = 0;
      if (dropAcks.delete(n)) return;
      r.acksSent++;
      send(last, r.serverTid!);
      if (o.duplicateAcks) send(last, r.serverTid!);
    };
    const finish = (err?: Error) => {
      clearTimeout(timer);
      // Close only after queued sends (the final ACK) have left: close() drops them.
      closing = true;
      if (inflight === 0) sock.close();
      if (err) return reject(err);
      r.sha256 = hash.digest('hex');
      if (o.keep !== false) r.data = Buffer.concat(chunks);
      resolve(r);
    };
    sock.on('message', (msg, rinfo) => {
      if (rinfo.address !== HOST) return;
      r.serverTid ??= rinfo.port;
      if (rinfo.port !== r.serverTid) {
        send(encode({ type: 'ERROR', code: 5, message: 'unknown TID' }), rinfo.port);
        return;
      }
      let p: TftpPacket;
      try {
        p = decode(msg);
      } catch (err) {
        return finish(err as Error);
      }
      tries = 0;
      if (p.type === 'ERROR') {
        r.error = { code: p.code, message: p.message };
        return finish();
      }
      if (p.type === 'OACK') {
        r.oack = p.options;
        blksize = Number(p.options.get('blksize') ?? 512);
        window = Number(p.options.get('windowsize') ?? 1);
        ack(0);
        return arm();
      }
      if (p.type !== 'DATA') return finish(new Error(`unexpected ${p.type}`));
      r.dataPackets++;
      if (p.block === (next & 0xffff)) {
        if (dropData.delete(next)) {
          arm();
          return; // pretend it was lost
        }
        if (p.block === 0) r.wraps++;
        hash.update(p.data);
        if (o.keep !== false) chunks.push(Buffer.from(p.data));
        r.size += p.data.length;
        next++;
        sinceAck++;
        if (p.data.length < blksize) {
          ack(next - 1);
          return finish();
        }
        if (sinceAck >= window) ack(next - 1);
      } else {
        // An old block (our ACK was lost) or a gap in the window: ACK the last good block.
        if (((next - 1 - p.block) & 0xffff) < 0x8000) r.duplicates++;
        ack(next - 1);
      }
      arm();
    });
    sock.bind(0, HOST, () => {
      send(last, port);
      arm();
    });
  });
}

/** Sends raw bytes from a fresh socket; collects decoded replies for `waitMs`. */
async function rawExchange(
  port: number,
  packets: Buffer[],
  waitMs: number,
): Promise<{ packet: TftpPacket; port: number }[]> {
  const sock = createSocket('udp4');
  const got: { packet: TftpPacket; port: number }[] = [];
  sock.on('message', (msg, rinfo) => got.push({ packet: decode(msg), port: rinfo.port }));
  await new Promise<void>((res) => sock.bind(0, HOST, () => res()));
  for (const p of packets) sock.send(p, port, HOST);
  await new Promise((res) => setTimeout(res, waitMs));
  sock.close();
  return got;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function startServer(
  t: TestContext,
  root: string,
  options: TftpServerOptions = {},
  files?: FileProvider,
) {
  const logger = memoryLogger();
  const server = new TftpServer(
    { host: HOST, port: 0, root, timeoutMs: 200, retries: 4, maxBlockSize: 65464, ...options },
    { logger, ...(files ? { files } : {}) },
  );
  const { port } = await server.listen();
  t.after(() => server.close());
  const transfers: TransferInfo[] = [];
  server.on('transfer', (i) => transfers.push(i));
  /** Resolves with the next transfer record matching `pred` (already seen or yet to come). */
  const transferWhere = (pred: (i: TransferInfo) => boolean) =>
    new Promise<TransferInfo>((resolve) => {
      const seen = transfers.find(pred);
      if (seen) return resolve(seen);
      const on = (i: TransferInfo) => {
        if (pred(i)) {
          server.off('transfer', on);
          resolve(i);
        }
      };
      server.on('transfer', on);
    });
  return { server, port, logger, transfers, transferWhere };
}

function fixture(t: TestContext): { root: string; files: Record<string, Buffer> } {
  const root = tempDir(t, 'bt-tftp-');
  const files: Record<string, Buffer> = {
    'small.bin': pseudoRandomBytes(3000, 1),
    'exact.bin': pseudoRandomBytes(1024, 2),
    'empty.bin': Buffer.alloc(0),
    'medium.bin': pseudoRandomBytes(200_000, 3),
    'boot/undionly.kpxe': pseudoRandomBytes(70_001, 4),
    'text.txt': Buffer.from('line one\nline two\r\nbare\rend\n'),
  };
  mkdirSync(join(root, 'boot'));
  for (const [name, data] of Object.entries(files)) writeFileSync(join(root, name), data);
  return { root, files };
}

// ---------------------------------------------------------------------------

test('plain RFC 1350 transfers at 512 bytes: short last block, exact multiple, empty file', async (t) => {
  const { root, files } = fixture(t);
  const { port, logger, transferWhere } = await startServer(t, root);
  const small = await tftpGet(port, 'small.bin');
  assert.equal(small.oack, undefined);
  assert.deepEqual(small.data, files['small.bin']);
  assert.equal(small.dataPackets, 6);
  // 1024 bytes: two full blocks and an empty third one ends the transfer.
  const exact = await tftpGet(port, 'exact.bin');
  assert.deepEqual(exact.data, files['exact.bin']);
  assert.equal(exact.dataPackets, 3);
  const empty = await tftpGet(port, 'empty.bin');
  assert.equal(empty.size, 0);
  assert.equal(empty.dataPackets, 1);
  await transferWhere((i) => i.file === 'small.bin');
  const line = logger.lines.find((l) => l.msg === 'transfer' && l.fields?.file === 'small.bin');
  assert.ok(line, 'one log line per transfer');
  assert.equal(line.fields?.result, 'ok');
  assert.equal(line.fields?.size, 3000);
  assert.match(String(line.fields?.client), /^127\.0\.0\.1:\d+$/);
});

test('a leading slash means the TFTP root (PXE ROMs send "/undionly.kpxe")', async (t) => {
  const { root, files } = fixture(t);
  const { port } = await startServer(t, root);
  const r = await tftpGet(port, '/boot/undionly.kpxe');
  assert.equal(r.sha256, sha(files['boot/undionly.kpxe']!));
});

test('blksize: granted as asked, lowered to our maximum, ignored below 8', async (t) => {
  const { root, files } = fixture(t);
  const { port } = await startServer(t, root);
  const r1432 = await tftpGet(port, 'medium.bin', { options: { blksize: '1432' } });
  assert.equal(r1432.oack?.get('blksize'), '1432');
  assert.equal(r1432.sha256, sha(files['medium.bin']!));
  assert.equal(r1432.dataPackets, Math.floor(200_000 / 1432) + 1);
  const big = await tftpGet(port, 'medium.bin', { options: { blksize: '65464' } });
  assert.equal(big.oack?.get('blksize'), '65464');
  assert.equal(big.sha256, sha(files['medium.bin']!));
  const tiny = await tftpGet(port, 'small.bin', { options: { blksize: '4' } });
  assert.equal(tiny.oack, undefined, 'no accepted option: no OACK, DATA 1 directly');
  assert.deepEqual(tiny.data, files['small.bin']);

  const { port: p2 } = await startServer(t, root, { maxBlockSize: 1468 });
  const clamped = await tftpGet(p2, 'medium.bin', { options: { blksize: '65464' } });
  assert.equal(clamped.oack?.get('blksize'), '1468');
  assert.equal(clamped.sha256, sha(files['medium.bin']!));
});

test('tsize 0 in an RRQ is answered with the real size; netascii gets no tsize and converted line ends', async (t) => {
  const { root, files } = fixture(t);
  const { port } = await startServer(t, root);
  const r = await tftpGet(port, 'boot/undionly.kpxe', { options: { tsize: '0', blksize: '1468' } });
  assert.equal(r.oack?.get('tsize'), String(files['boot/undionly.kpxe']!.length));
  assert.equal(r.sha256, sha(files['boot/undionly.kpxe']!));
  const a = await tftpGet(port, 'text.txt', { mode: 'NetASCII', options: { tsize: '0' } });
  assert.equal(a.oack, undefined);
  assert.deepEqual(a.data, Buffer.from('line one\r\nline two\r\0\r\nbare\r\0end\r\n', 'latin1'));
  // A netascii file longer than one block after conversion.
  writeFileSync(join(root, 'lines.txt'), 'x\n'.repeat(600));
  const lines = await tftpGet(port, 'lines.txt', { mode: 'netascii' });
  assert.deepEqual(lines.data, Buffer.from('x\r\n'.repeat(600)));
});

test('windowsize: one ACK per window, and an ACK inside the window rewinds (RFC 7440)', async (t) => {
  const { root, files } = fixture(t);
  const { port } = await startServer(t, root);
  const blocks = Math.floor(200_000 / 1024) + 1; // 196
  const r = await tftpGet(port, 'medium.bin', { options: { blksize: '1024', windowsize: '8' } });
  assert.equal(r.oack?.get('windowsize'), '8');
  assert.equal(r.sha256, sha(files['medium.bin']!));
  assert.equal(r.dataPackets, blocks);
  assert.equal(r.acksSent, 1 + Math.ceil(blocks / 8));

  // Block 13 is lost: the client ACKs 12 on seeing 14, the server resends from 13.
  const lossy = await tftpGet(port, 'medium.bin', {
    options: { blksize: '1024', windowsize: '8' },
    dropData: [13, 100],
  });
  assert.equal(lossy.sha256, sha(files['medium.bin']!));
  assert.ok(lossy.dataPackets > blocks, 'the lost blocks were sent again');

  const capped = await startServer(t, root, { maxWindowSize: 4 });
  const c = await tftpGet(capped.port, 'medium.bin', { options: { windowsize: '1000' } });
  assert.equal(c.oack?.get('windowsize'), '4');
  assert.equal(c.sha256, sha(files['medium.bin']!));
});

test('block numbers roll over 65535 -> 0 for a file larger than 65535 x 512 bytes', async (t) => {
  const root = tempDir(t, 'bt-tftp-big-');
  // Sparse file of 65600 blocks + 100 bytes, with pseudo-random data at the
  // start, around the rollover point and at the end, so position errors show.
  const size = 65600 * 512 + 100;
  const path = join(root, 'big.img');
  const fd = openSync(path, 'w');
  try {
    ftruncateSync(fd, size);
    writeSync(fd, pseudoRandomBytes(64 * 1024, 7), 0, 64 * 1024, 0);
    writeSync(fd, pseudoRandomBytes(32 * 1024, 8), 0, 32 * 1024, 65535 * 512 - 16 * 1024);
    writeSync(fd, pseudoRandomBytes(4000, 9), 0, 4000, size - 4000);
  } finally {
    closeSync(fd);
  }
  const want = sha(readFileSync(path));
  const { port } = await startServer(t, root, { timeoutMs: 1000 });
  const lockStep = await tftpGet(port, 'big.img', { keep: false, options: { tsize: '0' } });
  assert.equal(lockStep.error, undefined);
  assert.equal(lockStep.oack?.get('tsize'), String(size));
  assert.equal(lockStep.size, size);
  assert.equal(lockStep.wraps, 1);
  assert.equal(lockStep.sha256, want);
  // A window that straddles the wrap.
  const windowed = await tftpGet(port, 'big.img', { keep: false, options: { windowsize: '7' } });
  assert.equal(windowed.wraps, 1);
  assert.equal(windowed.sha256, want);
});

test('a dropped ACK is recovered by the server retransmitting the block', async (t) => {
  const { root, files } = fixture(t);
  const { port, transferWhere } = await startServer(t, root, { timeoutMs: 100 });
  const r = await tftpGet(port, 'small.bin', { dropAcks: [3] });
  assert.deepEqual(r.data, files['small.bin']);
  assert.ok(r.duplicates >= 1, 'block 3 arrived twice');
  assert.ok(r.dataPackets >= 7);
  const info = await transferWhere((i) => i.file === 'small.bin');
  assert.equal(info.result, 'ok');
  assert.equal(info.bytes, 3000);
});

test("duplicate ACKs do not trigger re-sends (Sorcerer's Apprentice)", async (t) => {
  const { root, files } = fixture(t);
  // A long timer: any extra DATA packet would come from a duplicate ACK.
  const { port } = await startServer(t, root, { timeoutMs: 10_000 });
  const r = await tftpGet(port, 'medium.bin', { duplicateAcks: true });
  assert.equal(r.sha256, sha(files['medium.bin']!));
  assert.equal(r.dataPackets, Math.floor(200_000 / 512) + 1);
  assert.equal(r.duplicates, 0);
  const w = await tftpGet(port, 'medium.bin', { duplicateAcks: true, options: { windowsize: '4' } });
  assert.equal(w.sha256, sha(files['medium.bin']!));
  assert.equal(w.dataPackets, Math.floor(200_000 / 512) + 1);
});

test('a silent client: the server retransmits `retries` times, then gives up with a log line', async (t) => {
  const { root } = fixture(t);
  const { port, transferWhere, logger, server } = await startServer(t, root, { timeoutMs: 50, retries: 2 });
  const got = await rawExchange(
    port,
    [encode({ type: 'RRQ', filename: 'small.bin', mode: 'octet', options: new Map() })],
    400,
  );
  const info = await transferWhere((i) => i.file === 'small.bin');
  assert.equal(info.result, 'timeout');
  assert.equal(got.filter((g) => g.packet.type === 'DATA').length, 3, 'first send + 2 retransmissions');
  assert.ok(logger.lines.some((l) => l.msg === 'transfer' && l.fields?.result === 'timeout'));
  assert.equal(server.activeTransfers(), 0);
});

test('traversal attempts and escaping symlinks get an ERROR packet; inside symlinks work', async (t) => {
  const { root, files } = fixture(t);
  symlinkSync('/etc/passwd', join(root, 'passwd-link'));
  symlinkSync('/etc', join(root, 'etc-link'));
  symlinkSync('boot/undionly.kpxe', join(root, 'inside-link'));
  const { port, logger, transferWhere } = await startServer(t, root);
  for (const name of [
    '../etc/passwd',
    '/../../etc/passwd',
    'a/../../x',
    'boot/../../etc/passwd',
    '..\\..\\etc\\passwd',
    'passwd-link',
    'etc-link/passwd',
    'boot',
  ]) {
    const r = await tftpGet(port, name);
    assert.ok(r.error, `${name} must be refused`);
    assert.equal(r.error.code, 2, `${name}: ${r.error.message}`);
    assert.equal(r.size, 0);
  }
  const missing = await tftpGet(port, 'no-such-file');
  assert.equal(missing.error?.code, 1);
  const inside = await tftpGet(port, 'inside-link');
  assert.equal(inside.sha256, sha(files['boot/undionly.kpxe']!));
  const refusal = await transferWhere((i) => i.file === 'passwd-link');
  assert.match(String(refusal.detail), /outside the TFTP root/);
  // Logged once for this source, with the count of refusals it stands for
  // (a client asking for file after file cannot flood the log).
  const lines = logger.lines.filter((l) => l.msg === 'RRQ refused');
  assert.equal(lines.length, 1, JSON.stringify(lines));
  assert.equal(lines[0]?.fields?.file, '../etc/passwd');
});

test('WRQ is refused with error 2 (read-only server)', async (t) => {
  const { root } = fixture(t);
  const { port } = await startServer(t, root);
  const got = await rawExchange(
    port,
    [encode({ type: 'WRQ', filename: 'x', mode: 'octet', options: new Map() })],
    150,
  );
  assert.equal(got.length, 1);
  assert.deepEqual(got[0]!.packet, { type: 'ERROR', code: 2, message: 'this TFTP server is read-only' });
});

test('a packet from a wrong TID gets error 5 and the transfer goes on', async (t) => {
  const { root, files } = fixture(t);
  const { port, logger } = await startServer(t, root, { timeoutMs: 2000 });
  const client = createSocket('udp4');
  const stranger = createSocket('udp4');
  t.after(() => {
    client.close();
    stranger.close();
  });
  await Promise.all([client, stranger].map((s) => new Promise<void>((res) => s.bind(0, HOST, () => res()))));
  const strangerReplies: TftpPacket[] = [];
  stranger.on('message', (m) => strangerReplies.push(decode(m)));
  const received: Buffer[] = [];
  const done = new Promise<void>((resolve) => {
    client.on('message', (msg, rinfo) => {
      const p = decode(msg);
      assert.equal(p.type, 'DATA');
      if (p.type !== 'DATA') return;
      received.push(p.data);
      if (p.block === 1) {
        // The stranger ACKs block 1 on the transfer's TID before the real client does.
        stranger.send(encode({ type: 'ACK', block: 1 }), rinfo.port, HOST, () => {
          setTimeout(() => client.send(encode({ type: 'ACK', block: 1 }), rinfo.port, HOST), 50);
        });
        return;
      }
      client.send(encode({ type: 'ACK', block: p.block }), rinfo.port, HOST);
      if (p.data.length < 512) resolve();
    });
  });
  client.send(encode({ type: 'RRQ', filename: 'small.bin', mode: 'octet', options: new Map() }), port, HOST);
  await done;
  assert.deepEqual(Buffer.concat(received), files['small.bin']);
  assert.deepEqual(strangerReplies, [{ type: 'ERROR', code: 5, message: 'unknown transfer ID' }]);
  assert.ok(logger.lines.some((l) => /unknown transfer ID/.test(l.msg)));
});

test('malformed packets are dropped and logged once per source a minute, not a line each; the server keeps serving', async (t) => {
  const { root, files } = fixture(t);
  const { port, logger, transferWhere } = await startServer(t, root);
  const junk = [
    Buffer.alloc(0),
    Buffer.of(0),
    Buffer.of(0, 1),
    Buffer.from('\x00\x01no-terminator', 'latin1'),
    Buffer.from('\x00\x01f\x00octet\x00blksize\x00', 'latin1'),
    Buffer.of(0, 9, 1, 2),
    Buffer.of(0xff, 0xff, 0xff),
    Buffer.concat([Buffer.of(0, 1), Buffer.alloc(1000, 0x41), Buffer.of(0)]),
    Buffer.from('\x00\x01f\x00binary\x00', 'latin1'),
  ];
  const replies = await rawExchange(port, junk, 150);
  assert.deepEqual(replies, []);
  // One line for the source, not one per packet (issue #14); the drops are counted.
  const dropped = logger.lines.filter((l) => l.msg === 'malformed packet dropped');
  assert.equal(dropped.length, 1);
  assert.equal(dropped[0]?.fields?.source, HOST);
  // Junk on a transfer socket mid-transfer: dropped, transfer completes.
  const r = await tftpGet(port, 'small.bin');
  assert.deepEqual(r.data, files['small.bin']);
  const sock = createSocket('udp4');
  t.after(() => sock.close());
  await new Promise<void>((res) => sock.bind(0, HOST, () => res()));
  const data: Buffer[] = [];
  await new Promise<void>((resolve) => {
    sock.on('message', (msg, rinfo) => {
      const p = decode(msg);
      if (p.type !== 'DATA') return;
      data.push(p.data);
      sock.send(Buffer.of(0, 4, 0), rinfo.port, HOST); // a 3-byte "ACK"
      sock.send(encode({ type: 'ACK', block: p.block }), rinfo.port, HOST);
      if (p.data.length < 512) resolve();
    });
    sock.send(encode({ type: 'RRQ', filename: 'small.bin', mode: 'octet', options: new Map() }), port, HOST);
  });
  assert.deepEqual(Buffer.concat(data), files['small.bin']);
  await transferWhere((i) => i.client === `${HOST}:${sock.address().port}`);
  // Still the one line: the same source within the minute.
  assert.equal(logger.lines.filter((l) => l.msg === 'malformed packet dropped').length, 1);
});

test('20 concurrent transfers all complete correctly', async (t) => {
  const { root } = fixture(t);
  const want: string[] = [];
  for (let i = 0; i < 20; i++) {
    const data = pseudoRandomBytes(50_000 + i * 777, 100 + i);
    writeFileSync(join(root, `f${i}.bin`), data);
    want.push(sha(data));
  }
  const { port, server, transfers } = await startServer(t, root, { timeoutMs: 500 });
  const results = await Promise.all(
    want.map((_, i) =>
      tftpGet(port, `f${i}.bin`, i % 2 === 0 ? { options: { blksize: '1468', windowsize: '4' } } : {}),
    ),
  );
  assert.deepEqual(
    results.map((r) => r.sha256),
    want,
  );
  while (transfers.length < 20) await new Promise((res) => server.once('transfer', res));
  assert.ok(transfers.every((i) => i.result === 'ok'));
  assert.equal(server.activeTransfers(), 0);
});

test('a retransmitted RRQ does not start a second transfer', async (t) => {
  const { root } = fixture(t);
  const { port, transfers } = await startServer(t, root, { timeoutMs: 100, retries: 1 });
  const rrq = encode({ type: 'RRQ', filename: 'small.bin', mode: 'octet', options: new Map() });
  const got = await rawExchange(port, [rrq, rrq, rrq], 400);
  const tids = new Set(got.map((g) => g.port));
  assert.equal(tids.size, 1);
  assert.equal(transfers.length, 1);
});

test('requests beyond maxTransfers are dropped (the client retries later)', async (t) => {
  const { root } = fixture(t);
  const { port, logger } = await startServer(t, root, { maxTransfers: 1, timeoutMs: 5000 });
  const rrq = encode({ type: 'RRQ', filename: 'small.bin', mode: 'octet', options: new Map() });
  const first = await rawExchange(port, [rrq], 100);
  assert.equal(first.length, 1);
  const second = await rawExchange(port, [rrq], 100);
  assert.equal(second.length, 0);
  assert.ok(logger.lines.some((l) => /too many transfers/.test(l.msg)));
});

test('an injected FileProvider serves generated files, refuses and reports not found', async (t) => {
  const seen: string[] = [];
  const provider: FileProvider = {
    open(path, client) {
      seen.push(`${path} ${client.address}`);
      if (path === 'secret')
        return Promise.reject(new BootTorrentError('BT_ERR_TFTP_ACCESS', 'policy says no'));
      if (path !== 'boot.ipxe') return Promise.resolve(undefined);
      const body = Buffer.from(`#!ipxe\necho hello ${client.address}\n`);
      return Promise.resolve({
        size: body.length,
        read: (offset: number, length: number) => Promise.resolve(body.subarray(offset, offset + length)),
        close() {},
      });
    },
  };
  const { port } = await startServer(t, '/nonexistent', {}, provider);
  const r = await tftpGet(port, '/boot.ipxe', { options: { tsize: '0' } });
  assert.equal(r.data.toString(), '#!ipxe\necho hello 127.0.0.1\n');
  assert.equal((await tftpGet(port, 'secret')).error?.code, 2);
  assert.equal((await tftpGet(port, 'other')).error?.code, 1);
  assert.equal((await tftpGet(port, '../boot.ipxe')).error?.code, 2);
  assert.deepEqual(seen, ['boot.ipxe 127.0.0.1', 'secret 127.0.0.1', 'other 127.0.0.1']);
});

test('close() stops transfers in progress and the listener', async (t) => {
  const { root } = fixture(t);
  const { port, server, transferWhere } = await startServer(t, root, { timeoutMs: 10_000 });
  const got = await rawExchange(
    port,
    [encode({ type: 'RRQ', filename: 'medium.bin', mode: 'octet', options: new Map() })],
    100,
  );
  assert.equal(got.length, 1);
  assert.equal(server.activeTransfers(), 1);
  await server.close();
  assert.equal((await transferWhere(() => true)).result, 'aborted');
  assert.equal(server.activeTransfers(), 0);
  // Nothing answers any more.
  const after = await rawExchange(
    port,
    [encode({ type: 'RRQ', filename: 'small.bin', mode: 'octet', options: new Map() })],
    100,
  );
  assert.deepEqual(after, []);
});

test('listen() on a port in use rejects with BT_ERR_LISTEN naming host:port and the fix', async (t) => {
  const holder: Socket = createSocket('udp4');
  await new Promise<void>((res) => holder.bind(0, HOST, () => res()));
  t.after(() => holder.close());
  const port = holder.address().port;
  const server = new TftpServer({ host: HOST, port, root: '/tmp' });
  await assert.rejects(server.listen(), (err: unknown) => {
    assert.ok(isBootTorrentError(err, 'BT_ERR_LISTEN'));
    assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${port}`));
    assert.match(err.message, /EADDRINUSE/);
    assert.match(err.message, /tftpd-hpa|dnsmasq/);
    return true;
  });
  await server.close();
});
