/**
 * Fault: a TFTP transfer that loses packets. A relay between a real client
 * (tftp-hpa's lock-step RFC 1350 client; atftp with RFC 7440 windowsize)
 * and our TFTP server drops every 7th packet in each direction. The
 * transfers still complete with the right bytes: our server retransmits on
 * its timer (and rewinds a window), the clients retransmit their ACKs and
 * requests. All on 127.0.0.1.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { TftpServer, type TransferInfo } from '../../src/tftp/server.js';
import { startLossyRelay } from '../helpers/faults-udp-relay.js';
import { requireProgram } from '../helpers/programs.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';

const HOST = '127.0.0.1';
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function run(
  t: TestContext,
  cmd: string,
  args: string[],
  cwd: string,
): Promise<{ code: number | null; out: string }> {
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

/**
 * The server finished the transfer: every byte acknowledged, or (RFC 1350
 * §6: the last ACK is not acknowledged, so its loss is only seen as a
 * timeout) all but the last window acknowledged when the relay dropped the
 * client's final ACK and the client had already left.
 */
function assertServerRecord(info: TransferInfo, size: number, lastWindow: number): void {
  if (info.result === 'ok') assert.equal(info.bytes, size);
  else {
    assert.equal(info.result, 'timeout', JSON.stringify(info));
    assert.ok(info.bytes >= size - lastWindow, JSON.stringify(info));
  }
}

async function setup(t: TestContext, file: Buffer) {
  const root = tempDir(t, 'bt-faults-tftp-');
  const work = tempDir(t, 'bt-faults-tftp-client-');
  writeFileSync(join(root, 'image.bin'), file);
  const server = new TftpServer({ host: HOST, port: 0, root, timeoutMs: 500, retries: 8 });
  const { port } = await server.listen();
  t.after(() => server.close());
  // The server's record of the transfer: it may come after the client exits
  // (if the relay drops the final ACK, the server retransmits until its retries run out).
  const record = new Promise<TransferInfo>((resolve) => server.once('transfer', resolve));
  const relay = await startLossyRelay({ host: HOST, serverPort: port, dropEvery: 7 });
  t.after(() => relay.close());
  return { work, relay, record };
}

test('faults: tftp-hpa through a relay dropping every 7th packet each way gets the right bytes', async (t) => {
  const tftp = requireProgram('tftp', 'tftp-hpa');
  // 60 blocks of 512 bytes and a short last one.
  const file = pseudoRandomBytes(512 * 60 + 100, 71);
  const { work, relay, record } = await setup(t, file);
  const r = await run(
    t,
    tftp,
    ['-m', 'binary', HOST, String(relay.port), '-c', 'get', 'image.bin', 'got.bin'],
    work,
  );
  assert.equal(r.code, 0, r.out);
  assert.equal(sha(readFileSync(join(work, 'got.bin'))), sha(file));
  assert.ok(
    relay.counters.droppedToClient > 0 && relay.counters.droppedToServer > 0,
    JSON.stringify(relay.counters),
  );
  assertServerRecord(await record, file.length, 512);
});

test('faults: atftp with windowsize 8 through the same lossy relay gets the right bytes', async (t) => {
  const atftp = requireProgram('atftp', 'atftp');
  const file = pseudoRandomBytes(1428 * 150 + 7, 72);
  const { work, relay, record } = await setup(t, file);
  const r = await run(
    t,
    atftp,
    [
      '--option',
      'blksize 1428',
      '--option',
      'windowsize 8',
      '--option',
      'tsize enable',
      '-g',
      '-r',
      'image.bin',
      '-l',
      'got.bin',
      HOST,
      String(relay.port),
    ],
    work,
  );
  assert.equal(r.code, 0, r.out.slice(0, 3000));
  assert.equal(sha(readFileSync(join(work, 'got.bin'))), sha(file));
  assert.ok(
    relay.counters.droppedToClient > 0 && relay.counters.droppedToServer > 0,
    JSON.stringify(relay.counters),
  );
  const info = await record;
  assert.equal(info.windowSize, 8);
  assertServerRecord(info, file.length, 1428 * 8);
});
