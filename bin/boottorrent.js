#!/usr/bin/env node
// Entry point for `npx boottorrent`. The TypeScript sources are compiled to
// dist/ by `npm ci` (the `prepare` script); say so instead of a stack trace
// when that has not happened.
import { existsSync } from 'node:fs';

const main = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(main)) {
  console.error('boottorrent: dist/ is missing. Run `npm ci` (or `npm run build`) in the repository first.');
  process.exit(1);
}
await import(main.href);
