/**
 * Stateful wire fuzzing (issue #14): a hostile peer plays whole
 * conversations against this project's real swarm sessions, not against
 * one parser. Per-parser fuzzing (targets.ts) could not find a bug that
 * lives in a combination of states, such as a BEP 10 extended handshake
 * whose `m` gives ut_pex the id 0 ("disabled") followed, a minute later,
 * by the session's PEX timer.
 *
 * A case is a script: a JSON list of actions (open a connection over TCP
 * or an in-memory pipe, a valid or broken handshake, extended handshakes
 * with random `m` maps, PEX, ut_metadata, requests, cancels, rejects,
 * blocks good and bad, floods, raw bytes, half and full closes, a reader
 * that stops reading, an honest peer joining, and virtual time passing).
 * The target is a seeding session (a BitTorrentClient) or a downloading
 * one that also has an honest seeder. Scripts are the fuzz input, so a
 * failing case is a readable file that replays as it is; bytes that are
 * not a script (the harness's byte mutations) seed a generated script.
 *
 * Time: the sessions' periodic work (1 s tick, 10 s rechoke, 60 s PEX)
 * runs on setInterval and Date.now, which node:test's mock timers replace
 * for the length of a case, so a minute of session time passes in
 * milliseconds and the real timer callbacks run (a throw in one surfaces
 * from tick(): in production it would be an uncaught exception that ends
 * the process). setTimeout stays real: the connections' handshake and
 * idle timeouts use refresh(), which the mock does not implement.
 *
 * After the conversation, each case checks: no exception escaped a timer,
 * an event handler or a promise; the target still serves honest peers (a
 * fresh leecher downloads the whole torrent and it verifies, with the
 * clock run past every session interval); bytes the target sent were well
 * formed and blocks matched the torrent; the heap did not grow without
 * bound; nothing hung (every step has a real deadline).
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { mock } from 'node:test';
import { encode as bencode, type BValue } from '../../src/bencode/index.js';
import { BitTorrentClient, newPeerId } from '../../src/swarm/client.js';
import type { TorrentSession } from '../../src/swarm/session.js';
import { createTorrent } from '../../src/torrent/create.js';
import type { Metainfo } from '../../src/torrent/metainfo.js';
import * as wire from '../../src/wire/codec.js';
import { duplexPair } from '../helpers/duplex.js';
import { pseudoRandomBytes } from '../helpers/tmp.js';
import { INTERESTING_U32, Rng, type FuzzTarget } from './harness.js';

// ------------------------------------------------------------------ the torrent

/** Two blocks a piece and a short last piece, so begin/length edges exist. */
const PIECE_LENGTH = 32 * 1024;
const LENGTH = 4 * PIECE_LENGTH + 5000;
const PIECES = Math.ceil(LENGTH / PIECE_LENGTH);
const LAST_PIECE = LENGTH - (PIECES - 1) * PIECE_LENGTH;
/** Hostile connections per case. */
const MAX_CONNS = 3;
const MAX_ACTIONS = 48;

// ------------------------------------------------------------------ scripts

/** One step of a hostile peer (connection `c`) or of the world around it. */
export type Action =
  /** Connect to the target: over loopback TCP, or an in-memory pipe (`init`: the target sends its handshake first). */
  | { op: 'open'; c: number; via: 'tcp' | 'memory'; init?: boolean }
  /** Our handshake; `cut` sends only that many bytes of it. */
  | {
      op: 'hs';
      c: number;
      fast: boolean;
      ext: boolean;
      hash?: 'other';
      pid?: 'target' | 'dup' | 'fixed';
      proto?: 'bad';
      cut?: number;
      split?: number;
    }
  /** A BEP 3/6 message by type name, numeric fields in `a`, bytes in `b` (hex). */
  | { op: 'msg'; c: number; t: string; a?: number[]; b?: string; split?: number }
  /** BEP 10 handshake: `m` as [name, id] pairs, or a raw payload (hex). */
  | {
      op: 'ext';
      c: number;
      m?: [string, number][];
      /** Listen port; "sink" is a closing listener of the harness (one per connection), so peers that dial it stay on loopback. */
      p?: number | 'sink';
      reqq?: number;
      msize?: number;
      raw?: string;
      split?: number;
    }
  /** BEP 11 ut_pex under the id the target advertised (or `id`); hosts are loopback, port "sink" or 0. */
  | { op: 'pex'; c: number; added: string[]; dropped?: string[]; id?: number; raw?: string }
  /** BEP 9 ut_metadata message (t: 0 request, 1 data, 2 reject, 9 garbage). */
  | { op: 'meta'; c: number; t: number; piece: number; total?: number; id?: number }
  /** Answers the oldest request the target made of us: a good block, a corrupt one, a short or long one, or one never asked for. */
  | { op: 'serve'; c: number; how: 'good' | 'corrupt' | 'short' | 'long' | 'unasked' }
  /** `n` messages of one kind in one write. */
  | { op: 'flood'; c: number; t: string; n: number }
  | { op: 'raw'; c: number; hex: string }
  | { op: 'close'; c: number; how: 'end' | 'destroy' }
  /** Stop or resume reading what the target sends (backpressure on its writes). */
  | { op: 'read'; c: number; on: boolean }
  /** Session time passes (ms; 0 only lets I/O run). */
  | { op: 'wait'; ms: number }
  /** An honest peer (our own session, downloading) joins the target. */
  | { op: 'join' };

export interface Script {
  /** The session under attack: a seeder, or a leecher that also has an honest seeder. */
  target: 'seeder' | 'leecher';
  /** The seeder's policy (SessionOptions.seedPolicy). */
  policy?: 'spread' | 'plain';
  actions: Action[];
}

const EXT_NAMES = ['ut_pex', 'ut_metadata', 'lt_donthave', 'upload_only', 'ut_holepunch'];
const EXT_IDS = [0, 0, 1, 2, 3, 7, 255, 256, -1, 2 ** 31, Number.MAX_SAFE_INTEGER];
const MSG_TYPES = [
  'keep-alive',
  'choke',
  'unchoke',
  'interested',
  'not-interested',
  'have',
  'bitfield',
  'request',
  'piece',
  'cancel',
  'port',
  'suggest',
  'have-all',
  'have-none',
  'reject',
  'allowed-fast',
  'unknown',
];
const FLOOD_TYPES = [
  'request',
  'have',
  'suggest',
  'allowed-fast',
  'keep-alive',
  'cancel',
  'reject',
  'interest',
  'ext',
  'pex',
  'meta',
];
const WAITS = [0, 0, 50, 250, 1000, 5000, 10_000, 30_001, 60_000, 61_000, 125_000];

function pieceIndex(rng: Rng): number {
  return rng.chance(0.8) ? rng.int(PIECES) : rng.pick([PIECES, PIECES - 1, ...INTERESTING_U32]);
}

function blockRef(rng: Rng): number[] {
  if (rng.chance(0.7)) {
    const index = rng.int(PIECES);
    const size = index === PIECES - 1 ? LAST_PIECE : PIECE_LENGTH;
    const begin = rng.pick([0, 16384].filter((b) => b < size));
    return [index, begin, Math.min(16384, size - begin)];
  }
  return [
    pieceIndex(rng),
    rng.pick([0, 1, 16384, PIECE_LENGTH - 1, LAST_PIECE, ...INTERESTING_U32]),
    rng.pick([0, 1, 16383, 16384, 16385, LAST_PIECE, 131072, 131073, ...INTERESTING_U32]),
  ];
}

function pexHosts(rng: Rng): string[] {
  return Array.from({ length: rng.int(rng.chance(0.1) ? 200 : 6) }, () =>
    rng.pick(['127.0.0.1:sink', '127.0.0.2:sink', `127.0.0.${1 + rng.int(250)}:sink`, '127.0.0.1:0']),
  );
}

function randomAction(rng: Rng, c: number): Action {
  const split = rng.chance(0.15) ? 2 + rng.int(6) : undefined;
  const withSplit = <T extends Action>(a: T): T => (split === undefined ? a : { ...a, split });
  switch (rng.int(22)) {
    case 0:
      return {
        op: 'open',
        c,
        via: rng.chance(0.4) ? 'tcp' : 'memory',
        ...(rng.chance(0.3) ? { init: true } : {}),
      };
    case 1: {
      const a: Action = { op: 'hs', c, fast: rng.chance(0.8), ext: rng.chance(0.85) };
      if (rng.chance(0.1)) a.hash = 'other';
      if (rng.chance(0.15)) a.pid = rng.pick(['target', 'dup', 'fixed'] as const);
      if (rng.chance(0.05)) a.proto = 'bad';
      if (rng.chance(0.08)) a.cut = rng.int(68);
      return withSplit(a);
    }
    case 2:
    case 3:
      return withSplit(randomExt(rng, c));
    case 4:
    case 5: {
      const a: Action = { op: 'pex', c, added: pexHosts(rng) };
      if (rng.chance(0.3)) a.dropped = pexHosts(rng);
      if (rng.chance(0.1)) a.id = rng.pick(EXT_IDS);
      if (rng.chance(0.1)) a.raw = rng.bytes(rng.int(40)).toString('hex');
      return a;
    }
    case 6: {
      const a: Action = {
        op: 'meta',
        c,
        t: rng.pick([0, 0, 1, 2, 9]),
        piece: rng.pick([0, 0, 1, 2, -1, 2 ** 31, 0xffffffff]),
      };
      if (rng.chance(0.3)) a.total = rng.pick([0, 1, 16384, 16385, 8 * 1024 * 1024 + 1, -1]);
      if (rng.chance(0.1)) a.id = rng.pick(EXT_IDS);
      return a;
    }
    case 7:
    case 8:
      return {
        op: 'serve',
        c,
        how: rng.pick(['good', 'good', 'corrupt', 'short', 'long', 'unasked'] as const),
      };
    case 9:
      return {
        op: 'flood',
        c,
        t: rng.pick(FLOOD_TYPES),
        n: rng.pick([10, 100, 1000, 5000]),
      };
    case 10: {
      const lengths = [0, 1, 5, 13, 0x7fffffff, 0xffffffff, (1 << 20) + 14];
      const hex = rng.chance(0.5)
        ? Buffer.concat([Buffer.from([0, 0, 0, 0]).fill(0), rng.bytes(rng.int(24))]).toString('hex')
        : (() => {
            const b = Buffer.alloc(4);
            b.writeUInt32BE(rng.pick(lengths) >>> 0);
            return Buffer.concat([b, rng.bytes(rng.int(32))]).toString('hex');
          })();
      return { op: 'raw', c, hex };
    }
    case 11:
      return { op: 'close', c, how: rng.chance(0.5) ? 'end' : 'destroy' };
    case 12:
      return { op: 'read', c, on: rng.chance(0.5) };
    case 13:
    case 14:
      return { op: 'wait', ms: rng.pick(WAITS) };
    case 15:
      return { op: 'join' };
    default:
      return withSplit(randomMsg(rng, c));
  }
}

function randomExt(rng: Rng, c: number): Action {
  if (rng.chance(0.08)) {
    const raw = rng.chance(0.5)
      ? rng.bytes(rng.int(40))
      : bencode(rng.pick<BValue>([1, [], Buffer.from('x')]));
    return { op: 'ext', c, raw: raw.toString('hex') };
  }
  const m: [string, number][] = [];
  for (const name of EXT_NAMES) if (rng.chance(0.5)) m.push([name, rng.pick(EXT_IDS)]);
  if (rng.chance(0.1)) m.push([rng.text(6), rng.pick(EXT_IDS)]);
  const a: Action = { op: 'ext', c, m };
  if (rng.chance(0.6)) a.p = rng.pick<number | 'sink'>(['sink', 'sink', 'sink', 1, 0, 65536, -1]);
  if (rng.chance(0.3)) a.reqq = rng.pick([0, 1, 250, 2 ** 31, -5]);
  if (rng.chance(0.2)) a.msize = rng.pick([0, 1, 100, 2 ** 31, -1]);
  return a;
}

function randomMsg(rng: Rng, c: number): Action {
  const t = rng.pick(MSG_TYPES);
  const a: Action = { op: 'msg', c, t };
  switch (t) {
    case 'have':
    case 'suggest':
    case 'allowed-fast':
      a.a = [pieceIndex(rng)];
      break;
    case 'request':
    case 'cancel':
    case 'reject':
      a.a = blockRef(rng);
      break;
    case 'piece':
      a.a = blockRef(rng).slice(0, 2);
      a.b = rng.bytes(rng.int(64)).toString('hex');
      break;
    case 'port':
      a.a = [rng.int(65536)];
      break;
    case 'bitfield': {
      const n = rng.pick([1, 1, 1, 0, 2, 128]);
      const bits = Buffer.alloc(n, rng.pick([0xff, 0xf8, 0xf0, 0x00, rng.int(256)]));
      a.b = bits.toString('hex');
      break;
    }
    case 'unknown':
      a.a = [rng.pick([10, 11, 12, 18, 19, 21, 255])];
      a.b = rng.bytes(rng.int(16)).toString('hex');
      break;
    default:
      break;
  }
  return a;
}

/**
 * A few steps in the order an exchange needs them, so single random actions
 * land in states that take several messages to reach: the target asking us
 * for blocks (then banning us for a bad one), the target serving us,
 * metadata with the ids the target advertised.
 */
function randomFragment(rng: Rng, c: number): Action[] {
  switch (rng.int(4)) {
    case 0: {
      // We seed to the target (a leecher asks us once we have pieces and unchoke it).
      const steps: Action[] = [
        rng.chance(0.7)
          ? { op: 'msg', c, t: 'have-all' }
          : { op: 'msg', c, t: 'bitfield', b: Buffer.alloc(1, 0xf8).toString('hex') },
        { op: 'msg', c, t: 'unchoke' },
        { op: 'wait', ms: rng.pick([0, 50, 250]) },
      ];
      const n = 1 + rng.int(4);
      for (let i = 0; i < n; i++) {
        steps.push({
          op: 'serve',
          c,
          how: rng.pick(['good', 'good', 'corrupt', 'short', 'long', 'unasked'] as const),
        });
      }
      if (rng.chance(0.3)) steps.push({ op: 'msg', c, t: rng.pick(['choke', 'reject']), a: blockRef(rng) });
      return steps;
    }
    case 1: {
      // We download from the target, and change our mind.
      const steps: Action[] = [
        { op: 'msg', c, t: rng.chance(0.5) ? 'have-none' : 'bitfield', b: '00' },
        { op: 'msg', c, t: 'interested' },
        { op: 'wait', ms: rng.pick([0, 50, 1000, 10_000]) },
      ];
      const n = 1 + rng.int(6);
      for (let i = 0; i < n; i++) steps.push({ op: 'msg', c, t: 'request', a: blockRef(rng) });
      if (rng.chance(0.5)) steps.push({ op: 'msg', c, t: 'cancel', a: blockRef(rng) });
      if (rng.chance(0.3)) steps.push({ op: 'msg', c, t: 'not-interested' });
      if (rng.chance(0.3)) steps.push({ op: 'read', c, on: false });
      return steps;
    }
    case 2:
      // Metadata under the ids the target advertised (BEP 9).
      return [
        {
          op: 'ext',
          c,
          m: [['ut_metadata', rng.pick([0, 3, 255])]],
          ...(rng.chance(0.5) ? { p: 'sink' as const } : {}),
        },
        { op: 'meta', c, t: rng.pick([0, 0, 1, 2]), piece: rng.pick([0, 1, 2, -1, 0xffffffff]) },
        { op: 'meta', c, t: 0, piece: 0 },
      ];
    default:
      // A second extended handshake that changes the ids mid-conversation.
      return [randomExt(rng, c), { op: 'wait', ms: rng.pick([0, 10_000, 61_000]) }, randomExt(rng, c)];
  }
}

/** A random conversation; most open with a valid handshake, so the states behind it are reached. */
export function generateScript(rng: Rng): Script {
  const actions: Action[] = [];
  if (rng.chance(0.9)) {
    actions.push({ op: 'open', c: 0, via: rng.chance(0.4) ? 'tcp' : 'memory' });
    actions.push({ op: 'hs', c: 0, fast: rng.chance(0.85), ext: rng.chance(0.9) });
    if (rng.chance(0.7)) actions.push(randomExt(rng, 0));
  }
  if (rng.chance(0.4)) actions.push({ op: 'join' });
  const n = 3 + rng.int(24);
  for (let i = 0; i < n; i++) {
    const c = rng.chance(0.7) ? 0 : rng.int(MAX_CONNS);
    if (c > 0 && !actions.some((a) => a.op === 'open' && a.c === c)) {
      actions.push({ op: 'open', c, via: rng.chance(0.5) ? 'tcp' : 'memory' });
      actions.push({ op: 'hs', c, fast: true, ext: true });
      if (rng.chance(0.6)) actions.push(randomExt(rng, c));
    }
    if (rng.chance(0.25)) actions.push(...randomFragment(rng, c));
    else actions.push(randomAction(rng, c));
  }
  return {
    target: rng.chance(0.6) ? 'seeder' : 'leecher',
    ...(rng.chance(0.3) ? { policy: 'plain' as const } : {}),
    actions: actions.slice(0, MAX_ACTIONS),
  };
}

/** A structure-aware change: drop, repeat, insert, replace or swap actions, or switch the target. */
export function mutateScript(rng: Rng, s: Script): Script {
  const actions = [...s.actions];
  const at = rng.int(actions.length + 1);
  // New actions mostly go to the connection the neighbouring action used.
  const near = actions[Math.min(at, actions.length - 1)];
  const c = near && 'c' in near && rng.chance(0.8) ? near.c : rng.int(MAX_CONNS);
  switch (rng.int(7)) {
    case 0:
      if (actions.length > 0) actions.splice(rng.int(actions.length), 1);
      break;
    case 1:
      if (actions.length > 0) actions.splice(at, 0, actions[rng.int(actions.length)]!);
      break;
    case 2:
      actions.splice(at, 0, randomAction(rng, c));
      break;
    case 3:
      actions.splice(at, 0, ...randomFragment(rng, c));
      break;
    case 4:
      if (actions.length > 0) actions[rng.int(actions.length)] = randomAction(rng, c);
      break;
    case 5:
      if (actions.length > 1) {
        const i = rng.int(actions.length);
        const j = rng.int(actions.length);
        [actions[i], actions[j]] = [actions[j]!, actions[i]!];
      }
      break;
    default:
      return { ...s, target: s.target === 'seeder' ? 'leecher' : 'seeder' };
  }
  return { ...s, actions: actions.slice(0, MAX_ACTIONS) };
}

/** The script in `input`, or (for bytes that are not one) a script generated from their hash. */
export function parseScript(input: Buffer): Script {
  try {
    const s = JSON.parse(input.toString('utf8')) as Record<string, unknown>;
    if ((s.target === 'seeder' || s.target === 'leecher') && Array.isArray(s.actions)) {
      const actions = (s.actions as unknown[]).map(normalizeAction).filter((a) => a !== undefined);
      return {
        target: s.target,
        ...(s.policy === 'plain' || s.policy === 'spread' ? { policy: s.policy } : {}),
        actions: actions.slice(0, MAX_ACTIONS),
      };
    }
  } catch {
    // not a script: fall through
  }
  const h = createHash('sha256').update(input).digest();
  return generateScript(new Rng(h.readUInt32BE(0)));
}

const num = (v: unknown, d = 0): number => (typeof v === 'number' && Number.isFinite(v) ? Math.trunc(v) : d);
const optNum = (v: unknown): number | undefined => (v === undefined ? undefined : num(v));
const hexOf = (v: unknown): string => (typeof v === 'string' && /^(?:[0-9a-f]{2})*$/i.test(v) ? v : '');
const strings = (v: unknown): string[] => (Array.isArray(v) ? v.map(String) : []);
/** Drops the fields left undefined (JSON would drop them anyway; types with optional fields say so). */
const defined = (o: Record<string, unknown>): Action =>
  Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Action;

/**
 * An action with every field of the type its op needs: a script mutated as
 * bytes still parses as JSON with fields missing or of other types, and the
 * harness must play it, not trip over it.
 */
function normalizeAction(x: unknown): Action | undefined {
  if (x === null || typeof x !== 'object') return undefined;
  const a = x as Record<string, unknown>;
  const c = num(a.c);
  const split = optNum(a.split);
  switch (a.op) {
    case 'open':
      return defined({
        op: 'open',
        c,
        via: a.via === 'tcp' ? 'tcp' : 'memory',
        init: a.init === true || undefined,
      });
    case 'hs':
      return defined({
        op: 'hs',
        c,
        fast: a.fast === true,
        ext: a.ext === true,
        hash: a.hash === 'other' ? 'other' : undefined,
        pid: a.pid === 'target' || a.pid === 'dup' || a.pid === 'fixed' ? a.pid : undefined,
        proto: a.proto === 'bad' ? 'bad' : undefined,
        cut: optNum(a.cut),
        split,
      });
    case 'msg':
      return defined({
        op: 'msg',
        c,
        t: typeof a.t === 'string' ? a.t : 'keep-alive',
        a: Array.isArray(a.a) ? a.a.map((v) => num(v)) : undefined,
        b: a.b === undefined ? undefined : hexOf(a.b),
        split,
      });
    case 'ext':
      return defined({
        op: 'ext',
        c,
        m: Array.isArray(a.m)
          ? a.m.filter(Array.isArray).map(([k, v]: unknown[]) => [String(k), num(v)] as [string, number])
          : undefined,
        p: a.p === 'sink' ? 'sink' : optNum(a.p),
        reqq: optNum(a.reqq),
        msize: optNum(a.msize),
        raw: a.raw === undefined ? undefined : hexOf(a.raw),
        split,
      });
    case 'pex':
      return defined({
        op: 'pex',
        c,
        added: strings(a.added),
        dropped: a.dropped === undefined ? undefined : strings(a.dropped),
        id: optNum(a.id),
        raw: a.raw === undefined ? undefined : hexOf(a.raw),
      });
    case 'meta':
      return defined({
        op: 'meta',
        c,
        t: num(a.t),
        piece: num(a.piece),
        total: optNum(a.total),
        id: optNum(a.id),
      });
    case 'serve': {
      const hows = ['good', 'corrupt', 'short', 'long', 'unasked'] as const;
      return { op: 'serve', c, how: hows.find((h) => h === a.how) ?? 'good' };
    }
    case 'flood':
      return { op: 'flood', c, t: typeof a.t === 'string' ? a.t : 'keep-alive', n: num(a.n) };
    case 'raw':
      return { op: 'raw', c, hex: hexOf(a.hex) };
    case 'close':
      return { op: 'close', c, how: a.how === 'end' ? 'end' : 'destroy' };
    case 'read':
      return { op: 'read', c, on: a.on === true };
    case 'wait':
      return { op: 'wait', ms: num(a.ms) };
    case 'join':
      return { op: 'join' };
    default:
      return undefined;
  }
}

export function scriptBytes(s: Script): Buffer {
  return Buffer.from(JSON.stringify(s));
}

// ------------------------------------------------------------------ fixture

interface Fixture {
  readonly dir: string;
  readonly seedDir: string;
  readonly data: Buffer;
  readonly meta: Metainfo;
  /** A loopback listener that closes every connection: where PEX'd addresses lead. */
  /** Loopback listeners that close every connection: where announced listen ports and PEX'd addresses lead. */
  readonly sinks: Server[];
  readonly sinkPorts: number[];
}

async function makeFixture(): Promise<Fixture> {
  const dir = mkdtempSync(join(tmpdir(), 'bt-fuzz-wire-'));
  const seedDir = join(dir, 'seed');
  mkdirSync(seedDir);
  const data = pseudoRandomBytes(LENGTH, 1414);
  writeFileSync(join(seedDir, 'image.bin'), data);
  const { meta } = await createTorrent(join(seedDir, 'image.bin'), { pieceLength: PIECE_LENGTH });
  const sinks: Server[] = [];
  const sinkPorts: number[] = [];
  for (let i = 0; i < MAX_CONNS; i++) {
    const sink = createServer((s) => s.destroy());
    await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
    const addr = sink.address();
    sinks.push(sink);
    sinkPorts.push(typeof addr === 'object' && addr ? addr.port : 0);
  }
  return { dir, seedDir, data, meta, sinks, sinkPorts };
}

// ------------------------------------------------------------------ running

/** Real time a conversation may take, and the honest download after it. */
const CONVERSATION_MS = 20_000;
const HONEST_MS = 20_000;
/** Session time run after the conversation: past every session interval (PEX is 60 s). */
const AFTER_MS = 61_000;
/** Heap growth within one case that counts as unbounded. */
const MAX_CASE_HEAP = 192 * 1024 * 1024;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const settle = async (turns = 3) => {
  for (let i = 0; i < turns; i++) await new Promise<void>((resolve) => setImmediate(resolve));
};

/** An invariant broke: reported by the fuzz harness as a failure (never a BootTorrentError). */
export class CaseFailure extends Error {
  constructor(
    readonly kind: string,
    readonly detail: string,
  ) {
    super(`${kind}: ${detail}`);
    this.name = 'CaseFailure';
  }
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: string }).code;
    return `${err.name}${code ? ` ${code}` : ''}: ${err.message}\n${err.stack?.split('\n').slice(1, 6).join('\n') ?? ''}`;
  }
  return String(err);
}

function deadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new CaseFailure('hang', `${what} did not finish within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** One hostile connection: writes what the script says, reads and checks what the target sends. */
class Hostile {
  private hs: Buffer = Buffer.alloc(0);
  private decoder: wire.MessageDecoder | null = null;
  /** The target's extended handshake `m`. */
  ext = new Map<string, number>();
  /** Requests the target made of us, oldest first. */
  readonly requests: number[][] = [];
  closed = false;

  constructor(
    readonly stream: Duplex,
    private readonly world: World,
  ) {
    stream.on('data', (chunk: Buffer) => this.onData(chunk));
    stream.on('error', () => {});
    stream.on('close', () => (this.closed = true));
    stream.on('end', () => (this.closed = true));
  }

  private onData(chunk: Buffer): void {
    if (!this.decoder) {
      this.hs = Buffer.concat([this.hs, chunk]);
      if (this.hs.length < wire.HANDSHAKE_LENGTH) return;
      let h;
      try {
        h = wire.decodeHandshake(this.hs);
      } catch (err) {
        this.world.fault('bad output', `the target sent a malformed handshake: ${describe(err)}`);
        return;
      }
      if (!h.infoHash.equals(this.world.fx.meta.infoHash)) {
        this.world.fault('bad output', 'the target answered with another infohash');
      }
      this.decoder = new wire.MessageDecoder();
      chunk = this.hs.subarray(wire.HANDSHAKE_LENGTH);
      this.hs = Buffer.alloc(0);
    }
    try {
      for (const m of this.decoder.push(chunk)) this.onMessage(m);
    } catch (err) {
      this.world.fault('bad output', `the target sent a malformed message: ${describe(err)}`);
      this.stream.destroy();
    }
  }

  private onMessage(m: wire.WireMessage): void {
    const { data } = this.world.fx;
    switch (m.type) {
      case 'extended':
        if (m.id === 0) {
          try {
            this.ext = wire.decodeExtendedHandshake(m.payload).m;
          } catch (err) {
            this.world.fault(
              'bad output',
              `the target's extended handshake does not decode: ${describe(err)}`,
            );
          }
        }
        break;
      case 'request':
        if (this.requests.length < 10_000) this.requests.push([m.index, m.begin, m.length]);
        break;
      case 'cancel': {
        const i = this.requests.findIndex(([x, b, l]) => x === m.index && b === m.begin && l === m.length);
        if (i >= 0) this.requests.splice(i, 1);
        break;
      }
      case 'piece': {
        const at = m.index * PIECE_LENGTH + m.begin;
        if (
          m.begin + m.block.length > PIECE_LENGTH ||
          !data.subarray(at, at + m.block.length).equals(m.block)
        ) {
          this.world.fault(
            'bad output',
            `the target sent a block that is not the torrent's: ${m.index}:${m.begin}+${m.block.length}`,
          );
        }
        break;
      }
      default:
        break;
    }
  }

  write(bytes: Buffer, split = 1): Promise<void> | void {
    if (this.closed || this.stream.destroyed || this.stream.writableEnded) return;
    if (split <= 1 || bytes.length < 2) {
      this.stream.write(bytes);
      return;
    }
    return (async () => {
      const step = Math.max(1, Math.ceil(bytes.length / split));
      for (let at = 0; at < bytes.length; at += step) {
        if (this.closed || this.stream.destroyed || this.stream.writableEnded) return;
        this.stream.write(bytes.subarray(at, at + step));
        await settle(1);
      }
    })();
  }
}

function frame(id: number | null, ...parts: Buffer[]): Buffer {
  const body = Buffer.concat(id === null ? parts : [Buffer.from([id]), ...parts]);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  return Buffer.concat([len, body]);
}

function u32s(values: readonly number[]): Buffer {
  const b = Buffer.alloc(4 * values.length);
  values.forEach((v, i) => b.writeUInt32BE(Number(v) >>> 0, 4 * i));
  return b;
}

const MSG_IDS: Record<string, number> = {
  choke: 0,
  unchoke: 1,
  interested: 2,
  'not-interested': 3,
  have: 4,
  bitfield: 5,
  request: 6,
  piece: 7,
  cancel: 8,
  port: 9,
  suggest: 0x0d,
  'have-all': 0x0e,
  'have-none': 0x0f,
  reject: 0x10,
  'allowed-fast': 0x11,
};

function encodeMsg(t: string, a: readonly number[] = [], b = ''): Buffer {
  const bytes = Buffer.from(b, 'hex');
  if (t === 'keep-alive') return frame(null);
  if (t === 'unknown') return frame((a[0] ?? 21) & 0xff, bytes);
  if (t === 'port') {
    const p = Buffer.alloc(2);
    p.writeUInt16BE((a[0] ?? 0) & 0xffff);
    return frame(9, p);
  }
  const id = MSG_IDS[t];
  if (id === undefined) return frame(21, bytes);
  return frame(id, u32s(a), bytes);
}

function extFrame(id: number, payload: Buffer): Buffer {
  return frame(20, Buffer.from([id & 0xff]), payload);
}

/** The sessions of one case and the hostile peer's connections to its target. */
class World {
  readonly faults: string[] = [];
  readonly conns: (Hostile | undefined)[] = [];
  private readonly clients: BitTorrentClient[] = [];
  private readonly sessions: TorrentSession[] = [];
  private readonly honest: { session: TorrentSession; dir: string }[] = [];
  private readonly pipes: Duplex[] = [];
  private readonly caseDir: string;
  target!: TorrentSession;
  targetPort = 0;
  private targetPeerId!: Buffer;
  private seeder!: TorrentSession;
  private seederPort = 0;
  private honestSeq = 0;
  /** Session time passed (ms). */
  virtualMs = 0;

  constructor(
    readonly fx: Fixture,
    private readonly script: Script,
  ) {
    this.caseDir = mkdtempSync(join(fx.dir, 'case-'));
  }

  fault(kind: string, detail: string): void {
    if (this.faults.length < 10) this.faults.push(`${kind}: ${detail}`);
  }

  check(): void {
    if (this.faults.length > 0) {
      const [first] = this.faults;
      const kind = first!.slice(0, first!.indexOf(':'));
      throw new CaseFailure(kind, this.faults.join('\n').slice(kind.length + 2));
    }
  }

  private async client(dir: string, mode: 'seed' | 'download', peers: string[] = []) {
    const client = new BitTorrentClient({ host: '127.0.0.1', port: 0 });
    this.clients.push(client);
    await client.listen();
    const session = await client.add({
      meta: this.fx.meta,
      dir,
      mode,
      ...(mode === 'seed' ? { verify: false, seedPolicy: this.script.policy ?? 'spread' } : {}),
      peers,
    });
    this.sessions.push(session);
    return { client, session };
  }

  async start(): Promise<void> {
    const s = await this.client(this.fx.seedDir, 'seed');
    this.seeder = s.session;
    this.seederPort = s.client.listenPort;
    if (this.script.target === 'seeder') {
      this.target = s.session;
      this.targetPort = s.client.listenPort;
      this.targetPeerId = s.client.peerId;
    } else {
      // The leecher dials its seeder over loopback TCP (the dial path, reads through feed()).
      const l = await this.client(join(this.caseDir, 'leecher'), 'download', [
        `127.0.0.1:${this.seederPort}`,
      ]);
      this.target = l.session;
      this.targetPort = l.client.listenPort;
      this.targetPeerId = l.client.peerId;
    }
  }

  /** Runs session time forward in 1 s steps, letting I/O run between; a throw from a timer is a fault. */
  async advance(ms: number): Promise<void> {
    let left = ms;
    while (left > 0) {
      const step = Math.min(1000, left);
      this.tick(step);
      left -= step;
      await settle(2);
      this.check();
    }
    if (ms === 0) await settle(3);
  }

  tick(ms: number): void {
    try {
      mock.timers.tick(ms);
      this.virtualMs += ms;
    } catch (err) {
      const detail = `a session timer callback threw after ${this.virtualMs + ms} ms of session time (in production an uncaught exception ends the process): ${describe(err)}`;
      this.fault('timer threw', detail);
      throw new CaseFailure('timer threw', detail);
    }
  }

  /** A downloading session of ours, connected in memory to the target (and the seeder, for a leecher target). */
  async join(): Promise<void> {
    const dir = join(this.caseDir, `honest${this.honestSeq++}`);
    const { session } = await this.client(dir, 'download');
    this.honest.push({ session, dir });
    const link = (to: TorrentSession) => {
      const [a, b] = duplexPair();
      this.pipes.push(a, b);
      session.connectStream(a, '127.0.0.1', true);
      to.connectStream(b, '127.0.0.1', false);
    };
    link(this.target);
    if (this.target !== this.seeder) link(this.seeder);
  }

  async play(): Promise<void> {
    for (const [i, a] of this.script.actions.entries()) {
      try {
        await this.act(a);
      } catch (err) {
        if (err instanceof CaseFailure)
          throw new CaseFailure(err.kind, `at action ${i} ${JSON.stringify(a)}: ${err.detail}`);
        throw new CaseFailure('harness', `action ${i} ${JSON.stringify(a)} failed: ${describe(err)}`);
      }
      await settle(2);
      this.check();
    }
  }

  private conn(c: number): Hostile | undefined {
    const h = this.conns[c];
    return h && !h.closed ? h : undefined;
  }

  private async act(a: Action): Promise<void> {
    if (a.op === 'wait') return this.advance(Math.max(0, Math.min(Number(a.ms) || 0, 300_000)));
    if (a.op === 'join') {
      if (this.honest.length < 2) await this.join();
      return;
    }
    const c = Number(a.c) | 0;
    if (c < 0 || c >= MAX_CONNS) return;
    if (a.op === 'open') {
      if (this.conns[c]) return;
      this.conns[c] = await this.open(a.via, a.init === true);
      return;
    }
    const h = this.conn(c);
    if (!h) return;
    const { meta } = this.fx;
    switch (a.op) {
      case 'hs': {
        const reserved = wire.reservedBytes({ fast: a.fast, extended: a.ext });
        const peerId =
          a.pid === 'target'
            ? this.targetPeerId
            : a.pid === 'fixed'
              ? Buffer.from('-FZ0001-fixedfixedfx')
              : a.pid === 'dup' && this.honest.length > 0
                ? this.clients[this.clients.length - 1]!.peerId
                : newPeerId();
        let bytes = wire.encodeHandshake({
          reserved,
          infoHash: a.hash === 'other' ? Buffer.alloc(20, 0xee) : meta.infoHash,
          peerId,
        });
        if (a.proto === 'bad') bytes[5] = bytes[5]! ^ 0x20;
        if (a.cut !== undefined) bytes = bytes.subarray(0, Math.max(0, a.cut));
        return h.write(bytes, a.split);
      }
      case 'msg':
        return h.write(encodeMsg(a.t, a.a, a.b), a.split);
      case 'ext': {
        let payload: Buffer;
        if (a.raw !== undefined) payload = Buffer.from(a.raw, 'hex');
        else {
          const d = new Map<string, BValue>();
          d.set('m', new Map((a.m ?? []).map(([k, v]) => [String(k), Number(v)])));
          if (a.p !== undefined) d.set('p', a.p === 'sink' ? this.fx.sinkPorts[c]! : a.p);
          if (a.reqq !== undefined) d.set('reqq', a.reqq);
          if (a.msize !== undefined) d.set('metadata_size', a.msize);
          d.set('v', Buffer.from('fuzz 1'));
          try {
            payload = bencode(d);
          } catch {
            payload = Buffer.from('de');
          }
        }
        return h.write(extFrame(0, payload), a.split);
      }
      case 'pex': {
        const id = a.id ?? h.ext.get('ut_pex') ?? 1;
        let payload: Buffer;
        if (a.raw !== undefined) payload = Buffer.from(a.raw, 'hex');
        else {
          const peer = (s: string) => {
            const i = s.lastIndexOf(':');
            const port = s.slice(i + 1) === 'sink' ? this.fx.sinkPorts[s.length % MAX_CONNS]! : 0;
            return { host: s.slice(0, i), port };
          };
          try {
            payload = wire.encodePex({ added: a.added.map(peer), dropped: (a.dropped ?? []).map(peer) });
          } catch {
            payload = Buffer.from('de');
          }
        }
        return h.write(extFrame(id, payload));
      }
      case 'meta': {
        const id = a.id ?? h.ext.get('ut_metadata') ?? 2;
        let payload: Buffer;
        if (a.t === 9) payload = Buffer.from('d8:msg_typei0e5:piecei0ee-trailing');
        else {
          const d = new Map<string, BValue>([
            ['msg_type', a.t],
            ['piece', a.piece],
          ]);
          if (a.t === 1) d.set('total_size', a.total ?? meta.infoBuffer.length);
          try {
            payload = bencode(d);
          } catch {
            payload = Buffer.from('de');
          }
          if (a.t === 1) payload = Buffer.concat([payload, meta.infoBuffer.subarray(0, 16384)]);
        }
        return h.write(extFrame(id, payload));
      }
      case 'serve': {
        const r = a.how === 'unasked' ? [h.requests.length % PIECES, 0, 16384] : h.requests.shift();
        if (!r) return;
        const [index, begin, length] = r as [number, number, number];
        const at = index * PIECE_LENGTH + begin;
        let block = Buffer.from(this.fx.data.subarray(at, at + Math.min(length, 1 << 17)));
        if (a.how === 'corrupt' && block.length > 0) block[0] = block[0]! ^ 0xff;
        if (a.how === 'short') block = block.subarray(0, Math.max(0, block.length - 1));
        if (a.how === 'long') block = Buffer.concat([block, Buffer.alloc(1)]);
        return h.write(frame(7, u32s([index, begin]), block));
      }
      case 'flood':
        return h.write(this.flood(h, a.t, Math.max(0, Math.min(Number(a.n) || 0, 5000))));
      case 'raw':
        return h.write(Buffer.from(String(a.hex), 'hex'));
      case 'close':
        if (a.how === 'end') h.stream.end();
        else h.stream.destroy();
        return;
      case 'read':
        if (a.on) h.stream.resume();
        else h.stream.pause();
        return;
      default:
        return;
    }
  }

  private flood(h: Hostile, t: string, n: number): Buffer {
    const parts: Buffer[] = [];
    const pexId = h.ext.get('ut_pex') ?? 1;
    for (let i = 0; i < n; i++) {
      const index = i % PIECES;
      const begin = (Math.floor(i / PIECES) % 2) * 16384;
      const length = index === PIECES - 1 && begin === 0 ? Math.min(16384, LAST_PIECE) : 16384;
      switch (t) {
        case 'request':
        case 'cancel':
        case 'reject':
          parts.push(encodeMsg(t, [index, begin % (index === PIECES - 1 ? 1 : PIECE_LENGTH), length]));
          break;
        case 'have':
        case 'suggest':
        case 'allowed-fast':
          parts.push(encodeMsg(t, [i % (PIECES + 1)]));
          break;
        case 'interest':
          parts.push(encodeMsg(i % 2 === 0 ? 'interested' : 'not-interested'));
          break;
        case 'ext':
          parts.push(
            extFrame(
              0,
              bencode(
                new Map<string, BValue>([
                  ['m', new Map([['ut_pex', i % 3]])],
                  ['p', i % 2 === 0 ? this.fx.sinkPorts[i % MAX_CONNS]! : 0],
                ]),
              ),
            ),
          );
          break;
        case 'pex': {
          const host = `127.0.${(i >> 8) & 0xff}.${i & 0xff}`;
          parts.push(
            extFrame(pexId, wire.encodePex({ added: [{ host, port: this.fx.sinkPorts[0]! }], dropped: [] })),
          );
          break;
        }
        case 'meta':
          parts.push(
            extFrame(
              h.ext.get('ut_metadata') ?? 2,
              bencode(
                new Map([
                  ['msg_type', 0],
                  ['piece', i % 3],
                ]),
              ),
            ),
          );
          break;
        default:
          parts.push(frame(null));
      }
    }
    return Buffer.concat(parts);
  }

  private async open(via: 'tcp' | 'memory', targetInitiates: boolean): Promise<Hostile> {
    if (via === 'tcp') {
      const socket: Socket = connect({ host: '127.0.0.1', port: this.targetPort });
      this.pipes.push(socket);
      socket.on('error', () => {});
      await deadline(
        Promise.race([once(socket, 'connect'), once(socket, 'close')]),
        5000,
        'a loopback connection to the target',
      );
      return new Hostile(socket, this);
    }
    const [ours, theirs] = duplexPair();
    this.pipes.push(ours, theirs);
    this.target.connectStream(theirs, '127.0.0.1', targetInitiates);
    return new Hostile(ours, this);
  }

  /** Every honest peer ends with the torrent's bytes, while session time runs past every interval. */
  async honestCheck(): Promise<void> {
    if (this.script.target === 'seeder' || this.honest.length === 0) await this.join();
    const waiting = [
      ...this.honest.map((h) => h.session),
      ...(this.target !== this.seeder ? [this.target] : []),
    ];
    const start = performance.now();
    const until = this.virtualMs + AFTER_MS;
    while (waiting.some((s) => !s.complete) || this.virtualMs < until) {
      if (performance.now() - start > HONEST_MS) {
        const stuck = waiting
          .filter((s) => !s.complete)
          .map((s) => `${s.stats().piecesHave}/${PIECES} pieces`);
        throw new CaseFailure(
          'honest peer starved',
          `after the conversation, honest downloads did not complete within ${HONEST_MS} ms real, ${this.virtualMs} ms session time: ${stuck.join(', ')}`,
        );
      }
      const downloading = waiting.some((s) => !s.complete);
      this.tick(downloading ? 100 : 1000);
      if (downloading) await sleep(1);
      else await settle(2);
      this.check();
    }
    for (const s of waiting) {
      const got = readFileSync(s.paths[0]!);
      if (!got.equals(this.fx.data))
        throw new CaseFailure('corrupt download', `an honest peer's file differs from the torrent's data`);
    }
  }

  /** Stops every session and closes every connection; what throws here is a fault too. */
  async close(): Promise<void> {
    for (const h of this.conns) h?.stream.destroy();
    for (const p of this.pipes) p.destroy();
    const results = await Promise.allSettled(
      this.clients.map((c) => deadline(c.close(), 10_000, 'client close')),
    );
    for (const r of results) if (r.status === 'rejected') this.fault('stop failed', describe(r.reason));
    rmSync(this.caseDir, { recursive: true, force: true });
  }
}

/**
 * Plays one script and checks the invariants; throws a CaseFailure when one
 * broke. Mock timers are on for the length of the call.
 */
export async function runScript(fx: Fixture, script: Script): Promise<void> {
  const world = new World(fx, script);
  const onUncaught = (err: unknown) => world.fault('uncaught exception', describe(err));
  const onRejection = (err: unknown) => world.fault('unhandled rejection', describe(err));
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onRejection);
  mock.timers.enable({ apis: ['setInterval', 'Date'], now: Date.now() });
  const heap0 = process.memoryUsage().heapUsed;
  let failure: unknown;
  try {
    await deadline(world.start(), 10_000, 'starting the sessions');
    const played = world.play();
    played.catch(() => undefined);
    await deadline(played, CONVERSATION_MS, 'the conversation');
    const grown = process.memoryUsage().heapUsed - heap0;
    if (grown > MAX_CASE_HEAP)
      world.fault('memory', `the heap grew by ${(grown / 1048576).toFixed(0)} MiB during the conversation`);
    world.check();
    await world.honestCheck();
    world.check();
  } catch (err) {
    failure = err;
  } finally {
    try {
      await world.close();
    } catch (err) {
      world.fault('stop failed', describe(err));
    }
    // A callback left in the I/O queue still runs with the listeners on.
    await settle(3);
    mock.timers.reset();
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onRejection);
  }
  if (failure instanceof CaseFailure) throw failure;
  if (failure !== undefined) throw new CaseFailure('harness', describe(failure));
  world.check();
}

/**
 * Drops actions while the script still fails the same way (one at a time,
 * from the end, until a pass removes nothing): the reproducer a person reads.
 */
export async function minimizeScript(fx: Fixture, script: Script, kind: string): Promise<Script> {
  const fails = async (s: Script) => {
    try {
      await runScript(fx, s);
      return false;
    } catch (err) {
      return err instanceof CaseFailure && err.kind === kind;
    }
  };
  let best = script;
  for (let changed = true; changed;) {
    changed = false;
    for (let i = best.actions.length - 1; i >= 0; i--) {
      const trial = { ...best, actions: best.actions.filter((_, j) => j !== i) };
      if (await fails(trial)) {
        best = trial;
        changed = true;
      }
    }
  }
  return best;
}

// ------------------------------------------------------------------ seeds

/**
 * Hand-written conversations, the corpus's starting points: an honest
 * leecher's conversation, item 1's ingredients, a metadata exchange, a
 * request flood, a peer that never reads.
 */
export function seedScripts(): Script[] {
  const hs = (c = 0): Action[] => [
    { op: 'open', c, via: 'memory' },
    { op: 'hs', c, fast: true, ext: true },
  ];
  return [
    {
      target: 'seeder',
      actions: [
        ...hs(),
        {
          op: 'ext',
          c: 0,
          m: [
            ['ut_pex', 1],
            ['ut_metadata', 3],
          ],
          p: 'sink',
        },
        { op: 'msg', c: 0, t: 'have-none' },
        { op: 'msg', c: 0, t: 'interested' },
        { op: 'wait', ms: 0 },
        { op: 'msg', c: 0, t: 'request', a: [0, 0, 16384] },
        { op: 'msg', c: 0, t: 'cancel', a: [0, 0, 16384] },
        { op: 'meta', c: 0, t: 0, piece: 0 },
        { op: 'close', c: 0, how: 'end' },
      ],
    },
    {
      target: 'seeder',
      actions: [
        ...hs(),
        { op: 'ext', c: 0, m: [['ut_pex', 0]], p: 'sink' },
        { op: 'join' },
        { op: 'wait', ms: 1000 },
      ],
    },
    {
      target: 'leecher',
      actions: [
        { op: 'open', c: 0, via: 'tcp' },
        { op: 'hs', c: 0, fast: true, ext: true },
        { op: 'ext', c: 0, m: [['ut_pex', 1]], p: 'sink' },
        { op: 'msg', c: 0, t: 'have-all' },
        { op: 'msg', c: 0, t: 'unchoke' },
        { op: 'wait', ms: 250 },
        { op: 'serve', c: 0, how: 'good' },
        { op: 'serve', c: 0, how: 'corrupt' },
        { op: 'pex', c: 0, added: ['127.0.0.1:sink', '127.0.0.2:sink'] },
        { op: 'msg', c: 0, t: 'reject', a: [1, 0, 16384] },
        { op: 'wait', ms: 30_001 },
      ],
    },
    {
      target: 'seeder',
      actions: [
        { op: 'open', c: 0, via: 'tcp' },
        { op: 'hs', c: 0, fast: true, ext: true, split: 5 },
        { op: 'msg', c: 0, t: 'interested' },
        { op: 'read', c: 0, on: false },
        { op: 'flood', c: 0, t: 'request', n: 5000 },
        { op: 'join' },
        { op: 'wait', ms: 10_000 },
      ],
    },
  ];
}

// ------------------------------------------------------------------ the target

/** The stateful target for the fuzz harness: inputs are scripts (JSON). */
export function wireSessionTarget(): FuzzTarget & {
  dispose(): void;
  minimize(input: Buffer, reason: string): Promise<Buffer>;
} {
  let fixture: Promise<Fixture> | undefined;
  const fx = () => (fixture ??= makeFixture());
  return {
    name: 'wire-session',
    maxInputBytes: 256 * 1024,
    // The case has its own real deadlines (CONVERSATION_MS, HONEST_MS); this only flags a case slow every time.
    maxCaseMs: CONVERSATION_MS + HONEST_MS + 20_000,
    seeds: () => seedScripts().map(scriptBytes),
    generate: (rng) => scriptBytes(generateScript(rng)),
    mutateStructured(rng, input) {
      return scriptBytes(mutateScript(rng, parseScript(input)));
    },
    async run(input) {
      await runScript(await fx(), parseScript(input));
    },
    async minimize(input, reason) {
      const kind = reason.replace(/^CaseFailure: /, '').split(':')[0]!;
      return scriptBytes(await minimizeScript(await fx(), parseScript(input), kind));
    },
    dispose() {
      void fixture?.then((f) => {
        for (const s of f.sinks) s.close();
        rmSync(f.dir, { recursive: true, force: true });
      });
    },
  };
}
