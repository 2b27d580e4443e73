#!/usr/bin/env node
// Runs the compiled node:test files under dist/test/. Node 20's --test takes
// no globs, so the list is built here. An optional argument picks a folder
// (unit, interop, e2e); with none, every test runs.
import { readdirSync, statSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = new URL('../dist/test/', import.meta.url).pathname;
if (!existsSync(root)) {
  console.error('run-tests: dist/test is missing; run `npm run build` first.');
  process.exit(1);
}
const sub = process.argv[2];
const base = sub ? join(root, sub) : root;
const files = [];
(function walk(dir) {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith('.test.js')) files.push(p);
  }
})(base);
if (files.length === 0) {
  console.error(`run-tests: no test files under ${base}`);
  process.exit(1);
}
const args = ['--enable-source-maps', '--test', '--test-reporter=spec', '--test-timeout=300000', ...files];
const r = spawnSync(process.execPath, args, { stdio: 'inherit' });
process.exit(r.status ?? 1);
