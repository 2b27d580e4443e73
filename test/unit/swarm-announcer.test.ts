import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Announcer, type AnnouncerServices } from '../../src/swarm/announcer.js';
import { silentLogger } from '../../src/util/logger.js';
import type { AnnounceRequest, AnnounceResponse } from '../../src/tracker/types.js';
import { TrackerClient } from '../../src/tracker/client.js';
import { TrackerServer } from '../../src/tracker/server.js';
import { join } from 'node:path';
import { TorrentSession } from '../../src/swarm/session.js';
import { newPeerId } from '../../src/swarm/client.js';
import { seedImage } from '../helpers/image.js';
import { tempDir } from '../helpers/tmp.js';
import { waitUntil } from '../helpers/wait.js';

type Reply = Partial<AnnounceResponse> | Error;

/** An announcer over a scripted tracker and a hand-moved clock. */
function setup(
  opts: {
    trackers?: string[];
    startedComplete?: boolean;
    replies?: Record<string, Reply[]>;
    eagerMs?: number;
    wantsPeers?: () => boolean;
  } = {},
) {
  const calls: { url: string; req: AnnounceRequest; timeoutMs?: number }[] = [];
  const peers: string[] = [];
  const warnings: string[] = [];
  const clock = { t: 1_000_000 };
  let stopped = false;
  const replies = opts.replies ?? {};
  const tracker: AnnouncerServices['tracker'] = {
    announce: (url: string, req: AnnounceRequest, o?: { timeoutMs?: number; signal?: AbortSignal }) => {
      calls.push({ url, req, ...(o?.timeoutMs !== undefined ? { timeoutMs: o.timeoutMs } : {}) });
      const r = replies[url]?.shift() ?? { interval: 60 };
      if (r instanceof Error) return Promise.reject(r);
      return Promise.resolve({ interval: 60, complete: 0, incomplete: 0, peers: [], ...r });
    },
  };
  const a = new Announcer(
    {
      infoHash: Buffer.alloc(20, 1),
      infoHashHex: '01'.repeat(20),
      peerId: Buffer.alloc(20, 2),
      port: 6881,
      trackers: opts.trackers ?? ['udp://t1:1', 'http://t2/announce'],
      key: 42,
      startedComplete: opts.startedComplete ?? false,
      eagerMs: opts.eagerMs,
    },
    {
      logger: silentLogger,
      tracker,
      progress: () => ({ uploaded: 5, downloaded: 7, left: 9 }),
      onPeer: (ip, port, source) => peers.push(`${source.kind} ${ip}:${port}`),
      onWarning: (m) => warnings.push(m),
      stopped: () => stopped,
      now: () => clock.t,
      ...(opts.wantsPeers ? { wantsPeers: opts.wantsPeers } : {}),
    },
  );
  return { a, calls, peers, warnings, clock, stop: () => (stopped = true) };
}

test('the first tracker that answers is used; its interval (at least 5 s) sets the next announce', async () => {
  const rows: {
    name: string;
    replies: Record<string, Reply[]>;
    urls: string[];
    next: number;
    warnings: number;
  }[] = [
    { name: 'first answers', replies: {}, urls: ['udp://t1:1'], next: 60_000, warnings: 0 },
    {
      name: 'first fails, second answers',
      replies: { 'udp://t1:1': [new Error('timeout')] },
      urls: ['udp://t1:1', 'http://t2/announce'],
      next: 60_000,
      warnings: 1,
    },
    {
      name: 'interval under 5 s',
      replies: { 'udp://t1:1': [{ interval: 1 }] },
      urls: ['udp://t1:1'],
      next: 5000,
      warnings: 0,
    },
  ];
  for (const row of rows) {
    const s = setup({ replies: row.replies });
    await s.a.announce('started');
    assert.deepEqual(
      s.calls.map((c) => c.url),
      row.urls,
      row.name,
    );
    assert.equal(s.a.nextAnnounceAt - s.clock.t, row.next, row.name);
    assert.equal(s.warnings.length, row.warnings, row.name);
    const req = s.calls[0]!.req;
    assert.deepEqual(
      [req.event, req.uploaded, req.downloaded, req.left, req.numWant, req.key, req.port],
      ['started', 5, 7, 9, 80, 42, 6881],
      row.name,
    );
  }
});

test('when no tracker answers, the next announce backs off from 4 s to a minute; one warning until one answers again', async () => {
  const fail = () => Array.from({ length: 8 }, () => new Error('down'));
  const s = setup({ trackers: ['udp://t1:1'], replies: { 'udp://t1:1': fail() } });
  const waits: number[] = [];
  for (let i = 0; i < 7; i++) {
    await s.a.announce('none');
    waits.push(s.a.nextAnnounceAt - s.clock.t);
  }
  assert.deepEqual(waits, [4000, 8000, 16_000, 32_000, 60_000, 60_000, 60_000]);
  assert.equal(s.warnings.length, 1);
});

test('tick announces only when due and none is under way', async () => {
  const s = setup({ trackers: ['udp://t1:1'] });
  s.a.tick();
  assert.equal(s.calls.length, 0, 'nothing scheduled before the first announce');
  await s.a.announce('started');
  s.a.tick();
  assert.equal(s.calls.length, 1, 'not due yet');
  s.clock.t += 60_000;
  s.a.tick();
  s.a.tick();
  assert.equal(s.calls.length, 2, 'due: one announce, not one per tick');
  assert.equal(s.calls[1]!.req.event, 'none');
});

test('eager: while peers are wanted it announces again after eagerMs, never before min interval, not after a failure', async () => {
  const rows: {
    name: string;
    wants: boolean;
    reply: Reply;
    /** Milliseconds after the answer at which a tick first announces (undefined: not within 10 s). */
    first: number | undefined;
  }[] = [
    { name: 'wants peers, no min interval', wants: true, reply: { interval: 1800 }, first: 3000 },
    {
      name: 'wants peers, min interval 7 s',
      wants: true,
      reply: { interval: 1800, minInterval: 7 },
      first: 7000,
    },
    { name: 'has enough peers', wants: false, reply: { interval: 1800 }, first: undefined },
    { name: 'the tracker failed: backoff rules', wants: true, reply: new Error('down'), first: 4000 },
  ];
  for (const row of rows) {
    const s = setup({
      trackers: ['udp://t1:1'],
      replies: { 'udp://t1:1': [row.reply] },
      eagerMs: 3000,
      wantsPeers: () => row.wants,
    });
    await s.a.announce('started');
    const t0 = s.clock.t;
    let first: number | undefined;
    for (let ms = 0; ms <= 10_000 && first === undefined; ms += 500) {
      s.clock.t = t0 + ms;
      s.a.tick();
      if (s.calls.length > 1) first = ms;
    }
    assert.equal(first, row.first, row.name);
  }
});

test('completed goes out once, and never for a torrent that started complete', async () => {
  const s = setup({ trackers: ['udp://t1:1'] });
  await s.a.announce('completed');
  await s.a.announce('completed');
  assert.equal(s.calls.length, 1);
  const seed = setup({ trackers: ['udp://t1:1'], startedComplete: true });
  await seed.a.announce('completed');
  assert.equal(seed.calls.length, 0);
});

test('stopped wants no peers, waits 2 s at most, tries every tracker and adds no candidates', async () => {
  const s = setup({
    replies: {
      'udp://t1:1': [new Error('down')],
      'http://t2/announce': [{ peers: [{ ip: '10.0.0.9', port: 1 }] }],
    },
  });
  s.stop();
  await s.a.announce('stopped');
  assert.deepEqual(
    s.calls.map((c) => [c.url, c.req.numWant, c.timeoutMs]),
    [
      ['udp://t1:1', 0, 2000],
      ['http://t2/announce', 0, 2000],
    ],
  );
  assert.deepEqual(s.peers, []);
  assert.equal(s.warnings.length, 0);
});

test("a tracker's peers become candidates; a failure after stop says nothing", async () => {
  const s = setup({
    replies: {
      'udp://t1:1': [
        {
          peers: [
            { ip: '10.0.0.1', port: 6881 },
            { ip: '10.0.0.2', port: 6882 },
          ],
        },
      ],
    },
  });
  await s.a.announce('started');
  assert.deepEqual(s.peers, ['tracker 10.0.0.1:6881', 'tracker 10.0.0.2:6882']);
  const t = setup({ replies: { 'udp://t1:1': [new Error('aborted')] } });
  t.stop();
  await t.a.announce('none');
  assert.equal(t.calls.length, 1);
  assert.equal(t.warnings.length, 0);
});

test('no trackers: nothing is announced', async () => {
  const s = setup({ trackers: [] });
  await s.a.announce('started');
  assert.equal(s.calls.length, 0);
  assert.equal(s.a.nextAnnounceAt, 0);
});

test('eager: each early announce doubles the wait for the next', async () => {
  const s = setup({ trackers: ['udp://t1:1'], eagerMs: 3000, wantsPeers: () => true });
  await s.a.announce('started');
  const at: number[] = [];
  const t0 = s.clock.t;
  for (let ms = 0; ms <= 50_000; ms += 500) {
    s.clock.t = t0 + ms;
    const before = s.calls.length;
    s.a.tick();
    await Promise.resolve();
    await Promise.resolve();
    if (s.calls.length > before) at.push(ms);
  }
  // Each answer comes at once (the scripted tracker): 3 s, then 6 s, 12 s and 24 s after the one before.
  assert.deepEqual(at, [3000, 9000, 21_000, 45_000]);
});

/** A member of the swarm that only announces (on `port`): the tracker counts it. */
function joinSwarm(client: TrackerClient, url: string, infoHash: Buffer, port: number) {
  return client.announce(url, {
    infoHash,
    peerId: Buffer.alloc(20, 9),
    port,
    uploaded: 0,
    downloaded: 0,
    left: 10,
    event: 'started',
    numWant: 0,
    key: 1,
  });
}

/**
 * An announcer for one tracker URL over a real TrackerClient, with a clock
 * moved by hand and every request kept in `sent` (settled, never rejected)
 * so a test can wait for all it sent.
 */
function overLoopback(
  client: TrackerClient,
  url: string,
  infoHash: Buffer,
  peerByte: number,
  wantsPeers: () => boolean,
) {
  const clock = { t: 5_000_000 };
  const sent: Promise<unknown>[] = [];
  const peers: string[] = [];
  const a = new Announcer(
    {
      infoHash,
      infoHashHex: infoHash.toString('hex'),
      peerId: Buffer.alloc(20, peerByte),
      port: 7000 + peerByte,
      trackers: [url],
      key: peerByte,
      startedComplete: false,
      eagerMs: 3000,
    },
    {
      logger: silentLogger,
      tracker: {
        announce: (u, req, o) => {
          const p = client.announce(u, req, o);
          sent.push(p.catch(() => undefined));
          return p;
        },
      },
      progress: () => ({ uploaded: 0, downloaded: 0, left: 10 }),
      onPeer: (ip, p) => peers.push(`${ip}:${p}`),
      onWarning: () => undefined,
      stopped: () => false,
      now: () => clock.t,
      wantsPeers,
    },
  );
  return { a, clock, sent, peers };
}

/**
 * The rules against a real tracker on loopback, HTTP and UDP: the Announcer
 * over a real TrackerClient, with the clock moved by hand. Every request is
 * awaited, so "no announce" is a fact, not a timeout.
 */
test('early re-announce against a tracker on loopback: interval, min interval, swarm size, backoff when it is gone', async (t) => {
  const server = new TrackerServer({
    host: '127.0.0.1',
    port: 0,
    open: true,
    intervalSeconds: 1800,
    minIntervalSeconds: 7,
  });
  const { port } = await server.listen();
  let closed = false;
  t.after(() => (closed ? undefined : server.close()));
  const client = new TrackerClient({ udpRetransmitBaseMs: 200, udpMaxRetransmits: 0, httpTimeoutMs: 2000 });
  const infoHash = Buffer.alloc(20, 7);
  // Another member of the swarm, so the tracker counts two.
  await joinSwarm(client, `http://127.0.0.1:${port}/announce`, infoHash, 7000);

  for (const url of [`http://127.0.0.1:${port}/announce`, `udp://127.0.0.1:${port}`]) {
    let wants = true;
    const { a, clock, sent, peers } = overLoopback(
      client,
      url,
      infoHash,
      url.startsWith('udp') ? 3 : 4,
      () => wants,
    );
    /** Moves the clock to `ms` after the first answer, ticks, and waits for whatever it sent. */
    const t0 = clock.t;
    const tickAt = async (ms: number) => {
      clock.t = t0 + ms;
      const n = sent.length;
      a.tick();
      await Promise.all(sent.slice(n));
      return sent.length - n;
    };
    await a.announce('started');
    assert.equal(sent.length, 1, url);
    assert.equal(a.nextAnnounceAt - t0, 1800 * 1000, `${url}: the tracker's interval`);
    assert.equal(a.swarmSize, url.startsWith('udp') ? 3 : 2, `${url}: the tracker counts the others and us`);
    assert.ok(peers.includes('127.0.0.1:7000'), `${url}: the other member is a candidate`);
    if (url.startsWith('http')) {
      // HTTP: min interval 7 s holds back the early announce due at 3 s.
      assert.equal(await tickAt(3000), 0, 'min interval');
      assert.equal(await tickAt(6500), 0, 'min interval');
      assert.equal(await tickAt(7000), 1, 'at min interval');
      // Next: 6 s after that answer (doubled), but min interval says 7.
      assert.equal(await tickAt(13_500), 0, 'doubled, and min interval again');
      assert.equal(await tickAt(14_000), 1, 'doubled wait within min interval');
    } else {
      // UDP (BEP 15) has no min interval: 3 s, then 6 s after that.
      assert.equal(await tickAt(2500), 0, 'not yet');
      assert.equal(await tickAt(3000), 1, 'early');
      assert.equal(await tickAt(8500), 0, 'doubled: not yet');
      assert.equal(await tickAt(9000), 1, 'doubled');
    }
    wants = false;
    assert.equal(await tickAt(600_000), 0, `${url}: enough peers: only the interval`);
    // The regular announce: the interval after the last answer.
    const due = a.nextAnnounceAt - t0;
    assert.equal(due, (url.startsWith('http') ? 14_000 : 9000) + 1800 * 1000, url);
    assert.equal(await tickAt(due - 500), 0, `${url}: the interval is not up`);
    assert.equal(await tickAt(due), 1, `${url}: the regular announce`);
  }

  // The tracker goes away: no early announce, the backoff (4 s, doubling) instead.
  await server.close();
  closed = true;
  const { a, clock, sent } = overLoopback(
    client,
    `http://127.0.0.1:${port}/announce`,
    infoHash,
    6,
    () => true,
  );
  await a.announce('started');
  assert.equal(a.nextAnnounceAt - clock.t, 4000, 'refused: retry in 4 s');
  clock.t += 3000;
  a.tick();
  assert.equal(sent.length, 1, 'no early announce while the tracker fails');
  clock.t += 1000;
  a.tick();
  await Promise.all(sent);
  assert.equal(sent.length, 2, 'the retry');
  assert.equal(a.nextAnnounceAt - clock.t, 8000, 'then 8 s');
});

test('a downloading session re-announces early while it has fewer peers than its tracker counts; a seed does not', async (t) => {
  const dir = tempDir(t);
  const { seedDir, meta } = await seedImage(dir, 3 * 16384, 16384);
  const server = new TrackerServer({ host: '127.0.0.1', port: 0, open: true, intervalSeconds: 1800 });
  const { port } = await server.listen();
  t.after(() => server.close());
  const url = `http://127.0.0.1:${port}/announce`;
  const real = new TrackerClient({ httpTimeoutMs: 2000 });
  // A member nobody can reach (nothing listens on port 1): the tracker counts it.
  await joinSwarm(real, url, meta.infoHash, 1);
  const counting = (events: string[]): TrackerClient =>
    ({
      announce: (u: string, req: AnnounceRequest, o?: { timeoutMs?: number; signal?: AbortSignal }) => {
        events.push(req.event);
        return real.announce(u, req, o);
      },
    }) as unknown as TrackerClient;
  const seedEvents: string[] = [];
  const leechEvents: string[] = [];
  const seed = new TorrentSession(
    { meta, dir: seedDir, mode: 'seed', peerId: newPeerId(), listenPort: 1, trackers: [url] },
    { trackerClient: counting(seedEvents) },
  );
  t.after(() => seed.stop());
  await seed.start();
  const leech = new TorrentSession(
    { meta, dir: join(dir, 'leech'), mode: 'download', peerId: newPeerId(), listenPort: 1, trackers: [url] },
    { trackerClient: counting(leechEvents) },
  );
  t.after(() => leech.stop());
  await leech.start();
  // The leecher reaches no one (the others "listen" on port 1) while the
  // tracker counts three: it asks again 5 s after its first answer, where
  // the interval (30 min) would have it wait.
  await waitUntil(() => leechEvents.length >= 2, 15_000, "the leecher's early announce");
  assert.deepEqual(leechEvents.slice(0, 2), ['started', 'none']);
  await new Promise((r) => setTimeout(r, 1500));
  assert.deepEqual(seedEvents, ['started'], 'a seed wants no peers: only its regular announces');
});
