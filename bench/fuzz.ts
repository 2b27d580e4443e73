/**
 * The long fuzz run (issue #8): every target, or one, for N seconds each,
 * in a worker thread watched by a watchdog so a parser that hangs is caught
 * and its input printed (the worker publishes the index of the case it is
 * in; the input is regenerated from the seed and that index).
 *
 *   npm run fuzz -- --target dhcp --seconds 60 [--seed 1234]
 *   npm run fuzz -- --seconds 30            # every target
 *   npm run fuzz -- --list
 *   npm run fuzz -- --target wire-session --seconds 120   # whole peer conversations
 *
 * Exit status 1 when anything failed. Failures print the input in hex: put
 * it in test/fuzz/corpus/<target>/ (xxd -r -p) once the bug is fixed.
 */
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { parseArgs } from 'node:util';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatFailure, replayInput, runTarget } from '../test/fuzz/harness.js';
import type { Failure, RunResult } from '../test/fuzz/harness.js';
import { allTargets } from '../test/fuzz/targets.js';
import { wireSessionTarget } from '../test/fuzz/wire-session.js';

/** The parser targets and the stateful one (whole peer conversations against real sessions). */
function targets() {
  return [...allTargets(), wireSessionTarget()];
}

interface Job {
  target: string;
  seconds: number;
  seed: number;
  progress: SharedArrayBuffer;
}

/** Seconds without a new case before the watchdog calls it a hang (more for a target whose cases are slower). */
const HANG_SECONDS = 10;

function hangSeconds(name: string): number {
  const t = targets().find((x) => x.name === name);
  return Math.max(HANG_SECONDS, Math.ceil((t?.maxCaseMs ?? 0) / 1000));
}

async function worker(job: Job): Promise<void> {
  const target = targets().find((t) => t.name === job.target)!;
  const current = new Int32Array(job.progress);
  try {
    const r = await runTarget(target, {
      seed: job.seed,
      timeMs: job.seconds * 1000,
      onCase: (i) => Atomics.store(current, 0, i + 1),
    });
    parentPort!.postMessage(r);
  } finally {
    target.dispose?.();
  }
}

function runInWorker(job: Job): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const w = new Worker(new URL(import.meta.url), {
      workerData: job,
      resourceLimits: { maxOldGenerationSizeMb: 1024 },
    });
    const current = new Int32Array(job.progress);
    let last = -1;
    let still = 0;
    const hang = hangSeconds(job.target);
    let result: RunResult | null = null;
    /** A run that stopped at case `index`, with that case's input to replay. */
    const failureAt = (index: number, reason: string, ms: number): RunResult => {
      const input = replayInput(
        targets().find((t) => t.name === job.target)!,
        job.seed,
        index,
      );
      return {
        target: job.target,
        cases: index + 1,
        accepted: 0,
        ms,
        failures: [{ target: job.target, caseIndex: index, reason, hex: input.toString('hex') }],
      };
    };
    const hangCheck = setInterval(() => {
      const now = Atomics.load(current, 0);
      still = now === last ? still + 1 : 0;
      last = now;
      if (still >= hang) {
        clearInterval(hangCheck);
        result = failureAt(now - 1, `hang: no progress for ${hang} s`, job.seconds * 1000);
        void w.terminate();
      }
    }, 1000);
    w.on('message', (r: RunResult) => (result = r));
    w.on('error', (err: Error) => {
      // Out of memory in the worker (resourceLimits) lands here.
      result = failureAt(Atomics.load(current, 0) - 1, `worker died: ${err.message}`, 0);
    });
    w.on('exit', () => {
      clearInterval(hangCheck);
      if (result) resolve(result);
      else reject(new Error(`fuzz worker for ${job.target} exited without a result`));
    });
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      target: { type: 'string' },
      seconds: { type: 'string', default: '10' },
      seed: { type: 'string' },
      list: { type: 'boolean', default: false },
    },
  });
  const names = targets().map((t) => t.name);
  if (values.list) {
    console.log(names.join('\n'));
    return;
  }
  if (values.target !== undefined && !names.includes(values.target)) {
    console.error(`fuzz: unknown target ${values.target}; one of: ${names.join(', ')}`);
    process.exitCode = 2;
    return;
  }
  const seconds = Number(values.seconds);
  const seed = values.seed !== undefined ? Number(values.seed) : (Math.random() * 0x100000000) >>> 0;
  console.log(`fuzz: seed ${seed}, ${seconds} s per target (reproduce with --seed ${seed})`);
  const failures: Failure[] = [];
  for (const name of values.target !== undefined ? [values.target] : names) {
    const r = await runInWorker({ target: name, seconds, seed, progress: new SharedArrayBuffer(4) });
    const rate = r.ms > 0 ? Math.round((r.cases / r.ms) * 1000) : 0;
    console.log(
      `${name.padEnd(14)} ${String(r.cases).padStart(9)} cases  ${String(rate).padStart(7)}/s  accepted ${String(r.accepted).padStart(8)}  failures ${r.failures.length}`,
    );
    failures.push(...r.failures);
  }
  if (failures.length > 0) {
    // The full inputs go to files: a hex line of a megabyte helps nobody.
    const dir = mkdtempSync(join(tmpdir(), 'bt-fuzz-failures-'));
    for (const f of failures) {
      const file = join(dir, `${f.target}-${f.caseIndex}.bin`);
      writeFileSync(file, Buffer.from(f.hex, 'hex'));
      console.log(`${formatFailure(f)}\n  input file: ${file}`);
      // A stateful case is a script of actions: shrink it to those that still fail the same way.
      if (f.target === 'wire-session') {
        const ws = wireSessionTarget();
        try {
          const small = await ws.minimize(Buffer.from(f.hex, 'hex'), f.reason);
          const smallFile = join(dir, `${f.target}-${f.caseIndex}-min.json`);
          writeFileSync(smallFile, small);
          console.log(`  shrunk: ${small.toString()}\n  shrunk file: ${smallFile}`);
        } finally {
          ws.dispose();
        }
      }
    }
  }
  if (failures.length > 0) process.exitCode = 1;
}

if (isMainThread) await main();
else await worker(workerData as Job);
