/**
 * A closed tracker (not `open`) answers only for its own infohashes (issue
 * #8): announces and scrapes for any other hash, over HTTP and UDP, are
 * refused or answered empty, and none of them creates a swarm, so a stranger
 * cannot use the lab's tracker for other torrents or grow its memory with
 * made-up hashes. (The refusal message itself is covered in
 * tracker-server.test.ts.)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { isBootTorrentError } from '../../src/errors.js';
import { announce, scrape } from '../../src/tracker/client.js';
import { TrackerServer } from '../../src/tracker/server.js';
import type { AnnounceRequest } from '../../src/tracker/types.js';

const SERVED = Buffer.alloc(20, 0x5e);

function req(infoHash: Buffer): AnnounceRequest {
  return {
    infoHash,
    peerId: randomBytes(20),
    port: 6881,
    uploaded: 0,
    downloaded: 0,
    left: 100,
    event: 'started',
  };
}

function httpStatus(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const r = request({ host: '127.0.0.1', port, path }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    r.on('error', reject);
    r.end();
  });
}

test('closed tracker: unknown infohashes get no swarm, no peers and no scrape entry over HTTP and UDP', async (t) => {
  const server = new TrackerServer({ host: '127.0.0.1', port: 0 });
  server.add(SERVED);
  const { port } = await server.listen();
  t.after(() => server.close());

  for (const proto of ['http', 'udp'] as const) {
    const url = `${proto}://127.0.0.1:${port}/announce`;
    await announce(url, req(SERVED), { timeoutMs: 5000 });
    // A stranger's torrents: each refused, none remembered.
    for (let i = 0; i < 50; i++) {
      await assert.rejects(announce(url, req(randomBytes(20)), { timeoutMs: 5000 }), (err: unknown) =>
        isBootTorrentError(err, 'BT_ERR_TRACKER_FAILURE'),
      );
    }
    const unknown = randomBytes(20);
    const s = await scrape(url, { infoHashes: [unknown] }, { timeoutMs: 5000 });
    const entry = s.files.get(unknown.toString('hex'));
    assert.ok(
      entry === undefined || (entry.complete === 0 && entry.incomplete === 0 && entry.downloaded === 0),
    );
  }
  assert.deepEqual(
    server.swarms().map((s) => s.infoHash),
    [SERVED.toString('hex')],
    'only the served torrent has a swarm',
  );
  // BEP 48 "scrape everything" lists only what the tracker serves.
  const all = await scrape(`http://127.0.0.1:${port}/announce`, { infoHashes: [] }, { timeoutMs: 5000 });
  assert.deepEqual([...all.files.keys()], [SERVED.toString('hex')]);
  // A query string past the 8 KiB limit is refused before it is parsed.
  assert.equal(await httpStatus(port, `/announce?info_hash=${'%41'.repeat(3000)}`), 414);
});
