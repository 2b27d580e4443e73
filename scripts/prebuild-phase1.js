#!/usr/bin/env node
// Builds the phase-1 images the end-to-end tests boot (base and qemu
// flavors) into the cache `boottorrent start` and `boottorrent demo` read,
// before any test file runs. A cold build takes minutes (the pinned Node
// from the registry, xz over ~100 MB of initramfs) and used to happen inside
// the first VM test, under the runner's per-file timeout: the test was
// killed mid-build and left its VMs running (issue #15 item 5). Here it has
// no timeout of its own and prints its progress; with a warm cache it only
// hashes the inputs and reuses the images.
//
// It calls buildPhase1 with the same options as `start` and `demo` (only
// outDir and flavor), so the input hash matches and they reuse the result.
// Usage: node scripts/prebuild-phase1.js [base|qemu ...] (default both).
import { existsSync } from 'node:fs';
import { join } from 'node:path';

const dist = new URL('../dist/src/phase1/build.js', import.meta.url).pathname;
if (!existsSync(dist)) {
  console.error('prebuild-phase1: dist is missing; run `npm run build` first.');
  process.exit(1);
}
const { buildPhase1, defaultCacheDir } = await import(dist);

const flavors = process.argv.length > 2 ? process.argv.slice(2) : ['base', 'qemu'];
const controller = new AbortController();
for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => controller.abort());

for (const flavor of flavors) {
  if (flavor !== 'base' && flavor !== 'qemu') {
    console.error(`prebuild-phase1: unknown flavor ${flavor} (base or qemu)`);
    process.exit(2);
  }
  // The folder src/cli/start.ts and src/cli/demo.ts build into when no --phase1 is given.
  const outDir = join(defaultCacheDir(), '..', 'phase1-image', flavor);
  const started = Date.now();
  const secs = () => ((Date.now() - started) / 1000).toFixed(0).padStart(4);
  console.log(`prebuild-phase1: ${flavor} image in ${outDir}`);
  try {
    const built = await buildPhase1(
      { outDir, flavor },
      {
        signal: controller.signal,
        onProgress: (p) => console.log(`prebuild-phase1: ${secs()} s ${flavor}: ${p.message}`),
      },
    );
    const mb = (built.manifest.sizes.initrd / 1e6).toFixed(1);
    console.log(
      `prebuild-phase1: ${flavor} ${built.reused ? 'reused' : 'built'} in ${((Date.now() - started) / 1000).toFixed(1)} s, initrd ${mb} MB`,
    );
  } catch (err) {
    console.error(`prebuild-phase1: ${flavor} failed after ${secs().trim()} s: ${err?.stack ?? err}`);
    process.exit(1);
  }
}
