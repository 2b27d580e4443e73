import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  decode,
  encode,
  MAX_DECODED_BYTES,
  MAX_ENCODED_BYTES,
  MAX_HEADER_LINES,
  MAX_INFOHASHES,
} from '../../src/tracker/lsd-codec.js';
import { isBootTorrentError } from '../../src/errors.js';

const b = (s: string) => Buffer.from(s, 'latin1');
const IH1 = '8eeaa8b6d23140b7793bb22c509360aceb87a9d1';
const IH2 = '0123456789abcdef0123456789abcdef01234567';

function rejects(input: string | Buffer, pattern: RegExp) {
  assert.throws(
    () => decode(typeof input === 'string' ? b(input) : input),
    (err: unknown) => isBootTorrentError(err, 'BT_ERR_LSD_CODEC') && pattern.test(err.message),
  );
}

function encodeRejects(input: Parameters<typeof encode>[0], pattern: RegExp) {
  assert.throws(
    () => encode(input),
    (err: unknown) => isBootTorrentError(err, 'BT_ERR_LSD_CODEC') && pattern.test(err.message),
  );
}

// Captured from aria2 1.36.0 (`--bt-enable-lpd=true --listen-port=52000`)
// inside a test network namespace: no cookie, trailing CRLF CRLF after the
// header block's own CRLF.
const ARIA2_CAPTURE = Buffer.from(
  '42542d534541524348202a20485454502f312e310d0a486f73743a203233392e3139322e3135322e3134333a363737310d0a' +
    '506f72743a2035323030300d0a496e666f686173683a2038656561613862366432333134306237373933626232326335303933' +
    '3630616365623837613964310d0a0d0a0d0a',
  'hex',
);

test('decodes an announce captured from aria2', () => {
  assert.deepEqual(decode(ARIA2_CAPTURE), { port: 52000, infoHashes: [IH1], host: '239.192.152.143:6771' });
});

test('decodes the libtorrent layout (hex cookie after the infohash)', () => {
  // Layout of libtorrent's render_lsd_packet: Host, Port, Infohash, cookie.
  const msg = decode(
    b(
      `BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6881\r\nInfohash: ${IH1}\r\ncookie: 5f1e2d\r\n\r\n\r\n`,
    ),
  );
  assert.deepEqual(msg, { port: 6881, infoHashes: [IH1], cookie: '5f1e2d', host: '239.192.152.143:6771' });
});

test('is lenient about header case, bare LF, upper-case hex, spacing and extra headers', () => {
  const msg = decode(
    b(
      'bt-search * HTTP/1.1\n' +
        'HOST:239.192.152.143:6771\n' +
        'User-Agent: uTorrent/3.5\r\n' +
        `iNfOhAsH:   ${IH1.toUpperCase()}  \n` +
        `infohash: ${IH2}\n` +
        'X-Unknown: whatever: with colons\n' +
        'PORT: 51413\n' +
        'Cookie: abc\n' +
        '\n',
    ),
  );
  assert.deepEqual(msg, { port: 51413, infoHashes: [IH1, IH2], cookie: 'abc', host: '239.192.152.143:6771' });
});

test('ignores bytes after the header block and duplicate infohashes', () => {
  const msg = decode(
    b(
      `BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash: ${IH1}\r\nInfohash: ${IH1.toUpperCase()}\r\n\r\n\r\ntrailing junk`,
    ),
  );
  assert.deepEqual(msg, { port: 1, infoHashes: [IH1] });
});

test('keeps the first Port when a datagram repeats it', () => {
  const msg = decode(b(`BT-SEARCH * HTTP/1.1\r\nPort: 6881\r\nPort: 6882\r\nInfohash: ${IH1}\r\n\r\n`));
  assert.equal(msg.port, 6881);
});

test('encodes the BEP 14 layout byte for byte', () => {
  const out = encode({
    port: 6881,
    infoHashes: [IH1.toUpperCase(), Buffer.from(IH2, 'hex')],
    cookie: 'c00k1e',
  });
  assert.equal(
    out.toString('latin1'),
    'BT-SEARCH * HTTP/1.1\r\n' +
      'Host: 239.192.152.143:6771\r\n' +
      'Port: 6881\r\n' +
      `Infohash: ${IH1}\r\n` +
      `Infohash: ${IH2}\r\n` +
      'cookie: c00k1e\r\n' +
      '\r\n\r\n',
  );
  assert.deepEqual(decode(out), {
    port: 6881,
    infoHashes: [IH1, IH2],
    cookie: 'c00k1e',
    host: '239.192.152.143:6771',
  });
});

test('encodes what aria2 sends when there is no cookie', () => {
  assert.deepEqual(encode({ port: 52000, infoHashes: [IH1] }), ARIA2_CAPTURE);
});

test('encode takes the host of an overridden group and drops duplicate infohashes', () => {
  const out = encode({ port: 7, infoHashes: [IH1, IH1], host: '239.1.2.3:7000' });
  assert.deepEqual(decode(out), { port: 7, infoHashes: [IH1], host: '239.1.2.3:7000' });
});

test('encode rejects invalid input', () => {
  encodeRejects({ port: 0, infoHashes: [IH1] }, /port/);
  encodeRejects({ port: 65536, infoHashes: [IH1] }, /port/);
  encodeRejects({ port: 1.5, infoHashes: [IH1] }, /port/);
  encodeRejects({ port: 1, infoHashes: [] }, /at least one/);
  encodeRejects({ port: 1, infoHashes: [IH1.slice(1)] }, /40 hex/);
  encodeRejects({ port: 1, infoHashes: ['g'.repeat(40)] }, /40 hex/);
  encodeRejects({ port: 1, infoHashes: [Buffer.alloc(19)] }, /20 bytes/);
  // Header injection through the cookie or host must be impossible.
  encodeRejects({ port: 1, infoHashes: [IH1], cookie: 'a\r\nPort: 2' }, /cookie/);
  encodeRejects({ port: 1, infoHashes: [IH1], cookie: '' }, /cookie/);
  encodeRejects({ port: 1, infoHashes: [IH1], host: 'h h' }, /host/);
  const many = Array.from({ length: MAX_INFOHASHES + 1 }, (_, i) => i.toString(16).padStart(40, '0'));
  encodeRejects({ port: 1, infoHashes: many }, /at most/);
});

test('encode refuses datagrams over BEP 14 1400 bytes', () => {
  // 22 + 28 + 12 + 26 * 52 + 4 = 1418 bytes.
  const hashes = Array.from({ length: 26 }, (_, i) => i.toString(16).padStart(40, '0'));
  encodeRejects({ port: 1, infoHashes: hashes }, /1400/);
  assert.ok(encode({ port: 1, infoHashes: hashes.slice(0, 20) }).length <= MAX_ENCODED_BYTES);
});

test('rejects malformed datagrams', () => {
  rejects('', /not terminated/);
  rejects(`BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash: ${IH1}\r\n`, /not terminated/);
  // A datagram cut short (as by a receiver buffer) loses its terminator.
  rejects(ARIA2_CAPTURE.subarray(0, 100), /not terminated/);
  rejects(
    'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\nMX: 1\r\nST: ssdp:all\r\n\r\n',
    /not a BT-SEARCH/,
  );
  rejects('\r\n\r\n', /not a BT-SEARCH/);
  rejects(`BT-SEARCH * HTTP/1.1\r\nInfohash: ${IH1}\r\n\r\n`, /no Port/);
  rejects(`BT-SEARCH * HTTP/1.1\r\nPort: 1\r\n\r\n`, /no Infohash/);
  rejects(`BT-SEARCH * HTTP/1.1\r\nPort: 6881abc\r\nInfohash: ${IH1}\r\n\r\n`, /invalid Port/);
  rejects(`BT-SEARCH * HTTP/1.1\r\nPort: -1\r\nInfohash: ${IH1}\r\n\r\n`, /invalid Port/);
  rejects(`BT-SEARCH * HTTP/1.1\r\nPort: 0\r\nInfohash: ${IH1}\r\n\r\n`, /out of range/);
  rejects(`BT-SEARCH * HTTP/1.1\r\nPort: 65536\r\nInfohash: ${IH1}\r\n\r\n`, /out of range/);
  rejects(`BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash: ${IH1.slice(1)}\r\n\r\n`, /invalid Infohash/);
  rejects(`BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash: ${IH1}00\r\n\r\n`, /invalid Infohash/);
  rejects(`BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash: ${'z'.repeat(40)}\r\n\r\n`, /invalid Infohash/);
  rejects(`BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash ${IH1}\r\n\r\n`, /malformed header line/);
  rejects(`BT-SEARCH * HTTP/1.1\r\n: 1\r\nInfohash: ${IH1}\r\n\r\n`, /malformed header line/);
});

test('bounds the work a datagram can cause', () => {
  const head = 'BT-SEARCH * HTTP/1.1\r\nPort: 1\r\n';
  const hashes = Array.from(
    { length: MAX_INFOHASHES + 1 },
    (_, i) => `Infohash: ${i.toString(16).padStart(40, '0')}\r\n`,
  );
  assert.equal(
    decode(b(head + hashes.slice(0, MAX_INFOHASHES).join('') + '\r\n')).infoHashes.length,
    MAX_INFOHASHES,
  );
  rejects(head + hashes.join('') + '\r\n', /more than 64 infohashes/);
  rejects(head + 'X: y\r\n'.repeat(MAX_HEADER_LINES) + `Infohash: ${IH1}\r\n\r\n`, /header lines/);
  const big = Buffer.alloc(MAX_DECODED_BYTES + 1, 0x20);
  rejects(big, /exceeds/);
});
