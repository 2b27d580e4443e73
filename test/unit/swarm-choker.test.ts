import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseUnchoked, pickOptimistic, type ChokerPeer } from '../../src/swarm/choker.js';

const p = (id: string, interested: boolean, down = 0, up = 0, uploaded = 0): ChokerPeer => ({
  id,
  interested,
  downloadRate: down,
  uploadRate: up,
  uploaded,
});

test('table: choker decisions', () => {
  const peers = [
    p('a', true, 10, 1, 500),
    p('b', true, 30, 5, 100),
    p('c', false, 99, 99, 0),
    p('d', true, 20, 9, 300),
    p('e', true, 0, 0, 0),
  ];
  const cases: { name: string; input: Parameters<typeof chooseUnchoked>[0]; want: string[] }[] = [
    {
      name: 'lan: every interested peer',
      input: { mode: 'lan', peers, seeding: false, maxUnchoked: 10 },
      want: ['a', 'b', 'd', 'e'],
    },
    {
      name: 'lan: cap keeps those we served least',
      input: { mode: 'lan', peers, seeding: false, maxUnchoked: 2 },
      want: ['b', 'e'],
    },
    {
      name: 'lan: local peers first, however much they got (locality, #21)',
      input: {
        mode: 'lan',
        peers: [
          ...peers,
          { ...p('f', true, 0, 0, 900), local: true },
          { ...p('g', true, 0, 0, 800), local: true },
        ],
        seeding: false,
        maxUnchoked: 3,
      },
      want: ['g', 'f', 'e'],
    },
    {
      name: 'lan: nobody interested',
      input: { mode: 'lan', peers: [p('x', false)], seeding: true, maxUnchoked: 5 },
      want: [],
    },
    {
      name: 'standard leeching: best download rates',
      input: { mode: 'standard', peers, seeding: false, maxUnchoked: 10, regularSlots: 2 },
      want: ['b', 'd'],
    },
    {
      name: 'standard seeding: best upload rates',
      input: { mode: 'standard', peers, seeding: true, maxUnchoked: 10, regularSlots: 2 },
      want: ['d', 'b'],
    },
    {
      name: 'standard: plus the optimistic one',
      input: { mode: 'standard', peers, seeding: false, maxUnchoked: 10, regularSlots: 2, optimistic: 'e' },
      want: ['b', 'd', 'e'],
    },
    {
      name: 'standard: optimistic must be interested',
      input: { mode: 'standard', peers, seeding: false, maxUnchoked: 10, regularSlots: 2, optimistic: 'c' },
      want: ['b', 'd'],
    },
    {
      name: 'standard: cap includes optimistic',
      input: { mode: 'standard', peers, seeding: false, maxUnchoked: 2, regularSlots: 3, optimistic: 'e' },
      want: ['b', 'd'],
    },
  ];
  for (const c of cases) {
    assert.deepEqual([...chooseUnchoked(c.input)].sort(), [...c.want].sort(), c.name);
  }
});

test('lan: peers tied on bytes received go by the tie-break key, not by id', () => {
  const peers = ['a', 'b', 'c', 'd'].map((id, k) => ({ ...p(id, true), tiebreak: [0.9, 0.1, 0.5, 0.3][k]! }));
  assert.deepEqual([...chooseUnchoked({ mode: 'lan', peers, seeding: false, maxUnchoked: 2 })].sort(), [
    'b',
    'd',
  ]);
});

test('optimistic unchoke picks an interested peer outside the regular slots', () => {
  const peers = [p('a', true), p('b', true), p('c', false), p('d', true)];
  assert.equal(
    pickOptimistic(peers, new Set(['a']), () => 0),
    'b',
  );
  assert.equal(
    pickOptimistic(peers, new Set(['a']), () => 0.99),
    'd',
  );
  assert.equal(
    pickOptimistic(peers, new Set(['a', 'b', 'd']), () => 0),
    undefined,
  );
});
