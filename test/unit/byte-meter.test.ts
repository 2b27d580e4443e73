// ByteMeter (src/util/byte-meter.ts) on a real HTTP server over loopback:
// what it counts is compared with what a raw client received, byte for
// byte, for responses one after another on one keep-alive connection, an
// answer Node writes itself (400), and a large body while it is in flight.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { ByteMeter } from '../../src/util/byte-meter.js';
import { groupSent, NOTHING_SENT } from '../../src/server/traffic.js';
import { waitUntil } from '../helpers/wait.js';

type Kind = 'small' | 'big';

async function serve(t: { after(fn: () => unknown): void }) {
  const meter = new ByteMeter<Kind>(['small', 'big']);
  let release: (() => void) | undefined;
  const server = createServer((req, res) => {
    if (req.url === '/small') {
      meter.attribute(res, 'small');
      res.end('hello');
    } else if (req.url === '/big') {
      meter.attribute(res, 'big');
      res.writeHead(200, { 'content-length': 4 << 20 });
      // The first half now, the rest once the test has looked.
      res.write(Buffer.alloc(2 << 20, 1));
      release = () => res.end(Buffer.alloc(2 << 20, 2));
    } else {
      res.writeHead(404).end();
    }
  });
  meter.watch(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  return { meter, port: (server.address() as AddressInfo).port, release: () => release?.() };
}

/** Sends `raw` on one connection and counts what comes back until the server closes or `until` says enough. */
function exchange(port: number, raw: string, until?: (got: number) => boolean) {
  return new Promise<number>((resolve, reject) => {
    let got = 0;
    const s = connect({ port, host: '127.0.0.1' }, () => s.write(raw));
    s.on('data', (c: Buffer) => {
      got += c.length;
      if (until?.(got)) {
        s.destroy();
        resolve(got);
      }
    });
    s.on('error', reject);
    s.on('close', () => resolve(got));
  });
}

test('responses on one keep-alive connection are each counted as their kind, headers included', async (t) => {
  const { meter, port } = await serve(t);
  const get = (path: string, last = false) =>
    `GET ${path} HTTP/1.1\r\nHost: x\r\n${last ? 'Connection: close\r\n' : ''}\r\n`;
  // Two small answers and a 404 (no kind: other), one after the other on one socket.
  const received = await exchange(port, get('/small') + get('/nope') + get('/small', true));
  await waitUntil(() => meter.totals().total === received, 2000, 'the socket closed and counted');
  const totals = meter.totals();
  assert.equal(totals.total, received);
  assert.ok(totals.small > 0 && totals.other > 0, JSON.stringify(totals));
  assert.equal(totals.small + totals.big + totals.other, totals.total);
  assert.equal(totals.big, 0);
  // Each small answer is the same size; the 404 is in other.
  const oneSmall = totals.small / 2;
  assert.equal(Number.isInteger(oneSmall), true);
  assert.equal(totals.other, received - totals.small);
});

test('an answer Node writes itself (400 for a malformed request) is counted as other', async (t) => {
  const { meter, port } = await serve(t);
  const received = await exchange(port, 'NOT HTTP AT ALL\r\n\r\n');
  assert.ok(received > 0, 'Node answered 400');
  await waitUntil(() => meter.totals().total === received, 2000, 'counted');
  assert.deepEqual(meter.totals(), { small: 0, big: 0, other: received, total: received });
});

test('a large body shows while it is still being sent, and the rest when it ends', async (t) => {
  const { meter, port, release } = await serve(t);
  let sawLive = 0;
  const done = exchange(port, 'GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n', (got) => {
    if (got >= 2 << 20 && !sawLive) {
      sawLive = meter.totals().big;
      release();
    }
    return false;
  });
  const received = await done;
  assert.ok(sawLive >= 2 << 20, `live figure ${sawLive} counted the first half before the end`);
  await waitUntil(() => meter.totals().total === received, 2000, 'counted');
  assert.equal(meter.totals().big, received);
  assert.ok(received > 4 << 20);
});

test('datagrams added by kind count in their kind and in the total', () => {
  const meter = new ByteMeter<'udp'>(['udp']);
  meter.add('udp', 300);
  meter.add('other', 20);
  assert.deepEqual(meter.totals(), { udp: 300, other: 20, total: 320 });
});

test('groupSent: phase 1 is everything before the agent, the OS everything after, and the parts add up', () => {
  const sent = groupSent({
    dhcp: 1,
    tftp: 10,
    http: {
      ipxe: 100,
      script: 1000,
      phase1: 10_000,
      config: 2,
      api: 20,
      tracker: 200,
      files: 3,
      other: 30,
      total: 0,
    },
    tracker: 2000,
    seeder: 20_000,
  });
  assert.equal(sent.phase1, 11_111);
  assert.equal(sent.os, 22_222);
  assert.equal(sent.other, 33);
  assert.equal(sent.total, 33_366);
  assert.equal(
    Object.values(sent.parts).reduce((a, b) => a + b, 0),
    sent.total,
  );
  assert.equal(NOTHING_SENT.total, 0);
});
