// Review of issue #14 (TFTP): a client that starts a transfer and aborts it
// at once, in a loop, must not write a log line per transfer. Real UDP on
// loopback.
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { EventEmitter } from 'node:events';
import { decode, encode } from '../../src/tftp/codec.js';
import { TftpServer } from '../../src/tftp/server.js';
import type { TransferInfo } from '../../src/tftp/server.js';
import { memoryLogger } from '../../src/util/logger.js';
import { tempDir } from '../helpers/tmp.js';

test('transfers aborted by the client in a loop: one warning per source a minute, not one per transfer', async (t) => {
  const root = tempDir(t, 'bt-tftp-review-');
  writeFileSync(join(root, 'f.bin'), Buffer.alloc(4096, 7));
  const logger = memoryLogger();
  const server = new TftpServer({ host: '127.0.0.1', port: 0, root }, { logger });
  const { port } = await server.listen();
  t.after(() => server.close());
  const ended: TransferInfo[] = [];
  server.on('transfer', (i) => ended.push(i));
  const sock = createSocket('udp4');
  t.after(() => sock.close());
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  const n = 30;
  // Every first DATA/OACK is answered with an ERROR: the transfer ends as a client error.
  sock.on('message', (msg, rinfo) => {
    const p = decode(msg);
    if (p.type === 'DATA' || p.type === 'OACK')
      sock.send(encode({ type: 'ERROR', code: 0, message: 'bye' }), rinfo.port, '127.0.0.1');
  });
  for (let i = 0; i < n; i++) {
    const before = ended.length;
    sock.send(
      encode({ type: 'RRQ', filename: 'f.bin', mode: 'octet', options: new Map() }),
      port,
      '127.0.0.1',
    );
    const deadline = Date.now() + 20_000;
    while (ended.length === before) {
      assert.ok(Date.now() < deadline, 'transfer ended');
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  assert.equal(ended.length, n);
  assert.ok(
    ended.every((i) => i.result !== 'ok'),
    'every transfer failed',
  );
  const lines = logger.lines.filter((l) => l.level === 'warn' || l.level === 'error' || l.level === 'info');
  assert.ok(lines.length <= 3, `${n} aborted transfers wrote ${lines.length} lines`);
});

test('TFTP request socket: failed sends under a flood write one line a minute, not one per event', async (t) => {
  const root = tempDir(t, 'bt-tftp-review-');
  const logger = memoryLogger();
  const server = new TftpServer({ host: '127.0.0.1', port: 0, root }, { logger });
  await server.listen();
  t.after(() => server.close());
  const sock = (server as unknown as { socket: EventEmitter }).socket;
  const before = logger.lines.length;
  for (let n = 0; n < 50; n++)
    sock.emit('error', Object.assign(new Error('send EPERM'), { code: 'EPERM', syscall: 'send' }));
  const lines = logger.lines.length - before;
  assert.ok(lines <= 1, `50 failed sends wrote ${lines} lines`);
});
