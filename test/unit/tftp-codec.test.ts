import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isBootTorrentError } from '../../src/errors.js';
import { decode, encode, TftpErrorCode } from '../../src/tftp/codec.js';
import type { TftpPacket } from '../../src/tftp/codec.js';
import { negotiateRead } from '../../src/tftp/options.js';
import { cleanRequestPath } from '../../src/tftp/files.js';
import { toNetascii } from '../../src/tftp/blocks.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const bytes = (...parts: (string | number[])[]) =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'latin1') : Buffer.from(p))));

function throwsCodec(buf: Buffer, pattern: RegExp) {
  assert.throws(
    () => decode(buf),
    (err: unknown) => isBootTorrentError(err, 'BT_ERR_TFTP_CODEC') && pattern.test((err as Error).message),
  );
}

test('RRQ as iPXE sends it (octet, tsize, blksize 1432) decodes and re-encodes byte for byte', () => {
  const wire = bytes([0, 1], 'undionly.kpxe\0octet\0tsize\x000\0blksize\x001432\0');
  const p = decode(wire);
  assert.deepEqual(p, {
    type: 'RRQ',
    filename: 'undionly.kpxe',
    mode: 'octet',
    options: new Map([
      ['tsize', '0'],
      ['blksize', '1432'],
    ]),
  });
  assert.deepEqual(encode(p), wire);
});

test('mode and option names are case-insensitive; values are kept', () => {
  const p = decode(bytes([0, 1], 'a\0OcTeT\0BLKSIZE\x001468\0WindowSize\x004\0'));
  assert.equal(p.type, 'RRQ');
  if (p.type !== 'RRQ') return;
  assert.equal(p.mode, 'octet');
  assert.deepEqual(
    [...p.options],
    [
      ['blksize', '1468'],
      ['windowsize', '4'],
    ],
  );
  assert.equal((decode(bytes([0, 2], 'x\0NETASCII\0')) as { mode: string }).mode, 'netascii');
  assert.equal((decode(bytes([0, 2], 'x\0Mail\0')) as { mode: string }).mode, 'mail');
});

test('WRQ without options', () => {
  assert.deepEqual(decode(hex('0002 662e74787400 6f6374657400')), {
    type: 'WRQ',
    filename: 'f.txt',
    mode: 'octet',
    options: new Map(),
  });
});

test('trailing NUL padding after a request is tolerated', () => {
  const p = decode(bytes([0, 1], 'a\0octet\0blksize\x00512\0\0\0\0'));
  assert.deepEqual(p.type === 'RRQ' && [...p.options], [['blksize', '512']]);
});

test('DATA, ACK, ERROR, OACK byte vectors', () => {
  const vectors: [string, TftpPacket][] = [
    ['0003 0001 68656c6c6f', { type: 'DATA', block: 1, data: Buffer.from('hello') }],
    ['0003 ffff', { type: 'DATA', block: 65535, data: Buffer.alloc(0) }],
    ['0004 0000', { type: 'ACK', block: 0 }],
    ['0004 fffe', { type: 'ACK', block: 65534 }],
    ['0005 0001 46696c65206e6f7420666f756e6400', { type: 'ERROR', code: 1, message: 'File not found' }],
    ['0005 0008 00', { type: 'ERROR', code: 8, message: '' }],
    [
      '0006 7473697a6500 3132333400 626c6b73697a6500 3134363800',
      {
        type: 'OACK',
        options: new Map([
          ['tsize', '1234'],
          ['blksize', '1468'],
        ]),
      },
    ],
  ];
  for (const [h, packet] of vectors) {
    assert.deepEqual(decode(hex(h)), packet, h);
    assert.deepEqual(encode(packet), hex(h), h);
  }
});

test('error codes 0-8 have their RFC 1350/2347 numbers', () => {
  assert.deepEqual(Object.values(TftpErrorCode), [0, 1, 2, 3, 4, 5, 6, 7, 8]);
  assert.equal(TftpErrorCode.UnknownTransferId, 5);
  assert.equal(TftpErrorCode.OptionRefused, 8);
});

test('malformed input throws BT_ERR_TFTP_CODEC, never a RangeError', () => {
  throwsCodec(Buffer.alloc(0), /too short/);
  throwsCodec(hex('00'), /too short/);
  throwsCodec(hex('0009 0000'), /unknown opcode 9/);
  throwsCodec(hex('0000'), /unknown opcode 0/);
  throwsCodec(bytes([0, 1], 'file'), /NUL terminator/);
  throwsCodec(bytes([0, 1], 'file\0octet'), /NUL terminator/);
  throwsCodec(bytes([0, 1], 'file\0'), /filename and a mode/);
  throwsCodec(bytes([0, 1], '\0octet\0'), /empty filename/);
  throwsCodec(bytes([0, 1], 'f\0binary\0'), /unknown mode "binary"/);
  throwsCodec(bytes([0, 1], 'f\0octet\0blksize\0'), /has no value/);
  throwsCodec(bytes([0, 1], 'f\0octet\0blksize\x00512\0tsize\0'), /"tsize" has no value/);
  throwsCodec(bytes([0, 1], 'f\0octet\0\x00512\0'), /empty option name/);
  throwsCodec(bytes([0, 1], 'f\0octet\0blksize\x00512\0BLKSIZE\x001024\0'), /twice/);
  throwsCodec(bytes([0, 1], `${'a'.repeat(600)}\0octet\0`), /exceeds 512/);
  throwsCodec(hex('0003 00'), /DATA shorter/);
  throwsCodec(Buffer.concat([hex('00030001'), Buffer.alloc(65465)]), /exceeds/);
  throwsCodec(hex('0004 00'), /ACK must be 4 bytes/);
  throwsCodec(hex('0004 000100'), /ACK must be 4 bytes/);
  throwsCodec(hex('0005 0001'), /ERROR shorter/);
  throwsCodec(hex('0005 0001 4142'), /NUL terminator/);
  throwsCodec(hex('0005 0001 4100 4200'), /after its message/);
  throwsCodec(bytes([0, 6], 'blksize'), /NUL terminator/);
  throwsCodec(bytes([0, 6], 'blksize\0'), /no value/);
  // Every truncation of a valid request throws the codec error, nothing else.
  const good = bytes([0, 1], 'pxelinux.0\0octet\0tsize\x000\0');
  const withoutOptions = 2 + 'pxelinux.0\0octet\0'.length; // a valid RRQ of its own
  for (let n = 0; n < good.length; n++) {
    if (n === withoutOptions) continue;
    assert.throws(
      () => decode(good.subarray(0, n)),
      (e: unknown) => isBootTorrentError(e, 'BT_ERR_TFTP_CODEC'),
    );
  }
});

test('encode refuses what the wire cannot carry', () => {
  const codec = (e: unknown) => isBootTorrentError(e, 'BT_ERR_TFTP_CODEC');
  assert.throws(() => encode({ type: 'ACK', block: 65536 }), codec);
  assert.throws(() => encode({ type: 'ACK', block: -1 }), codec);
  assert.throws(() => encode({ type: 'DATA', block: 1, data: Buffer.alloc(65465) }), codec);
  assert.throws(() => encode({ type: 'RRQ', filename: 'a\0b', mode: 'octet', options: new Map() }), codec);
  assert.throws(() => encode({ type: 'ERROR', code: 70000, message: '' }), codec);
  assert.throws(() => encode({ type: 'OACK', options: new Map([['', '1']]) }), codec);
});

const limits = { maxBlockSize: 1468, maxWindowSize: 64 };

test('negotiation: accepted options only; blksize clamped; bad values left out', () => {
  const n = negotiateRead(
    new Map([
      ['blksize', '65464'],
      ['tsize', '0'],
      ['timeout', '3'],
      ['windowsize', '1000'],
      ['multicast', ''],
    ]),
    'octet',
    4242,
    limits,
  );
  assert.deepEqual(
    [...n.accepted],
    [
      ['blksize', '1468'],
      ['tsize', '4242'],
      ['timeout', '3'],
      ['windowsize', '64'],
    ],
  );
  assert.equal(n.blockSize, 1468);
  assert.equal(n.windowSize, 64);
  assert.equal(n.timeoutMs, 3000);

  const bad = negotiateRead(
    new Map([
      ['blksize', '7'],
      ['timeout', '0'],
      ['windowsize', '0'],
    ]),
    'octet',
    10,
    limits,
  );
  assert.equal(bad.accepted.size, 0);
  // atftp sends "tsize enable"; any value in a read request asks for the size.
  assert.deepEqual(
    [...negotiateRead(new Map([['tsize', 'enable']]), 'octet', 10, limits).accepted],
    [['tsize', '10']],
  );
  assert.equal(bad.blockSize, 512);
  assert.equal(bad.windowSize, 1);
  assert.equal(bad.timeoutMs, undefined);

  assert.equal(negotiateRead(new Map([['blksize', '1432']]), 'octet', 1, limits).blockSize, 1432);
  assert.equal(negotiateRead(new Map([['timeout', '256']]), 'octet', 1, limits).accepted.size, 0);
  // A timeout above our ceiling is left out of the OACK (RFC 2349 lets the server decline it).
  const ceiling = { ...limits, maxTimeoutS: 10 };
  assert.equal(negotiateRead(new Map([['timeout', '255']]), 'octet', 1, ceiling).accepted.size, 0);
  assert.equal(negotiateRead(new Map([['timeout', '255']]), 'octet', 1, ceiling).timeoutMs, undefined);
  assert.equal(negotiateRead(new Map([['timeout', '10']]), 'octet', 1, ceiling).timeoutMs, 10_000);
  // netascii changes the length: no tsize, as tftpd-hpa does.
  assert.equal(negotiateRead(new Map([['tsize', '0']]), 'netascii', 10, limits).accepted.size, 0);
});

test('request paths: leading slashes dropped, climbing, backslashes and control bytes refused', () => {
  assert.equal(cleanRequestPath('/undionly.kpxe'), 'undionly.kpxe');
  assert.equal(cleanRequestPath('//boot/./x//y'), 'boot/x/y');
  const access = (e: unknown) => isBootTorrentError(e, 'BT_ERR_TFTP_ACCESS');
  for (const bad of [
    '../etc/passwd',
    '/../../etc/passwd',
    'a/../../x',
    'a/../b',
    '..',
    '..\\..\\x',
    'a\\b',
    'a\0b',
    'a\nb',
    '/',
    '.',
  ]) {
    assert.throws(() => cleanRequestPath(bad), access, JSON.stringify(bad));
  }
});

test('netascii conversion: LF -> CR LF, CR -> CR NUL', () => {
  assert.deepEqual(toNetascii(Buffer.from('a\nb\rc\r\n')), Buffer.from('a\r\nb\r\0c\r\0\r\n', 'latin1'));
  const plain = Buffer.from('no line ends');
  assert.equal(toNetascii(plain), plain);
});
