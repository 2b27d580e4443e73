import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MAX_BLOCK,
  SeedPolicy,
  UploadBucket,
  UploadQueue,
  type RequestContext,
  type RequestDecision,
} from '../../src/swarm/seed-policy.js';
import type { BlockRequest } from '../../src/swarm/picker.js';

const KB = 1024;
const PIECE = 64 * KB;
const req = (index: number, begin = 0, length = 16 * KB): BlockRequest => ({ index, begin, length });
const ctx = (o: Partial<RequestContext> = {}): RequestContext => ({
  amChoking: false,
  fast: true,
  havePiece: true,
  peerHas: () => false,
  ...o,
});
/** 4 pieces, the last one 10 KiB. */
const policy = (spread: boolean, maxQueue?: number) =>
  new SeedPolicy({
    pieceCount: 4,
    pieceSize: (i) => (i === 3 ? 10 * KB : PIECE),
    spread,
    ...(maxQueue !== undefined ? { maxQueue } : {}),
  });

test('a request is decided by validity, choke, possession, queue room and Fast support', () => {
  const rows: { name: string; r: BlockRequest; c?: Partial<RequestContext>; want: RequestDecision }[] = [
    { name: 'valid', r: req(0), want: { action: 'queued' } },
    { name: 'last short piece, whole', r: req(3, 0, 10 * KB), want: { action: 'queued' } },
    { name: 'index past the end', r: req(4), want: { action: 'close' } },
    { name: 'zero length', r: req(0, 0, 0), want: { action: 'close' } },
    { name: 'over the largest block', r: req(0, 0, MAX_BLOCK + 1), want: { action: 'close' } },
    { name: 'runs past the piece', r: req(0, PIECE - 1, 2), want: { action: 'close' } },
    { name: 'runs past the short piece', r: req(3, 0, 16 * KB), want: { action: 'close' } },
    { name: 'invalid beats choked', r: req(9), c: { amChoking: true }, want: { action: 'close' } },
    { name: 'choked, fast', r: req(0), c: { amChoking: true }, want: { action: 'reject' } },
    { name: 'choked, not fast', r: req(0), c: { amChoking: true, fast: false }, want: { action: 'ignore' } },
    { name: 'piece we lack, fast', r: req(1), c: { havePiece: false }, want: { action: 'reject' } },
    {
      name: 'piece we lack, not fast',
      r: req(1),
      c: { havePiece: false, fast: false },
      want: { action: 'ignore' },
    },
  ];
  for (const row of rows) {
    const q = new UploadQueue();
    const d = policy(false).request(q, row.r, ctx(row.c));
    assert.deepEqual(d, row.want, row.name);
    assert.equal(q.length, d.action === 'queued' ? 1 : 0, row.name);
  }
});

test('a full upload queue rejects (fast) or ignores the next request', () => {
  const p = policy(false, 2);
  const q = new UploadQueue();
  assert.equal(p.request(q, req(0, 0), ctx()).action, 'queued');
  assert.equal(p.request(q, req(0, 16 * KB), ctx()).action, 'queued');
  assert.equal(p.request(q, req(0, 32 * KB), ctx()).action, 'reject');
  assert.equal(p.request(q, req(0, 32 * KB), ctx({ fast: false })).action, 'ignore');
  q.shift();
  assert.equal(p.request(q, req(0, 32 * KB), ctx()).action, 'queued');
});

test('spread: a piece sent to one peer is rejected to the next, with a suggestion of an unsent one', () => {
  const p = policy(true);
  const a = new UploadQueue();
  const b = new UploadQueue();
  // Script: [queue, request, peer has, expected]
  const steps: [UploadQueue, BlockRequest, number[], RequestDecision][] = [
    [a, req(0), [], { action: 'queued' }],
    // a's piece 0 is begun: the rest of it is always served to a.
    [a, req(0, 16 * KB), [], { action: 'queued' }],
    // b asks for 0, which has left us: rejected, told of piece 1.
    [b, req(0), [], { action: 'reject', suggest: 1 }],
    // The cursor moves on: the next suggestion names another piece.
    [b, req(0), [], { action: 'reject', suggest: 2 }],
    // A piece the peer has is not suggested.
    [b, req(0), [3], { action: 'reject', suggest: 1 }],
    [b, req(1), [], { action: 'queued' }],
    [a, req(2), [], { action: 'queued' }],
    [b, req(0), [], { action: 'reject', suggest: 3 }],
    [a, req(3, 0, 10 * KB), [], { action: 'queued' }],
    // Every piece has left us once: spread ends, everything is served.
    [b, req(0), [], { action: 'queued' }],
    [a, req(1), [], { action: 'queued' }],
  ];
  steps.forEach(([q, r, has, want], i) => {
    const d = p.request(q, r, ctx({ peerHas: (x) => has.includes(x) }));
    assert.deepEqual(d, want, `step ${i}`);
  });
  assert.equal(p.unsentPieces, 0);
});

test('spread: a reject names no piece when every unsent one is already at the peer', () => {
  const p = policy(true);
  const a = new UploadQueue();
  assert.equal(p.request(a, req(0), ctx()).action, 'queued');
  const d = p.request(new UploadQueue(), req(0), ctx({ peerHas: (i) => i !== 0 }));
  assert.deepEqual(d, { action: 'reject' });
});

test('spread: a peer without the Fast extension is always served (it could not be told no)', () => {
  const p = policy(true);
  assert.equal(p.request(new UploadQueue(), req(0), ctx()).action, 'queued');
  assert.equal(p.request(new UploadQueue(), req(0), ctx({ fast: false })).action, 'queued');
});

test('plain: every piece is served to every peer', () => {
  const p = policy(false);
  for (let n = 0; n < 3; n++) assert.equal(p.request(new UploadQueue(), req(0), ctx()).action, 'queued');
  assert.equal(p.unsentPieces, 0);
});

test('upload queue: order kept, cancels of held and unknown requests, clear returns what was held', () => {
  const q = new UploadQueue();
  q.push(req(0, 0));
  q.push(req(0, 16 * KB));
  q.push(req(0, 0)); // duplicates are allowed, counted
  assert.equal(q.cancel(req(5)), false);
  assert.equal(q.cancel(req(0, 0, 1)), false);
  assert.equal(q.cancel(req(0, 0)), true);
  assert.equal(q.length, 2);
  assert.deepEqual(q.shift(), req(0, 16 * KB));
  assert.equal(q.cancel(req(0, 0)), true);
  assert.equal(q.cancel(req(0, 0)), false);
  assert.equal(q.shift(), undefined);
  q.push(req(1));
  q.push(req(2));
  assert.deepEqual(q.clear(), [req(1), req(2)]);
  assert.equal(q.length, 0);
  assert.equal(q.cancel(req(1)), false);
});

test('upload bucket: tokens come a tenth of the limit per refill, capped; waiters go in order', async () => {
  const limit = 1_000_000;
  const b = new UploadBucket(limit);
  const order: string[] = [];
  const first = b.take(90_000).then(() => order.push('first'));
  const second = b.take(90_000).then(() => order.push('second'));
  assert.equal(b.waiting, 2);
  // Per refill: tokens after it, waiters left. A waiter goes once an eighth
  // of a block (16 KiB) is at hand.
  const rows: [number, number][] = [
    [100_000 - 90_000, 1],
    [10_000 + 100_000 - 90_000, 0],
  ];
  for (const [tokens, waiting] of rows) {
    b.refill();
    assert.equal(b.available, tokens);
    assert.equal(b.waiting, waiting);
  }
  await Promise.all([first, second]);
  assert.deepEqual(order, ['first', 'second']);
  // Refills stop at half a second's tokens plus a block.
  for (let i = 0; i < 20; i++) b.refill();
  assert.equal(b.available, limit / 2 + MAX_BLOCK);
  await b.take(limit / 2);
  assert.equal(b.available, MAX_BLOCK);
});

test('upload bucket: a waiter waits until an eighth of a block is at hand', async () => {
  // 80 KiB/s: 8 KiB a refill, under MAX_BLOCK / 8 (16 KiB).
  const b = new UploadBucket(80 * KB);
  let done = false;
  const p = b.take(16 * KB).then(() => (done = true));
  b.refill();
  await Promise.resolve();
  assert.equal(b.waiting, 1);
  assert.equal(done, false);
  b.refill();
  await p;
  assert.equal(b.available, 0);
});

test('upload bucket: release lets every waiter go (stop)', async () => {
  const b = new UploadBucket(1000);
  const ps = [b.take(5000), b.take(5000)];
  b.release();
  await Promise.all(ps);
  assert.equal(b.waiting, 0);
});
