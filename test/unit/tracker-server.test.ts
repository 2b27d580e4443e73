import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import type { Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { isBootTorrentError } from '../../src/errors.js';
import { TrackerClient, announce, scrape } from '../../src/tracker/client.js';
import { TrackerServer } from '../../src/tracker/server.js';
import type { AnnounceEventInfo, PeerExpiredInfo } from '../../src/tracker/server.js';
import type { AnnounceRequest } from '../../src/tracker/types.js';
import {
  decodeUdpRequest,
  decodeUdpResponse,
  encodeUdpRequest,
  encodeUdpResponse,
} from '../../src/tracker/udp-codec.js';

const HASH = createHash('sha1').update('boottorrent tracker test').digest();
const OTHER = createHash('sha1').update('not served').digest();
const idOf = (s: string): Buffer => Buffer.from(s.padEnd(20, '0').slice(0, 20), 'latin1');

function req(
  peer: string,
  port: number,
  left: number,
  event: AnnounceRequest['event'],
  extra: Partial<AnnounceRequest> = {},
) {
  return { infoHash: HASH, peerId: idOf(peer), port, uploaded: 0, downloaded: 0, left, event, ...extra };
}

async function startServer(
  t: TestContext,
  opts: ConstructorParameters<typeof TrackerServer>[0] = {},
  now?: () => number,
) {
  const warnings: string[] = [];
  const server = new TrackerServer(
    { host: '127.0.0.1', port: 0, ...opts },
    { logger: { debug() {}, warn: (m) => warnings.push(m) }, ...(now ? { now } : {}) },
  );
  const { port } = await server.listen();
  t.after(() => server.close());
  return { server, port, warnings };
}

for (const proto of ['http', 'udp'] as const) {
  test(`${proto}: announce, peers without self, scrape counts, completed, stopped`, async (t) => {
    const { server, port } = await startServer(t);
    server.add(HASH);
    const url = proto === 'http' ? `http://127.0.0.1:${port}/announce` : `udp://127.0.0.1:${port}/announce`;
    const events: AnnounceEventInfo[] = [];
    server.on('announce', (e) => events.push(e));

    const a1 = await announce(url, req('-BT0001-a', 7001, 100, 'started'), { timeoutMs: 5000 });
    assert.deepEqual(a1.peers, []);
    assert.equal(a1.incomplete, 1);
    assert.equal(a1.complete, 0);

    const b1 = await announce(url, req('-BT0001-b', 7002, 0, 'started'), { timeoutMs: 5000 });
    assert.deepEqual(
      b1.peers.map((p) => [p.ip, p.port]),
      [['127.0.0.1', 7001]],
    );
    assert.equal(b1.complete, 1);
    assert.equal(b1.incomplete, 1);

    const a2 = await announce(url, req('-BT0001-a', 7001, 50, 'none', { downloaded: 50 }), {
      timeoutMs: 5000,
    });
    assert.deepEqual(
      a2.peers.map((p) => [p.ip, p.port]),
      [['127.0.0.1', 7002]],
    );

    let s = await scrape(url, { infoHashes: [HASH] }, { timeoutMs: 5000 });
    assert.deepEqual(s.files.get(HASH.toString('hex')), { complete: 1, downloaded: 0, incomplete: 1 });

    await announce(url, req('-BT0001-a', 7001, 0, 'completed', { downloaded: 100 }), { timeoutMs: 5000 });
    s = await scrape(url, { infoHashes: [HASH] }, { timeoutMs: 5000 });
    assert.deepEqual(s.files.get(HASH.toString('hex')), { complete: 2, downloaded: 1, incomplete: 0 });

    const swarm = server.swarms().find((w) => w.infoHash === HASH.toString('hex'));
    assert.ok(swarm);
    const a = swarm.peers.find((p) => p.peerIdText.startsWith('-BT0001-a'));
    assert.ok(a);
    assert.equal(a.ip, '127.0.0.1');
    assert.equal(a.port, 7001);
    assert.equal(a.downloaded, 100);
    assert.equal(a.left, 0);
    assert.equal(a.completed, true);
    assert.equal(a.transport, proto);

    await announce(url, req('-BT0001-a', 7001, 0, 'stopped'), { timeoutMs: 5000 });
    s = await scrape(url, { infoHashes: [HASH] }, { timeoutMs: 5000 });
    assert.deepEqual(s.files.get(HASH.toString('hex')), { complete: 1, downloaded: 1, incomplete: 0 });
    assert.deepEqual(
      server.swarms()[0]?.peers.map((p) => p.port),
      [7002],
    );
    assert.deepEqual(
      events.map((e) => e.event),
      ['started', 'started', 'none', 'completed', 'stopped'],
    );
  });

  test(`${proto}: unknown infohash is refused when the tracker is not open`, async (t) => {
    const { port } = await startServer(t);
    const url = `${proto}://127.0.0.1:${port}/announce`;
    await assert.rejects(
      announce(url, { ...req('-BT0001-a', 7001, 1, 'started'), infoHash: OTHER }, { timeoutMs: 5000 }),
      (err: unknown) =>
        isBootTorrentError(err, 'BT_ERR_TRACKER_FAILURE') && /unknown infohash/.test(err.message),
    );
  });

  test(`${proto}: an open tracker serves any infohash`, async (t) => {
    const { server, port } = await startServer(t, { open: true });
    const url = `${proto}://127.0.0.1:${port}/announce`;
    await announce(url, { ...req('-BT0001-a', 7001, 1, 'started'), infoHash: OTHER }, { timeoutMs: 5000 });
    assert.deepEqual(
      server.swarms().map((s) => [s.infoHash, s.leechers]),
      [[OTHER.toString('hex'), 1]],
    );
  });
}

test('http: non-compact announce returns peer ids; the ip parameter is used only when trusted', async (t) => {
  for (const [trustIpParam, expectIp] of [
    [false, '127.0.0.1'],
    [true, '10.9.8.7'],
  ] as const) {
    const { server, port } = await startServer(t, { trustIpParam });
    server.add(HASH);
    const url = `http://127.0.0.1:${port}/announce`;
    await announce(url, req('-BT0001-a', 7001, 1, 'started', { ip: '10.9.8.7' }), { timeoutMs: 5000 });
    const r = await announce(url, req('-BT0001-b', 7002, 1, 'started', { compact: false }), {
      timeoutMs: 5000,
    });
    assert.deepEqual(r.peers, [{ ip: expectIp, port: 7001, peerId: idOf('-BT0001-a') }]);
  }
});

test('silent peers expire (injected clock) and peer-expired is emitted', async (t) => {
  let clock = 1_000_000;
  const { server, port } = await startServer(t, { peerTimeoutMs: 1000 }, () => clock);
  server.add(HASH);
  const expired: PeerExpiredInfo[] = [];
  server.on('peer-expired', (e) => expired.push(e));
  const url = `http://127.0.0.1:${port}/announce`;
  await announce(url, req('-BT0001-a', 7001, 1, 'started'), { timeoutMs: 5000 });
  clock += 600;
  await announce(url, req('-BT0001-b', 7002, 1, 'started'), { timeoutMs: 5000 });
  clock += 600; // a is now 1200 ms silent, b 600 ms
  const swarm = server.swarms()[0];
  assert.deepEqual(
    swarm?.peers.map((p) => p.port),
    [7002],
  );
  assert.equal(expired.length, 1);
  assert.equal(expired[0]?.peer.port, 7001);
  const r = await announce(url, req('-BT0001-c', 7003, 1, 'started'), { timeoutMs: 5000 });
  assert.deepEqual(
    r.peers.map((p) => p.port),
    [7002],
  );
});

test('udp: garbage, forged connection ids and bad magic do not crash the server nor log a line per packet', async (t) => {
  const { server, port, warnings } = await startServer(t);
  server.add(HASH);
  const sock = createSocket('udp4');
  t.after(() => sock.close());
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  const replies: Buffer[] = [];
  sock.on('message', (m) => replies.push(m));
  const send = (b: Buffer): Promise<void> =>
    new Promise((resolve, reject) =>
      sock.send(b, port, '127.0.0.1', (err) => (err ? reject(err) : resolve())),
    );
  for (let i = 0; i < 50; i++) await send(randomBytes(i * 7));
  await send(Buffer.alloc(16)); // connect with protocol id 0
  // An announce with a made-up connection id must be answered with an error, not served.
  await send(
    encodeUdpRequest({
      action: 'announce',
      connectionId: 42n,
      transactionId: 77,
      request: req('-BT0001-x', 1, 1, 'started'),
    }),
  );
  await send(encodeUdpRequest({ action: 'connect', transactionId: 78 }));
  while (replies.length < 2) await once(sock, 'message');
  const decoded = replies.map((b) => decodeUdpResponse(b));
  const err = decoded.find((d) => d.transactionId === 77);
  assert.ok(err && err.action === 'error' && /connection id/.test(err.message));
  assert.equal(decoded.find((d) => d.transactionId === 78)?.action, 'connect');
  // One line for the source with a count, not one per packet (issue #14).
  const dropped = warnings.filter((w) => /dropped bad UDP packet/.test(w));
  assert.equal(dropped.length, 1, warnings.join('\n'));
  assert.match(dropped[0]!, /source=127\.0\.0\.1/);
  assert.deepEqual(server.swarms()[0]?.peers, []);
  // Still serving.
  const r = await announce(`udp://127.0.0.1:${port}`, req('-BT0001-a', 7001, 1, 'started'), {
    timeoutMs: 5000,
  });
  assert.equal(r.incomplete, 1);
});

/** A fake BEP 15 tracker that drops the first `dropConnects` connect requests. */
async function fakeUdpTracker(t: TestContext, dropConnects: number, strayFirst = false) {
  const sock: UdpSocket = createSocket('udp4');
  t.after(() => sock.close());
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  const seen: { action: string; transactionId: number }[] = [];
  sock.on('message', (m, rinfo) => {
    const r = decodeUdpRequest(m);
    seen.push({ action: r.action, transactionId: r.transactionId });
    const reply = (b: Buffer): void => void sock.send(b, rinfo.port, rinfo.address);
    if (r.action === 'connect') {
      if (seen.filter((s) => s.action === 'connect').length <= dropConnects) return;
      // A reply with a wrong transaction id first: the client must ignore it.
      if (strayFirst)
        reply(
          encodeUdpResponse({
            action: 'connect',
            transactionId: (r.transactionId + 1) >>> 0,
            connectionId: 1n,
          }),
        );
      reply(
        encodeUdpResponse({
          action: 'connect',
          transactionId: r.transactionId,
          connectionId: 0x1122334455667788n,
        }),
      );
    } else if (r.action === 'announce') {
      assert.equal(r.connectionId, 0x1122334455667788n);
      reply(
        encodeUdpResponse({
          action: 'announce',
          transactionId: r.transactionId,
          interval: 30,
          incomplete: 0,
          complete: 1,
          peers: [{ ip: '127.0.0.2', port: 6881 }],
        }),
      );
    }
  });
  return { port: sock.address().port, seen };
}

test('udp client retransmits a lost connect with the same transaction id, then reuses the connection id', async (t) => {
  const fake = await fakeUdpTracker(t, 1, true);
  const client = new TrackerClient({ udpRetransmitBaseMs: 200 });
  t.after(() => client.close());
  const url = `udp://127.0.0.1:${fake.port}/announce`;
  const r = await client.announce(url, req('-BT0001-a', 7001, 1, 'started'), { timeoutMs: 10_000 });
  assert.deepEqual(r.peers, [{ ip: '127.0.0.2', port: 6881 }]);
  await client.announce(url, req('-BT0001-a', 7001, 1, 'none'), { timeoutMs: 10_000 });
  const connects = fake.seen.filter((s) => s.action === 'connect');
  assert.equal(connects.length, 2, 'one lost connect, one answered, none for the second announce');
  assert.equal(connects[0]?.transactionId, connects[1]?.transactionId);
  assert.equal(fake.seen.filter((s) => s.action === 'announce').length, 2);
});

test('udp client gives up with BT_ERR_TRACKER_TIMEOUT and obeys AbortSignal', async (t) => {
  const fake = await fakeUdpTracker(t, Infinity);
  const url = `udp://127.0.0.1:${fake.port}`;
  await assert.rejects(
    announce(url, req('-BT0001-a', 7001, 1, 'started'), { udpRetransmitBaseMs: 20, udpMaxRetransmits: 2 }),
    (err: unknown) => isBootTorrentError(err, 'BT_ERR_TRACKER_TIMEOUT') && /3 UDP attempts/.test(err.message),
  );
  assert.equal(fake.seen.length, 3);
  const ac = new AbortController();
  const p = announce(url, req('-BT0001-a', 7001, 1, 'started'), {
    signal: ac.signal,
    udpRetransmitBaseMs: 60_000,
  });
  setImmediate(() => ac.abort());
  await assert.rejects(p, (err: unknown) => isBootTorrentError(err, 'BT_ERR_ABORTED'));
});

test('http client: 404 is a clear protocol error; a dead port is unreachable', async (t) => {
  const { server, port } = await startServer(t);
  server.add(HASH);
  await assert.rejects(
    announce(`http://127.0.0.1:${port}/nothing-here`, req('-BT0001-a', 7001, 1, 'started'), {
      timeoutMs: 5000,
    }),
    (err: unknown) => isBootTorrentError(err, 'BT_ERR_TRACKER_PROTOCOL') && /HTTP 404/.test(err.message),
  );
  await server.close();
  await assert.rejects(
    announce(`http://127.0.0.1:${port}/announce`, req('-BT0001-a', 7001, 1, 'started'), { timeoutMs: 5000 }),
    (err: unknown) => isBootTorrentError(err, 'BT_ERR_TRACKER_UNREACHABLE'),
  );
});

test('listen on a port in use rejects with BT_ERR_LISTEN naming host:port and the fix', async (t) => {
  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  t.after(() => blocker.close());
  const addr = blocker.address();
  assert.ok(addr && typeof addr === 'object');
  const tracker = new TrackerServer({ host: '127.0.0.1', port: addr.port });
  await assert.rejects(
    tracker.listen(),
    (err: unknown) =>
      isBootTorrentError(err, 'BT_ERR_LISTEN') &&
      err.message.includes(`127.0.0.1:${addr.port}`) &&
      /EADDRINUSE.*--port/.test(err.message),
  );
  await tracker.close();
});

test('swarm totals keep what peers uploaded after they stop or expire', async (t) => {
  let clock = 1_000_000;
  const { server, port } = await startServer(t, { peerTimeoutMs: 1000 }, () => clock);
  server.add(HASH);
  const url = `http://127.0.0.1:${port}/announce`;
  await announce(url, req('-BT0001-a', 7001, 0, 'started', { uploaded: 500, downloaded: 100 }), {
    timeoutMs: 5000,
  });
  await announce(url, req('-BT0001-b', 7002, 0, 'started', { uploaded: 70, downloaded: 100 }), {
    timeoutMs: 5000,
  });
  await announce(url, req('-BT0001-a', 7001, 0, 'stopped', { uploaded: 900, downloaded: 100 }), {
    timeoutMs: 5000,
  });
  let swarm = server.swarms()[0]!;
  assert.equal(swarm.peers.length, 1);
  assert.equal(swarm.uploaded, 970, 'a (gone, last said 900) + b (70)');
  assert.equal(swarm.downloaded, 200);
  clock += 2000; // b expires
  swarm = server.swarms()[0]!;
  assert.equal(swarm.peers.length, 0);
  assert.equal(swarm.uploaded, 970);
  // b comes back with its running totals: counted once, not twice.
  await announce(url, req('-BT0001-b', 7002, 0, 'none', { uploaded: 80, downloaded: 100 }), {
    timeoutMs: 5000,
  });
  assert.equal(server.swarms()[0]!.uploaded, 980);
});

test("locality: up to half of a reply are peers of the announcer's /24, the rest from the whole swarm", () => {
  for (const localityPrefix of [24, false] as const) {
    const server = new TrackerServer({ localityPrefix, peersPerIp: 1000, peersPerIpAllSwarms: 1000 });
    server.add(HASH);
    // 100 peers on ten other subnets, 5 on the announcer's.
    for (let i = 0; i < 100; i++) {
      server.announce(req(`-BT0001-far${i}`, 7000 + i, 1, 'started'), `10.2.${i % 10}.${10 + i}`, 'http');
    }
    for (let i = 0; i < 5; i++)
      server.announce(req(`-BT0001-near${i}`, 7200 + i, 1, 'started'), `10.1.0.${20 + i}`, 'http');
    // A local seed too: a leecher wants it like anyone; to a seeder only leechers are offered first.
    server.announce(req('-BT0001-nearseed', 7300, 0, 'started'), '10.1.0.30', 'http');
    const r = server.announce(req('-BT0001-me', 7400, 1, 'started', { numWant: 12 }), '10.1.0.99', 'http');
    const near = r.peers.filter((p) => p.ip.startsWith('10.1.0.'));
    assert.equal(r.peers.length, 12);
    assert.equal(new Set(r.peers.map((p) => `${p.ip}:${p.port}`)).size, 12, 'no peer twice');
    assert.ok(!r.peers.some((p) => p.ip === '10.1.0.99'), 'not the announcer itself');
    if (localityPrefix === 24) {
      assert.equal(near.length, 6, 'every neighbour (6 of them, at most 12/2) is in the reply');
      const s = server.announce(
        req('-BT0001-seedme', 7401, 0, 'started', { numWant: 12 }),
        '10.1.0.98',
        'http',
      );
      const sNear = s.peers.filter((p) => p.ip.startsWith('10.1.0.'));
      assert.ok(
        sNear.length >= 6 && !sNear.some((p) => p.ip === '10.1.0.30'),
        'a seeder gets its local leechers, not the local seed, first',
      );
    }
    // Leaving drops a peer from its subnet's list too: a stopped neighbour is never offered again.
    for (let i = 0; i < 5; i++)
      server.announce(req(`-BT0001-near${i}`, 7200 + i, 1, 'stopped'), `10.1.0.${20 + i}`, 'http');
    const after = server.announce(req('-BT0001-me', 7400, 1, 'none', { numWant: 200 }), '10.1.0.99', 'http');
    assert.deepEqual(
      after.peers.filter((p) => /^10\.1\.0\.2\d$/.test(p.ip)),
      [],
      `${String(localityPrefix)}: stopped neighbours gone`,
    );
  }
  assert.throws(() => new TrackerServer({ localityPrefix: 33 }), /localityPrefix/);
});
