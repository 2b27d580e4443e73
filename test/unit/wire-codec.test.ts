import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DEFAULT_MAX_MESSAGE_LENGTH,
  MessageDecoder,
  bytesToIp,
  decodeExtendedHandshake,
  decodeHandshake,
  decodeHandshakeHead,
  decodeMessage,
  decodePex,
  encodeExtendedHandshake,
  encodeHandshake,
  encodeMessage,
  encodePex,
  encodePieceHeader,
  ipToBytes,
  reservedBytes,
  supportsExtended,
  supportsFast,
  type WireMessage,
} from '../../src/wire/codec.js';
import { isBootTorrentError } from '../../src/errors.js';

/** Hex with spaces for readability, as the BEP tables are laid out. */
const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const latin1 = (s: string) => Buffer.from(s, 'latin1');
const isWireError = (pattern: RegExp) => (err: unknown) =>
  isBootTorrentError(err, 'BT_ERR_WIRE_PROTOCOL') && pattern.test(err.message);

const infoHash = hex('0102030405060708090a0b0c0d0e0f1011121314');
const peerId = latin1('-BT0001-abcdefghijkl');

test('handshake: BEP 3 layout, reserved bits of BEP 6 and BEP 10', () => {
  const reserved = reservedBytes({ fast: true, extended: true });
  assert.deepEqual(reserved, hex('00 00 00 00 00 10 00 04'));
  assert.deepEqual(reservedBytes({}), Buffer.alloc(8));
  const bytes = encodeHandshake({ reserved, infoHash, peerId });
  const expected = Buffer.concat([
    hex('13'),
    latin1('BitTorrent protocol'),
    hex('00 00 00 00 00 10 00 04'),
    infoHash,
    peerId,
  ]);
  assert.deepEqual(bytes, expected);
  const back = decodeHandshake(expected);
  assert.deepEqual(back, { reserved, infoHash, peerId });
  assert.ok(supportsFast(back.reserved) && supportsExtended(back.reserved));
  // DHT bit (BEP 5, reserved[7] & 0x01) alone means neither extension.
  const dhtOnly = hex('00 00 00 00 00 00 00 01');
  assert.ok(!supportsFast(dhtOnly) && !supportsExtended(dhtOnly));
  // The head is enough to learn the infohash.
  assert.deepEqual(decodeHandshakeHead(expected.subarray(0, 48)).infoHash, infoHash);
  const bad = Buffer.from(expected);
  bad[5] = 0x78; // 'BitTx...'
  assert.throws(() => decodeHandshake(bad), isWireError(/not a BitTorrent handshake/));
  bad[5] = expected[5]!;
  bad[0] = 18;
  assert.throws(() => decodeHandshake(bad), isWireError(/not a BitTorrent handshake/));
});

/** Every message with its bytes, built by hand from the BEP 3 / BEP 6 / BEP 10 tables. */
const VECTORS: [WireMessage, string][] = [
  [{ type: 'keep-alive' }, '00000000'],
  [{ type: 'choke' }, '00000001 00'],
  [{ type: 'unchoke' }, '00000001 01'],
  [{ type: 'interested' }, '00000001 02'],
  [{ type: 'not-interested' }, '00000001 03'],
  [{ type: 'have', index: 5 }, '00000005 04 00000005'],
  [{ type: 'bitfield', bits: hex('ff80') }, '00000003 05 ff80'],
  [{ type: 'request', index: 1, begin: 0x4000, length: 0x4000 }, '0000000d 06 00000001 00004000 00004000'],
  [{ type: 'piece', index: 1, begin: 0x4000, block: latin1('abc') }, '0000000c 07 00000001 00004000 616263'],
  [{ type: 'cancel', index: 2, begin: 0, length: 0x4000 }, '0000000d 08 00000002 00000000 00004000'],
  [{ type: 'port', port: 6881 }, '00000003 09 1ae1'],
  [{ type: 'suggest', index: 7 }, '00000005 0d 00000007'],
  [{ type: 'have-all' }, '00000001 0e'],
  [{ type: 'have-none' }, '00000001 0f'],
  [{ type: 'reject', index: 3, begin: 0x8000, length: 0x4000 }, '0000000d 10 00000003 00008000 00004000'],
  [{ type: 'allowed-fast', index: 9 }, '00000005 11 00000009'],
  [{ type: 'extended', id: 3, payload: latin1('d1:ai1ee') }, '0000000a 14 03 6431 3a61 6931 6565'],
  [{ type: 'extended', id: 0, payload: latin1('de') }, '00000004 14 00 6465'],
];

test('messages: byte vectors encode and decode both ways', () => {
  for (const [msg, bytes] of VECTORS) {
    assert.deepEqual(encodeMessage(msg), hex(bytes), `encode ${msg.type}`);
    assert.deepEqual(decodeMessage(hex(bytes)), msg, `decode ${msg.type}`);
  }
  assert.deepEqual(encodePieceHeader(1, 0x4000, 3), hex('0000000c 07 00000001 00004000'));
});

test('unknown message ids are passed up, not rejected', () => {
  assert.deepEqual(decodeMessage(hex('00000003 63 aabb')), {
    type: 'unknown',
    id: 0x63,
    payload: hex('aabb'),
  });
  const dec = new MessageDecoder();
  const got = [...dec.push(hex('00000001 63  00000005 04 00000001'))];
  assert.deepEqual(got, [
    { type: 'unknown', id: 0x63, payload: Buffer.alloc(0) },
    { type: 'have', index: 1 },
  ]);
});

test('wrong sizes of fixed-size messages are protocol errors', () => {
  const cases: [string, RegExp][] = [
    ['00000004 04 000001', /have message with 3 payload bytes, expected 4/],
    ['00000006 04 0000000100', /have message with 5 payload bytes/],
    ['0000000c 06 00000001 00000000 000040', /request message with 11 payload bytes, expected 12/],
    ['0000000e 08 00000001 00000000 0000400000', /cancel message with 13/],
    ['00000002 00 00', /choke message with 1 payload bytes, expected 0/],
    ['00000002 09 1a', /port message with 1 payload bytes, expected 2/],
    ['00000004 11 000001', /allowedFast message with 3/],
    ['0000000c 10 00000001 00000000 000040', /reject message with 11/],
    ['00000002 0e 00', /haveAll message with 1/],
    ['00000008 07 00000001 000000', /piece message with 7 payload bytes, need at least 8/],
    ['00000001 14', /extended message without a sub-id/],
  ];
  for (const [bytes, pattern] of cases) {
    assert.throws(() => decodeMessage(hex(bytes)), isWireError(pattern), bytes);
    assert.throws(() => [...new MessageDecoder().push(hex(bytes))], isWireError(pattern), bytes);
  }
  assert.throws(
    () => decodeMessage(hex('00000005 04 000000')),
    isWireError(/length prefix 5 but 4 bytes follow/),
  );
});

test('decoder: many messages per chunk, byte by byte, and random splits give the same messages', () => {
  const stream = Buffer.concat(VECTORS.map(([, bytes]) => hex(bytes)));
  const expected = VECTORS.map(([msg]) => msg);

  assert.deepEqual([...new MessageDecoder().push(stream)], expected);

  const byByte = new MessageDecoder();
  const got: WireMessage[] = [];
  for (let i = 0; i < stream.length; i++) {
    got.push(...byByte.push(stream.subarray(i, i + 1)));
    // Mid-stream the decoder holds only what it has been given of the current message.
    assert.ok(byByte.buffered <= stream.length);
  }
  assert.deepEqual(got, expected);
  assert.equal(byByte.buffered, 0);

  // Deterministic pseudo-random split points (a fixed LCG, not wall-clock seeded).
  let seed = 12345;
  const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
  for (let round = 0; round < 50; round++) {
    const dec = new MessageDecoder();
    const out: WireMessage[] = [];
    for (let pos = 0; pos < stream.length;) {
      const n = 1 + (next() % 40);
      out.push(...dec.push(stream.subarray(pos, pos + n)));
      pos += n;
    }
    assert.deepEqual(out, expected, `round ${round}`);
  }
});

test('decoder: a piece inside one chunk is a view of that chunk, not a copy', () => {
  const block = Buffer.alloc(16384, 0xab);
  const chunk = Buffer.concat([
    hex('00000001 01'),
    encodeMessage({ type: 'piece', index: 4, begin: 0, block }),
  ]);
  const msgs = [...new MessageDecoder().push(chunk)];
  const piece = msgs[1];
  assert.ok(piece?.type === 'piece');
  assert.equal(piece.block.buffer, chunk.buffer, 'block shares the chunk memory');
  assert.equal(piece.block.byteOffset, chunk.byteOffset + 5 + 13);
  assert.deepEqual(piece.block, block);

  // Split across chunks, the block is assembled once and is still correct.
  const dec = new MessageDecoder();
  const whole = encodeMessage({ type: 'piece', index: 4, begin: 0, block });
  assert.deepEqual([...dec.push(whole.subarray(0, 100))], []);
  assert.equal(dec.buffered, 100);
  const [split] = [...dec.push(whole.subarray(100))];
  assert.ok(split?.type === 'piece');
  assert.deepEqual(split.block, block);
});

test('decoder: oversize length prefixes are rejected before buffering, and the decoder stays failed', () => {
  const dec = new MessageDecoder();
  assert.equal(dec.maxLength, DEFAULT_MAX_MESSAGE_LENGTH);
  const big = Buffer.alloc(4);
  big.writeUInt32BE(DEFAULT_MAX_MESSAGE_LENGTH + 1);
  assert.throws(() => [...dec.push(big)], isWireError(/exceeds the limit/));
  assert.throws(() => [...dec.push(hex('00000001 01'))], isWireError(/exceeds the limit/));

  // The limit is an option; a length at the limit is fine, one above is not, even when split.
  const small = new MessageDecoder({ maxLength: 13 });
  assert.deepEqual(
    [...small.push(hex('0000000d 06 00000001 00000000 00004000'))],
    [{ type: 'request', index: 1, begin: 0, length: 0x4000 }],
  );
  assert.deepEqual([...small.push(hex('0000'))], []);
  assert.throws(() => [...small.push(hex('000e'))], isWireError(/length 14 exceeds the limit of 13/));

  // A 128 KiB block and a 2^20-piece bitfield fit the default.
  const blockMsg = encodeMessage({ type: 'piece', index: 0, begin: 0, block: Buffer.alloc(128 * 1024) });
  assert.equal([...new MessageDecoder().push(blockMsg)].length, 1);
  const bitfieldMsg = encodeMessage({ type: 'bitfield', bits: Buffer.alloc(2 ** 20 / 8) });
  assert.equal([...new MessageDecoder().push(bitfieldMsg)].length, 1);
});

test('decoder: messages before a malformed one are still delivered', () => {
  const dec = new MessageDecoder();
  const got: WireMessage[] = [];
  assert.throws(
    () => {
      for (const m of dec.push(hex('00000001 02  00000004 04 000001'))) got.push(m);
    },
    isWireError(/have message with 3/),
  );
  assert.deepEqual(got, [{ type: 'interested' }]);
});

test('extended handshake (BEP 10): hand-built bytes and round trip', () => {
  const h = {
    m: new Map([
      ['ut_pex', 1],
      ['ut_metadata', 2],
    ]),
    p: 6881,
    v: 'BootTorrent 0.1',
    reqq: 250,
    yourip: '127.0.0.1',
    metadataSize: 12345,
  };
  const bytes = encodeExtendedHandshake(h);
  assert.equal(
    bytes.toString('latin1'),
    'd1:md11:ut_metadatai2e6:ut_pexi1ee13:metadata_sizei12345e1:pi6881e4:reqqi250e' +
      '1:v15:BootTorrent 0.16:yourip4:\x7f\x00\x00\x01e',
  );
  const back = decodeExtendedHandshake(bytes);
  const { raw, ...fields } = back;
  assert.deepEqual(fields, h);
  assert.ok(raw.has('metadata_size'));

  // Unsorted keys from another client are accepted; unknown keys stay in raw; IPv6 yourip.
  const other = decodeExtendedHandshake(
    Buffer.concat([
      latin1('d1:v3:abc1:md6:ut_pexi0ee11:upload_onlyi1e6:yourip16:'),
      ipToBytes('2001:db8::7'),
      latin1('e'),
    ]),
  );
  assert.deepEqual(other.m, new Map([['ut_pex', 0]]));
  assert.equal(other.yourip, '2001:db8::7');
  assert.equal(other.raw.get('upload_only'), 1);
  assert.deepEqual(decodeExtendedHandshake(latin1('de')).m, new Map());

  assert.throws(() => decodeExtendedHandshake(latin1('le')), isWireError(/not a dictionary/));
  assert.throws(() => decodeExtendedHandshake(latin1('d1:m')), isWireError(/not valid bencode/));
  assert.throws(() => decodeExtendedHandshake(latin1('d1:mi1ee')), isWireError(/"m" is not a dictionary/));
  assert.throws(
    () => decodeExtendedHandshake(latin1('d1:md1:xi256eee')),
    isWireError(/id of "x" is not a byte/),
  );
  assert.throws(() => decodeExtendedHandshake(latin1('d1:pi70000ee')), isWireError(/"p" is not an integer/));
  assert.throws(() => decodeExtendedHandshake(latin1('d6:yourip3:abce')), isWireError(/"yourip"/));
});

test('ut_pex (BEP 11): hand-built bytes and round trip with flags and IPv6', () => {
  const msg = {
    added: [
      { host: '1.2.3.4', port: 6881, flags: 0x12 },
      { host: '10.0.0.1', port: 80, flags: 0 },
      { host: '2001:db8::1', port: 6881, flags: 0x01 },
    ],
    dropped: [{ host: '5.6.7.8', port: 1 }],
  };
  const bytes = encodePex(msg);
  const expected = Buffer.concat([
    latin1('d5:added12:'),
    hex('01020304 1ae1  0a000001 0050'),
    latin1('7:added.f2:'),
    hex('12 00'),
    latin1('6:added618:'),
    hex('20010db8000000000000000000000001 1ae1'),
    latin1('8:added6.f1:'),
    hex('01'),
    latin1('7:dropped6:'),
    hex('05060708 0001'),
    latin1('e'),
  ]);
  assert.deepEqual(bytes, expected);
  assert.deepEqual(decodePex(bytes), msg);

  // Missing added.f leaves flags at 0; no added6 keys at all is fine.
  assert.deepEqual(decodePex(Buffer.concat([latin1('d5:added6:'), hex('7f000001 1ae1'), latin1('e')])), {
    added: [{ host: '127.0.0.1', port: 6881, flags: 0 }],
    dropped: [],
  });
  assert.throws(
    () => decodePex(Buffer.concat([latin1('d5:added5:'), hex('7f000001 1a'), latin1('e')])),
    isWireError(/"added" is not a list of 6-byte peers/),
  );
  assert.throws(() => encodePex({ added: [{ host: 'example.org', port: 1 }], dropped: [] }), RangeError);
});

test('address text per RFC 5952', () => {
  const cases: [string, string][] = [
    ['00000000000000000000000000000001', '::1'],
    ['20010db8000000000000000000000001', '2001:db8::1'],
    ['20010db8000000000001000000000001', '2001:db8::1:0:0:1'],
    ['20010db8000000010001000100010001', '2001:db8:0:1:1:1:1:1'],
    ['00010000000000000000000000000000', '1::'],
    ['00000000000000000000ffff01020304', '::ffff:1.2.3.4'],
    ['000000000000000000000000ffff0001', '::ffff:1'],
  ];
  for (const [bytes, text] of cases) {
    assert.equal(bytesToIp(hex(bytes)), text);
    assert.deepEqual(ipToBytes(text), hex(bytes));
  }
  assert.deepEqual(ipToBytes('::ffff:102:304'), hex('00000000000000000000ffff01020304'));
  assert.deepEqual(ipToBytes('192.168.1.200'), hex('c0a801c8'));
  assert.equal(bytesToIp(hex('c0a801c8')), '192.168.1.200');
});
