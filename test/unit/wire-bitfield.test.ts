import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Bitfield } from '../../src/wire/bitfield.js';
import { isBootTorrentError } from '../../src/errors.js';

test('bitfield: BEP 3 bit order, count, spare bits zero', () => {
  const bf = new Bitfield(10);
  assert.ok(bf.hasNone());
  bf.set(0);
  bf.set(9);
  bf.set(9); // idempotent
  assert.deepEqual(bf.toBytes(), Buffer.from([0x80, 0x40]));
  assert.equal(bf.count(), 2);
  assert.ok(bf.get(0) && bf.get(9) && !bf.get(1));
  assert.deepEqual([...bf.indices()], [0, 9]);
  bf.set(0, false);
  assert.equal(bf.count(), 1);
  assert.throws(() => bf.get(10), RangeError);
  assert.throws(() => bf.set(-1), RangeError);

  const full = Bitfield.full(10);
  assert.deepEqual(full.toBytes(), Buffer.from([0xff, 0xc0]));
  assert.ok(full.hasAll());
  assert.equal(full.count(), 10);
  assert.deepEqual(Bitfield.full(16).toBytes(), Buffer.from([0xff, 0xff]));
  assert.equal(new Bitfield(0).toBytes().length, 0);
  assert.ok(Bitfield.full(0).hasAll());
});

test('bitfield: decoding validates length and spare bits', () => {
  const bf = Bitfield.fromBytes(Buffer.from([0xa0, 0xc0]), 10);
  assert.deepEqual([...bf.indices()], [0, 2, 8, 9]);
  assert.equal(bf.count(), 4);
  assert.ok(Bitfield.fromBytes(Buffer.from([0xff, 0xc0]), 10).hasAll());
  const isProto = (re: RegExp) => (err: unknown) =>
    isBootTorrentError(err, 'BT_ERR_WIRE_PROTOCOL') && re.test(err.message);
  assert.throws(() => Bitfield.fromBytes(Buffer.from([0xff, 0xe0]), 10), isProto(/spare bits/));
  assert.throws(() => Bitfield.fromBytes(Buffer.from([0xff]), 10), isProto(/1 bytes, expected 2/));
  assert.throws(() => Bitfield.fromBytes(Buffer.from([0xff, 0, 0]), 10), isProto(/3 bytes, expected 2/));
  // The decoded field is a copy: changing the input later does not change it.
  const input = Buffer.from([0x80]);
  const copy = Bitfield.fromBytes(input, 8);
  input[0] = 0;
  assert.ok(copy.get(0));
});

test('addFrom sets what the other field has and returns only the new indices', () => {
  const a = Bitfield.fromBytes(Buffer.from([0b1010_0000, 0b1000_0000]), 10);
  const b = Bitfield.fromBytes(Buffer.from([0b0110_0000, 0b1100_0000]), 10);
  assert.deepEqual(a.addFrom(b), [1, 9]);
  assert.deepEqual([...a.indices()], [0, 1, 2, 8, 9]);
  assert.equal(a.count(), 5);
  assert.deepEqual(a.addFrom(b), []);
  assert.throws(() => a.addFrom(new Bitfield(11)), RangeError);
});
