// The buffer reuse that keeps the engine's memory flat must never hand out
// bytes that changed under a reader: leased blocks survive eviction until
// released, a fresh download is checked without hashing its zeros, and a
// connection fed from one reused read buffer keeps nothing of it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createTorrent } from '../../src/torrent/create.js';
import { PieceStore } from '../../src/swarm/storage.js';
import { PeerConnection } from '../../src/wire/connection.js';
import { Bitfield } from '../../src/wire/bitfield.js';
import {
  HANDSHAKE_LENGTH,
  MessageDecoder,
  encodeExtendedHandshake,
  encodeHandshake,
  encodeMessage,
  reservedBytes,
  type WireMessage,
} from '../../src/wire/codec.js';
import { duplexPair } from '../helpers/duplex.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';

const PIECE = 32 * 1024;

test('leased blocks keep their bytes after eviction until released; then the buffer is reused', async (t) => {
  const dir = tempDir(t);
  const data = pseudoRandomBytes(4 * PIECE, 9);
  writeFileSync(join(dir, 'img'), data);
  const { meta } = await createTorrent(join(dir, 'img'), { pieceLength: PIECE });
  // A cache of one piece: every new piece evicts the previous one.
  const store = await PieceStore.open(meta, dir, { mode: 'seed', readCacheBytes: PIECE });
  t.after(() => store.close());
  const a = await store.leaseBlock(0, 0, 16384);
  const b = await store.leaseBlock(1, 16384, 16384); // evicts piece 0, which is still leased
  const c = await store.leaseBlock(2, 0, 16384); // evicts piece 1
  assert.ok(a.block.equals(data.subarray(0, 16384)), 'piece 0 block intact while leased');
  assert.ok(b.block.equals(data.subarray(PIECE + 16384, 2 * PIECE)));
  assert.ok(c.block.equals(data.subarray(2 * PIECE, 2 * PIECE + 16384)));
  const bufferOfA = a.block.buffer;
  a.release();
  a.release(); // idempotent
  b.release();
  const d = await store.leaseBlock(3, 0, 16384); // evicts piece 2; reuses a released buffer
  assert.ok(d.block.equals(data.subarray(3 * PIECE, 3 * PIECE + 16384)));
  assert.ok(
    d.block.buffer === bufferOfA || d.block.buffer === b.block.buffer,
    'a released buffer was reused',
  );
  assert.ok(c.block.equals(data.subarray(2 * PIECE, 2 * PIECE + 16384)), 'still-leased piece 2 untouched');
  // readBlock's views are never recycled.
  const keep = await store.readBlock(0, 0, 100);
  for (let i = 1; i <= 3; i++) (await store.leaseBlock(i, 0, 16)).release();
  assert.ok(keep.equals(data.subarray(0, 100)));
});

test('a fresh download is checked without reading it, and a piece of zeros counts as had', async (t) => {
  const dir = tempDir(t);
  const data = pseudoRandomBytes(3 * PIECE + 500, 4);
  data.fill(0, PIECE, 2 * PIECE); // piece 1 is all zeros
  mkdirSync(join(dir, 'src'));
  writeFileSync(join(dir, 'src', 'img'), data);
  const { meta } = await createTorrent(join(dir, 'src', 'img'), { pieceLength: PIECE });
  const store = await PieceStore.open(meta, join(dir, 'dl'), { mode: 'download' });
  t.after(() => store.close());
  const have = await store.verify();
  assert.deepEqual(
    Array.from({ length: meta.pieceCount }, (_, i) => have.get(i)),
    [false, true, false, false],
  );
});

function wire(msgs: WireMessage[]): Buffer {
  return Buffer.concat(msgs.map(encodeMessage));
}

test('feed(): messages from a reused read buffer keep no bytes of it; requestMany sends them all', async (t) => {
  const infoHash = createHash('sha1').update('buffers').digest();
  const [ours, theirs] = duplexPair();
  const conn = new PeerConnection(ours, {
    peerId: Buffer.from('-BT0100-aaaaaaaaaaaa'),
    initiator: true,
    infoHash,
    pieceCount: 20,
  });
  t.after(() => conn.destroy());
  // Everything the peer sends is fed through one 7-byte buffer, overwritten each time.
  ours.removeAllListeners('data');
  const bits = new Bitfield(20);
  bits.set(3);
  bits.set(17);
  const block = pseudoRandomBytes(16384, 3);
  const stream = Buffer.concat([
    encodeHandshake({
      reserved: reservedBytes({ extended: true }),
      infoHash,
      peerId: Buffer.from('-XX0001-bbbbbbbbbbbb'),
    }),
    wire([
      { type: 'bitfield', bits: bits.toBytes() },
      {
        type: 'extended',
        id: 0,
        payload: encodeExtendedHandshake({ m: new Map([['ut_pex', 3]]), v: 'peer' }),
      },
      { type: 'piece', index: 2, begin: 0, block },
      { type: 'piece', index: 2, begin: 16384, block },
    ]),
  ]);
  const got: WireMessage[] = [];
  const blocks: Buffer[] = [];
  conn.on('message', (m) => {
    got.push(m);
    if (m.type === 'piece') blocks.push(Buffer.from(m.block)); // copied at once, as the swarm does
  });
  const reused = Buffer.alloc(7);
  for (let at = 0; at < stream.length; at += reused.length) {
    const n = stream.copy(reused, 0, at, at + reused.length);
    conn.feed(reused.subarray(0, n));
    reused.fill(0xee);
  }
  assert.equal(conn.remote?.peerId.toString(), '-XX0001-bbbbbbbbbbbb');
  assert.deepEqual(
    got.map((m) => m.type),
    ['bitfield', 'extended', 'piece', 'piece'],
  );
  assert.ok(conn.remoteBitfield?.get(3) && conn.remoteBitfield.get(17) && !conn.remoteBitfield.get(4));
  const ext = got[1] as Extract<WireMessage, { type: 'extended' }>;
  assert.equal(
    ext.payload.toString('latin1'),
    encodeExtendedHandshake({ m: new Map([['ut_pex', 3]]), v: 'peer' }).toString('latin1'),
  );
  assert.equal(conn.remoteExtensions?.m.get('ut_pex'), 3);
  assert.equal(blocks.length, 2);
  for (const b of blocks) assert.ok(b.equals(block));

  // requestMany: every request, decoded back in order (after our handshake).
  const sent: Buffer[] = [];
  theirs.on('data', (d: Buffer) => sent.push(d));
  conn.requestMany([
    { index: 1, begin: 0, length: 16384 },
    { index: 1, begin: 16384, length: 16384 },
    { index: 7, begin: 0, length: 1000 },
  ]);
  await new Promise((r) => setImmediate(r));
  const all = Buffer.concat(sent).subarray(HANDSHAKE_LENGTH);
  const decoded = [...new MessageDecoder().push(all)].filter((m) => m.type === 'request');
  assert.deepEqual(decoded, [
    { type: 'request', index: 1, begin: 0, length: 16384 },
    { type: 'request', index: 1, begin: 16384, length: 16384 },
    { type: 'request', index: 7, begin: 0, length: 1000 },
  ]);
});
