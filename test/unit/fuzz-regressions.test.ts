/**
 * Regression tests for the parser bugs the fuzzer (test/fuzz, issue #8)
 * and the review of the parsers for hostile input found; each input is also
 * in test/fuzz/corpus/. Named after what broke.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decode, decodeSubOptions } from '../../src/dhcp/codec.js';
import { decodeAnnounceResponse } from '../../src/tracker/http-codec.js';
import { dhcpSplitOption, httpManyPeers } from '../fuzz/make-regressions.js';

/** Counts Buffer.concat calls made by `f`: the cost of joining split options, without a clock. */
function countConcats(f: () => void): number {
  const original = Object.getOwnPropertyDescriptor(Buffer, 'concat')!;
  const concat = Buffer.concat.bind(Buffer);
  let calls = 0;
  Buffer.concat = (list: readonly Uint8Array[], total?: number) => {
    calls++;
    return concat(list, total);
  };
  try {
    f();
  } finally {
    Object.defineProperty(Buffer, 'concat', original);
  }
  return calls;
}

test('dhcp: an option split into 21,000 instances is joined once, not once per instance (quadratic copying stalled the server)', () => {
  const pkt = dhcpSplitOption(21_000);
  let decoded: ReturnType<typeof decode> | undefined;
  const calls = countConcats(() => (decoded = decode(pkt)));
  assert.deepEqual(decoded!.options.get(60), Buffer.alloc(21_000, 0x41));
  assert.ok(
    calls <= decoded!.options.size + 1,
    `${calls} concatenations for ${decoded!.options.size} options`,
  );

  const sub = Buffer.concat([
    ...Array.from({ length: 5000 }, () => Buffer.from([1, 1, 7])),
    Buffer.from([255]),
  ]);
  let subs: Map<number, Buffer> | undefined;
  const subCalls = countConcats(() => (subs = decodeSubOptions(sub)));
  assert.deepEqual(subs!.get(1), Buffer.alloc(5000, 7));
  assert.ok(subCalls <= 2, `${subCalls} concatenations for one sub-option`);
});

test('http tracker reply: 174,000 compact peers (a 1 MiB body, the client limit) decode; spreading them into push() threw RangeError', () => {
  const r = decodeAnnounceResponse(httpManyPeers(174_000, 0).subarray(1));
  assert.equal(r.peers.length, 174_000);
  assert.deepEqual(r.peers[173_999], { ip: '1.1.1.1', port: 0x0101 });
  const r6 = decodeAnnounceResponse(httpManyPeers(1, 200_000).subarray(1));
  assert.equal(r6.peers.length, 200_001);
  assert.equal(r6.peers[200_000]!.port, 0x0202);
});
