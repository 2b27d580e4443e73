// Review of issue #14 (tracker): the tracker's own HTTP port had none of the
// connection caps of the boot HTTP server, so one address could open sockets
// until the process ran out of file descriptors. Loopback aliases are
// distinct sources on Linux.
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { request } from 'node:http';
import { test } from 'node:test';
import type { EventEmitter } from 'node:events';
import { TrackerServer } from '../../src/tracker/server.js';

function open(port: number, localAddress: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, localAddress }, () => resolve(s));
    s.on('error', reject);
  });
}

test('tracker HTTP port: one address opening connection after connection is capped, others still served', async (t) => {
  const tracker = new TrackerServer({
    host: '127.0.0.1',
    port: 0,
    open: true,
    httpLimits: { connectionsPerIp: 4 },
  });
  const { port } = await tracker.listen();
  t.after(() => tracker.close());
  const socks: Socket[] = [];
  t.after(() => socks.forEach((s) => s.destroy()));
  const closed = new Set<Socket>();
  for (let i = 0; i < 12; i++) {
    const s = await open(port, '127.0.0.2');
    s.on('error', () => {});
    s.on('close', () => closed.add(s));
    socks.push(s);
  }
  // The server closes the ones over the cap at once; give a loaded machine time.
  const deadline = Date.now() + 5_000;
  while (closed.size < 8 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(socks.length - closed.size, 4, `open from one address: ${socks.length - closed.size}`);
  // Another address is still answered.
  const status = await new Promise<number>((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path: '/scrape', localAddress: '127.0.0.3', agent: false },
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      },
    );
    req.on('error', reject);
    req.end();
  });
  assert.equal(status, 200);
});

test('tracker: failed accepts and failed UDP replies under a flood: one line a minute, not one per event', async (t) => {
  const lines: string[] = [];
  const logger = { debug: () => {}, warn: (m: string) => lines.push(m) };
  const tracker = new TrackerServer({ host: '127.0.0.1', port: 0 }, { logger });
  await tracker.listen();
  t.after(() => tracker.close());
  const i = tracker as unknown as { udp: EventEmitter; http: EventEmitter };
  for (let n = 0; n < 50; n++) {
    i.http.emit('error', Object.assign(new Error('accept EMFILE'), { code: 'EMFILE', syscall: 'accept' }));
    i.udp.emit('error', Object.assign(new Error('send EPERM'), { code: 'EPERM', syscall: 'send' }));
  }
  assert.ok(lines.length <= 2, `100 failed accepts and sends wrote ${lines.length} lines`);
  assert.ok(lines.length >= 1, 'the first is logged');
});
