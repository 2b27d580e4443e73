/**
 * BootTorrent's version, from package.json (the one place it is written).
 * The compiled CLI lives in dist/src/, an installed package's in the same
 * layout, so package.json is found by walking up from this module. The
 * agent's bundle (phase 1) carries no package.json: there it is "unknown".
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

export function version(): string {
  if (cached !== undefined) return cached;
  cached = 'unknown';
  try {
    let dir = dirname(fileURLToPath(import.meta.url));
    for (let i = 0; i < 5; i++) {
      try {
        const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as {
          name?: unknown;
          version?: unknown;
        };
        if (pkg.name === 'boottorrent' && typeof pkg.version === 'string') {
          cached = pkg.version;
          break;
        }
      } catch {
        // No package.json here (or not ours): look one folder up.
      }
      const up = dirname(dir);
      if (up === dir) break;
      dir = up;
    }
  } catch {
    // import.meta.url is not a file URL (a bundle): unknown.
  }
  return cached;
}
