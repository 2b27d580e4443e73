/**
 * DHCPv4 codec: byte vectors written from RFC 2131/2132/3396/4578 by hand,
 * packets captured from real firmware (test/fixtures/dhcp/README.md), and
 * malformed input that must fail with BT_ERR_DHCP_CODEC, never RangeError.
 */

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import {
  MIN_PACKET_SIZE,
  MessageType,
  Opt,
  archFromCode,
  clientInfo,
  decode,
  decodeClientArch,
  decodeClientGuid,
  decodeSubOptions,
  decodeUserClass,
  encode,
  encodeSubOptions,
  encodeUserClass,
  ipsValue,
  macOf,
  macToChaddr,
  messageType,
  optionIp,
  optionString,
} from '../../src/dhcp/codec.js';
import { isBootTorrentError } from '../../src/errors.js';
import { intToIp, ipToInt, normalizeMac } from '../../src/util/address.js';
import { pseudoRandomBytes } from '../helpers/tmp.js';

const fixture = (name: string): Buffer =>
  readFileSync(new URL(`../../../test/fixtures/dhcp/${name}`, import.meta.url));

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** A DHCPDISCOVER header for chaddr 52:54:00:12:34:56, xid 0x01020304, broadcast flag. */
function header(): Buffer {
  const b = Buffer.alloc(240);
  b.set([1, 1, 6, 0], 0);
  b.writeUInt32BE(0x01020304, 4);
  b.writeUInt16BE(3, 8);
  b.writeUInt16BE(0x8000, 10);
  hex('525400123456').copy(b, 28);
  b.writeUInt32BE(0x63825363, 236);
  return b;
}

function codecFails(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (err) => isBootTorrentError(err, 'BT_ERR_DHCP_CODEC') && re.test(err.message));
}

test('decode: a hand-built DHCPDISCOVER (RFC 2131 figure 1, RFC 2132 options)', () => {
  const b = Buffer.concat([
    header(),
    hex('350101'), // 53 DISCOVER
    hex('3204 0a000005'), // 50 requested 10.0.0.5
    hex('0000'), // pads are skipped
    hex('370401030f43'), // 55 parameter request list
    hex('0c04 6e6f6465'), // 12 hostname "node"
    hex('ff'),
  ]);
  const p = decode(b);
  assert.equal(p.op, 1);
  assert.equal(p.htype, 1);
  assert.equal(p.hlen, 6);
  assert.equal(p.xid, 0x01020304);
  assert.equal(p.secs, 3);
  assert.equal(p.flags, 0x8000);
  assert.equal(p.ciaddr, '0.0.0.0');
  assert.equal(macOf(p), '52:54:00:12:34:56');
  assert.equal(messageType(p), MessageType.DISCOVER);
  assert.equal(optionIp(p, Opt.REQUESTED_IP), '10.0.0.5');
  assert.deepEqual(p.options.get(Opt.PARAMETER_REQUEST_LIST), hex('01030f43'));
  assert.equal(optionString(p, Opt.HOSTNAME), 'node');
  assert.deepEqual([...p.options.keys()], [53, 50, 55, 12]);
});

test('encode: exact bytes of an OFFER, option 53 first, END, zero padding to 300 bytes', () => {
  const out = encode({
    op: 2,
    xid: 0xcafebabe,
    flags: 0x8000,
    yiaddr: '10.0.0.100',
    siaddr: '10.0.0.1',
    chaddr: macToChaddr('52:54:00:12:34:56'),
    file: 'undionly.kpxe',
    options: new Map([
      [Opt.SERVER_ID, ipsValue(['10.0.0.1'])],
      [Opt.MESSAGE_TYPE, Buffer.from([MessageType.OFFER])],
    ]),
  });
  assert.equal(out.length, MIN_PACKET_SIZE);
  const want = Buffer.alloc(300);
  want.set([2, 1, 6, 0], 0);
  want.writeUInt32BE(0xcafebabe, 4);
  want.writeUInt16BE(0x8000, 10);
  want.set([10, 0, 0, 100], 16);
  want.set([10, 0, 0, 1], 20);
  hex('525400123456').copy(want, 28);
  Buffer.from('undionly.kpxe').copy(want, 108);
  hex('63825363 350102 3604 0a000001 ff').copy(want, 236);
  assert.deepEqual(out, want);
  const back = decode(out);
  assert.equal(back.file, 'undionly.kpxe');
  assert.equal(back.yiaddr, '10.0.0.100');
  assert.equal(macOf(back), '52:54:00:12:34:56');
});

test('RFC 3396: a value over 255 bytes is split on encode and concatenated on decode', () => {
  const long = Buffer.from('x'.repeat(300));
  const out = encode({
    op: 2,
    xid: 1,
    chaddr: macToChaddr('02:00:00:00:00:01'),
    options: new Map([[Opt.DOMAIN_NAME, long]]),
  });
  const at = 240;
  assert.deepEqual([out[at], out[at + 1]], [15, 255]);
  assert.deepEqual([out[at + 2 + 255], out[at + 3 + 255]], [15, 45]);
  assert.deepEqual(decode(out).options.get(Opt.DOMAIN_NAME), long);
});

test('option overload (52): options in file and sname, read options, file, sname (RFC 3396 §5)', () => {
  const b = Buffer.concat([header(), hex('350101 340103 0c0161 ff')]);
  hex('0c0162 3d0701525400123456 ff').copy(b, 108); // file: hostname "b", client id
  hex('0c0163 ff').copy(b, 44); // sname: hostname "c"
  const p = decode(b);
  assert.equal(optionString(p, Opt.HOSTNAME), 'abc');
  assert.deepEqual(p.options.get(Opt.CLIENT_ID), hex('01525400123456'));
  assert.equal(p.file, '');
  assert.equal(p.sname, '');
  // Without overload the same bytes are just names.
  const plain = Buffer.from(b);
  hex('00 00 00').copy(plain, 243);
  const q = decode(plain);
  assert.equal(q.file, '\x0c\x01b=\x07\x01RT');
  codecFails(() => decode(Buffer.concat([header(), hex('340104 ff')])), /overload/);
});

test('malformed packets fail with BT_ERR_DHCP_CODEC', () => {
  codecFails(() => decode(Buffer.alloc(239)), /truncated/);
  const badCookie = header();
  badCookie.writeUInt32BE(0x63825364, 236);
  codecFails(() => decode(badCookie), /magic cookie/);
  codecFails(() => decode(Buffer.concat([header(), hex('0c05 6162')])), /overruns/);
  codecFails(() => decode(Buffer.concat([header(), hex('350101 0c')])), /no length/);
  const badOp = header();
  badOp[0] = 3;
  codecFails(() => decode(badOp), /bad op/);
  const badHlen = header();
  badHlen[2] = 17;
  codecFails(() => decode(badHlen), /hlen/);
  codecFails(() => decodeClientArch(hex('000700')), /odd length/);
  codecFails(() => decodeClientGuid(hex('01')), /UUID/);
  codecFails(() => encode({ op: 2, xid: 1, chaddr: Buffer.alloc(16), file: 'f'.repeat(128) }), /file longer/);
  codecFails(() => encode({ op: 2, xid: 1, chaddr: Buffer.alloc(16), yiaddr: '10.0.0.256' }), /IPv4/);
});

test('no RangeError escapes: every truncation and random corruption of a real packet', () => {
  const real = fixture('ovmf-pxe-discover.bin');
  for (let len = 0; len < real.length; len++) {
    try {
      clientInfo(decode(real.subarray(0, len)));
    } catch (err) {
      assert.ok(isBootTorrentError(err, 'BT_ERR_DHCP_CODEC'), `length ${len}: ${String(err)}`);
    }
  }
  for (let seed = 1; seed <= 300; seed++) {
    const b = Buffer.from(real);
    const noise = pseudoRandomBytes(8, seed);
    for (let i = 0; i < 4; i++) b[240 + ((noise[i] as number) % (b.length - 240))] = noise[i + 4] as number;
    try {
      clientInfo(decode(b));
    } catch (err) {
      assert.ok(isBootTorrentError(err, 'BT_ERR_DHCP_CODEC'), `seed ${seed}: ${String(err)}`);
    }
  }
});

test('PXE options: arch (93), NDI (94), GUID (97), user class (77), sub-options (43/175)', () => {
  assert.deepEqual(decodeClientArch(hex('0000 0007')), [0, 7]);
  assert.deepEqual(
    [0, 6, 7, 9, 11, 16, 19, 10, 15].map((c) => archFromCode(c)),
    [
      'bios',
      'uefi-ia32',
      'uefi-x64',
      'uefi-x64',
      'uefi-arm64',
      'uefi-x64-http',
      'uefi-arm64-http',
      'unknown',
      'unknown',
    ],
  );
  // RFC 4578 §2.3 / SMBIOS: the first three GUID fields are little-endian on the wire.
  assert.equal(
    decodeClientGuid(hex('00 78563412 bc9a f0de 1122 334455667788')),
    '12345678-9abc-def0-1122-334455667788',
  );
  assert.deepEqual(decodeUserClass(Buffer.from('iPXE')), ['iPXE']);
  assert.deepEqual(decodeUserClass(encodeUserClass(['iPXE', 'lab'])), ['iPXE', 'lab']);
  assert.deepEqual(encodeUserClass(['ab']), hex('026162'));
  // PXE_DISCOVERY_CONTROL = 8 (use the boot file), END-terminated (PXE 2.1 §2.4.5).
  assert.deepEqual(encodeSubOptions(new Map([[6, Buffer.from([8])]])), hex('060108ff'));
  assert.deepEqual(
    [...decodeSubOptions(hex('060108 0000 0a02 0203 ff')).entries()],
    [
      [6, hex('08')],
      [10, hex('0203')],
    ],
  );
  assert.equal(normalizeMac('52-54-00-AB-CD-EF'), '52:54:00:ab:cd:ef');
  assert.equal(normalizeMac('5254.00ab.cdef'), '52:54:00:ab:cd:ef');
  assert.equal(normalizeMac('52:54:00:ab:cd'), undefined);
  // One parser for DHCP, HTTP, the environment and the agent (util/address.ts).
  assert.equal(normalizeMac('525400ABCDEF'), '52:54:00:ab:cd:ef');
  assert.equal(normalizeMac('52:54:00:ab:cd:eg'), undefined);
  assert.equal(normalizeMac('52:54:00:ab:cd:ef\n'), undefined);
  assert.equal(ipToInt('10.0.0.1'), 0x0a000001);
  assert.equal(ipToInt('255.255.255.255'), 0xffffffff);
  assert.ok(Number.isNaN(ipToInt('10.0.0.256')) && Number.isNaN(ipToInt('::1')));
  assert.equal(intToIp(0xc0a80001), '192.168.0.1');
  // The vendor class names the architecture when option 93 is missing.
  const noArch = Buffer.concat([
    header(),
    hex('350101'),
    Buffer.from([60, 32]),
    Buffer.from('PXEClient:Arch:00009:UNDI:003016'),
    hex('ff'),
  ]);
  assert.equal(clientInfo(decode(noArch)).arch, 'uefi-x64');
});

// ---- packets captured from real firmware (see test/fixtures/dhcp/README.md) ----

const QEMU_UUID = '12345678-9abc-def0-1122-334455667788';

test('captured: QEMU iPXE ROM, BIOS (SeaBIOS + pxe-virtio.rom)', () => {
  const p = decode(fixture('qemu-ipxe-bios-discover.bin'));
  const info = clientInfo(p);
  assert.equal(messageType(p), MessageType.DISCOVER);
  assert.equal(info.mac, '52:54:00:12:34:56');
  assert.equal(info.arch, 'bios');
  assert.deepEqual(info.archCodes, [0]);
  assert.equal(info.ipxe, true);
  assert.equal(info.pxe, true);
  assert.equal(info.vendorClass, 'PXEClient:Arch:00000:UNDI:002001');
  assert.deepEqual(info.userClass, ['iPXE']);
  assert.equal(info.guid, QEMU_UUID);
  assert.deepEqual(info.ndi, { type: 1, major: 2, minor: 1 });
  // iPXE's option 175 lists its features, e.g. 0x13 (HTTP) and 0x21 (PXE).
  const features = decodeSubOptions(p.options.get(Opt.IPXE_ENCAP) as Buffer);
  assert.deepEqual(features.get(0x13), hex('01'));
  assert.deepEqual(features.get(0x21), hex('01'));
  assert.equal(p.options.get(Opt.MAX_MESSAGE_SIZE)?.readUInt16BE(0), 1472);
  assert.ok(p.options.get(Opt.PARAMETER_REQUEST_LIST)?.includes(Opt.BOOTFILE_NAME));
});

test('captured: iPXE EFI driver under OVMF (efi-virtio.rom)', () => {
  const info = clientInfo(decode(fixture('ovmf-ipxe-efi-discover.bin')));
  assert.equal(info.mac, '52:54:00:ab:cd:ef');
  assert.equal(info.arch, 'uefi-x64');
  assert.equal(info.ipxe, true);
  assert.equal(info.vendorClass, 'PXEClient:Arch:00007:UNDI:003010');
  assert.equal(info.guid, QEMU_UUID);
});

test('captured: OVMF (EDK2) UEFI PXE', () => {
  const p = decode(fixture('ovmf-pxe-discover.bin'));
  const info = clientInfo(p);
  assert.equal(messageType(p), MessageType.DISCOVER);
  assert.equal(info.arch, 'uefi-x64');
  assert.deepEqual(info.archCodes, [7]);
  assert.equal(info.ipxe, false);
  assert.equal(info.pxe, true);
  assert.equal(info.vendorClass, 'PXEClient:Arch:00007:UNDI:003001');
  assert.equal(info.userClass, undefined);
  assert.equal(info.guid, QEMU_UUID);
  assert.deepEqual(info.ndi, { type: 1, major: 3, minor: 1 });
  // Re-encoding what we decoded yields the same options, in order.
  const again = decode(encode(p));
  assert.deepEqual([...again.options], [...p.options]);
});

test('captured: OVMF (EDK2) UEFI HTTP Boot', () => {
  const p = decode(fixture('ovmf-http-discover.bin'));
  const info = clientInfo(p);
  assert.equal(messageType(p), MessageType.DISCOVER);
  assert.equal(info.arch, 'uefi-x64-http');
  assert.deepEqual(info.archCodes, [16]);
  assert.equal(info.httpClient, true);
  assert.equal(info.pxe, false);
  assert.equal(info.ipxe, false);
  assert.equal(info.vendorClass, 'HTTPClient:Arch:00016:UNDI:003001');
  assert.equal(info.guid, QEMU_UUID);
  // It asks for the boot file name option (67), where DHCP puts the URL.
  assert.ok(p.options.get(Opt.PARAMETER_REQUEST_LIST)?.includes(Opt.BOOTFILE_NAME));
});
