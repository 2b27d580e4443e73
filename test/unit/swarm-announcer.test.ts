import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Announcer, type AnnouncerServices } from '../../src/swarm/announcer.js';
import { silentLogger } from '../../src/util/logger.js';
import type { AnnounceRequest, AnnounceResponse } from '../../src/tracker/types.js';

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
