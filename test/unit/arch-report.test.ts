// scripts/arch-report.js (issue #15 "how it is checked") on a tiny tree: it
// must flag an import that points up the layering and a cycle between
// modules, and must not count a type-only cycle as a runtime one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.js';

const SCRIPT = new URL('../../../scripts/arch-report.js', import.meta.url).pathname;

function tree(dir: string, files: Record<string, string>): void {
  for (const [name, text] of Object.entries(files)) {
    mkdirSync(join(dir, name, '..'), { recursive: true });
    writeFileSync(join(dir, name), text);
  }
}

function report(dir: string): string {
  const r = spawnSync(process.execPath, [SCRIPT, dir], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

test('arch-report flags an upward arrow and a runtime cycle, with the import behind each', (t) => {
  const dir = tempDir(t);
  tree(dir, {
    'errors.ts': 'export class E extends Error {}\n',
    // util is the bottom layer; importing server points up.
    'util/log.ts': "import { App } from '../server/app.js';\nexport const x = App;\n",
    'server/app.ts':
      "import { E } from '../errors.js';\nimport { b } from './b.js';\nexport class App { e = E; b = b; }\n",
    'server/b.ts': "import { App } from './app.js';\nexport function b() {\n  return App;\n}\n",
    // A comment or string that looks like an import is not one.
    'cli/main.ts':
      "// import '../demo/x.js'\nimport type { App } from '../server/app.js';\nexport type A = App;\n",
  });
  const out = report(dir);
  assert.match(out, /util -> server 1 UPWARD/);
  assert.match(out, /UPWARD util\/log\.ts:1 -> server\/app\.ts/);
  assert.match(out, /upward arrows: 1 \(1 imports\)\n/);
  assert.match(out, /cli -> server 1 type-only\n/);
  assert.match(out, /import cycles: 1 \(1 through runtime imports alone\)/);
  assert.match(out, /CYCLE server\/app\.ts -> server\/b\.ts -> server\/app\.ts/);
  assert.match(out, /largest files \(lines\), of 5/);
  assert.match(out, /\s3\s+b\s+server\/b\.ts:2/);
});

test('arch-report tells a cycle through type imports alone from a runtime one, and a downward type import is not flagged', (t) => {
  const dir = tempDir(t);
  tree(dir, {
    'swarm/a.ts': "import type { B } from './b.js';\nexport interface A { b?: B }\n",
    'swarm/b.ts': "import { type A } from './a.js';\nexport interface B { a?: A }\n",
    'server/app.ts': "import type { A } from '../swarm/a.js';\nexport type S = A;\n",
  });
  const out = report(dir);
  assert.match(out, /upward arrows: 0 \(0 imports\)\n/);
  assert.match(out, /import cycles: 1 \(0 through runtime imports alone\)/);
  assert.match(out, /CYCLE \(types\) swarm\/a\.ts -> swarm\/b\.ts -> swarm\/a\.ts/);
});
