#!/usr/bin/env node
// Bundles the agent (src/agent/main.ts) into dist/agent.mjs with esbuild, for
// the installed packages (npm tarball, .deb): they carry no sources and no
// esbuild, and build-phase1 puts this file into phase 1 instead. Run by
// `npm pack` (the prepack script) and scripts/build-deb.sh, after `npm run build`.
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = new URL('..', import.meta.url);
const { bundleAgent } = await import(new URL('dist/src/phase1/build.js', root).href);
const data = await bundleAgent(fileURLToPath(new URL('src/agent/main.ts', root)));
writeFileSync(new URL('dist/agent.mjs', root), data);
console.log(`bundle-agent: dist/agent.mjs (${data.length} bytes)`);
