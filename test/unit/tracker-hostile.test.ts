/**
 * Issue #14 item 5: one address registered 15,400 peers in a swarm (the peer
 * id is the client's choice, so a new one per announce made a new peer), and
 * every announce swept every swarm and shuffled a full copy of its own. Each
 * test is named after what broke.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { isBootTorrentError } from '../../src/errors.js';
import { TRACKER_LIMITS } from '../../src/limits.js';
import { announce } from '../../src/tracker/client.js';
import { TrackerServer } from '../../src/tracker/server.js';
import type { TrackerServerOptions } from '../../src/tracker/server.js';
import type { AnnounceRequest, AnnounceResponse } from '../../src/tracker/types.js';

const HASH = createHash('sha1').update('boottorrent hostile tracker test').digest();
const ATTACKER = '10.0.0.66';

function req(extra: Partial<AnnounceRequest> = {}): AnnounceRequest {
  return {
    infoHash: HASH,
    peerId: randomBytes(20),
    port: 6881,
    uploaded: 0,
    downloaded: 0,
    left: 100,
    event: 'started',
    ...extra,
  };
}

function tracker(t: TestContext, options: TrackerServerOptions = {}) {
  const warnings: string[] = [];
  const clock = { now: 1_000_000 };
  const server = new TrackerServer(
    { host: '127.0.0.1', port: 0, ...options },
    { logger: { debug() {}, warn: (m) => warnings.push(m) }, now: () => clock.now },
  );
  t.after(() => server.close());
  return { server, warnings, clock };
}

/** The announce's answer, or the refusal's message. */
function tryAnnounce(server: TrackerServer, r: AnnounceRequest, ip: string): AnnounceResponse | string {
  try {
    return server.announce(r, ip, 'udp');
  } catch (err) {
    assert.ok(isBootTorrentError(err, 'BT_ERR_TRACKER_FAILURE'), String(err));
    return err.message;
  }
}

/** The refusal's message, or 'accepted'. */
const why = (r: AnnounceResponse | string): string => (typeof r === 'string' ? r : 'accepted');

test('15,000 announces with random peer ids from one address keep it at the cap; another address still gets in and gets peers', (t) => {
  const { server, warnings } = tracker(t);
  server.add(HASH);
  let refused = 0;
  for (let i = 0; i < 15_000; i++) {
    const r = tryAnnounce(server, req({ port: 1024 + (i % 60_000) }), ATTACKER);
    if (typeof r === 'string') {
      assert.match(r, /too many peers from your address/);
      refused++;
    }
  }
  const cap = TRACKER_LIMITS.peersPerIp;
  const peers = server.swarms()[0]!.peers;
  assert.equal(peers.filter((p) => p.ip === ATTACKER).length, cap);
  assert.equal(refused, 15_000 - cap);
  // Refusals are counted, not logged one line each.
  assert.equal(warnings.filter((w) => /announce refused/.test(w)).length, 1);
  assert.match(warnings[0] ?? '', new RegExp(`source=${ATTACKER.replaceAll('.', '\\.')}`));

  // An honest peer from another address gets in and is given peers.
  const honest = tryAnnounce(server, req({ port: 7000 }), '10.0.0.7');
  assert.ok(typeof honest !== 'string', `refused: ${why(honest)}`);
  assert.equal(honest.peers.length, 50);
  assert.equal(honest.incomplete, cap + 1);
  // A peer already in keeps announcing at the cap.
  const known = server.swarms()[0]!.peers.find((p) => p.ip === ATTACKER)!;
  const again = tryAnnounce(
    server,
    req({ peerId: Buffer.from(known.peerId, 'hex'), event: 'none', left: 0 }),
    ATTACKER,
  );
  assert.ok(typeof again !== 'string', `refused: ${why(again)}`);
  assert.equal(again.complete, 1);
});

test('the caps across swarms, per swarm and on swarms refuse with a clear reason; a stopped peer frees its place', (t) => {
  const { server } = tracker(t, {
    open: true,
    peersPerIp: 3,
    peersPerIpAllSwarms: 5,
    peersPerSwarmTotal: 4,
    peersTotal: 7,
    swarmsTotal: 3,
  });
  const hashes = [1, 2, 3, 4].map((i) => createHash('sha1').update(`swarm ${i}`).digest());
  const ids: Buffer[] = [];
  const add = (h: Buffer, ip: string) => {
    const peerId = randomBytes(20);
    ids.push(peerId);
    return tryAnnounce(server, req({ infoHash: h, peerId }), ip);
  };
  for (let i = 0; i < 3; i++) assert.equal(typeof add(hashes[0]!, ATTACKER), 'object');
  assert.match(why(add(hashes[0]!, ATTACKER)), /from your address in this torrent \(at most 3\)/);
  for (let i = 0; i < 2; i++) assert.equal(typeof add(hashes[1]!, ATTACKER), 'object');
  assert.match(why(add(hashes[2]!, ATTACKER)), /from your address on this tracker \(at most 5\)/);
  assert.equal(typeof add(hashes[0]!, '10.0.0.1'), 'object');
  assert.match(why(add(hashes[0]!, '10.0.0.2')), /swarm is full \(4 peers\)/);
  assert.equal(typeof add(hashes[2]!, '10.0.0.2'), 'object');
  assert.match(why(add(hashes[1]!, '10.0.0.3')), /tracker is full \(7 peers\)/);
  // A stopped peer frees its place in every count.
  tryAnnounce(server, req({ infoHash: hashes[0]!, peerId: ids[0]!, event: 'stopped' }), ATTACKER);
  assert.equal(typeof add(hashes[0]!, ATTACKER), 'object');
  tryAnnounce(server, req({ infoHash: hashes[0]!, peerId: ids.at(-1)!, event: 'stopped' }), ATTACKER);
  assert.match(why(add(hashes[3]!, '10.0.0.3')), /tracker is full \(3 torrents\)/);
  assert.deepEqual(
    server
      .swarms()
      .map((s) => s.peers.length)
      .sort(),
    [1, 2, 3],
  );
});

for (const proto of ['http', 'udp'] as const) {
  test(`${proto}: an announce over the per-address cap gets a failure reason naming it`, async (t) => {
    const { server } = tracker(t, { peersPerIp: 2 });
    server.add(HASH);
    const { port } = await server.listen();
    const url = `${proto}://127.0.0.1:${port}/announce`;
    await announce(url, req(), { timeoutMs: 5000 });
    await announce(url, req(), { timeoutMs: 5000 });
    await assert.rejects(
      announce(url, req(), { timeoutMs: 5000 }),
      (err: unknown) =>
        isBootTorrentError(err, 'BT_ERR_TRACKER_FAILURE') &&
        /too many peers from your address/.test(err.message),
    );
  });
}

test('an announce neither sweeps every swarm nor walks its own swarm', (t) => {
  const { server } = tracker(t, { open: true, peersPerIp: 10_000, peersPerIpAllSwarms: 10_000 });
  // 200 other swarms, and one of 4,000 peers.
  for (let i = 0; i < 200; i++) {
    const h = createHash('sha1').update(`other ${i}`).digest();
    tryAnnounce(server, req({ infoHash: h }), `10.1.0.${i}`);
  }
  // Leechers listen on 20000 + n, seeders on 30000 + n.
  for (let i = 0; i < 4000; i++) {
    const port = (i % 2 === 1 ? 20_000 : 30_000) + (i >> 1);
    tryAnnounce(server, req({ left: i % 2, port }), `10.2.${i >> 8}.${i & 255}`);
  }
  let sweeps = 0;
  const sweep = server.sweep.bind(server);
  server.sweep = () => {
    sweeps++;
    sweep();
  };
  // Count every walk over a big Map (the swarm table has 201 entries, the swarm 4,000).
  const walks = { n: 0 };
  const proto = Map.prototype as unknown as Record<string | symbol, (...a: unknown[]) => unknown>;
  const names = ['values', 'entries', 'keys', 'forEach', Symbol.iterator] as const;
  const originals = names.map((k) => proto[k]!);
  names.forEach((k, i) => {
    proto[k] = function (this: Map<unknown, unknown>, ...a: unknown[]) {
      if (this.size >= 200) walks.n++;
      return originals[i]!.apply(this, a);
    };
  });
  let replies: AnnounceResponse[];
  try {
    // A leecher (port 25000, in the leechers' range), then a seeder.
    replies = [1, 0].map((left) =>
      server.announce(req({ left, port: left ? 25_000 : 35_000 }), '10.3.0.1', 'udp'),
    );
  } finally {
    names.forEach((k, i) => (proto[k] = originals[i]!));
  }
  assert.equal(sweeps, 0, 'announces swept the swarm table');
  assert.equal(walks.n, 0, 'announces walked a whole swarm');
  for (const r of replies) {
    assert.equal(r.peers.length, 50);
    assert.equal(new Set(r.peers.map((p) => `${p.ip}:${p.port}`)).size, 50, 'no peer twice');
  }
  // A seeder (left 0) is given leechers first.
  assert.ok(replies[1]!.peers.every((p) => p.port >= 20_000 && p.port < 30_000));
});

test('silent peers are expired by the timer, without any announce', async (t) => {
  const { server, clock } = tracker(t, { peerTimeoutMs: 100 });
  server.add(HASH);
  await server.listen();
  tryAnnounce(server, req(), '10.0.0.7');
  clock.now += 1000;
  const expired = new Promise<string>((resolve) => server.once('peer-expired', (e) => resolve(e.peer.ip)));
  assert.equal(await expired, '10.0.0.7');
  // Its place is free again: the counts followed.
  assert.equal(server.swarms()[0]!.peers.length, 0);
});

test('a reply samples the whole swarm at random: every peer is handed out over many announces', (t) => {
  const { server } = tracker(t);
  server.add(HASH);
  for (let i = 0; i < 200; i++) tryAnnounce(server, req({ port: 10_000 + i }), `10.4.0.${i}`);
  const seen = new Set<number>();
  const asker = req({ numWant: 10, port: 9000 });
  for (let i = 0; i < 400; i++) {
    const got = server.announce({ ...asker, event: 'none' }, '10.5.0.1', 'udp');
    assert.equal(got.peers.length, 10);
    assert.ok(!got.peers.some((p) => p.port === 9000), 'the asker is never given itself');
    for (const p of got.peers) seen.add(p.port);
  }
  // 400 draws of 10 out of 200: the odds that some peer is never drawn are below 1e-6.
  for (let i = 0; i < 200; i++) assert.ok(seen.has(10_000 + i), `peer ${i} was never handed out`);
});

test('a throwing peer-expired listener is logged and does not end the process', async (t) => {
  const { server, clock, warnings } = tracker(t, { peerTimeoutMs: 100 });
  server.add(HASH);
  const { port } = await server.listen();
  server.on('peer-expired', () => {
    throw new Error('listener bug');
  });
  tryAnnounce(server, req(), '10.0.0.7');
  clock.now += 1000;
  const giveUp = Date.now() + 20_000;
  while (!warnings.some((w) => /expiring silent peers failed/.test(w))) {
    assert.ok(Date.now() < giveUp, 'the sweep timer never ran or its fault was not logged');
    await new Promise((r) => setTimeout(r, 20));
  }
  const r = await announce(`udp://127.0.0.1:${port}/announce`, req(), { timeoutMs: 5000 });
  assert.equal(r.incomplete, 1);
});
