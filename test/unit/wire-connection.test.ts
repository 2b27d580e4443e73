import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { duplexPair, type PipeEnd } from '../helpers/duplex.js';
import { PeerConnection, type PeerConnectionOptions } from '../../src/wire/connection.js';
import { Bitfield } from '../../src/wire/bitfield.js';
import { encodeHandshake, encodeMessage, reservedBytes, HANDSHAKE_LENGTH } from '../../src/wire/codec.js';
import { isBootTorrentError, type BootTorrentError, type ErrorCode } from '../../src/errors.js';

const infoHash = createHash('sha1').update('wire-connection test torrent').digest();
const otherHash = createHash('sha1').update('a torrent nobody serves').digest();
const idA = Buffer.from('-BT0001-aaaaaaaaaaaa');
const idB = Buffer.from('-BT0001-bbbbbbbbbbbb');

function errorOf(conn: PeerConnection): Promise<BootTorrentError> {
  return once(conn, 'error').then(([err]) => err as BootTorrentError);
}

/** Like events.once, but does not reject when the emitter emits 'error' meanwhile. */
function waitFor(emitter: NodeJS.EventEmitter, event: string): Promise<unknown[]> {
  return new Promise((resolve) => emitter.once(event, (...args: unknown[]) => resolve(args)));
}

function isCode(code: ErrorCode, pattern = /./) {
  return (err: unknown) => isBootTorrentError(err, code) && pattern.test(err.message);
}

/** A torrent's content split into pieces and 16 KiB blocks. */
const BLOCK = 16384;
const PIECE_LENGTH = 2 * BLOCK;
const data = Buffer.alloc(3 * PIECE_LENGTH + 1000);
for (let i = 0; i < data.length; i++) data[i] = (i * 7 + (i >> 8)) & 0xff;
const pieceCount = Math.ceil(data.length / PIECE_LENGTH);

/**
 * The seeder side: answers interest with unchoke and requests with pieces,
 * as the swarm engine will. Piece blocks are sent as views of `data`.
 */
function serve(seeder: PeerConnection, announce: Bitfield): void {
  seeder.on('handshake', () => {
    seeder.announcePieces(announce);
  });
  seeder.on('interested', () => {
    seeder.unchoke();
  });
  seeder.on('request', (m) => {
    seeder.piece(
      m.index,
      m.begin,
      data.subarray(m.index * PIECE_LENGTH + m.begin, m.index * PIECE_LENGTH + m.begin + m.length),
    );
  });
}

/** The leecher side: becomes interested, waits for unchoke, requests every block, checks each piece. */
async function download(leecher: PeerConnection): Promise<Buffer> {
  if (!leecher.isOpen) await once(leecher, 'handshake');
  const out = Buffer.alloc(data.length);
  let pending = 0;
  const done = new Promise<void>((resolve, reject) => {
    leecher.on('piece', (m) => {
      m.block.copy(out, m.index * PIECE_LENGTH + m.begin);
      if (--pending === 0) resolve();
    });
    leecher.once('close', () => reject(new Error('closed before the download finished')));
  });
  leecher.on('unchoke', () => {
    for (let index = 0; index < pieceCount; index++) {
      const len = Math.min(PIECE_LENGTH, data.length - index * PIECE_LENGTH);
      for (let begin = 0; begin < len; begin += BLOCK) {
        pending++;
        leecher.request(index, begin, Math.min(BLOCK, len - begin));
      }
    }
  });
  leecher.interested();
  await done;
  return out;
}

function pair(
  a: Partial<PeerConnectionOptions> = {},
  b: Partial<PeerConnectionOptions> = {},
  streams: [Duplex, Duplex] = duplexPair(),
): [PeerConnection, PeerConnection] {
  const initiator = new PeerConnection(streams[0], {
    peerId: idA,
    initiator: true,
    infoHash,
    pieceCount,
    ...a,
  });
  const responder = new PeerConnection(streams[1], {
    peerId: idB,
    initiator: false,
    infoHash,
    pieceCount,
    ...b,
  });
  return [initiator, responder];
}

test('two connections in memory: handshake, have-all, interested, unchoke, request, piece', async (t) => {
  const [leecher, seeder] = pair({}, { onInfoHash: (h) => Promise.resolve(h.equals(infoHash)) });
  t.after(() => {
    leecher.destroy();
    seeder.destroy();
  });
  serve(seeder, Bitfield.full(pieceCount));
  // Both listeners go on first: the two messages may arrive in one tick.
  const handshake = once(leecher, 'handshake') as Promise<[NonNullable<PeerConnection['remote']>]>;
  const haveAll = once(leecher, 'have-all');
  const [remote] = await handshake;
  assert.deepEqual(remote.peerId, idB);
  assert.ok(remote.fast && remote.extended);
  await haveAll;
  assert.ok(leecher.remoteBitfield?.hasAll());
  const got = await download(leecher);
  assert.deepEqual(got, data);
  assert.equal(leecher.peerChoking, false);
  assert.equal(leecher.amInterested, true);
  assert.equal(seeder.peerInterested, true);
  assert.equal(seeder.amChoking, false);
  assert.deepEqual(seeder.remote?.peerId, idA);
  assert.deepEqual(seeder.infoHash, infoHash);
});

test('without BEP 6 a partial seeder sends a BEP 3 bitfield that the peer decodes', async (t) => {
  const [leecher, seeder] = pair({ fast: false });
  t.after(() => {
    leecher.destroy();
    seeder.destroy();
  });
  const some = new Bitfield(pieceCount);
  some.set(1);
  some.set(3);
  serve(seeder, some);
  const [msg] = (await once(leecher, 'bitfield')) as unknown[];
  assert.deepEqual(msg, { type: 'bitfield', bits: Buffer.from([0x50]) });
  assert.equal(leecher.fast, false);
  assert.deepEqual([...leecher.remoteBitfield!.indices()], [1, 3]);
  assert.throws(() => leecher.haveAll(), isCode('BT_ERR_WIRE_STATE', /BEP 6 was not negotiated/));
  const got = once(leecher, 'have');
  seeder.have(0);
  const have = await got;
  assert.deepEqual(have, [{ type: 'have', index: 0 }]);
  assert.deepEqual([...leecher.remoteBitfield!.indices()], [0, 1, 3]);
});

test('the same exchange over a real TCP socket pair on 127.0.0.1', async (t) => {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  const port = (server.address() as net.AddressInfo).port;
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const client = net.connect(port, '127.0.0.1');
  const [socket] = await accepted;
  const [leecher, seeder] = pair({}, {}, [client, socket]);
  t.after(() => {
    leecher.destroy();
    seeder.destroy();
  });
  serve(seeder, Bitfield.full(pieceCount));
  assert.deepEqual(await download(leecher), data);
});

test('extended handshake and PEX travel between two connections', async (t) => {
  const [a, b] = pair();
  t.after(() => {
    a.destroy();
    b.destroy();
  });
  await Promise.all([once(a, 'handshake'), once(b, 'handshake')]);
  const got = once(b, 'extended-handshake');
  a.sendExtendedHandshake({ m: new Map([['ut_pex', 3]]), v: 'A 1.0', reqq: 500, yourip: '127.0.0.1' });
  const [h] = (await got) as [NonNullable<PeerConnection['remoteExtensions']>];
  assert.deepEqual(h.m, new Map([['ut_pex', 3]]));
  assert.equal(h.v, 'A 1.0');
  assert.equal(b.remoteExtensions?.reqq, 500);

  // The peer has not enabled ut_pex: nothing is sent, and nothing throws (remote state, issue #14).
  assert.equal(a.sendPex({ added: [], dropped: [] }), false);
  const gotB = once(a, 'extended-handshake');
  b.sendExtendedHandshake({ m: new Map([['ut_pex', 7]]) });
  await gotB;
  const pex = {
    added: [{ host: '10.1.2.3', port: 6881, flags: 2 }],
    dropped: [{ host: '10.9.9.9', port: 1 }],
  };
  // b addresses a by a's advertised id 3; a's advertised id routes the payload to `pex`.
  const both = Promise.all([once(a, 'extended'), once(a, 'pex')]);
  b.sendPex(pex);
  const [raw, decoded] = await both;
  assert.equal((raw[0] as { id: number }).id, 3);
  assert.deepEqual(decoded, [pex]);
});

/** Opens a responder fed by a hand-driven raw stream; returns the raw end and the connection. */
function rawInitiator(opts: Partial<PeerConnectionOptions> = {}): { raw: PipeEnd; conn: PeerConnection } {
  const [raw, end] = duplexPair();
  const conn = new PeerConnection(end, { peerId: idB, initiator: false, infoHash, pieceCount, ...opts });
  return { raw, conn };
}

const handshakeBytes = (hash = infoHash, reserved = reservedBytes({ fast: true, extended: true })) =>
  encodeHandshake({ reserved, infoHash: hash, peerId: idA });

test('a malformed message closes that connection and only it', async (t) => {
  const listenerSide = { onInfoHash: (h: Buffer) => h.equals(infoHash) };
  const bad = rawInitiator(listenerSide);
  const [goodA, goodB] = pair({}, listenerSide);
  t.after(() => {
    bad.conn.destroy();
    goodA.destroy();
    goodB.destroy();
  });
  await once(goodB, 'handshake');
  const errs: unknown[] = [];
  goodA.on('error', (e) => errs.push(e));
  goodB.on('error', (e) => errs.push(e));

  const error = errorOf(bad.conn);
  const closed = waitFor(bad.conn, 'close');
  const rawEnded = waitFor(bad.raw, 'end');
  bad.raw.resume();
  // Handshake, a good `interested`, then `have` with 3 payload bytes.
  bad.raw.write(
    Buffer.concat([
      handshakeBytes(),
      encodeMessage({ type: 'interested' }),
      Buffer.from('0000000404000001', 'hex'),
    ]),
  );
  assert.ok(isCode('BT_ERR_WIRE_PROTOCOL', /have message with 3 payload bytes/)(await error));
  await closed;
  await rawEnded; // the peer saw its connection closed
  assert.ok(bad.conn.destroyed);
  assert.equal(bad.conn.peerInterested, true, 'the message before the bad one was processed');

  // The other connection is untouched and still talks.
  assert.ok(goodA.isOpen && goodB.isOpen);
  const interested = once(goodB, 'interested');
  goodA.interested();
  const m = await interested;
  assert.deepEqual(m, [{ type: 'interested' }]);
  assert.deepEqual(errs, []);
});

test('more protocol violations each close the connection with BT_ERR_WIRE_PROTOCOL', async () => {
  const over = Buffer.alloc(4);
  over.writeUInt32BE(2 ** 20 + 14);
  const cases: [Buffer, Partial<PeerConnectionOptions>, RegExp][] = [
    [over, {}, /exceeds the limit/],
    [encodeMessage({ type: 'have', index: pieceCount }), {}, /have for piece 4, torrent has 4/],
    [encodeMessage({ type: 'bitfield', bits: Buffer.from([0xff]) }), {}, /spare bits/],
    [encodeMessage({ type: 'have-all' }), { fast: false }, /BEP 6 was not negotiated/],
    [encodeMessage({ type: 'extended', id: 0, payload: Buffer.from('le') }), {}, /not a dictionary/],
    [encodeMessage({ type: 'extended', id: 0, payload: Buffer.from('de') }), { extended: false }, /BEP 10/],
  ];
  // Each case follows a good handshake; the last replaces the handshake itself.
  const steps = cases.map(
    ([bytes, opts, re]) => [Buffer.concat([handshakeBytes(), bytes]), opts, re] as const,
  );
  steps.push([Buffer.from('GET / HTTP/1.1\r\n\r\n'.repeat(4)), {}, /not a BitTorrent handshake/]);
  for (const [bytes, opts, pattern] of steps) {
    const { raw, conn } = rawInitiator(opts);
    const err = errorOf(conn);
    raw.resume();
    raw.write(bytes);
    assert.ok(isCode('BT_ERR_WIRE_PROTOCOL', pattern)(await err), pattern.source);
    assert.ok(conn.destroyed);
  }
});

test('the responder refuses an unknown infohash without sending its handshake', async () => {
  for (const onInfoHash of [
    (h: Buffer) => h.equals(infoHash),
    (h: Buffer) => Promise.resolve(h.equals(infoHash)),
  ]) {
    const { raw, conn } = rawInitiator({ infoHash: undefined, onInfoHash });
    const received: Buffer[] = [];
    raw.on('data', (c: Buffer) => received.push(c));
    const err = errorOf(conn);
    const ended = waitFor(raw, 'end');
    raw.write(handshakeBytes(otherHash));
    assert.ok(isCode('BT_ERR_WIRE_UNKNOWN_TORRENT', new RegExp(otherHash.toString('hex')))(await err));
    await ended;
    assert.deepEqual(received, [], 'nothing was sent back');
  }
  // An initiating PeerConnection sees the refusal as a close during the handshake.
  const [a, b] = pair({ infoHash: otherHash }, { infoHash: undefined, onInfoHash: () => false });
  const [errA, errB] = await Promise.all([errorOf(a), errorOf(b)]);
  assert.ok(isCode('BT_ERR_WIRE_CLOSED', /during the handshake/)(errA));
  assert.ok(isCode('BT_ERR_WIRE_UNKNOWN_TORRENT')(errB));
});

test('handshake and messages fed one byte at a time; bitfield held until the piece count is known', async (t) => {
  const { raw, conn } = rawInitiator({ pieceCount: undefined });
  t.after(() => conn.destroy());
  raw.resume();
  const bytes = Buffer.concat([
    handshakeBytes(),
    encodeMessage({ type: 'bitfield', bits: Buffer.from([0x90]) }),
    encodeMessage({ type: 'have', index: 2 }),
    encodeMessage({ type: 'unchoke' }),
  ]);
  const unchoke = once(conn, 'unchoke');
  for (let i = 0; i < bytes.length; i++) {
    raw.write(bytes.subarray(i, i + 1));
    await new Promise((r) => setImmediate(r));
    if (i === HANDSHAKE_LENGTH - 2) assert.equal(conn.remote, null);
  }
  await unchoke;
  assert.deepEqual(conn.remote?.peerId, idA);
  assert.equal(conn.remoteBitfield, null);
  conn.setPieceCount(4);
  assert.deepEqual([...conn.remoteBitfield!.indices()], [0, 2, 3]);
  assert.equal(conn.peerChoking, false);
});

test('regression: aria2c sends have-none, then a bitfield instead of a have; it adds to the known pieces', async (t) => {
  const { raw, conn } = rawInitiator();
  t.after(() => conn.destroy());
  raw.resume();
  const second = waitFor(conn, 'bitfield');
  raw.write(
    Buffer.concat([
      handshakeBytes(),
      encodeMessage({ type: 'extended', id: 0, payload: Buffer.from('d1:md11:ut_metadatai9eee') }),
      encodeMessage({ type: 'have-none' }),
      encodeMessage({ type: 'have', index: 3 }),
      encodeMessage({ type: 'bitfield', bits: Buffer.from([0x40]) }), // the bytes aria2c 1.36 sent
    ]),
  );
  await second;
  // Pieces never go away (BEP 3): the late bitfield adds piece 1 to piece 3.
  assert.deepEqual([...conn.remoteBitfield!.indices()], [1, 3]);
  assert.ok(conn.isOpen);
});

test('keep-alives are sent when idle, and a silent peer times out', async (t) => {
  const [a, b] = pair({ keepAliveInterval: 20 }, { keepAliveInterval: 60_000, idleTimeout: 60_000 });
  t.after(() => {
    a.destroy();
    b.destroy();
  });
  await once(b, 'keep-alive');
  await once(b, 'keep-alive');
  assert.ok(b.isOpen);

  // A peer that completes the handshake and then says nothing.
  const { raw, conn } = rawInitiator({ idleTimeout: 50 });
  raw.resume();
  raw.write(handshakeBytes());
  assert.ok(isCode('BT_ERR_WIRE_TIMEOUT', /nothing received/)(await errorOf(conn)));
  // And one that never finishes its handshake.
  const slow = rawInitiator({ handshakeTimeout: 50 });
  slow.raw.resume();
  slow.raw.write(handshakeBytes().subarray(0, 30));
  assert.ok(isCode('BT_ERR_WIRE_TIMEOUT', /handshake/)(await errorOf(slow.conn)));
});

test('destroy() cleans up: close once, no error, later sends are dropped; abort signal works', async () => {
  const [a, b] = pair();
  await once(a, 'handshake');
  let closes = 0;
  a.on('close', () => closes++);
  const bClosed = waitFor(b, 'close');
  a.destroy();
  a.destroy();
  assert.equal(closes, 1);
  assert.equal(a.interested(), false);
  await bClosed; // b closes on the end of its stream, without an error
  assert.ok(b.destroyed);

  const ac = new AbortController();
  const [c, d] = pair({ signal: ac.signal });
  await once(c, 'handshake');
  const cClosed = waitFor(c, 'close');
  ac.abort();
  await cClosed;
  d.destroy();
  assert.throws(
    () => new PeerConnection(duplexPair()[0], { peerId: idA, initiator: true }),
    isCode('BT_ERR_WIRE_STATE', /needs infoHash/),
  );
});

test('backpressure: writableNeedDrain and drained() follow the stream', async (t) => {
  const [a, b] = pair({}, {}, duplexPair(1024));
  t.after(() => {
    a.destroy();
    b.destroy();
  });
  await Promise.all([once(a, 'handshake'), once(b, 'handshake')]);
  b.pause();
  let ok = true;
  let sent = 0;
  while (ok && sent < 1000) {
    ok = a.piece(0, 0, data.subarray(0, BLOCK));
    sent++;
  }
  assert.equal(ok, false, 'the stream asked us to wait');
  assert.ok(a.writableNeedDrain);
  assert.ok(a.bufferedAmount > 0);
  let received = 0;
  b.on('piece', () => received++);
  const drained = a.drained();
  b.resume();
  await drained;
  assert.equal(a.writableNeedDrain, false);
  await new Promise((r) => setImmediate(r));
  while (received < sent) await once(b, 'piece');
  assert.equal(received, sent);
});

test('haveMany: several have messages in one write arrive as separate haves', async (t) => {
  const [a, b] = pair();
  t.after(() => {
    a.destroy();
    b.destroy();
  });
  const hsB = once(b, 'handshake');
  await once(a, 'handshake');
  await hsB;
  a.haveNone();
  b.haveNone();
  const got: number[] = [];
  const all = new Promise<void>((resolve) =>
    b.on('have', (m) => {
      got.push(m.index);
      if (got.length === 3) resolve();
    }),
  );
  a.haveMany([2, 0, 3]);
  await all;
  assert.deepEqual(got, [2, 0, 3]);
  assert.deepEqual(
    [0, 1, 2, 3].map((i) => b.remoteBitfield?.get(i)),
    [true, false, true, true],
  );
});
