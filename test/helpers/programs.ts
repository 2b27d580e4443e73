import { execFileSync } from 'node:child_process';

/**
 * The absolute path of a real program a test depends on. A missing program
 * fails the test with the package to install; it never skips, because a
 * skipped interop check is one CI silently never runs.
 */
export function requireProgram(name: string, debianPackage: string): string {
  try {
    return execFileSync('sh', ['-c', `command -v ${name}`], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error(`${name} is not installed: run \`apt-get install ${debianPackage}\` (or bash .ci/run)`);
  }
}
