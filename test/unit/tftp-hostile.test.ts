/**
 * Issue #14 item 3 (TFTP): one host must not be able to hold the server's
 * transfer slots. Each test is named after what broke: 128 requests asking
 * `timeout 255` from one address took all 128 slots for about 25 minutes, the
 * timeout option was granted whatever its size, and a client that kept ACKing
 * slowly kept its slot for as long as it liked.
 */
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import type { Socket } from 'node:dgram';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { decode, encode } from '../../src/tftp/codec.js';
import type { TftpPacket } from '../../src/tftp/codec.js';
import { TftpServer } from '../../src/tftp/server.js';
import type { TftpServerOptions, TransferInfo } from '../../src/tftp/server.js';
import { memoryLogger } from '../../src/util/logger.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';

const HOST = '127.0.0.1';
/** A second source address: all of 127/8 is loopback on Linux. */
const OTHER = '127.0.0.2';
const SMALL = pseudoRandomBytes(3000, 1);
const MEDIUM = pseudoRandomBytes(200_000, 3);

interface Fetched {
  data: Buffer;
  oack: Map<string, string> | undefined;
  error: { code: number; message: string } | undefined;
}

interface FetchOptions {
  /** Source address to bind (default 127.0.0.1). */
  bind?: string;
  options?: Record<string, string>;
  /** Give up (reject) after this long in all (default 20 s, generous for a loaded machine). */
  giveUpMs?: number;
  /** Wait this long before each ACK of a DATA block: a client that trickles. */
  ackDelayMs?: number;
}

/**
 * A minimal lock-step TFTP read client (RFC 1350 + the RFC 2347 OACK),
 * written for these tests: it retransmits its last packet every 500 ms and
 * resolves on the last block or an ERROR.
 */
function fetchFile(t: TestContext, port: number, file: string, o: FetchOptions = {}): Promise<Fetched> {
  const sock = createSocket('udp4');
  t.after(() => closeQuietly(sock));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const r: Fetched = { data: Buffer.alloc(0), oack: undefined, error: undefined };
    let blksize = 512;
    let next = 1;
    let tid: number | undefined;
    let last: Buffer | undefined = encode({
      type: 'RRQ',
      filename: file,
      mode: 'octet',
      options: new Map(Object.entries(o.options ?? {})),
    });
    const send = () => last && sock.send(last, tid ?? port, HOST);
    const retransmit = setInterval(send, 500);
    const giveUp = setTimeout(
      () => finish(new Error(`no ${file} within ${o.giveUpMs ?? 20_000} ms (block ${next})`)),
      o.giveUpMs ?? 20_000,
    );
    let ackTimer: NodeJS.Timeout | undefined;
    const finish = (err?: Error) => {
      clearInterval(retransmit);
      clearTimeout(giveUp);
      clearTimeout(ackTimer);
      closeQuietly(sock);
      if (err) reject(err);
      else resolve({ ...r, data: Buffer.concat(chunks) });
    };
    const ack = (n: number, done: boolean) => {
      const packet = encode({ type: 'ACK', block: n & 0xffff });
      if (done) {
        sock.send(packet, tid, HOST, () => finish());
        return;
      }
      const go = () => {
        last = packet;
        send();
      };
      if (o.ackDelayMs) ackTimer = setTimeout(go, o.ackDelayMs);
      else go();
    };
    sock.on('message', (msg, rinfo) => {
      if (tid === undefined) {
        tid = rinfo.port;
        last = undefined; // the RRQ was answered: never send it to the transfer's TID
      }
      if (rinfo.port !== tid) return;
      const p: TftpPacket = decode(msg);
      if (p.type === 'ERROR') {
        r.error = { code: p.code, message: p.message };
        finish();
      } else if (p.type === 'OACK') {
        r.oack = p.options;
        blksize = Number(p.options.get('blksize') ?? 512);
        ack(0, false);
      } else if (p.type === 'DATA' && p.block === (next & 0xffff)) {
        chunks.push(Buffer.from(p.data));
        next++;
        ack(p.block, p.data.length < blksize);
      }
    });
    sock.bind(0, o.bind ?? HOST, send);
  });
}

function closeQuietly(sock: Socket): void {
  try {
    sock.close();
  } catch {
    // already closed
  }
}

async function startServer(t: TestContext, options: TftpServerOptions = {}) {
  const root = tempDir(t, 'bt-tftp-hostile-');
  mkdirSync(join(root, 'boot'));
  writeFileSync(join(root, 'small.bin'), SMALL);
  writeFileSync(join(root, 'medium.bin'), MEDIUM);
  const logger = memoryLogger();
  const server = new TftpServer({ host: HOST, port: 0, root, ...options }, { logger });
  const { port } = await server.listen();
  t.after(() => server.close());
  const transfers: TransferInfo[] = [];
  server.on('transfer', (i) => transfers.push(i));
  const nextTransfer = (pred: (i: TransferInfo) => boolean, withinMs = 20_000) =>
    new Promise<TransferInfo>((resolve, reject) => {
      const seen = transfers.find(pred);
      if (seen) return resolve(seen);
      const guard = setTimeout(() => {
        server.off('transfer', on);
        reject(new Error(`no matching transfer record within ${withinMs} ms`));
      }, withinMs);
      const on = (i: TransferInfo) => {
        if (!pred(i)) return;
        clearTimeout(guard);
        server.off('transfer', on);
        resolve(i);
      };
      server.on('transfer', on);
    });
  return { server, port, logger, nextTransfer };
}

test('128 RRQs asking timeout 255 from one address do not stop a second address from getting a file', async (t) => {
  // Production limits (128 slots in all, the default per-IP cap and timeout ceiling).
  const { server, port, logger, nextTransfer } = await startServer(t);
  const rrq = encode({
    type: 'RRQ',
    filename: 'small.bin',
    mode: 'octet',
    options: new Map([['timeout', '255']]),
  });
  // Each hostile socket is its own TID, so each request would open a transfer.
  const hostile: Socket[] = [];
  const answered = new Set<Socket>();
  for (let i = 0; i < 128; i++) {
    const s = createSocket('udp4');
    t.after(() => closeQuietly(s));
    s.on('message', () => answered.add(s));
    await new Promise<void>((res) => s.bind(0, HOST, () => res()));
    hostile.push(s);
  }
  await Promise.all(hostile.map((s) => new Promise<void>((res) => s.send(rrq, port, HOST, () => res()))));

  const honest = await fetchFile(t, port, 'small.bin', { bind: OTHER });
  assert.equal(honest.error, undefined);
  assert.deepEqual(honest.data, SMALL);
  await nextTransfer((i) => i.client.startsWith(`${OTHER}:`) && i.result === 'ok');
  assert.ok(server.activeTransfers() <= 4, `one address holds ${server.activeTransfers()} slots`);
  assert.ok(answered.size <= 4, `${answered.size} hostile requests were served`);
  // The refused requests are counted, not logged one line each.
  const lines = logger.lines.filter((l) => /too many transfers from this address/.test(l.msg));
  assert.equal(lines.length, 1);
  assert.equal(lines[0]?.fields?.source, HOST);
});

test('an RRQ asking timeout 255 gets an OACK without timeout; one within the ceiling is granted', async (t) => {
  const { port } = await startServer(t);
  const big = await fetchFile(t, port, 'small.bin', { options: { timeout: '255', blksize: '1024' } });
  assert.equal(big.oack?.get('blksize'), '1024');
  assert.equal(big.oack?.has('timeout'), false, 'a 255 s timeout must not be granted');
  assert.deepEqual(big.data, SMALL);
  const ok = await fetchFile(t, port, 'small.bin', { options: { timeout: '5' } });
  assert.equal(ok.oack?.get('timeout'), '5');
  const capped = await startServer(t, { maxTimeoutS: 2 });
  const low = await fetchFile(t, capped.port, 'small.bin', { options: { timeout: '5', tsize: '0' } });
  assert.equal(low.oack?.has('timeout'), false);
  assert.equal(low.oack?.get('tsize'), String(SMALL.length));
});

test('a transfer ACKed too slowly to finish is ended at its deadline and frees its slot', async (t) => {
  // The retry limit never fires: every ACK moves the transfer on. Only the
  // deadline (small here) ends it; 390 blocks at one ACK per 500 ms would
  // otherwise hold the slot for over 3 minutes.
  const { server, port, nextTransfer } = await startServer(t, {
    transferDeadlineMs: 2000,
    transfersPerIp: 1,
    timeoutMs: 5000,
  });
  const slow = await fetchFile(t, port, 'medium.bin', { ackDelayMs: 500, giveUpMs: 30_000 });
  assert.deepEqual(slow.error, { code: 0, message: 'transfer took too long' });
  assert.ok(slow.data.length < MEDIUM.length);
  const info = await nextTransfer((i) => i.file === 'medium.bin');
  assert.equal(info.result, 'timeout');
  assert.match(info.detail ?? '', /deadline/);
  assert.equal(server.activeTransfers(), 0);
  // The address's only slot is free again.
  const again = await fetchFile(t, port, 'small.bin');
  assert.deepEqual(again.data, SMALL);
});

test('a throwing transfer listener is logged and does not end the process (refusal, deadline and finished transfer)', async (t) => {
  // Deadline long enough for small.bin on a loaded machine, far too short for medium.bin at one ACK per 400 ms.
  const { server, port, logger } = await startServer(t, { transferDeadlineMs: 3000 });
  server.on('transfer', () => {
    throw new Error('listener bug');
  });
  const missing = await fetchFile(t, port, 'no-such-file');
  assert.equal(missing.error?.code, 1);
  const ok = await fetchFile(t, port, 'small.bin');
  assert.deepEqual(ok.data, SMALL);
  // The deadline path runs in a timer: an uncaught throw there ended the process.
  const slow = await fetchFile(t, port, 'medium.bin', { ackDelayMs: 400 });
  assert.equal(slow.error?.message, 'transfer took too long');
  while (server.activeTransfers() > 0) await new Promise((r) => setTimeout(r, 20));
  assert.ok(logger.lines.filter((l) => l.msg === 'a transfer listener failed').length >= 3);
});
