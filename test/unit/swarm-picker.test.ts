import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PiecePicker, type PeerPieces } from '../../src/swarm/picker.js';
import { Bitfield } from '../../src/wire/bitfield.js';

const KB = 1024;
const peer = (id: string, pieces: number[] | 'all'): PeerPieces => ({
  id,
  has: (i) => pieces === 'all' || pieces.includes(i),
});
/** Deterministic "random" that always returns the same value. */
const fixed = (v: number) => () => v;

function picker(
  pieces: number,
  opts: Partial<ConstructorParameters<typeof PiecePicker>[0]> = {},
  have?: Bitfield,
) {
  return new PiecePicker(
    { pieceCount: pieces, pieceLength: 64 * KB, totalLength: pieces * 64 * KB, random: fixed(0), ...opts },
    have,
  );
}

test('blocks are 16 KiB; the last block and last piece are short', () => {
  const p = new PiecePicker({
    pieceCount: 2,
    pieceLength: 40 * KB,
    totalLength: 50 * KB,
    random: fixed(0),
    randomFirst: 0,
  });
  const reqs = p.pick(peer('a', 'all'), 10);
  assert.deepEqual(reqs, [
    { index: 0, begin: 0, length: 16 * KB },
    { index: 0, begin: 16 * KB, length: 16 * KB },
    { index: 0, begin: 32 * KB, length: 8 * KB },
    { index: 1, begin: 0, length: 10 * KB },
  ]);
  assert.deepEqual(
    p.pick(peer('a', 'all'), 10),
    [],
    'everything is requested; endgame excludes the same peer',
  );
});

test('table: which new piece is picked', () => {
  // Availability per piece for pieces 0..4, and what the peer has.
  const cases: {
    name: string;
    avail: number[];
    peerHas: number[];
    have?: number[];
    randomFirst: number;
    prio?: number[];
    want: number;
  }[] = [
    { name: 'rarest first', avail: [3, 1, 2, 1, 5], peerHas: [0, 1, 2, 3, 4], randomFirst: 0, want: 1 },
    { name: 'rarest the peer has', avail: [3, 1, 2, 1, 5], peerHas: [0, 2, 4], randomFirst: 0, want: 2 },
    {
      name: 'skips pieces we have',
      avail: [1, 2, 3, 4, 5],
      peerHas: [0, 1, 2, 3, 4],
      have: [0],
      randomFirst: 0,
      want: 1,
    },
    {
      name: 'random phase ignores rarity',
      avail: [1, 9, 9, 9, 9],
      peerHas: [0, 1, 2, 3, 4],
      randomFirst: 4,
      want: 0,
    },
    {
      name: 'priority beats rarity',
      avail: [1, 1, 9, 9, 9],
      peerHas: [0, 1, 2, 3, 4],
      randomFirst: 0,
      prio: [0, 0, 0, 5, 5],
      want: 3,
    },
    {
      name: 'priority in random phase',
      avail: [1, 1, 1, 1, 1],
      peerHas: [0, 1, 2, 3, 4],
      randomFirst: 9,
      prio: [0, 0, 7, 0, 0],
      want: 2,
    },
  ];
  for (const c of cases) {
    const have = new Bitfield(5);
    for (const i of c.have ?? []) have.set(i);
    const p = picker(
      5,
      { randomFirst: c.randomFirst, ...(c.prio ? { priority: (i: number) => c.prio![i]! } : {}) },
      have,
    );
    c.avail.forEach((n, i) => {
      for (let k = 0; k < n; k++) p.peerHasPiece(i);
    });
    const [first] = p.pick(peer('x', c.peerHas), 1);
    assert.equal(first?.index, c.want, c.name);
  }
});

test('random first pieces start at the random offset', () => {
  const p = picker(10, { randomFirst: 4, random: fixed(0.55) });
  assert.equal(p.pick(peer('a', 'all'), 1)[0]!.index, 5);
});

test('pieces in progress are finished before new ones are started', () => {
  const p = picker(4, { randomFirst: 0 });
  const a = p.pick(peer('a', 'all'), 2); // piece 0, blocks 0-1 of 4
  assert.deepEqual(
    a.map((r) => [r.index, r.begin / (16 * KB)]),
    [
      [0, 0],
      [0, 1],
    ],
  );
  const b = p.pick(peer('b', 'all'), 3);
  assert.deepEqual(
    b.map((r) => [r.index, r.begin / (16 * KB)]),
    [
      [0, 2],
      [0, 3],
      [1, 0],
    ],
  );
  assert.equal(p.inProgress, 2);
});

test('received blocks complete a piece; verified pieces are had', () => {
  const p = picker(1, { randomFirst: 0 });
  const reqs = p.pick(peer('a', 'all'), 10);
  assert.equal(reqs.length, 4);
  for (const [k, r] of reqs.entries()) {
    const res = p.blockReceived(r.index, r.begin, 'a');
    assert.equal(res.wanted, true);
    assert.equal(res.pieceDone, k === 3);
  }
  assert.equal(p.blockReceived(0, 0, 'a').wanted, false, 'duplicate block is not wanted');
  p.pieceVerified(0);
  assert.equal(p.complete, true);
  assert.deepEqual(p.pick(peer('a', 'all'), 10), []);
});

test('a failed piece is fetched again from scratch', () => {
  const p = picker(1, { randomFirst: 0 });
  for (const r of p.pick(peer('bad', 'all'), 10)) p.blockReceived(r.index, r.begin, 'bad');
  p.pieceFailed(0);
  assert.equal(p.complete, false);
  assert.equal(p.pick(peer('good', 'all'), 10).length, 4);
});

test('requests of a departed or choking peer go back to the pool', () => {
  const p = picker(1, { randomFirst: 0 });
  p.pick(peer('a', 'all'), 3);
  assert.equal(p.pick(peer('b', 'all'), 10).length, 1);
  p.peerGone('a');
  assert.equal(p.pick(peer('c', 'all'), 10).length, 3);
  p.requestDropped(0, 48 * KB, 'b');
  assert.deepEqual(p.pick(peer('c', 'all'), 10), [{ index: 0, begin: 48 * KB, length: 16 * KB }]);
});

test('endgame: duplicates to other peers, capped, and cancels reported on arrival', () => {
  const p = picker(1, { randomFirst: 0, endgameDuplicates: 2 });
  p.pick(peer('a', 'all'), 10);
  assert.equal(p.inEndgame, true);
  const dup = p.pick(peer('b', 'all'), 10);
  assert.equal(dup.length, 4, 'b may duplicate every outstanding block');
  assert.deepEqual(p.pick(peer('c', 'all'), 10), [], 'cap of two requesters reached');
  const r = p.blockReceived(0, 0, 'b');
  assert.deepEqual(r.cancelFrom, ['a']);
});

test('availability: bitfields, have-all seeds, interest', () => {
  const p = picker(3, { randomFirst: 0 });
  const bf = new Bitfield(3);
  bf.set(2);
  p.peerBitfield(bf, 1);
  p.peerSeed(1);
  assert.deepEqual(
    [0, 1, 2].map((i) => p.availabilityOf(i)),
    [1, 1, 2],
  );
  p.peerBitfield(bf, -1);
  p.peerSeed(-1);
  assert.deepEqual(
    [0, 1, 2].map((i) => p.availabilityOf(i)),
    [0, 0, 0],
  );
  assert.equal(p.isInteresting(peer('a', [1])), true);
  const have = new Bitfield(3);
  have.set(1);
  assert.equal(picker(3, {}, have).isInteresting(peer('a', [1])), false);
});

test('pieces a peer suggested (BEP 6) come first; spent or useless suggestions leave the set', () => {
  const p = picker(8, { randomFirst: 0 });
  // Piece 5 is the rarest (only the seed has it) but 2 and 7 are suggested.
  const others = new Bitfield(8);
  for (const i of [0, 1, 2, 3, 4, 6, 7]) others.set(i);
  p.peerBitfield(others, 1);
  const suggested = new Set([2, 7]);
  const reqs = p.pick(peer('seed', 'all'), 6, 6, suggested);
  assert.deepEqual(
    reqs.map((r) => r.index),
    [2, 2, 2, 2, 7, 7],
  );
  assert.deepEqual([...suggested], [7], 'piece 2 is fully requested; 7 still has free blocks');
  // A suggestion of a piece the peer does not have is dropped.
  const odd = new Set([3]);
  assert.deepEqual(p.pick(peer('x', [5]), 1, 1, odd)[0]!.index, 5);
  assert.equal(odd.size, 0);
});

test('endgame duplicates are limited by endgameMax (a busy peer gets none)', () => {
  const p = picker(1, { randomFirst: 0, endgameDuplicates: 2 });
  p.pick(peer('a', 'all'), 10);
  assert.equal(p.pick(peer('b', 'all'), 10, 0).length, 0);
  assert.equal(p.pick(peer('b', 'all'), 10, 2).length, 2);
});
