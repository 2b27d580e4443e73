// PhaseOneSources (src/server/phase1-sources.ts): where a booting client
// fetches its phase-1 payload. Pure, so every rule is checked with a clock
// the test moves.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PhaseOneSources, PhaseOneSourcing, type SourceAnswer } from '../../src/server/phase1-sources.js';
import { silentLogger } from '../../src/util/logger.js';

const SERVER = 'http://10.0.0.1/phase1/payload';
const mac = (i: number) => `52:54:00:00:00:${i.toString(16).padStart(2, '0')}`;
const kind = (a: SourceAnswer) => (a.kind === 'peer' ? `peer ${a.peer}` : a.kind);

test('a room that powers on at once: the server serves its slots, the rest wait for peers', () => {
  const s = new PhaseOneSources(SERVER, { serverSlots: 2, perPeer: 2 });
  assert.deepEqual(s.pick(mac(1), 0), { kind: 'server', url: SERVER });
  assert.equal(kind(s.pick(mac(2), 0)), 'server');
  assert.deepEqual(s.pick(mac(3), 0), { kind: 'wait', seconds: 3 });
  assert.equal(kind(s.pick(mac(4), 0)), 'wait');
  // The first agent comes up and serves: the waiters go to it, two at a time.
  s.offer(mac(1), '10.0.0.101', 8470, 20_000);
  assert.deepEqual(s.pick(mac(3), 20_000), {
    kind: 'peer',
    url: 'http://10.0.0.101:8470/phase1/payload',
    peer: mac(1),
  });
  assert.equal(kind(s.pick(mac(4), 20_000)), `peer ${mac(1)}`);
  // mac(1) is full; its own fetch from the server ended when its agent spoke,
  // so a server slot is free for the next, and the one after waits.
  assert.equal(kind(s.pick(mac(5), 20_000)), 'server');
  assert.equal(kind(s.pick(mac(6), 20_000)), 'wait');
  // A second peer shares the load: the least loaded is picked.
  s.offer(mac(2), '10.0.0.102', 8470, 21_000);
  assert.equal(kind(s.pick(mac(6), 21_000)), `peer ${mac(2)}`);
  // mac(1)'s clients come up: its slots free, and it is the least loaded again.
  s.arrived(mac(3));
  s.arrived(mac(4));
  assert.equal(kind(s.pick(mac(7), 22_000)), `peer ${mac(1)}`);
});

test('a client never gets itself, a stale peer, or a withdrawn one', () => {
  const s = new PhaseOneSources(SERVER, { serverSlots: 0, freshMs: 10_000 });
  s.offer(mac(1), '10.0.0.101', 8470, 0);
  assert.equal(kind(s.pick(mac(1), 0)), 'wait', 'not itself');
  assert.equal(kind(s.pick(mac(2), 10_001)), 'wait', 'not heard from for more than freshMs');
  s.offer(mac(1), '10.0.0.101', 8470, 10_001);
  assert.equal(kind(s.pick(mac(2), 10_002)), `peer ${mac(1)}`);
  s.withdraw(mac(1));
  assert.equal(kind(s.pick(mac(3), 10_003)), 'wait', 'withdrawn: it boots its OS');
});

test('a peer that is gone is dropped; one that served a wrong payload is banned until banMs', () => {
  const s = new PhaseOneSources(SERVER, { serverSlots: 0, banMs: 60_000 });
  s.offer(mac(1), '10.0.0.101', 8470, 0);
  s.offer(mac(2), '10.0.0.102', 8470, 0);
  const first = s.pick(mac(3), 0);
  assert.equal(first.kind, 'peer');
  const url = (first as { url: string }).url;
  // "gone": that peer is no longer offered, the other is.
  const second = s.pick(mac(3), 1, { url, why: 'gone' });
  assert.equal(second.kind, 'peer');
  assert.notEqual((second as { url: string }).url, url);
  // Its next reports do not bring it back within goneMs (default 60 s), later they do.
  const gone = (first as { peer: string }).peer;
  const goneIp = url.includes('101') ? '10.0.0.101' : '10.0.0.102';
  s.offer(gone, goneIp, 8470, 2);
  assert.ok(!s.list(2).some((p) => p.mac === gone), 'a peer reported gone is not offered at once again');
  s.offer(gone, goneIp, 8470, 60_002);
  assert.ok(s.list(60_002).some((p) => p.mac === gone));
  // "bad": banned, and its next reports do not bring it back before banMs.
  const bad = (second as { peer: string }).peer;
  const third = s.pick(mac(3), 3, { url: (second as { url: string }).url, why: 'bad' });
  assert.equal(kind(third), `peer ${(first as { peer: string }).peer}`);
  s.offer(bad, '10.0.0.9', 8470, 4);
  for (let i = 4; i < 9; i++) assert.notEqual(kind(s.pick(mac(i), 5)), `peer ${bad}`);
  s.offer(bad, '10.0.0.9', 8470, 60_010);
  assert.ok(
    s.list(60_010).some((p) => p.mac === bad),
    'offered again after banMs',
  );
});

test('a client that waited maxWaitMs gets the server even when its slots are taken', () => {
  const s = new PhaseOneSources(SERVER, { serverSlots: 1, maxWaitMs: 30_000, holdMs: 1e9 });
  assert.equal(kind(s.pick(mac(1), 0)), 'server');
  assert.equal(kind(s.pick(mac(2), 0)), 'wait');
  assert.equal(kind(s.pick(mac(2), 29_999)), 'wait');
  assert.equal(kind(s.pick(mac(2), 30_000)), 'server');
});

test('an assignment ends after holdMs if the client never reports (it was switched off)', () => {
  const s = new PhaseOneSources(SERVER, { serverSlots: 1, holdMs: 10_000, maxWaitMs: 1e9 });
  assert.equal(kind(s.pick(mac(1), 0)), 'server');
  assert.equal(kind(s.pick(mac(2), 5_000)), 'wait');
  assert.equal(kind(s.pick(mac(2), 10_000)), 'server');
});

test('a MAC flood grows nothing past maxEntries', () => {
  const s = new PhaseOneSources(SERVER, { serverSlots: 0, maxEntries: 10 });
  for (let i = 0; i < 1000; i++) {
    s.offer(
      `02:00:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`,
      '10.0.0.5',
      1,
      0,
    );
    s.pick(
      `06:00:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`,
      0,
    );
  }
  assert.ok(s.list(0).length <= 10);
});

test('reports: a port makes a source; a report without it (the agent stopped serving) or a leaving stage withdraws it', () => {
  let now = 0;
  const s = new PhaseOneSourcing(SERVER, silentLogger, { serverSlots: 0 }, () => now);
  const where = (m: string) => {
    const a = s.answer(m, '10.0.0.99');
    return a.kind === 'get' ? a.url : a.kind;
  };
  const peer = 'http://10.0.0.101:8470/phase1/payload';
  s.report(mac(1), '10.0.0.101', { stage: 'downloading', phase1Port: 8470 });
  assert.equal(where(mac(2)), peer);
  // Dry run over, or seeding over: the same stage, no port any more.
  s.report(mac(1), '10.0.0.101', { stage: 'seeding' });
  assert.equal(where(mac(3)), 'wait');
  s.report(mac(1), '10.0.0.101', { stage: 'seeding', phase1Port: 8470 });
  assert.equal(where(mac(4)), 'wait', 'one fetch per peer: mac(2) still holds it');
  // mac(2)'s agent speaks: its fetch is over, the peer is free.
  s.report(mac(2), '10.0.0.102', { stage: 'network' });
  now = 1000;
  assert.equal(where(mac(4)), peer);
  s.report(mac(1), '10.0.0.101', { stage: 'booting', phase1Port: 8470 });
  assert.equal(where(mac(5)), 'wait', 'booting: it leaves');
});

test('stage 0s still fetching relay: a chain starts at the server, never closes into a ring; a slow source is set aside', () => {
  const s = new PhaseOneSources(SERVER, { serverSlots: 1, perPeer: 1 });
  // mac(1) takes the server's only slot and relays what it has checked.
  assert.equal(kind(s.pick(mac(1), 0)), 'server');
  s.offerPartial(mac(1), '10.0.0.101', 8470, 0, 0);
  // mac(2) has nothing: mac(1) has nothing either but fetches, so it is worth following.
  assert.equal(kind(s.pick(mac(2), 0)), `peer ${mac(1)}`);
  s.offerPartial(mac(2), '10.0.0.102', 8470, 0, 0);
  // mac(3) follows mac(2) (mac(1) is full).
  assert.equal(kind(s.pick(mac(3), 0)), `peer ${mac(2)}`);
  s.offerPartial(mac(3), '10.0.0.103', 8470, 0, 0);
  // mac(1)'s link stalls; it asks again with 5 blocks: the server is taken, and mac(2)
  // and mac(3) are behind it (and fed by it: a ring), so it waits.
  s.offerPartial(mac(1), '10.0.0.101', 8470, 5, 1000);
  s.offerPartial(mac(2), '10.0.0.102', 8470, 7, 1000);
  assert.equal(
    kind(s.pick(mac(1), 1000, { url: SERVER, why: 'slow' }, 5)),
    'server',
    'its own slot, given back',
  );
  // A client with 3 blocks gets the one furthest ahead with room: mac(3) (mac(1) and mac(2) are full).
  s.offerPartial(mac(3), '10.0.0.103', 8470, 4, 1000);
  assert.equal(kind(s.pick(mac(4), 1000, undefined, 3)), `peer ${mac(3)}`);
  // Slow (it trickles, or waits on its own source): out for goneMs, like one that does not answer.
  const url3 = 'http://10.0.0.103:8470/phase1/payload';
  assert.equal(kind(s.pick(mac(4), 1500, { url: url3, why: 'slow' }, 3)), 'wait');
  assert.equal(kind(s.pick(mac(5), 1500, undefined, 0)), 'wait', 'not offered to anyone');
  s.offerPartial(mac(3), '10.0.0.103', 8470, 6, 1600);
  assert.equal(
    kind(s.pick(mac(5), 1600, undefined, 0)),
    'wait',
    'its heartbeats do not bring it back at once',
  );
  // An agent (all of it) goes before any stage 0, and is not undone by a late heartbeat.
  s.offer(mac(2), '10.0.0.102', 8470, 2000);
  s.offerPartial(mac(2), '10.0.0.102', 8470, 9, 2001);
  s.arrived(mac(3));
  assert.deepEqual(s.pick(mac(6), 2002), {
    kind: 'peer',
    url: 'http://10.0.0.102:8470/phase1/payload',
    peer: mac(2),
  });
});

test('a wrong block bans the address: the liar cannot come back under another MAC', () => {
  const s = new PhaseOneSources(SERVER, { serverSlots: 0 });
  s.offer(mac(1), '10.0.0.66', 8470, 0);
  const liar = 'http://10.0.0.66:8470/phase1/payload';
  assert.equal(kind(s.pick(mac(2), 0)), `peer ${mac(1)}`);
  assert.equal(kind(s.pick(mac(2), 1, { url: liar, why: 'bad' })), 'wait');
  s.offer(mac(9), '10.0.0.66', 8470, 2);
  s.offerPartial(mac(8), '10.0.0.66', 8470, 20, 2);
  assert.equal(kind(s.pick(mac(3), 3)), 'wait', 'same address, new MACs: still banned');
});

test('stage 0 heartbeats: a stage 0 says how far it is without taking a source', () => {
  let now = 0;
  const s = new PhaseOneSourcing(SERVER, silentLogger, { serverSlots: 1 }, () => now);
  const a = s.answer(mac(1), '10.0.0.101', undefined, { port: 8470, have: 0, heartbeat: false });
  assert.equal(a.kind === 'get' && a.url, `${SERVER}?mac=${mac(1)}`);
  now = 2000;
  assert.deepEqual(s.answer(mac(1), '10.0.0.101', undefined, { port: 8470, have: 6, heartbeat: true }), {
    kind: 'wait',
    seconds: 0,
  });
  // Still its own server fetch (a heartbeat is not a question), and mac(2) follows it.
  const b = s.answer(mac(2), '10.0.0.102', undefined, { port: 8470, have: 0, heartbeat: false });
  assert.equal(b.kind === 'get' && b.url, 'http://10.0.0.101:8470/phase1/payload');
});

test('hostile reports: only the source a client was sent to can be reported by it; one address is at most two sources', () => {
  const s = new PhaseOneSources(SERVER, { serverSlots: 0, perPeer: 4 });
  s.offer(mac(1), '10.0.0.101', 8470, 0);
  const honest = 'http://10.0.0.101:8470/phase1/payload';
  // mac(9) was never sent to mac(1): its report changes nothing.
  s.pick(mac(9), 0, { url: honest, why: 'bad' });
  assert.equal(kind(s.pick(mac(2), 1)), `peer ${mac(1)}`);
  // Made-up MACs from one address: two entries, no more.
  for (let i = 20; i < 60; i++) s.offerPartial(mac(i), '10.0.0.66', 8470, 30, 2);
  assert.equal(s.list(3).filter((p) => p.url.includes('10.0.0.66')).length, 2);
});
