import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { BAN_STRIKES, PieceAssembler, SPARE_BUFFERS } from '../../src/swarm/assembler.js';

const PIECE = 32;
const LAST = 20;
/** Piece i is 32 bytes of value i, the last (index 3) 20 bytes. */
const content = (i: number) => Buffer.alloc(i === 3 ? LAST : PIECE, i);
const sha1 = (b: Buffer) => createHash('sha1').update(b).digest();
const hashes = [0, 1, 2, 3].map((i) => sha1(content(i)));

function assembler(opts: { banStrikes?: number; spareBuffers?: number } = {}) {
  return new PieceAssembler({
    pieceLength: PIECE,
    pieceSize: (i) => (i === 3 ? LAST : PIECE),
    check: (i, data) => sha1(data).equals(hashes[i]!),
    ...opts,
  });
}
/** Sends piece i in two halves, from peers `first` and `second`; `bad` corrupts the second half. */
function send(a: PieceAssembler, i: number, first: string, second: string, bad = false) {
  const data = content(i);
  const half = data.length / 2;
  a.add(i, 0, data.subarray(0, half), first);
  const rest = Buffer.from(data.subarray(half));
  if (bad) rest[0] = rest[0]! ^ 0xff;
  a.add(i, half, rest, second);
}

test('a piece whose blocks match comes out whole, the short last piece at its own length', () => {
  const a = assembler();
  for (const i of [0, 3]) {
    send(a, i, 'p1', 'p2');
    const v = a.finish(i, ['p1', 'p2']);
    assert.ok(v.ok);
    assert.deepEqual(v.data, content(i));
    v.release();
  }
  assert.equal(a.hashFailures, 0);
  assert.equal(a.pending, 0);
});

test('a hash failure strikes the connected contributors: a sole one is banned at once, several a strike each', () => {
  // Rows: who sends the two halves, who is still connected (in the
  // session's order), then the named contributors and the bans.
  const rows: {
    name: string;
    from: [string, string];
    connected: string[];
    contributors: string[];
    ban: string[];
  }[] = [
    { name: 'sole sender', from: ['p1', 'p1'], connected: ['p1', 'p2'], contributors: ['p1'], ban: ['p1'] },
    {
      name: 'two senders share it',
      from: ['p1', 'p2'],
      connected: ['p2', 'p1', 'p3'],
      contributors: ['p2', 'p1'],
      ban: [],
    },
    {
      name: 'the other sender left: the one left is sole',
      from: ['p1', 'p2'],
      connected: ['p2'],
      contributors: ['p2'],
      ban: ['p2'],
    },
    { name: 'every sender left', from: ['p1', 'p2'], connected: ['p3'], contributors: [], ban: [] },
  ];
  for (const row of rows) {
    const a = assembler();
    send(a, 1, row.from[0], row.from[1], true);
    const v = a.finish(1, row.connected);
    assert.equal(v.ok, false, row.name);
    if (v.ok) continue;
    assert.deepEqual(v.contributors, row.contributors, row.name);
    assert.deepEqual(v.ban, row.ban, row.name);
    assert.equal(a.hashFailures, 1, row.name);
  }
});

test('shared suspicion adds up: the third failure two peers share bans both', () => {
  const a = assembler();
  for (let n = 1; n <= BAN_STRIKES; n++) {
    send(a, 0, 'p1', 'p2', true);
    const v = a.finish(0, ['p1', 'p2']);
    assert.ok(!v.ok);
    assert.deepEqual(v.ban, n < BAN_STRIKES ? [] : ['p1', 'p2'], `failure ${n}`);
    assert.equal(a.strikesOf('p1'), n);
  }
  // A peer that went away takes its strikes along (its new connection is a new id).
  a.peerGone('p1');
  assert.equal(a.strikesOf('p1'), 0);
  assert.equal(a.strikesOf('p2'), BAN_STRIKES);
});

test('buffers are reused up to the spare limit, after a good piece is released or a bad one is checked', () => {
  const a = assembler({ spareBuffers: 2 });
  for (const i of [0, 1, 2]) send(a, i, 'p1', 'p1');
  assert.equal(a.pending, 3);
  const good = [0, 1, 2].map((i) => a.finish(i, ['p1']));
  assert.equal(a.spareCount, 0);
  for (const v of good) if (v.ok) v.release();
  assert.equal(a.spareCount, 2);
  // A reused (piece-length) buffer is cut to the short last piece.
  send(a, 3, 'p1', 'p1', true);
  assert.equal(a.spareCount, 1);
  assert.ok(!a.finish(3, ['p1']).ok);
  assert.equal(a.spareCount, 2);
  send(a, 3, 'p1', 'p1');
  const v = a.finish(3, ['p1']);
  assert.ok(v.ok);
  assert.deepEqual(v.data, content(3));
  assert.equal(SPARE_BUFFERS, 8);
});

test('finishing a piece with no blocks throws (the session fails; never a silent success)', () => {
  assert.throws(() => assembler().finish(0, []), /no blocks/);
});
