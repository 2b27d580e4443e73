import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decode, decodeWithSpans, encode, type BValue } from '../../src/bencode/index.js';
import { isBootTorrentError } from '../../src/errors.js';

const b = (s: string) => Buffer.from(s, 'latin1');

function rejects(input: string | Buffer, pattern: RegExp, opts = {}) {
  assert.throws(
    () => decode(typeof input === 'string' ? b(input) : input, opts),
    (err: unknown) => isBootTorrentError(err, 'BT_ERR_BENCODE') && pattern.test(err.message),
  );
}

test('decodes the BEP 3 examples', () => {
  assert.deepEqual(decode(b('4:spam')), b('spam'));
  assert.equal(decode(b('i3e')), 3);
  assert.equal(decode(b('i-3e')), -3);
  assert.equal(decode(b('i0e')), 0);
  assert.deepEqual(decode(b('l4:spam4:eggse')), [b('spam'), b('eggs')]);
  assert.deepEqual(
    decode(b('d3:cow3:moo4:spam4:eggse')),
    new Map<string, BValue>([
      ['cow', b('moo')],
      ['spam', b('eggs')],
    ]),
  );
  assert.deepEqual(decode(b('0:')), b(''));
  assert.deepEqual(decode(b('le')), []);
  assert.deepEqual(decode(b('de')), new Map());
});

test('encodes with sorted keys and round-trips byte for byte', () => {
  const enc = encode({ spam: ['a', 1], cow: 'moo', 'a b': new Uint8Array([0, 255]) });
  assert.equal(enc.toString('latin1'), 'd3:a b2:\x00\xff3:cow3:moo4:spaml1:ai1eee');
  assert.deepEqual(encode(decode(enc)), enc);
  // Binary keys survive as latin1 Map keys.
  const bin = b('d2:\xff\x001:xe');
  assert.deepEqual(encode(decode(bin)), bin);
  assert.equal(encode(-42).toString(), 'i-42e');
  assert.equal(encode(12345678901234567890n).toString(), 'i12345678901234567890e');
});

test('rejects malformed input with a positioned error', () => {
  rejects('', /unexpected end/);
  rejects('i', /unterminated integer/);
  rejects('i-0e', /negative zero/);
  rejects('i03e', /leading zero/);
  rejects('ie', /empty integer/);
  rejects('i1x2e', /non-digit/);
  rejects('i99999999999999999e', /too large/);
  rejects('03:abc', /leading zero/);
  rejects('5:abc', /runs past the end/);
  rejects('4:abcdx', /trailing bytes/);
  rejects('l4:spam', /unterminated list/);
  rejects('d3:cow', /unexpected end/);
  rejects('d3:cowi1e', /unterminated dictionary/);
  rejects('di1ei2ee', /key is not a string/);
  rejects('d1:ai1e1:ai2ee', /duplicate dictionary key "a"/);
  rejects('d1:bi1e1:ai2ee', /out of order/);
  rejects('x', /unexpected byte 0x78/);
  rejects(':', /unexpected byte/);
});

test('accepts unsorted keys when asked (real-world torrents), never duplicates', () => {
  assert.deepEqual(
    decode(b('d1:bi1e1:ai2ee'), { strictKeyOrder: false }),
    new Map([
      ['b', 1],
      ['a', 2],
    ]),
  );
  rejects('d1:ai1e1:ai2ee', /duplicate/, { strictKeyOrder: false });
});

test('huge declared lengths fail without allocating', () => {
  rejects('9999999999999:x', /runs past the end/);
  rejects('99999999999999999999:x', /malformed string length|too large/);
});

test('deep nesting is bounded, not a stack overflow', () => {
  const deep = 'l'.repeat(100000) + 'e'.repeat(100000);
  rejects(deep, /nesting deeper than 64/);
  assert.deepEqual(decode(b('l'.repeat(10) + 'e'.repeat(10)), { maxDepth: 10 }), [[[[[[[[[[]]]]]]]]]]);
  rejects('l'.repeat(11) + 'e'.repeat(11), /deeper than 10/, { maxDepth: 10 });
});

test('spans give the exact bytes of top-level values', () => {
  const input = b('d4:infod4:name1:xe3:zzzi1ee');
  const { spans } = decodeWithSpans(input);
  const [s, e] = spans.get('info')!;
  assert.equal(input.subarray(s, e).toString(), 'd4:name1:xe');
});

test('random garbage never throws anything but a BencodeError', () => {
  let seed = 12345;
  const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff);
  const alphabet = b('ild e:0123456789-x');
  for (let n = 0; n < 20000; n++) {
    const len = rnd() % 24;
    const buf = Buffer.alloc(len);
    for (let i = 0; i < len; i++) buf[i] = alphabet[rnd() % alphabet.length]!;
    try {
      const v = decode(buf);
      assert.deepEqual(encode(v), buf, `accepted input must round-trip: ${buf.toString('latin1')}`);
    } catch (err) {
      if (!isBootTorrentError(err, 'BT_ERR_BENCODE')) throw err;
    }
  }
});
