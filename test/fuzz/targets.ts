/**
 * One fuzz target per parser that reads bytes from outside (issue #8). Each
 * `run` calls the parser the way its caller does (the DHCP server reads
 * clientInfo of every decoded packet, the TFTP server negotiates options,
 * the peer wire feeds its decoder arbitrary chunks) and may check a property
 * (bencode: what strict decoding accepts re-encodes to the same bytes).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import * as bencode from '../../src/bencode/index.js';
import type { BValue } from '../../src/bencode/index.js';
import * as dhcp from '../../src/dhcp/codec.js';
import * as tftp from '../../src/tftp/codec.js';
import { negotiateRead } from '../../src/tftp/options.js';
import { parseTorrent } from '../../src/torrent/metainfo.js';
import * as wire from '../../src/wire/codec.js';
import { decodeMetadataMessage, encodeMetadataMessage } from '../../src/wire/metadata.js';
import * as udp from '../../src/tracker/udp-codec.js';
import * as http from '../../src/tracker/http-codec.js';
import * as lsd from '../../src/tracker/lsd-codec.js';
import { inspectEnvironment } from '../../src/env/load.js';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { Dashboard } from '../../src/dashboard/dashboard.js';
import { BootHttpServer } from '../../src/http/server.js';
import { dashboardListener } from '../../src/dashboard/listener.js';
import { ClientStore, type ServerSnapshot } from '../../src/server/state.js';
import { NOTHING_SENT } from '../../src/server/traffic.js';
import {
  CATALOG_KIND,
  CATALOG_VERSION,
  parseAgentReport,
  parseBootConfig,
  parseCatalog,
} from '../../src/boot-config.js';
import type { FuzzTarget, Rng } from './harness.js';
import { fixedBootConfig } from '../helpers/boot-policy.js';

// ---------------------------------------------------------------- helpers

function randomIp(rng: Rng): string {
  return [rng.int(256), rng.int(256), rng.int(256), rng.int(256)].join('.');
}

/** A random bencode value, depth-limited. */
export function randomBValue(rng: Rng, depth = 0): BValue {
  const k = rng.int(depth > 3 ? 2 : 4);
  if (k === 0) return rng.pick([0, 1, -1, 42, 2 ** 31, -(2 ** 31), Number.MAX_SAFE_INTEGER, rng.u32()]);
  if (k === 1) {
    // Rarely a string as long as a body limit: counts derived from lengths
    // (compact peers, pieces) are where spread calls and quadratic loops fail.
    if (rng.chance(0.003)) return Buffer.alloc(rng.pick([6 * 180_000, 18 * 60_000, 20 * 50_000, 1 << 20]), 1);
    return rng.chance(0.8) ? Buffer.from(rng.text(24), 'latin1') : rng.bytes(rng.int(64));
  }
  if (k === 2) return Array.from({ length: rng.int(5) }, () => randomBValue(rng, depth + 1));
  const m = new Map<string, BValue>();
  const n = rng.int(5);
  for (let i = 0; i < n; i++) m.set(rng.text(8), randomBValue(rng, depth + 1));
  return m;
}

/** Replaces one random node of a bencode tree (or a JS tree) with `make()`. */
function replaceRandomNode<T>(rng: Rng, root: T, make: () => T): T {
  const holders: { get: () => T; set: (v: T) => void }[] = [];
  const walk = (v: unknown, set: (x: T) => void): void => {
    holders.push({ get: () => v as T, set });
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, (y) => (v[i] = y)));
    else if (v instanceof Map) for (const [key, x] of v) walk(x, (y) => v.set(key, y));
    else if (v !== null && typeof v === 'object' && !Buffer.isBuffer(v)) {
      const o = v as Record<string, unknown>;
      for (const key of Object.keys(o)) walk(o[key], (y) => (o[key] = y));
    }
  };
  let out = root;
  walk(root, (y) => (out = y));
  const h = rng.pick(holders);
  const action = rng.int(4);
  const cur = h.get();
  if (action === 0 && cur instanceof Map && cur.size > 0) cur.delete(rng.pick([...cur.keys()]));
  else if (
    action === 0 &&
    cur !== null &&
    typeof cur === 'object' &&
    !Array.isArray(cur) &&
    !Buffer.isBuffer(cur)
  ) {
    const o = cur as Record<string, unknown>;
    const keys = Object.keys(o);
    if (keys.length > 0) delete o[rng.pick(keys)];
  } else h.set(make());
  return out;
}

/** A random JSON-ish value: what a hostile or broken peer would put in a field. */
function randomJson(rng: Rng, depth = 0): unknown {
  switch (rng.int(depth > 2 ? 6 : 8)) {
    case 0:
      return null;
    case 1:
      return rng.chance(0.5);
    case 2:
      return rng.pick([0, -1, 1, 1.5, 1e308, -1e308, 2 ** 53, 65536, 4294967296, NaN]);
    case 3:
      return rng.text(12);
    case 4:
      return rng.pick([
        '',
        '..',
        '../etc/passwd',
        '/abs',
        'a\u0000b',
        'x'.repeat(3000),
        'http://x/',
        '__proto__',
      ]);
    case 5:
      return rng.pick([
        '10.0.0.1',
        '999.1.1.1',
        'eth0',
        'full',
        'proxy',
        'kexec',
        'linux',
        '30s',
        '1h',
        '-5',
      ]);
    case 6:
      return Array.from({ length: rng.int(4) }, () => randomJson(rng, depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      const n = rng.int(4);
      for (let i = 0; i < n; i++)
        o[rng.pick(['a', 'name', 'method', 'version', rng.text(6)])] = randomJson(rng, depth + 1);
      return o;
    }
  }
}

function isBootTorrent(err: unknown): boolean {
  return err instanceof Error && err.name === 'BootTorrentError';
}

// ---------------------------------------------------------------- DHCP

const dhcpTarget: FuzzTarget = {
  name: 'dhcp',
  generate(rng) {
    const options = new Map<number, Buffer>();
    options.set(dhcp.Opt.MESSAGE_TYPE, Buffer.from([1 + rng.int(8)]));
    const n = rng.int(8);
    for (let i = 0; i < n; i++) {
      const code = rng.pick([43, 50, 54, 55, 57, 60, 61, 77, 93, 94, 97, 175, 1 + rng.int(253)]);
      options.set(code, rng.bytes(rng.int(rng.chance(0.1) ? 300 : 20)));
    }
    return dhcp.encode({
      op: 1 + rng.int(2),
      xid: rng.u32(),
      chaddr: rng.bytes(16),
      hlen: rng.pick([6, 0, 16, 17, 255]),
      flags: rng.pick([0, 0x8000, rng.int(65536)]),
      ciaddr: randomIp(rng),
      options,
    });
  },
  run(input) {
    const p = dhcp.decode(input);
    // The server reads all of this from every request before deciding.
    dhcp.clientInfo(p);
    dhcp.macOf(p);
    dhcp.messageType(p);
    dhcp.optionIp(p, 50);
    dhcp.optionIp(p, 54);
    dhcp.optionString(p, 60);
    dhcp.encode(p);
  },
};

// ---------------------------------------------------------------- TFTP

const tftpTarget: FuzzTarget = {
  name: 'tftp',
  seeds() {
    const opts = new Map([
      ['blksize', '1468'],
      ['tsize', '0'],
      ['windowsize', '8'],
      ['timeout', '3'],
    ]);
    return [
      tftp.encode({ type: 'RRQ', filename: 'undionly.kpxe', mode: 'octet', options: new Map() }),
      tftp.encode({ type: 'RRQ', filename: 'ipxe.efi', mode: 'octet', options: opts }),
      tftp.encode({
        type: 'RRQ',
        filename: 'pxelinux.cfg/default',
        mode: 'netascii',
        options: new Map([['tsize', '0']]),
      }),
      tftp.encode({ type: 'WRQ', filename: 'x', mode: 'octet', options: new Map() }),
      tftp.encode({ type: 'DATA', block: 1, data: Buffer.alloc(512, 7) }),
      tftp.encode({ type: 'ACK', block: 65535 }),
      tftp.encode({ type: 'ERROR', code: 1, message: 'File not found' }),
      tftp.encode({ type: 'OACK', options: opts }),
    ];
  },
  generate(rng) {
    const options = new Map<string, string>();
    const n = rng.int(6);
    for (let i = 0; i < n; i++) {
      options.set(
        rng.pick(['blksize', 'tsize', 'timeout', 'windowsize', 'BLKSIZE', rng.text(6) || 'x']),
        rng.pick(['0', '8', '65464', '65465', '99999999999', '-1', 'enable', '', String(rng.u32())]),
      );
    }
    const filename = rng.pick(['a', '../../etc/passwd', 'x'.repeat(400), rng.text(30) || 'f']);
    try {
      return tftp.encode({
        type: rng.chance(0.9) ? 'RRQ' : 'WRQ',
        filename,
        mode: rng.pick(['octet', 'netascii', 'mail']),
        options,
      });
    } catch {
      return tftp.encode({ type: 'ACK', block: rng.int(65536) });
    }
  },
  run(input) {
    const p = tftp.decode(input);
    if (p.type === 'RRQ') {
      negotiateRead(p.options, p.mode, 1 << 20, { maxBlockSize: 1468, maxWindowSize: 16 });
      negotiateRead(p.options, p.mode, undefined, { maxBlockSize: 65464, maxWindowSize: 65535 });
    }
    tftp.encode(p);
  },
};

// ---------------------------------------------------------------- bencode

/** Decode, replace one node with a random value, encode: valid bencode with a wrong field. */
function bencodeMutate(rng: Rng, input: Buffer): Buffer | undefined {
  try {
    const v = bencode.decode(input, { strictKeyOrder: false });
    return bencode.encode(replaceRandomNode(rng, v, () => randomBValue(rng, 2)));
  } catch {
    return undefined;
  }
}

const bencodeTarget: FuzzTarget = {
  name: 'bencode',
  seeds() {
    return [
      Buffer.from('d3:cow3:moo4:spam4:eggse'),
      Buffer.from('l4:spami42ee'),
      Buffer.from('i-3e'),
      Buffer.from('d4:infod6:lengthi1024e4:name1:a12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaaee'),
      Buffer.from('l'.repeat(70) + 'e'.repeat(70)),
    ];
  },
  generate(rng) {
    return bencode.encode(randomBValue(rng));
  },
  mutateStructured: (rng, input) => bencodeMutate(rng, input),
  run(input) {
    let strictOk = false;
    try {
      const v = bencode.decode(input);
      strictOk = true;
      // Property: strict decoding refuses every non-canonical form, so what
      // it accepts must re-encode to exactly the input.
      const again = bencode.encode(v);
      if (!again.equals(input)) throw new Error(`re-encoding differs: ${again.toString('hex')}`);
    } catch (err) {
      if (!isBootTorrent(err)) throw err;
    }
    try {
      bencode.decodeWithSpans(input, { strictKeyOrder: false });
    } catch (err) {
      if (!isBootTorrent(err)) throw err;
      if (strictOk) throw new Error('lax decoding refused what strict decoding accepted');
    }
    bencode.decodePrefix(input, { maxDepth: 8 });
  },
};

// ---------------------------------------------------------------- metainfo

function sampleTorrent(rng: Rng | null, multi: boolean): Buffer {
  const pieceLength = 16384;
  const info = new Map<string, BValue>();
  if (multi) {
    info.set('files', [
      new Map<string, BValue>([
        ['length', 20000],
        ['path', [Buffer.from('dir'), Buffer.from('a.bin')]],
      ]),
      new Map<string, BValue>([
        ['length', 5],
        ['path', [Buffer.from(rng ? rng.pick(['b', '..', '', '/', 'c\u0000']) : 'b')]],
      ]),
    ]);
  } else info.set('length', rng ? rng.pick([0, 1, 16384, 16385, -1, 2 ** 40]) : 30000);
  info.set('name', Buffer.from(rng ? rng.pick(['os', '..', '', 'a/b']) : 'os'));
  info.set('piece length', rng ? rng.pick([pieceLength, 0, 1, 3, 2 ** 31]) : pieceLength);
  info.set('pieces', Buffer.alloc(rng ? 20 * rng.int(4) : 40, 1));
  if (rng?.chance(0.3)) info.set('private', rng.int(3));
  const infoBuf = bencode.encode(info);
  const top = new Map<string, BValue>([
    ['announce', Buffer.from('udp://127.0.0.1:6969')],
    ['announce-list', [[Buffer.from('http://127.0.0.1/announce')]]],
    ['info', new bencode.RawBencode(infoBuf) as unknown as BValue],
  ]);
  if (rng?.chance(0.3))
    top.set('url-list', rng.chance(0.5) ? Buffer.from('http://x/') : [Buffer.from('http://y/')]);
  return bencode.encode(top);
}

const metainfoTarget: FuzzTarget = {
  name: 'metainfo',
  seeds: () => [sampleTorrent(null, false), sampleTorrent(null, true)],
  generate: (rng) => sampleTorrent(rng, rng.chance(0.5)),
  mutateStructured: (rng, input) => bencodeMutate(rng, input),
  run(input) {
    parseTorrent(input, 'fuzz.torrent');
  },
};

// ---------------------------------------------------------------- peer wire

function sampleWireMessages(rng: Rng | null): wire.WireMessage[] {
  const r = (n: number): number => (rng ? rng.int(n) : 1);
  return [
    { type: 'keep-alive' },
    { type: 'choke' },
    { type: 'unchoke' },
    { type: 'interested' },
    { type: 'not-interested' },
    { type: 'have', index: r(1000) },
    { type: 'bitfield', bits: Buffer.from([0xff, 0x80]) },
    { type: 'request', index: r(10), begin: 16384, length: 16384 },
    { type: 'piece', index: r(10), begin: 0, block: Buffer.alloc(r(64), 3) },
    { type: 'cancel', index: 0, begin: 0, length: 16384 },
    { type: 'port', port: 6881 },
    { type: 'suggest', index: 3 },
    { type: 'have-all' },
    { type: 'have-none' },
    { type: 'reject', index: 0, begin: 0, length: 16384 },
    { type: 'allowed-fast', index: 9 },
    {
      type: 'extended',
      id: 0,
      payload: wire.encodeExtendedHandshake({
        m: new Map([
          ['ut_metadata', 2],
          ['ut_pex', 1],
        ]),
        p: 6881,
        v: 'bt',
        metadataSize: 1234,
      }),
    },
    {
      type: 'extended',
      id: 1,
      payload: wire.encodePex({
        added: [
          { host: '10.0.0.2', port: 6881, flags: 2 },
          { host: '::1', port: 1 },
        ],
        dropped: [{ host: '10.0.0.3', port: 2 }],
      }),
    },
    {
      type: 'extended',
      id: 2,
      payload: encodeMetadataMessage({ type: 'data', piece: 0, totalSize: 100, data: Buffer.alloc(100) }),
    },
  ];
}

const wireTarget: FuzzTarget = {
  name: 'wire',
  seeds() {
    const msgs = sampleWireMessages(null);
    const hs = wire.encodeHandshake({
      infoHash: Buffer.alloc(20, 1),
      peerId: Buffer.alloc(20, 2),
      reserved: wire.reservedBytes({ fast: true, extended: true }),
    });
    return [Buffer.concat(msgs.map(wire.encodeMessage)), ...msgs.map(wire.encodeMessage), hs];
  },
  generate(rng) {
    const all = sampleWireMessages(rng);
    const n = 1 + rng.int(6);
    return Buffer.concat(Array.from({ length: n }, () => wire.encodeMessage(rng.pick(all))));
  },
  run(input, rng) {
    // The streaming decoder over random chunkings: the one that meets TCP.
    const dec = new wire.MessageDecoder({
      maxLength: rng.chance(0.5) ? wire.DEFAULT_MAX_MESSAGE_LENGTH : 1 + rng.int(4096),
    });
    dec.reuseBodies = rng.chance(0.5);
    let pos = 0;
    let err: unknown = null;
    while (pos < input.length && err === null) {
      const n = rng.chance(0.3) ? 1 : 1 + rng.int(Math.max(1, input.length - pos));
      try {
        for (const m of dec.push(input.subarray(pos, pos + n))) {
          if (m.type === 'extended') inspectExtended(m);
        }
      } catch (e) {
        if (!isBootTorrent(e)) throw e;
        err = e;
      }
      pos += n;
    }
    if (input.length >= wire.HANDSHAKE_LENGTH) {
      try {
        wire.decodeHandshake(input.subarray(0, wire.HANDSHAKE_LENGTH));
      } catch (e) {
        if (!isBootTorrent(e)) throw e;
      }
    }
    wire.decodeMessage(input);
  },
};

/** What the connection does with an extended message's payload. */
function inspectExtended(m: wire.ExtendedMessage): void {
  for (const f of [wire.decodeExtendedHandshake, wire.decodePex, decodeMetadataMessage]) {
    try {
      f(m.payload);
    } catch (e) {
      if (!isBootTorrent(e)) throw e;
    }
  }
}

const wireExtTarget: FuzzTarget = {
  name: 'wire-extended',
  seeds() {
    return sampleWireMessages(null)
      .filter((m): m is wire.ExtendedMessage => m.type === 'extended')
      .map((m) => m.payload)
      .concat([
        encodeMetadataMessage({ type: 'request', piece: 0 }),
        encodeMetadataMessage({ type: 'reject', piece: 5 }),
      ]);
  },
  mutateStructured: (rng, input) => bencodeMutate(rng, input),
  run(input) {
    inspectExtended({ type: 'extended', id: 0, payload: input });
    decodeMetadataMessage(input);
  },
};

// ---------------------------------------------------------------- trackers

function sampleAnnounce(rng: Rng | null): udp.UdpAnnounceRequest['request'] {
  return {
    infoHash: Buffer.alloc(20, 0xab),
    peerId: Buffer.from('-BT0001-abcdefghijkl'),
    port: rng ? rng.int(65536) : 6881,
    uploaded: rng ? rng.u32() : 0,
    downloaded: 1000,
    left: rng ? rng.pick([0, 1, 2 ** 40]) : 5000,
    event: rng ? rng.pick(['none', 'started', 'completed', 'stopped'] as const) : 'started',
    numWant: rng ? rng.pick([undefined, 0, 50, 200]) : 50,
    key: 0x1234,
  };
}

const udpTrackerTarget: FuzzTarget = {
  name: 'udp-tracker',
  seeds() {
    return [
      udp.encodeUdpRequest({ action: 'connect', transactionId: 7 }),
      udp.encodeUdpRequest({
        action: 'announce',
        connectionId: 0x1122334455667788n,
        transactionId: 8,
        request: sampleAnnounce(null),
      }),
      udp.encodeUdpRequest({
        action: 'scrape',
        connectionId: 1n,
        transactionId: 9,
        infoHashes: [Buffer.alloc(20, 1), Buffer.alloc(20, 2)],
      }),
      udp.encodeUdpResponse({ action: 'connect', transactionId: 7, connectionId: 5n }),
      udp.encodeUdpResponse({
        action: 'announce',
        transactionId: 8,
        interval: 1800,
        incomplete: 1,
        complete: 2,
        peers: [{ ip: '10.0.0.5', port: 6881 }],
      }),
      udp.encodeUdpResponse({
        action: 'scrape',
        transactionId: 9,
        files: [{ complete: 1, downloaded: 2, incomplete: 3 }],
      }),
      udp.encodeUdpResponse({ action: 'error', transactionId: 9, message: 'unknown torrent' }),
    ];
  },
  generate(rng) {
    return udp.encodeUdpRequest({
      action: 'announce',
      connectionId: BigInt(rng.u32()),
      transactionId: rng.u32(),
      request: sampleAnnounce(rng),
    });
  },
  run(input) {
    try {
      udp.decodeUdpRequest(input);
    } catch (e) {
      if (!isBootTorrent(e)) throw e;
    }
    udp.decodeUdpResponse(input);
  },
};

const httpTrackerTarget: FuzzTarget = {
  name: 'http-tracker',
  seeds() {
    const ann = new URL(http.buildAnnounceUrl('http://127.0.0.1/announce', sampleAnnounce(null)));
    const scrape = new URL(
      http.buildScrapeUrl('http://127.0.0.1/scrape', { infoHashes: [Buffer.alloc(20, 9)] }),
    );
    const resp = {
      interval: 1800,
      minInterval: 60,
      complete: 1,
      incomplete: 2,
      peers: [{ ip: '10.0.0.9', port: 51413 }],
      warning: 'w',
    };
    return [
      Buffer.from(`Q${ann.search.slice(1)}`, 'latin1'),
      Buffer.from(`Q${scrape.search.slice(1)}`, 'latin1'),
      Buffer.concat([Buffer.from('A'), http.encodeAnnounceResponse(resp, { compact: true })]),
      Buffer.concat([Buffer.from('A'), http.encodeAnnounceResponse(resp, { compact: false })]),
      Buffer.concat([Buffer.from('A'), http.encodeFailure('nope')]),
      Buffer.concat([
        Buffer.from('S'),
        http.encodeScrapeResponse({
          files: new Map([['ab'.repeat(20), { complete: 1, downloaded: 2, incomplete: 3 }]]),
        }),
      ]),
    ];
  },
  mutateStructured(rng, input) {
    if (input[0] !== 0x41 && input[0] !== 0x53) return undefined;
    const body = bencodeMutate(rng, input.subarray(1));
    return body && Buffer.concat([input.subarray(0, 1), body]);
  },
  // First byte picks the side: Q = server reads a query string, A/S = client reads a reply.
  run(input) {
    const body = input.subarray(1);
    const kind = input[0];
    if (kind === 0x41) {
      http.decodeAnnounceResponse(Buffer.from(body));
    } else if (kind === 0x53) {
      http.decodeScrapeResponse(Buffer.from(body));
    } else {
      const q = body.toString('latin1');
      try {
        http.parseScrapeQuery(q);
      } catch (e) {
        if (!isBootTorrent(e)) throw e;
      }
      http.parseAnnounceQuery(q);
    }
  },
};

const lsdTarget: FuzzTarget = {
  name: 'lsd',
  seeds() {
    return [
      lsd.encode({ port: 6881, infoHashes: ['ab'.repeat(20)], cookie: 'c00kie' }),
      lsd.encode({ port: 1, infoHashes: ['ab'.repeat(20), 'cd'.repeat(20)] }),
      Buffer.from(
        'BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6881\r\nInfohash: ' +
          'AB'.repeat(20) +
          '\r\n\r\n\r\n',
      ),
    ];
  },
  generate(rng) {
    const hashes = Array.from({ length: 1 + rng.int(rng.chance(0.1) ? 70 : 3) }, () => rng.bytes(20));
    try {
      return lsd.encode({
        port: rng.int(65536),
        infoHashes: hashes,
        cookie: rng.chance(0.5) ? 'k' + rng.u32() : undefined,
      });
    } catch {
      return lsd.encode({ port: 1, infoHashes: [Buffer.alloc(20)] });
    }
  },
  run(input) {
    lsd.decode(input);
  },
};

// ---------------------------------------------------------------- boot config

const BOOT_CONFIG = {
  version: 1,
  mac: '52:54:00:12:34:56',
  server: 'http://10.0.0.1:8080/',
  menu: { timeout: 5, default: 'linux' },
  seedTime: 60,
  peers: { trackers: ['http://10.0.0.1:6969/announce'], seeds: ['10.0.0.1:6881'], lsd: true, pex: true },
  reportUrl: 'http://10.0.0.1:8080/api/v1/report/52:54:00:12:34:56',
  reportToken: 'tok',
  oss: [
    {
      id: 'linux',
      name: 'Linux',
      method: 'kexec',
      torrentUrl: 'http://10.0.0.1:8080/t/linux.torrent',
      infoHash: 'ab'.repeat(20),
      files: [
        { path: 'vmlinuz', length: 1, sha256: '0'.repeat(64) },
        { path: 'initrd.img', length: 1, sha256: '1'.repeat(64) },
      ],
      kernel: 'vmlinuz',
      initrd: ['initrd.img'],
      cmdline: 'quiet',
    },
    {
      id: 'win',
      name: 'Win',
      method: 'qemu',
      torrentUrl: 'http://10.0.0.1:8080/t/win.torrent',
      infoHash: 'cd'.repeat(20),
      files: [{ path: 'disk.img', length: 5, sha256: '2'.repeat(64) }],
      args: ['-m', '2048'],
    },
    {
      id: 'tool',
      name: 'Tool',
      method: 'bin',
      torrentUrl: 'http://10.0.0.1:8080/t/tool.torrent',
      infoHash: 'ef'.repeat(20),
      files: [{ path: 'bin/run', length: 5, sha256: '3'.repeat(64) }],
      bin: 'bin/run',
      args: [],
    },
  ],
};

function jsonMutate(rng: Rng, input: Buffer): Buffer | undefined {
  let v: unknown;
  try {
    v = JSON.parse(input.toString('utf8'));
  } catch {
    return undefined;
  }
  return Buffer.from(JSON.stringify(replaceRandomNode(rng, v, () => randomJson(rng))) ?? 'null');
}

const bootConfigTarget: FuzzTarget = {
  name: 'boot-config',
  seeds: () => [
    Buffer.from(JSON.stringify(BOOT_CONFIG)),
    Buffer.from(
      JSON.stringify({ stage: 'downloading', progress: 0.5, downloaded: 10, peers: 3, os: 'linux' }),
    ),
    Buffer.from(JSON.stringify({ stage: 'error', error: 'disk full' })),
    // A satellite's catalog (the same OS entries).
    Buffer.from(
      JSON.stringify({
        kind: CATALOG_KIND,
        version: CATALOG_VERSION,
        server: 'http://10.0.0.1',
        issued: 1,
        defaultOs: BOOT_CONFIG.oss[0]!.id,
        trackers: [],
        seeds: ['10.0.0.1:6881'],
        oss: BOOT_CONFIG.oss,
      }),
    ),
  ],
  mutateStructured: jsonMutate,
  run(input) {
    const text = input.toString('utf8');
    for (const parse of [parseAgentReport, parseCatalog])
      try {
        parse(text);
      } catch (e) {
        if (!isBootTorrent(e)) throw e;
      }
    parseBootConfig(text);
  },
};

// ---------------------------------------------------------------- environment files

const V1_ENV = `version: 1
server:
  interface: eth1
  address: 10.0.0.1
dhcp:
  mode: full
  range: 10.0.0.100-10.0.0.199
boot:
  default_os: linux
`;

const OS_KEXEC = 'name: Linux\nmethod: kexec\nkernel: vmlinuz\ninitrd: initrd.img\ncmdline: quiet\n';

function yamlMutate(rng: Rng, input: Buffer): Buffer | undefined {
  let v: unknown;
  try {
    v = parseYaml(input.toString('utf8'), { version: '1.1', maxAliasCount: 50 });
  } catch {
    return undefined;
  }
  try {
    return Buffer.from(stringifyYaml(replaceRandomNode(rng, v, () => randomJson(rng))));
  } catch {
    return undefined;
  }
}

/**
 * The environment loader reads a folder: the fuzzed text goes into
 * Boottorrent.yaml (target `env`) or oss/linux/config.yaml (`env-os`) of a
 * temporary folder that also holds a valid version 0 and 1 layout.
 */
function envTarget(name: 'env' | 'env-os'): FuzzTarget & { dispose(): void } {
  let dir: string | null = null;
  const ensure = (): string => {
    if (dir) return dir;
    dir = mkdtempSync(join(tmpdir(), 'bt-fuzz-env-'));
    const files: Record<string, string> = {
      'Boottorrent.yaml': V1_ENV,
      'oss/linux/config.yaml': OS_KEXEC,
      'oss/linux/vmlinuz': 'k',
      'oss/linux/initrd.img': 'i',
      'oss/linuxos/config.yaml':
        'dispname: TestOS\nmethod: kexec\nkernel: vmlinuz\ninitrd: initrd.img\ncmdline: "break"\n',
      'oss/linuxos/vmlinuz': 'k',
      'oss/linuxos/initrd.img': 'i',
      'oss/alpine/config.yaml':
        'dispname: Alpine Linux\nmethod: bin-qemu-x86_64\nargs: "-cdrom alpine.iso"\n',
      'oss/alpine/alpine.iso': 'iso',
    };
    for (const [rel, text] of Object.entries(files)) {
      mkdirSync(join(dir, rel, '..'), { recursive: true });
      writeFileSync(join(dir, rel), text);
    }
    return dir;
  };
  return {
    name,
    // The files are the administrator's own, not network input; the yaml
    // library's parse time grows faster than linearly with thousands of keys
    // (about 0.6 s for 95 KB of repeated keys), so inputs stay at real sizes.
    maxInputBytes: 16 * 1024,
    mutateStructured: yamlMutate,
    async run(input) {
      const d = ensure();
      const file = name === 'env' ? 'Boottorrent.yaml' : 'oss/linux/config.yaml';
      writeFileSync(join(d, file), input);
      try {
        const r = await inspectEnvironment(d, { machineChecks: false });
        if (r.env === null && r.problems.length === 0) throw new Error('no environment and no problem');
      } finally {
        writeFileSync(join(d, file), name === 'env' ? V1_ENV : OS_KEXEC);
      }
    },
    dispose() {
      if (dir) rmSync(dir, { recursive: true, force: true });
      dir = null;
    },
  };
}

/**
 * Raw HTTP requests (request line and headers as bytes) against the two
 * HTTP servers a LAN reaches: the boot server (iPXE script, menus, phase-1
 * files under a mount, an exact file) and the dashboard port (as `start`
 * mounts it). Each request is sent on its own loopback connection. Every
 * one must be answered or closed by the server within the case time, none
 * with a 5xx (bad input is the client's error), and no reply may carry the
 * file kept next to the served folder.
 */
function httpRequestTarget(): FuzzTarget & { dispose(): void } {
  const SECRET = 'BT-FUZZ-SECRET-9f1c';
  let state: { dir: string; boot: BootHttpServer; dash: Server; ports: number[] } | null = null;
  const ensure = async () => {
    if (state) return state;
    const dir = mkdtempSync(join(tmpdir(), 'bt-fuzz-http-'));
    mkdirSync(join(dir, 'phase1'));
    writeFileSync(join(dir, 'phase1', 'vmlinuz'), 'kernel bytes\n');
    writeFileSync(join(dir, 'phase1', 'initrd.img'), 'initrd bytes\n');
    writeFileSync(join(dir, 'secret.txt'), SECRET);
    writeFileSync(join(dir, 'ipxe.efi'), 'ipxe\n');
    const allowed = '52:54:00:12:34:56';
    const boot = new BootHttpServer(
      {
        host: '127.0.0.1',
        port: 0,
        mounts: { '/phase1/': join(dir, 'phase1') },
        files: { '/ipxe.efi': join(dir, 'ipxe.efi') },
      },
      {
        policy: {
          phaseOneFor: (mac) =>
            mac === allowed
              ? {
                  kernelUrl: 'http://127.0.0.1/phase1/vmlinuz',
                  initrdUrls: ['http://127.0.0.1/phase1/initrd.img'],
                  cmdline: 'quiet',
                }
              : { refused: 'not on the list' },
          bootConfigFor: (mac) => (mac === allowed ? fixedBootConfig(mac) : undefined),
        },
      },
    );
    const bootPort = await boot.listen();
    const store = new ClientStore();
    store.report(allowed, '10.0.0.5', { stage: 'downloading', os: 'linux', progress: 0.5 });
    const snapshot = (): ServerSnapshot => ({
      startedAt: 0,
      now: 0,
      server: {
        address: '127.0.0.1',
        interface: 'lo',
        httpPort: bootPort,
        dhcp: 'proxy',
        environment: 'fuzz',
        phase1Size: 0,
      },
      clients: store.list(),
      swarms: [],
      totals: {
        serverUploaded: 0,
        delivered: 0,
        deliveredPhase1: 0,
        deliveredOs: 0,
        sent: NOTHING_SENT,
        booted: 0,
        failed: 0,
      },
    });
    const dashboard = new Dashboard(
      { snapshot, changes: store, token: 'fuzz-token' },
      { hostname: 'labserver', keepAliveMs: 60_000 },
    );
    const dash = createServer(dashboardListener(dashboard, snapshot));
    dash.headersTimeout = 2000;
    await new Promise<void>((resolve) => dash.listen(0, '127.0.0.1', resolve));
    state = { dir, boot, dash, ports: [bootPort, (dash.address() as AddressInfo).port] };
    return state;
  };
  /** Sends `request`, collects what comes back until the server closes or has been quiet for a moment. */
  const exchange = (port: number, request: Buffer) =>
    new Promise<string>((resolve, reject) => {
      const sock = connect(port, '127.0.0.1');
      const chunks: Buffer[] = [];
      let quiet: NodeJS.Timeout | undefined;
      const finish = () => {
        clearTimeout(quiet);
        clearTimeout(limit);
        sock.destroy();
        resolve(Buffer.concat(chunks).toString('latin1'));
      };
      // An event stream never ends: once something came, a pause ends the exchange.
      sock.on('data', (d: Buffer) => {
        chunks.push(d);
        clearTimeout(quiet);
        quiet = setTimeout(finish, 30);
      });
      sock.on('close', finish);
      sock.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' ? finish() : reject(err)));
      const limit = setTimeout(() => {
        sock.destroy();
        reject(new Error('no answer and no close within 3 s'));
      }, 3000);
      sock.end(request);
    });
  return {
    name: 'http-request',
    maxInputBytes: 16 * 1024,
    maxCaseMs: 3500,
    seeds() {
      const req = (line: string, ...headers: string[]) =>
        Buffer.from(
          `${line}\r\n${[...headers, ''].map((h) => (h ? `${h}\r\n` : '\r\n')).join('')}`,
          'latin1',
        );
      return [
        req('GET /boot.ipxe?mac=52:54:00:12:34:56 HTTP/1.1', 'Host: 10.0.0.1'),
        req('GET /boot.ipxe?mac=zz HTTP/1.1', 'Host: 10.0.0.1'),
        req('GET /api/v1/boot/52-54-00-12-34-56 HTTP/1.1', 'Host: 10.0.0.1'),
        req('GET /phase1/vmlinuz HTTP/1.1', 'Host: 10.0.0.1', 'Range: bytes=2-5'),
        req('HEAD /phase1/initrd.img?mac=52:54:00:12:34:56 HTTP/1.1', 'Host: 10.0.0.1'),
        req('GET /phase1/../secret.txt HTTP/1.1', 'Host: 10.0.0.1'),
        req('GET /phase1/%2e%2e/secret.txt HTTP/1.1', 'Host: 10.0.0.1'),
        req('GET /ipxe.efi HTTP/1.0'),
        req('GET // HTTP/1.1', 'Host: 127.0.0.1:8480'),
        req('GET / HTTP/1.1', 'Host: 127.0.0.1:8480'),
        req('GET /api/v1/status HTTP/1.1', 'Host: labserver:8480'),
        req('GET /api/v1/status HTTP/1.1', 'Host: rebind.evil.example'),
        req('GET /api/v1/events HTTP/1.1', 'Host: [::1]:8480', 'Accept: text/event-stream'),
        req(
          'POST /api/v1/actions/x HTTP/1.1',
          'Host: 127.0.0.1',
          'Authorization: Bearer fuzz-token',
          'Content-Length: 2',
        ),
        Buffer.from(
          'POST /api/v1/actions/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\n{}',
          'latin1',
        ),
        req('OPTIONS * HTTP/1.1', 'Host: 127.0.0.1'),
      ];
    },
    async run(input) {
      const { ports } = await ensure();
      for (const port of ports) {
        const reply = await exchange(port, input);
        const status = /^HTTP\/1\.[01] (\d{3})/gm;
        for (let m = status.exec(reply); m; m = status.exec(reply)) {
          if (m[1]!.startsWith('5') && m[1] !== '503') throw new Error(`answered ${m[1]} on port ${port}`);
        }
        if (reply.includes(SECRET)) throw new Error(`port ${port} sent the file outside its folder`);
      }
    },
    dispose() {
      if (!state) return;
      const s = state;
      state = null;
      s.dash.closeAllConnections();
      s.dash.close();
      void s.boot.close();
      rmSync(s.dir, { recursive: true, force: true });
    },
  };
}

/** Every target, in the order the CI test runs them. */
export function allTargets(): (FuzzTarget & { dispose?(): void })[] {
  return [
    dhcpTarget,
    tftpTarget,
    bencodeTarget,
    metainfoTarget,
    wireTarget,
    wireExtTarget,
    udpTrackerTarget,
    httpTrackerTarget,
    lsdTarget,
    bootConfigTarget,
    envTarget('env'),
    envTarget('env-os'),
    httpRequestTarget(),
  ];
}
