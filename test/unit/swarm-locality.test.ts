// Locality (issue #21 item 4): a peer on our subnet is asked first, and a
// peer on another subnet only for what no local peer that unchokes us has.
// Three engines over in-memory streams that carry the addresses a socket
// would (localAddress on our end, the label as the peer's IP).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TorrentSession } from '../../src/swarm/session.js';
import { newPeerId } from '../../src/swarm/client.js';
import { PeerConnection } from '../../src/wire/connection.js';
import { once } from 'node:events';
import { sameNetwork } from '../../src/util/address.js';
import { duplexPair } from '../helpers/duplex.js';
import { tempDir } from '../helpers/tmp.js';
import { seedImage } from '../helpers/image.js';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

test('sameNetwork: IPv4 by prefix, IPv4-mapped, IPv6 by /64, families apart', () => {
  assert.equal(sameNetwork('10.1.2.3', '10.1.2.200', 24), true);
  assert.equal(sameNetwork('10.1.2.3', '10.1.3.3', 24), false);
  assert.equal(sameNetwork('10.1.2.3', '10.1.3.3', 16), true);
  assert.equal(sameNetwork('10.1.2.3', '10.1.2.3', 32), true);
  assert.equal(sameNetwork('10.1.2.3', '10.1.2.4', 32), false);
  assert.equal(sameNetwork('::ffff:10.1.2.3', '10.1.2.9', 24), true);
  assert.equal(sameNetwork('fd00:1:2:3::5', 'fd00:1:2:3:aa::1', 24), true);
  assert.equal(sameNetwork('fd00:1:2:3::5', 'fd00:1:2:4::5', 24), false);
  assert.equal(sameNetwork('fd00::1', '10.0.0.1', 0), false);
  assert.equal(sameNetwork('not-an-ip', '10.0.0.1', 24), false);
});

/** Connects two sessions in memory, each end showing the addresses a socket between `aIp` and `bIp` would. */
function link(a: TorrentSession, aIp: string, b: TorrentSession, bIp: string): void {
  const [x, y] = duplexPair();
  Object.assign(x, { localAddress: aIp });
  Object.assign(y, { localAddress: bIp });
  a.connectStream(x, bIp, true);
  b.connectStream(y, aIp, false);
}

for (const locality of [undefined, false] as const) {
  test(`locality ${locality === false ? 'off' : 'on'}: a remote seed is asked ${locality === false ? 'for anything' : 'only for what no local peer has'}`, async (t) => {
    const dir = tempDir(t);
    const pieceLength = 16384;
    const pieces = 64;
    const { seedDir, data, meta } = await seedImage(dir, pieces * pieceLength, pieceLength);
    // The neighbour holds the first 48 pieces; the rest of its file is zeros.
    const partDir = join(dir, 'neighbour');
    mkdirSync(partDir);
    const part = Buffer.alloc(data.length);
    data.copy(part, 0, 0, 48 * pieceLength);
    writeFileSync(join(partDir, 'image.bin'), part);

    const remoteSeed = new TorrentSession({
      meta,
      dir: seedDir,
      mode: 'seed',
      peerId: newPeerId(),
      listenPort: 1,
    });
    const neighbour = new TorrentSession({
      meta,
      dir: partDir,
      mode: 'download',
      peerId: newPeerId(),
      listenPort: 2,
    });
    const leecher = new TorrentSession({
      meta,
      dir: join(dir, 'leech'),
      mode: 'download',
      peerId: newPeerId(),
      listenPort: 3,
      ...(locality === false ? { locality: false } : {}),
    });
    t.after(() => Promise.all([remoteSeed.stop(), neighbour.stop(), leecher.stop()]));
    await Promise.all([remoteSeed.start(), neighbour.start(), leecher.start()]);
    assert.equal(neighbour.stats().piecesHave, 48);
    // The neighbour first, so it has unchoked us before the seed's blocks flow.
    link(leecher, '10.5.1.20', neighbour, '10.5.1.21');
    const deadline = Date.now() + 10_000;
    while (!(leecher.stats().peers[0]?.peerChoking === false) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.deepEqual(
      leecher.stats().peers.map((p) => [p.address.split(':')[0], p.local]),
      [['10.5.1.21', locality !== false]],
    );
    link(leecher, '10.5.1.20', remoteSeed, '10.5.2.9');
    await leecher.whenComplete();
    assert.equal(sha256(readFileSync(join(dir, 'leech', 'image.bin'))), sha256(data));
    // The seed serves only the leecher: what it uploaded came over the "router".
    const fromRemote = remoteSeed.stats().uploaded;
    const onlyRemote = 16 * pieceLength;
    if (locality === false) {
      // Control: without locality the remote seed, being faster in memory, is asked for shared pieces too.
      assert.ok(fromRemote > onlyRemote, `remote sent ${fromRemote} B, expected more than ${onlyRemote}`);
    } else {
      assert.equal(fromRemote, onlyRemote, 'the remote seed sent exactly the pieces the neighbour lacks');
    }
  });
}

for (const liarMode of ['never sends', 'rejects every request'] as const) {
  test(`a neighbour that claims every piece, unchokes and ${liarMode} does not keep us from the remote seed`, async (t) => {
    const dir = tempDir(t);
    const { seedDir, data, meta } = await seedImage(dir, 32 * 16384, 16384);
    const remoteSeed = new TorrentSession({
      meta,
      dir: seedDir,
      mode: 'seed',
      peerId: newPeerId(),
      listenPort: 1,
    });
    const leecher = new TorrentSession({
      meta,
      dir: join(dir, 'leech'),
      mode: 'download',
      peerId: newPeerId(),
      listenPort: 3,
    });
    t.after(() => Promise.all([remoteSeed.stop(), leecher.stop()]));
    await Promise.all([remoteSeed.start(), leecher.start()]);
    // The liar: a raw connection on our subnet that says have-all, unchokes, and ignores every request.
    const [x, y] = duplexPair();
    Object.assign(y, { localAddress: '10.5.1.20' });
    leecher.connectStream(y, '10.5.1.66', false);
    const liar = new PeerConnection(x, { peerId: newPeerId(), initiator: true, infoHash: meta.infoHash });
    liar.on('error', () => {});
    t.after(() => liar.destroy());
    await once(liar, 'handshake');
    let asked = 0;
    liar.on('request', (m: { index: number; begin: number; length: number }) => {
      asked++;
      if (liarMode === 'rejects every request') liar.reject(m.index, m.begin, m.length);
    });
    liar.haveAll();
    liar.unchoke();
    const deadline = Date.now() + 10_000;
    while (asked === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.ok(asked > 0, 'the leecher asked its neighbour first');
    assert.deepEqual(
      leecher.stats().peers.map((p) => [p.address.split(':')[0], p.local, p.pieces]),
      [['10.5.1.66', true, 32]],
    );
    link(leecher, '10.5.1.20', remoteSeed, '10.5.2.9');
    // Bounded: before the fix the leecher waited on the liar for ever (the 30-s snub re-asked it).
    await Promise.race([
      leecher.whenComplete(),
      new Promise((_, reject) =>
        setTimeout(() => reject(new Error('no download within 60 s: stuck on the liar')), 60_000).unref(),
      ),
    ]);
    assert.equal(sha256(readFileSync(join(dir, 'leech', 'image.bin'))), sha256(data));
    assert.equal(remoteSeed.stats().uploaded, data.length, 'every piece came from the remote seed');
  });
}
