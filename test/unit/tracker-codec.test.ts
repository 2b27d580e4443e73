import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { encode } from '../../src/bencode/index.js';
import { isBootTorrentError } from '../../src/errors.js';
import {
  buildAnnounceUrl,
  buildScrapeUrl,
  decodeAnnounceResponse,
  decodeScrapeResponse,
  encodeAnnounceResponse,
  encodeFailure,
  encodeScrapeResponse,
  parseAnnounceQuery,
  parseScrapeQuery,
  scrapeUrlFor,
} from '../../src/tracker/http-codec.js';
import type { AnnounceRequest } from '../../src/tracker/types.js';
import {
  decodeCompactPeers,
  decodeUdpRequest,
  decodeUdpResponse,
  encodeCompactPeers,
  encodeUdpRequest,
  encodeUdpResponse,
} from '../../src/tracker/udp-codec.js';
import type { UdpRequest, UdpResponse } from '../../src/tracker/udp-codec.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const isCodecError = (err: unknown): boolean => isBootTorrentError(err, 'BT_ERR_TRACKER_CODEC');

// --- BEP 15 vectors, written field by field from the spec's tables ---

const CONNECT_REQ = Buffer.concat([
  hex('0000041727101980'), // protocol_id (magic constant)
  hex('00000000'), // action: connect
  hex('12345678'), // transaction_id
]);

test('BEP 15 connect request: hand-built bytes decode and re-encode', () => {
  assert.equal(CONNECT_REQ.length, 16);
  const msg = decodeUdpRequest(CONNECT_REQ);
  assert.deepEqual(msg, { action: 'connect', transactionId: 0x12345678 });
  assert.deepEqual(encodeUdpRequest(msg), CONNECT_REQ);
});

test('BEP 15 connect request without the protocol id magic is refused', () => {
  const bad = Buffer.from(CONNECT_REQ);
  bad[7] = 0x81;
  assert.throws(
    () => decodeUdpRequest(bad),
    (err: unknown) => isCodecError(err) && /protocol id/.test(String(err)),
  );
});

test('BEP 15 connect response', () => {
  const bytes = hex('00000000 12345678 0102030405060708');
  const msg = decodeUdpResponse(bytes);
  assert.deepEqual(msg, { action: 'connect', transactionId: 0x12345678, connectionId: 0x0102030405060708n });
  assert.deepEqual(encodeUdpResponse(msg), bytes);
});

const INFO_HASH = hex('aa'.repeat(20));
const PEER_ID = Buffer.from('-BT0001-abcdefghijkl', 'latin1');
const ANNOUNCE_REQ = Buffer.concat([
  hex('0102030405060708'), // connection_id
  hex('00000001'), // action announce
  hex('0000abcd'), // transaction_id
  INFO_HASH,
  PEER_ID,
  hex('0000000000001000'), // downloaded 4096
  hex('0000000000002000'), // left 8192
  hex('0000000000000010'), // uploaded 16
  hex('00000002'), // event started
  hex('00000000'), // IP address: default
  hex('deadbeef'), // key
  hex('ffffffff'), // num_want -1: default
  hex('1ae1'), // port 6881
]);

test('BEP 15 announce request: 98 hand-built bytes', () => {
  assert.equal(ANNOUNCE_REQ.length, 98);
  const msg = decodeUdpRequest(ANNOUNCE_REQ);
  assert.deepEqual(msg, {
    action: 'announce',
    connectionId: 0x0102030405060708n,
    transactionId: 0xabcd,
    request: {
      infoHash: INFO_HASH,
      peerId: PEER_ID,
      downloaded: 4096,
      left: 8192,
      uploaded: 16,
      event: 'started',
      key: 0xdeadbeef,
      port: 6881,
    },
  });
  assert.deepEqual(encodeUdpRequest(msg), ANNOUNCE_REQ);
});

test('BEP 15 announce request: event codes, ip and num_want', () => {
  const b = Buffer.from(ANNOUNCE_REQ);
  b.writeUInt32BE(3, 80); // stopped
  b.writeUInt32BE(0x0a000005, 84); // 10.0.0.5
  b.writeInt32BE(30, 92);
  const msg = decodeUdpRequest(b);
  assert.equal(msg.action, 'announce');
  if (msg.action !== 'announce') return;
  assert.equal(msg.request.event, 'stopped');
  assert.equal(msg.request.ip, '10.0.0.5');
  assert.equal(msg.request.numWant, 30);
  assert.deepEqual(encodeUdpRequest(msg), b);
  b.writeUInt32BE(4, 80);
  assert.throws(() => decodeUdpRequest(b), isCodecError);
});

test('BEP 15 announce request with BEP 41 options after byte 98 is accepted', () => {
  const withOptions = Buffer.concat([ANNOUNCE_REQ, hex('0204 2f616e6e 00')]);
  const msg = decodeUdpRequest(withOptions);
  assert.equal(msg.action, 'announce');
});

test('BEP 15 announce response with two IPv4 peers', () => {
  const bytes = hex(`
    00000001 0000abcd
    0000003c 00000002 00000001
    7f000001 1ae1
    0a000002 1ae2`);
  const msg = decodeUdpResponse(bytes);
  assert.deepEqual(msg, {
    action: 'announce',
    transactionId: 0xabcd,
    interval: 60,
    incomplete: 2,
    complete: 1,
    peers: [
      { ip: '127.0.0.1', port: 6881 },
      { ip: '10.0.0.2', port: 6882 },
    ],
  });
  assert.deepEqual(encodeUdpResponse(msg), bytes);
});

test('BEP 15 scrape request and response', () => {
  const h2 = hex('bb'.repeat(20));
  const req = Buffer.concat([hex('0102030405060708 00000002 00000007'), INFO_HASH, h2]);
  const msg = decodeUdpRequest(req);
  assert.deepEqual(msg, {
    action: 'scrape',
    connectionId: 0x0102030405060708n,
    transactionId: 7,
    infoHashes: [INFO_HASH, h2],
  });
  assert.deepEqual(encodeUdpRequest(msg), req);

  // seeders, completed, leechers per infohash, in request order.
  const resp = hex('00000002 00000007  00000005 0000000a 00000003  00000000 00000001 00000002');
  const r = decodeUdpResponse(resp);
  assert.deepEqual(r, {
    action: 'scrape',
    transactionId: 7,
    files: [
      { complete: 5, downloaded: 10, incomplete: 3 },
      { complete: 0, downloaded: 1, incomplete: 2 },
    ],
  });
  assert.deepEqual(encodeUdpResponse(r), resp);
});

test('BEP 15 error response carries its message', () => {
  const bytes = Buffer.concat([hex('00000003 00000009'), Buffer.from('unknown infohash')]);
  const r = decodeUdpResponse(bytes);
  assert.deepEqual(r, { action: 'error', transactionId: 9, message: 'unknown infohash' });
  assert.deepEqual(encodeUdpResponse(r), bytes);
});

test('every truncation of a valid UDP packet is a codec error, never a RangeError', () => {
  const requests = [
    CONNECT_REQ,
    ANNOUNCE_REQ,
    Buffer.concat([hex('0102030405060708 00000002 00000007'), INFO_HASH]),
  ];
  for (const full of requests) {
    for (let len = 0; len < full.length; len++) {
      assert.throws(
        () => decodeUdpRequest(full.subarray(0, len)),
        isCodecError,
        `request prefix of ${len} bytes`,
      );
    }
  }
  const responses = [
    hex('00000000 12345678 0102030405060708'),
    hex('00000001 0000abcd 0000003c 00000002 00000001 7f000001 1ae1'),
  ];
  for (const full of responses) {
    for (let len = 0; len < full.length; len++) {
      // 20 bytes is a complete announce reply with no peers.
      if (len === 20) continue;
      assert.throws(
        () => decodeUdpResponse(full.subarray(0, len)),
        isCodecError,
        `response prefix of ${len} bytes`,
      );
    }
  }
});

test('UDP decode rejects out-of-range counters, unknown actions, oversized scrapes', () => {
  const big = Buffer.from(ANNOUNCE_REQ);
  big.writeBigUInt64BE(0xffffffffffffffffn, 56); // downloaded = -1 as int64
  assert.throws(() => decodeUdpRequest(big), isCodecError);
  assert.throws(() => decodeUdpRequest(hex('0102030405060708 00000009 00000001')), isCodecError);
  assert.throws(() => decodeUdpResponse(hex('00000009 00000001')), isCodecError);
  const huge = Buffer.concat([hex('0102030405060708 00000002 00000007'), Buffer.alloc(20 * 100)]);
  assert.throws(() => decodeUdpRequest(huge), isCodecError);
  assert.throws(() => decodeUdpRequest(hex('0102030405060708 00000002 00000007')), isCodecError);
  assert.throws(() => decodeUdpResponse(hex('00000002 00000007 00000001')), isCodecError);
});

test('UDP decode of random junk either decodes or throws BT_ERR_TRACKER_CODEC', () => {
  for (let i = 0; i < 3000; i++) {
    const len = i < 2900 ? i % 130 : 65507;
    const junk = randomBytes(len);
    // Make the action field plausible half of the time to reach the deeper parsers.
    if (len >= 12 && i % 2 === 0) junk.writeUInt32BE(i % 4, 8);
    if (len >= 4 && i % 3 === 0) junk.writeUInt32BE(i % 4, 0);
    for (const fn of [decodeUdpRequest, decodeUdpResponse]) {
      try {
        fn(junk);
      } catch (err) {
        assert.ok(isCodecError(err), `unexpected ${String(err)}`);
      }
    }
  }
});

test('UDP encode/decode round trips', () => {
  const reqs: UdpRequest[] = [
    { action: 'connect', transactionId: 0xffffffff },
    {
      action: 'announce',
      connectionId: 0xfedcba9876543210n,
      transactionId: 1,
      request: {
        infoHash: randomBytes(20),
        peerId: randomBytes(20),
        port: 65535,
        uploaded: Number.MAX_SAFE_INTEGER,
        downloaded: 0,
        left: 1,
        event: 'completed',
        key: 0,
        numWant: 0,
        ip: '192.168.1.254',
      },
    },
    {
      action: 'scrape',
      connectionId: 1n,
      transactionId: 2,
      infoHashes: Array.from({ length: 74 }, () => randomBytes(20)),
    },
  ];
  for (const r of reqs) assert.deepEqual(decodeUdpRequest(encodeUdpRequest(r)), r);
  const resps: UdpResponse[] = [
    { action: 'connect', transactionId: 3, connectionId: 0n },
    { action: 'announce', transactionId: 4, interval: 1, incomplete: 0, complete: 0, peers: [] },
    { action: 'scrape', transactionId: 5, files: [] },
    { action: 'error', transactionId: 6, message: 'é' },
  ];
  for (const r of resps) assert.deepEqual(decodeUdpResponse(encodeUdpResponse(r)), r);
});

// --- BEP 23 compact peers ---

test('BEP 23 compact peers: 6 bytes per IPv4 peer', () => {
  const bytes = hex('7f000001 1ae1 c0a80101 0050');
  const peers = decodeCompactPeers(bytes);
  assert.deepEqual(peers, [
    { ip: '127.0.0.1', port: 6881 },
    { ip: '192.168.1.1', port: 80 },
  ]);
  assert.deepEqual(encodeCompactPeers(peers), bytes);
  assert.throws(() => decodeCompactPeers(hex('7f000001 1a')), isCodecError);
});

// --- HTTP (BEP 3) ---

// The example from BEP 3's tracker section: the info_hash whose hex is
// 123456789abcdef123456789abcdef123456789a travels as this escaped string.
const BEP3_ESCAPED = '%124Vx%9A%BC%DE%F1%23Eg%89%AB%CD%EF%124Vx%9A';
const BEP3_HASH = hex('123456789abcdef123456789abcdef123456789a');

test('HTTP announce query: binary info_hash from BEP 3 example decodes byte for byte', () => {
  const peer = '-AZ2060-%00%01%02%FF%25%26%3D%2B+%20ab';
  const req = parseAnnounceQuery(
    `info_hash=${BEP3_ESCAPED}&peer_id=${peer}&port=6881&uploaded=0&downloaded=10&left=100&event=started&compact=1&numwant=20&key=0000beef`,
  );
  assert.deepEqual(req.infoHash, BEP3_HASH);
  assert.deepEqual(
    req.peerId,
    Buffer.concat([Buffer.from('-AZ2060-'), hex('000102ff25263d2b'), Buffer.from('+ ab')]),
  );
  assert.equal(req.port, 6881);
  assert.equal(req.downloaded, 10);
  assert.equal(req.left, 100);
  assert.equal(req.event, 'started');
  assert.equal(req.compact, true);
  assert.equal(req.numWant, 20);
  assert.equal(req.key, 0xbeef);
});

test('HTTP announce URL: every byte value survives build and parse; existing query kept', () => {
  for (let start = 0; start < 256; start += 20) {
    const infoHash = Buffer.from(Array.from({ length: 20 }, (_, i) => (start + i) & 0xff));
    const req: AnnounceRequest = {
      infoHash,
      peerId: Buffer.from(Array.from({ length: 20 }, (_, i) => 255 - ((start + i) & 0xff))),
      port: 51413,
      uploaded: 1,
      downloaded: 2,
      left: 3,
      event: 'completed',
      numWant: 5,
      compact: false,
      ip: '10.1.2.3',
      key: 0x0badf00d,
    };
    const url = buildAnnounceUrl('http://tracker.example/announce?passkey=a%20b', req);
    assert.ok(url.startsWith('http://tracker.example/announce?passkey=a%20b&info_hash='), url);
    const query = url.slice(url.indexOf('?') + 1);
    assert.deepEqual(parseAnnounceQuery(query), req);
  }
});

test('HTTP announce query: missing or bad fields give clear codec errors', () => {
  const ok = `info_hash=${BEP3_ESCAPED}&peer_id=${'a'.repeat(20)}&port=1&uploaded=0&downloaded=0&left=0`;
  assert.equal(parseAnnounceQuery(ok).event, 'none');
  const cases: [string, RegExp][] = [
    [ok.replace(/info_hash=[^&]*&/, ''), /missing info_hash/],
    [ok.replace(/peer_id=[^&]*&/, ''), /missing peer_id/],
    [ok.replace('port=1', 'port=70000'), /port/],
    [ok.replace('port=1', 'port=-1'), /port/],
    [ok.replace('left=0', 'left=x'), /left/],
    [ok.replace('&left=0', ''), /missing left/],
    [ok.replace(BEP3_ESCAPED, '%12%34'), /info_hash must be 20 bytes/],
    [ok.replace(BEP3_ESCAPED, '%1'), /percent-escape/],
    [`${ok}&event=bogus`, /unknown announce event/],
  ];
  for (const [q, re] of cases) {
    assert.throws(
      () => parseAnnounceQuery(q),
      (err: unknown) => isCodecError(err) && re.test((err as Error).message),
      q,
    );
  }
});

test('HTTP scrape: URL convention (BEP 48) and query parsing with several info_hash', () => {
  assert.equal(scrapeUrlFor('http://t:6969/announce'), 'http://t:6969/scrape');
  assert.equal(scrapeUrlFor('http://t/x/announce.php?pk=1'), 'http://t/x/scrape.php?pk=1');
  assert.equal(scrapeUrlFor('http://t/a'), null);
  assert.equal(scrapeUrlFor('http://t/announce/x'), null);
  const h2 = hex('ff'.repeat(20));
  const url = buildScrapeUrl('http://t/scrape', { infoHashes: [BEP3_HASH, h2] });
  assert.deepEqual(parseScrapeQuery(url.slice(url.indexOf('?') + 1)), { infoHashes: [BEP3_HASH, h2] });
  assert.deepEqual(parseScrapeQuery(''), { infoHashes: [] });
  assert.throws(() => parseScrapeQuery('info_hash=abc'), isCodecError);
});

test('HTTP announce reply: compact and dict peers, both ways', () => {
  const resp = {
    interval: 1800,
    minInterval: 60,
    complete: 3,
    incomplete: 4,
    peers: [
      { ip: '127.0.0.1', port: 6881, peerId: Buffer.alloc(20, 1) },
      { ip: '10.0.0.9', port: 1, peerId: Buffer.alloc(20, 2) },
    ],
    warning: 'be nice',
  };
  const compact = encodeAnnounceResponse(resp, { compact: true });
  assert.ok(compact.includes(Buffer.from('5:peers12:')));
  assert.deepEqual(decodeAnnounceResponse(compact), {
    ...resp,
    peers: resp.peers.map(({ ip, port }) => ({ ip, port })),
  });
  const dict = encodeAnnounceResponse(resp, { compact: false });
  assert.deepEqual(decodeAnnounceResponse(dict), resp);
  // IPv6 peers go to BEP 7 peers6 in compact form.
  const six = encodeAnnounceResponse(
    { ...resp, peers: [{ ip: '2001:db8::1', port: 80 }] },
    { compact: true },
  );
  assert.deepEqual(decodeAnnounceResponse(six).peers, [{ ip: '2001:db8:0:0:0:0:0:1', port: 80 }]);
});

test('HTTP announce reply: hand-written bencode from a tracker', () => {
  const body = Buffer.concat([
    Buffer.from('d8:completei1e10:incompletei0e8:intervali900e5:peers6:'),
    hex('7f000001 1ae1'),
    Buffer.from('e'),
  ]);
  assert.deepEqual(decodeAnnounceResponse(body), {
    interval: 900,
    complete: 1,
    incomplete: 0,
    peers: [{ ip: '127.0.0.1', port: 6881 }],
  });
});

test('HTTP reply with failure reason -> BT_ERR_TRACKER_FAILURE naming the reason', () => {
  assert.throws(
    () => decodeAnnounceResponse(encodeFailure('unknown infohash')),
    (err: unknown) =>
      isBootTorrentError(err, 'BT_ERR_TRACKER_FAILURE') && /unknown infohash/.test(err.message),
  );
  assert.throws(
    () => decodeScrapeResponse(encodeFailure('no')),
    (err: unknown) => isBootTorrentError(err, 'BT_ERR_TRACKER_FAILURE'),
  );
});

test('HTTP reply garbage -> codec errors', () => {
  for (const body of [
    Buffer.from('<html>502</html>'),
    Buffer.from('le'),
    encode({ peers: Buffer.alloc(6) }), // no interval
    encode({ interval: 1, peers: Buffer.alloc(7) }),
    encode({ interval: 1, peers: [{ ip: '1.2.3.4' }] }),
    encode({ interval: -1 }),
  ]) {
    assert.throws(() => decodeAnnounceResponse(body), isCodecError, body.toString('latin1'));
  }
});

test('HTTP scrape reply round trip keyed by hex infohash', () => {
  const files = new Map([
    [BEP3_HASH.toString('hex'), { complete: 1, downloaded: 2, incomplete: 3 }],
    ['00'.repeat(20), { complete: 0, downloaded: 0, incomplete: 0 }],
  ]);
  assert.deepEqual(decodeScrapeResponse(encodeScrapeResponse({ files })), { files });
});
