// PeerDialer, the pure dialing policy (issue #14 item 4, #15 item 2): tables
// of state in, decisions out, on an injected clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PeerDialer, backoffMs, type CandidateSource, type DialerOptions } from '../../src/swarm/dialer.js';

const tracker: CandidateSource = { kind: 'tracker' };
const lsd: CandidateSource = { kind: 'lsd' };
const pexFrom = (from: string): CandidateSource => ({ kind: 'pex', from });

function clocked(options: DialerOptions = {}) {
  let now = 1_000_000;
  const d = new PeerDialer({ now: () => now, ...options });
  return { d, advance: (ms: number) => (now += ms), now: () => now };
}

const free = { seeding: false, connected: () => false };
const addresses = (cs: { address: string }[]) => cs.map((c) => c.address);

test('add: what is taken and why the rest is refused', () => {
  const rows: {
    name: string;
    options: DialerOptions;
    before: [string, number, CandidateSource][];
    add: [string, number, CandidateSource];
    refusal: ReturnType<PeerDialer['add']>;
    size: number;
  }[] = [
    {
      name: 'a new address',
      options: {},
      before: [],
      add: ['10.0.0.1', 6881, tracker],
      refusal: undefined,
      size: 1,
    },
    { name: 'port 0', options: {}, before: [], add: ['10.0.0.1', 0, tracker], refusal: 'invalid', size: 0 },
    {
      name: 'port 65536',
      options: {},
      before: [],
      add: ['10.0.0.1', 65536, tracker],
      refusal: 'invalid',
      size: 0,
    },
    {
      name: 'port not an integer',
      options: {},
      before: [],
      add: ['10.0.0.1', 1.5, tracker],
      refusal: 'invalid',
      size: 0,
    },
    {
      name: 'a known address keeps one entry',
      options: {},
      before: [['10.0.0.1', 6881, pexFrom('p')]],
      add: ['10.0.0.1', 6881, tracker],
      refusal: 'known',
      size: 1,
    },
    {
      name: 'a PEX peer over its own quota',
      options: { maxCandidatesPerPeer: 2 },
      before: [
        ['10.0.0.1', 1, pexFrom('p')],
        ['10.0.0.2', 1, pexFrom('p')],
      ],
      add: ['10.0.0.3', 1, pexFrom('p')],
      refusal: 'source-full',
      size: 2,
    },
    {
      name: 'another PEX peer has its own quota',
      options: { maxCandidatesPerPeer: 2 },
      before: [
        ['10.0.0.1', 1, pexFrom('p')],
        ['10.0.0.2', 1, pexFrom('p')],
      ],
      add: ['10.0.0.3', 1, pexFrom('q')],
      refusal: undefined,
      size: 3,
    },
    {
      name: 'PEX into a full table is refused',
      options: { maxCandidates: 2 },
      before: [
        ['10.0.0.1', 1, pexFrom('p')],
        ['10.0.0.2', 1, tracker],
      ],
      add: ['10.0.0.3', 1, pexFrom('q')],
      refusal: 'full',
      size: 2,
    },
    {
      name: 'a tracker address into a full table evicts the oldest PEX one',
      options: { maxCandidates: 2 },
      before: [
        ['10.0.0.1', 1, pexFrom('p')],
        ['10.0.0.2', 1, tracker],
      ],
      add: ['10.0.0.3', 1, lsd],
      refusal: undefined,
      size: 2,
    },
    {
      name: 'a tracker address into a table full of trusted ones is refused',
      options: { maxCandidates: 2 },
      before: [
        ['10.0.0.1', 1, lsd],
        ['10.0.0.2', 1, tracker],
      ],
      add: ['10.0.0.3', 1, tracker],
      refusal: 'full',
      size: 2,
    },
  ];
  for (const row of rows) {
    const { d } = clocked(row.options);
    for (const [ip, port, source] of row.before) d.add(ip, port, source);
    assert.equal(d.add(...row.add), row.refusal, row.name);
    assert.equal(d.size, row.size, row.name);
  }
});

test('add: the evicted PEX address is the oldest, and its quota is given back', () => {
  const { d } = clocked({ maxCandidates: 3, maxCandidatesPerPeer: 2 });
  d.add('10.0.0.1', 1, pexFrom('p'));
  d.add('10.0.0.2', 1, pexFrom('p'));
  d.add('10.0.0.3', 1, tracker);
  assert.equal(d.add('10.0.0.9', 1, pexFrom('p')), 'source-full');
  assert.equal(d.add('10.0.0.4', 1, tracker), undefined);
  assert.equal(d.has('10.0.0.1:1'), false);
  assert.equal(d.has('10.0.0.2:1'), true);
  // p holds one now, so one more of its addresses fits (once there is room).
  d.remove('10.0.0.3:1');
  assert.equal(d.add('10.0.0.9', 1, pexFrom('p')), undefined);
});

test('ban: a banned address is forgotten and never taken again', () => {
  const { d } = clocked();
  d.add('10.0.0.1', 1, tracker);
  d.ban('10.0.0.1:1');
  assert.equal(d.size, 0);
  assert.equal(d.add('10.0.0.1', 1, tracker), 'banned');
  d.keep('10.0.0.1', 1);
  assert.equal(d.size, 0);
});

test('next: slots, concurrent dials, the dial rate, seeding and connected peers', () => {
  const rows: {
    name: string;
    options: DialerOptions;
    slots: number;
    seeding?: boolean;
    connected?: string[];
    want: number;
  }[] = [
    { name: 'all, within the limits', options: {}, slots: 80, want: 10 },
    { name: 'free connection slots', options: {}, slots: 3, want: 3 },
    { name: 'concurrent dials', options: { maxConcurrentDials: 4 }, slots: 80, want: 4 },
    { name: 'dial rate (burst)', options: { maxDialsPerSecond: 6 }, slots: 80, want: 6 },
    { name: 'a seed dials only LSD peers', options: {}, slots: 80, seeding: true, want: 2 },
    { name: 'connected peers are not dialed', options: {}, slots: 80, connected: ['10.0.0.1:1'], want: 9 },
  ];
  for (const row of rows) {
    const { d } = clocked(row.options);
    for (let i = 1; i <= 10; i++) d.add(`10.0.0.${i}`, 1, i <= 2 ? lsd : tracker);
    const connected = new Set(row.connected ?? []);
    const got = d.next(row.slots, { seeding: row.seeding ?? false, connected: (a) => connected.has(a) });
    assert.equal(got.length, row.want, row.name);
    assert.equal(d.dialing, row.want, row.name);
    assert.equal(d.started, row.want, row.name);
    // Asked again at once: nothing is dialed twice.
    assert.deepEqual(
      d
        .next(row.slots, { seeding: row.seeding ?? false, connected: (a) => connected.has(a) })
        .filter((c) => got.includes(c)),
      [],
      row.name,
    );
  }
});

test('next: the dial rate refills with time, and dials in progress take slots', () => {
  const { d, advance } = clocked({ maxDialsPerSecond: 2, maxConcurrentDials: 100 });
  for (let i = 1; i <= 10; i++) d.add(`10.0.0.${i}`, 1, tracker);
  assert.equal(d.next(100, free).length, 2);
  assert.equal(d.next(100, free).length, 0);
  advance(500);
  assert.equal(d.next(100, free).length, 1);
  advance(10_000);
  // The bucket holds one second's worth, however long we waited.
  assert.equal(d.next(100, free).length, 2);
  assert.equal(d.dialing, 5);
  // Five dials in progress use five of six slots.
  advance(10_000);
  assert.equal(d.next(6, free).length, 1);
});

test('failed: backoff doubles up to a minute; a PEX address is forgotten after its failures', () => {
  assert.deepEqual([1, 2, 3, 5, 6, 7, 20].map(backoffMs), [2000, 4000, 8000, 32_000, 60_000, 60_000, 60_000]);
  const { d, advance } = clocked({ maxPexDialFailures: 2 });
  d.add('10.0.0.1', 1, tracker);
  d.add('10.0.0.2', 1, pexFrom('p'));
  assert.deepEqual(addresses(d.next(10, free)), ['10.0.0.1:1', '10.0.0.2:1']);
  d.failed('10.0.0.1:1');
  d.failed('10.0.0.2:1');
  assert.equal(d.dialing, 0);
  advance(1999);
  assert.deepEqual(addresses(d.next(10, free)), []);
  advance(1);
  assert.deepEqual(addresses(d.next(10, free)), ['10.0.0.1:1', '10.0.0.2:1']);
  d.failed('10.0.0.1:1');
  d.failed('10.0.0.2:1');
  assert.equal(d.get('10.0.0.1:1')?.failures, 2);
  assert.equal(d.get('10.0.0.1:1')?.nextTry, 1_000_000 + 2000 + 4000);
  assert.equal(d.has('10.0.0.2:1'), false, 'the PEX address is forgotten');
});

test('keep: a peer that closed is dialed again after two seconds, even into a table full of PEX addresses', () => {
  const { d, advance } = clocked({ maxCandidates: 1 });
  d.add('10.0.0.9', 1, pexFrom('p'));
  d.keep('10.0.0.1', 6881);
  assert.equal(d.has('10.0.0.9:1'), false);
  assert.equal(d.get('10.0.0.1:6881')?.failures, 1);
  assert.deepEqual(addresses(d.next(10, free)), []);
  advance(2000);
  assert.deepEqual(addresses(d.next(10, free)), ['10.0.0.1:6881']);
  d.dialEnded('10.0.0.1:6881');
  assert.equal(d.dialing, 0);
});
