/**
 * The bounded fuzz run for CI (issue #8): every parser that reads outside
 * input gets a fixed number of cases with a fixed seed (the same inputs
 * every run) plus as many with a seed chosen per run and printed, so new
 * ground is covered and a failure reproduces with
 * `npm run fuzz -- --target <name> --seed <seed>` or FUZZ_SEED=<seed>.
 * The long run is bench/fuzz.ts (bench/results/fuzz.md).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatFailure, runTarget } from '../fuzz/harness.js';
import { allTargets } from '../fuzz/targets.js';

const FIXED_SEED = 0x5eed;
const RUN_SEED =
  process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) : (Math.random() * 0x100000000) >>> 0;

/** Cases per seed: the environment loader reads files and http-request opens connections, so they get fewer. */
const CASES: Record<string, number> = { env: 150, 'env-os': 150, 'http-request': 1000 };
const DEFAULT_CASES = 5000;

for (const target of allTargets()) {
  test(`fuzz ${target.name}: only values or BootTorrentError, never a crash or a hang`, async (t) => {
    t.after(() => target.dispose?.());
    const cases = CASES[target.name] ?? DEFAULT_CASES;
    for (const seed of [FIXED_SEED, RUN_SEED]) {
      const r = await runTarget(target, { seed, cases });
      t.diagnostic(`seed ${seed}: ${r.cases} cases, ${r.accepted} accepted`);
      assert.equal(r.cases, cases);
      assert.ok(r.accepted > 0, 'no input was accepted: the seeds are not valid messages');
      assert.deepEqual(
        r.failures.map(formatFailure),
        [],
        `reproduce with FUZZ_SEED=${seed} or npm run fuzz -- --target ${target.name} --seed ${seed}`,
      );
    }
  });
}
