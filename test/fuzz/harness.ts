/**
 * A small fuzzer of our own (issue #8): a seeded PRNG, mutations of corpus
 * seeds, structure-aware generators, and a runner that accepts only two
 * outcomes from a parser: a value or a BootTorrentError. Anything else
 * (TypeError, RangeError, a case slower than `maxCaseMs`, the heap growing
 * past `maxHeapGrowth`) is a failure reported with the input in hex, so it
 * can be added to the corpus and reproduced.
 *
 * No coverage feedback: the parsers are small and the mutations that matter
 * (length fields, truncation, splices of valid messages) are cheap to try
 * blindly. Slowness is measured after the case returns: a true infinite loop
 * hangs the run, which the long run (bench/fuzz.ts) catches with a watchdog.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { BootTorrentError } from '../../src/errors.js';

/** xoshiro128** : fast, 32-bit, good enough statistics, seeded from one integer. */
export class Rng {
  private s = new Uint32Array(4);

  constructor(seed: number) {
    // splitmix32 expands the seed so nearby seeds give unrelated streams.
    let x = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
    if (this.s.every((v) => v === 0)) this.s[0] = 1;
  }

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1]!, 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1]! << 9) >>> 0;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11);
    return result;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return n <= 0 ? 0 : Math.floor((this.u32() / 0x100000000) * n);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.u32() / 0x100000000 < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from an empty list');
    return items[this.int(items.length)]!;
  }

  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }

  /** A short string of mostly printable ASCII, sometimes any byte. */
  text(max = 16): string {
    const n = this.int(max + 1);
    let s = '';
    for (let i = 0; i < n; i++) {
      s += String.fromCharCode(this.chance(0.9) ? 0x20 + this.int(95) : this.int(256));
    }
    return s;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** Values that break length and count fields: boundaries of each integer width. */
export const INTERESTING_U32 = [
  0, 1, 2, 3, 4, 7, 8, 15, 16, 17, 19, 20, 32, 63, 64, 127, 128, 255, 256, 511, 512, 1023, 1024, 4095, 4096,
  16383, 16384, 16385, 32767, 32768, 65463, 65464, 65535, 65536, 0x7fffff, 0x1000000, 0x7fffffff, 0x80000000,
  0xfffffffe, 0xffffffff,
];

/**
 * One mutation of `input`: a bit flip, byte set, insert, delete, truncation,
 * interesting integer written at a random offset (8, 16 or 32 bits, either
 * endianness), a repeated block, or a splice with another corpus entry.
 */
export function mutateOnce(rng: Rng, input: Buffer, others: readonly Buffer[]): Buffer {
  const len = input.length;
  switch (rng.int(10)) {
    case 0: {
      if (len === 0) return rng.bytes(1 + rng.int(8));
      const b = Buffer.from(input);
      const i = rng.int(len);
      b[i] = b[i]! ^ (1 << rng.int(8));
      return b;
    }
    case 1: {
      if (len === 0) return rng.bytes(1);
      const b = Buffer.from(input);
      b[rng.int(len)] = rng.pick([
        0,
        0xff,
        0x7f,
        0x80,
        0x20,
        0x0a,
        0x3a,
        0x65,
        0x69,
        0x6c,
        0x64,
        rng.int(256),
      ]);
      return b;
    }
    case 2: {
      const at = rng.int(len + 1);
      return Buffer.concat([input.subarray(0, at), rng.bytes(1 + rng.int(8)), input.subarray(at)]);
    }
    case 3: {
      if (len === 0) return input;
      const at = rng.int(len);
      const n = 1 + rng.int(Math.min(16, len - at));
      return Buffer.concat([input.subarray(0, at), input.subarray(at + n)]);
    }
    case 4:
      return Buffer.from(input.subarray(0, rng.int(len + 1)));
    case 5: {
      const width = rng.pick([1, 2, 4]);
      if (len < width) return input;
      const b = Buffer.from(input);
      const v = rng.pick(INTERESTING_U32);
      const at = rng.int(len - width + 1);
      const le = rng.chance(0.2);
      if (width === 1) b[at] = v & 0xff;
      else if (width === 2 && le) b.writeUInt16LE(v & 0xffff, at);
      else if (width === 2) b.writeUInt16BE(v & 0xffff, at);
      else if (le) b.writeUInt32LE(v >>> 0, at);
      else b.writeUInt32BE(v >>> 0, at);
      return b;
    }
    case 6: {
      if (len === 0) return input;
      const at = rng.int(len);
      const n = 1 + rng.int(Math.min(64, len - at));
      const block = input.subarray(at, at + n);
      const times = 1 + rng.int(rng.chance(0.1) ? 2000 : 16);
      return Buffer.concat([
        input.subarray(0, at + n),
        ...new Array<Buffer>(times).fill(block),
        input.subarray(at + n),
      ]);
    }
    case 7: {
      const other = others.length > 0 ? rng.pick(others) : rng.bytes(rng.int(64));
      const a = rng.int(len + 1);
      const b = rng.int(other.length + 1);
      return Buffer.concat([input.subarray(0, a), other.subarray(b)]);
    }
    case 8: {
      // ASCII digits: lengths in bencode, query strings and YAML are text.
      const at = rng.int(len + 1);
      const digits = Buffer.from(String(rng.pick([...INTERESTING_U32, -1, 1e15, 2 ** 53, 1e300])), 'latin1');
      return Buffer.concat([input.subarray(0, at), digits, input.subarray(at + rng.int(4))]);
    }
    default: {
      if (len < 2) return rng.bytes(rng.int(16));
      const b = Buffer.from(input);
      const i = rng.int(len);
      const j = rng.int(len);
      const t = b[i]!;
      b[i] = b[j]!;
      b[j] = t;
      return b;
    }
  }
}

/** One to `max` stacked mutations. */
export function mutate(rng: Rng, input: Buffer, others: readonly Buffer[], max = 4): Buffer {
  let out = input;
  const n = 1 + rng.int(max);
  for (let i = 0; i < n; i++) out = mutateOnce(rng, out, others);
  return out;
}

/** A parser under test. */
export interface FuzzTarget {
  readonly name: string;
  /** Folder name under test/fuzz/corpus/ (default: the target name). */
  readonly corpus?: string;
  /** Extra seeds built in code (valid messages from our encoders). */
  seeds?(): Buffer[];
  /** A structure-aware input: a valid or nearly valid message with random fields. */
  generate?(rng: Rng): Buffer;
  /** A structure-aware mutation (e.g. replace a node of a parsed tree); may return undefined to fall back. */
  mutateStructured?(rng: Rng, input: Buffer): Buffer | undefined;
  /** Longer inputs are cut to this many bytes (default 1 MiB). */
  readonly maxInputBytes?: number;
  /** A case slower than this fails (default: the run's maxCaseMs). */
  readonly maxCaseMs?: number;
  /** Parses `input`; returns normally or throws. `rng` drives chunkings and similar choices. */
  run(input: Buffer, rng: Rng): void | Promise<void>;
}

export interface Failure {
  readonly target: string;
  readonly caseIndex: number;
  readonly reason: string;
  readonly hex: string;
}

export interface RunOptions {
  readonly cases?: number;
  /** Stop after this many ms even if fewer cases ran (the long run). */
  readonly timeMs?: number;
  readonly seed: number;
  /** A single case slower than this is a failure (default 1000). */
  readonly maxCaseMs?: number;
  /** heapUsed growth above the start that counts as a leak (default 256 MiB). */
  readonly maxHeapGrowth?: number;
  /** Stop at the first failure (default false: collect up to 20). */
  readonly stopOnFailure?: boolean;
  /** Called every 1000 cases (progress for the long run). */
  readonly onProgress?: (cases: number) => void;
  /** Called before each case with its index (the long run's watchdog records it). */
  readonly onCase?: (index: number) => void;
}

export interface RunResult {
  readonly target: string;
  readonly cases: number;
  /** Cases the parser accepted (returned a value), as a sanity check that seeds are valid. */
  readonly accepted: number;
  readonly failures: Failure[];
  readonly ms: number;
}

/** The repository's corpus folder (this file runs from dist/test/fuzz/). */
export const CORPUS_DIR = new URL('../../../test/fuzz/corpus/', import.meta.url).pathname;

/** Seeds from test/fuzz/corpus/<name>/ (every file, sorted) plus the target's own. */
export function loadSeeds(target: FuzzTarget): Buffer[] {
  const dir = join(CORPUS_DIR, target.corpus ?? target.name);
  let files: string[] = [];
  try {
    files = readdirSync(dir).sort();
  } catch {
    // no corpus folder: the built-in seeds alone
  }
  const out = files.filter((f) => !f.startsWith('.')).map((f) => readFileSync(join(dir, f)));
  return [...out, ...(target.seeds?.() ?? [])];
}

/** The input for case `i`: a seed as is, a generated message, or a mutation of either. */
export function nextInput(target: FuzzTarget, rng: Rng, seeds: readonly Buffer[], i: number): Buffer {
  const input = pickInput(target, rng, seeds, i);
  const max = target.maxInputBytes ?? 1 << 20;
  return input.length > max ? input.subarray(0, max) : input;
}

/**
 * Seeds above this size (regression inputs that fill a datagram or a body)
 * run once as they are but are not mutated: copying and re-parsing a
 * megabyte per case would spend the CI budget on one input.
 */
const MAX_MUTATED_SEED = 16 * 1024;

function pickInput(target: FuzzTarget, rng: Rng, allSeeds: readonly Buffer[], i: number): Buffer {
  if (i < allSeeds.length) return allSeeds[i]!;
  const seeds = allSeeds.filter((s) => s.length <= MAX_MUTATED_SEED);
  const r = rng.int(100);
  let base: Buffer;
  if (target.generate && r < 30) {
    try {
      base = target.generate(rng);
    } catch (err) {
      throw new Error(`generator of ${target.name} failed (a harness bug)`, { cause: err });
    }
    if (rng.chance(0.5)) return base;
  } else if (seeds.length > 0) {
    base = rng.pick(seeds);
  } else {
    return rng.bytes(rng.int(512));
  }
  if (target.mutateStructured && rng.chance(0.35)) {
    const m = target.mutateStructured(rng, base);
    if (m) return rng.chance(0.3) ? mutate(rng, m, seeds, 2) : m;
  }
  return mutate(rng, base, seeds);
}

/** Runs `target` for a number of cases (or a time budget) and returns what failed. */
export async function runTarget(target: FuzzTarget, opts: RunOptions): Promise<RunResult> {
  const seeds = loadSeeds(target);
  const rng = new Rng(opts.seed);
  const maxCaseMs = opts.maxCaseMs ?? 1000;
  const maxHeap = opts.maxHeapGrowth ?? 256 * 1024 * 1024;
  const heap0 = process.memoryUsage().heapUsed;
  const failures: Failure[] = [];
  const start = performance.now();
  let accepted = 0;
  let i = 0;
  for (; ; i++) {
    if (opts.cases !== undefined && i >= opts.cases) break;
    if (opts.timeMs !== undefined && performance.now() - start >= opts.timeMs) break;
    if (opts.cases === undefined && opts.timeMs === undefined) break;
    const input = nextInput(target, rng, seeds, i);
    opts.onCase?.(i);
    const caseLimit = target.maxCaseMs ?? maxCaseMs;
    // Each case gets its own RNG for chunkings, so a failure replays from its input and index alone.
    const caseRng = new Rng(opts.seed ^ Math.imul(i + 1, 0x9e3779b1));
    const t0 = performance.now();
    let reason: string | null = null;
    try {
      await target.run(input, caseRng);
      accepted++;
    } catch (err) {
      if (!(err instanceof BootTorrentError)) {
        reason =
          err instanceof Error ? `${err.name}: ${err.message}\n${err.stack ?? ''}` : `threw ${String(err)}`;
      }
    }
    let dt = performance.now() - t0;
    // A shared machine pauses a process now and then: a slow case counts
    // only if it is slow every time (best of three).
    for (let again = 0; reason === null && dt > caseLimit && again < 2; again++) {
      const t1 = performance.now();
      try {
        await target.run(input, new Rng(opts.seed ^ Math.imul(i + 1, 0x9e3779b1)));
      } catch {
        // the outcome was judged on the first run
      }
      dt = Math.min(dt, performance.now() - t1);
    }
    if (reason === null && dt > caseLimit)
      reason = `slow: ${dt.toFixed(0)} ms for ${input.length} bytes (best of 3)`;
    if (reason === null && i % 500 === 499) {
      const grown = process.memoryUsage().heapUsed - heap0;
      if (grown > maxHeap) {
        // Garbage is not a leak: only complain if the growth survives a collection.
        (globalThis as { gc?: () => void }).gc?.();
        const after = process.memoryUsage().heapUsed - heap0;
        if (after > maxHeap) reason = `heap grew by ${(after / 1048576).toFixed(0)} MiB`;
      }
    }
    if (reason !== null) {
      failures.push({ target: target.name, caseIndex: i, reason, hex: input.toString('hex') });
      if (opts.stopOnFailure || failures.length >= 20) {
        i++;
        break;
      }
    }
    if (i % 1000 === 999) opts.onProgress?.(i + 1);
  }
  return { target: target.name, cases: i, accepted, failures, ms: performance.now() - start };
}

/** Regenerates the input of case `index` of a run with `seed` without running any case (for a hang). */
export function replayInput(target: FuzzTarget, seed: number, index: number): Buffer {
  const seeds = loadSeeds(target);
  const rng = new Rng(seed);
  let input: Buffer = Buffer.alloc(0);
  for (let i = 0; i <= index; i++) input = nextInput(target, rng, seeds, i);
  return input;
}

/** A failure as the lines a person needs: target, case, reason, input hex (cut at 512 bytes). */
export function formatFailure(f: Failure): string {
  const hex = f.hex.length > 1024 ? `${f.hex.slice(0, 1024)}... (${f.hex.length / 2} bytes)` : f.hex;
  return `[${f.target}] case ${f.caseIndex}: ${f.reason}\n  input hex: ${hex}`;
}
