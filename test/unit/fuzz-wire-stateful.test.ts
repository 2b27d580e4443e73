/**
 * Stateful wire fuzzing in CI (issue #14): a hostile peer plays whole
 * conversations (test/fuzz/wire-session.ts) against our seeding and
 * downloading sessions, a bounded number of cases with a fixed seed plus as
 * many with a seed chosen per run and printed. A failure reproduces with
 * FUZZ_SEED=<seed>, or `npm run fuzz -- --target wire-session --seed <seed>`,
 * which also prints the failing script shrunk to the actions that matter.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng, runTarget, type Failure } from '../fuzz/harness.js';
import { utPexZeroScript } from '../fuzz/make-regressions.js';
import {
  generateScript,
  mutateScript,
  parseScript,
  scriptBytes,
  wireSessionTarget,
} from '../fuzz/wire-session.js';

const FIXED_SEED = 0x5eed;
const RUN_SEED =
  process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) : (Math.random() * 0x100000000) >>> 0;
/** Cases per seed: about 0.1 s each unloaded, so both seeds fit well within a minute on a busy machine. */
const CASES = 60;

/** The reason and the script (JSON, readable as it is), cut to a screenful. */
function show(f: Failure): string {
  const script = Buffer.from(f.hex, 'hex').toString('utf8');
  return `case ${f.caseIndex}: ${f.reason.slice(0, 1500)}\n  script: ${script.slice(0, 3000)}`;
}

test('wire-session scripts replay as written: one seed gives one script, and a script survives its file form', () => {
  for (let seed = 0; seed < 200; seed++) {
    const s = generateScript(new Rng(seed));
    assert.deepEqual(generateScript(new Rng(seed)), s);
    assert.deepEqual(parseScript(scriptBytes(s)), s, `seed ${seed}`);
    const m = mutateScript(new Rng(seed), s);
    assert.deepEqual(parseScript(scriptBytes(m)), m, `mutation of seed ${seed}`);
  }
});

test('wire session: a peer whose extended handshake gives ut_pex the id 0 (disabled) is sent no PEX; the 60 s PEX timer threw and ended the process', async (t) => {
  const target = wireSessionTarget();
  t.after(() => target.dispose());
  for (const side of ['seeder', 'leecher'] as const) {
    await assert.doesNotReject(async () => target.run(utPexZeroScript(side), new Rng(0)), `as the ${side}`);
  }
});

test('fuzz wire-session: hostile conversations never crash, stall or corrupt a session, and honest peers still download', async (t) => {
  const target = wireSessionTarget();
  t.after(() => target.dispose());
  for (const seed of [FIXED_SEED, RUN_SEED]) {
    const r = await runTarget(target, { seed, cases: CASES });
    t.diagnostic(`seed ${seed}: ${r.cases} cases in ${(r.ms / 1000).toFixed(1)} s`);
    assert.equal(r.cases, CASES);
    assert.deepEqual(
      r.failures.map(show),
      [],
      `reproduce with FUZZ_SEED=${seed} or npm run fuzz -- --target wire-session --seed ${seed}`,
    );
  }
});
