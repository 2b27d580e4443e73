// A VM test that outlives its --test-timeout must not leave its QEMU
// machines and its namespace running (issue #15 item 5): the helpers stop
// what they started when the test ends, timed out or not, and on SIGTERM
// (test/helpers/reaper.ts: what the runner sends a file it stops). The
// fixture stands in for a VM test, with `sleep` in place of QEMU; Node 24's
// runner fails the timed-out test and lets the file end by itself, so the
// fixture's own wait is unreferenced (it held this test for 600 s).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { stopSync } from '../helpers/reaper.js';
import { tempDir } from '../helpers/tmp.js';
import { waitUntil } from '../helpers/wait.js';

const FIXTURE = new URL('./fixtures/killed-by-timeout.js', import.meta.url).pathname;
const namespaces = () => execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });

test('a test file killed at the runner timeout leaves no process, namespace or folder behind', async (t) => {
  const report = join(tempDir(t), 'report.json');
  // Without this the inner runner sees it runs inside a test file and runs nothing.
  const { NODE_TEST_CONTEXT: _, ...env } = process.env;
  // Generous for a loaded machine: the fixture must reach its wait first.
  const runner = spawn(
    process.execPath,
    ['--enable-source-maps', '--test', '--test-reporter=tap', '--test-timeout=20000', FIXTURE],
    { env: { ...env, BT_TIMEOUT_REPORT: report }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  runner.stdout.on('data', (d: Buffer) => (out += d.toString()));
  runner.stderr.on('data', (d: Buffer) => (out += d.toString()));
  t.after(() => stopSync(runner.pid, 'SIGKILL'));
  const [code] = (await once(runner, 'exit')) as [number | null];
  assert.notEqual(code, 0, out);
  assert.match(out, /timed out after 20000ms/, out);
  assert.ok(existsSync(report), `the fixture never started its process: ${out}`);
  const { ns, pid, dir } = JSON.parse(readFileSync(report, 'utf8')) as {
    ns: string;
    pid: number;
    dir: string;
  };
  t.after(() => {
    // Only if the check below failed: do not leave them to the next test.
    stopSync(pid, 'SIGKILL');
    if (namespaces().includes(ns)) execFileSync('ip', ['netns', 'del', ns]);
    rmSync(dir, { recursive: true, force: true });
  });
  // The runner does not wait for the killed file's cleanup to finish. Gone,
  // not a zombie: `pgrep qemu` lists zombies, and init may reap them late.
  await waitUntil(() => !existsSync(`/proc/${pid}`), 30_000, `exit of the fixture's process ${pid}`);
  await waitUntil(() => !namespaces().includes(ns), 30_000, `removal of namespace ${ns}`, namespaces);
  await waitUntil(() => !existsSync(dir), 30_000, `removal of ${dir}`);
});
