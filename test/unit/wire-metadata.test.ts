import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeMetadataMessage, encodeMetadataMessage, metadataPieces } from '../../src/wire/metadata.js';
import { isBootTorrentError } from '../../src/errors.js';

test('BEP 9 byte vectors: request, data with trailing bytes, reject', () => {
  assert.equal(encodeMetadataMessage({ type: 'request', piece: 0 }).toString(), 'd8:msg_typei0e5:piecei0ee');
  assert.equal(encodeMetadataMessage({ type: 'reject', piece: 3 }).toString(), 'd8:msg_typei2e5:piecei3ee');
  const data = encodeMetadataMessage({ type: 'data', piece: 1, totalSize: 20000, data: Buffer.from('xyz') });
  assert.equal(data.toString(), 'd8:msg_typei1e5:piecei1e10:total_sizei20000eexyz');
  assert.deepEqual(decodeMetadataMessage(data), {
    type: 'data',
    piece: 1,
    totalSize: 20000,
    data: Buffer.from('xyz'),
  });
  assert.deepEqual(decodeMetadataMessage(Buffer.from('d8:msg_typei0e5:piecei7ee')), {
    type: 'request',
    piece: 7,
  });
  assert.equal(metadataPieces(16384), 1);
  assert.equal(metadataPieces(16385), 2);
});

test('hostile ut_metadata messages are protocol errors', () => {
  for (const bad of [
    'garbage',
    'li1ee',
    'd8:msg_typei9e5:piecei0ee',
    'd8:msg_typei0e5:piecei-1ee',
    'd8:msg_typei1e5:piecei0e10:total_sizei999999999ee',
    'd8:msg_typei1e5:piecei0ee',
    'd8:msg_typei0e5:piecei99999999ee',
  ]) {
    assert.throws(
      () => decodeMetadataMessage(Buffer.from(bad)),
      (e: unknown) => isBootTorrentError(e, 'BT_ERR_WIRE_PROTOCOL'),
      bad,
    );
  }
  const big = Buffer.concat([
    Buffer.from('d8:msg_typei1e5:piecei0e10:total_sizei40000ee'),
    Buffer.alloc(16385),
  ]);
  assert.throws(() => decodeMetadataMessage(big), /larger than 16 KiB/);
});
