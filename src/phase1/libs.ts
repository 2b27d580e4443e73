/**
 * Shared libraries a dynamically linked program needs inside phase 1. ldd
 * (glibc's, present wherever the binaries come from) runs the real loader,
 * so its answer includes transitive dependencies and the loader itself.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { BootTorrentError } from '../errors.js';

const execFileP = promisify(execFile);

/**
 * Absolute library paths from ldd's output (pure). Lines are
 * `libx.so.1 => /path/libx.so.1 (0x...)` or `/lib64/ld-linux-x86-64.so.2 (0x...)`;
 * the vDSO has no file and is skipped. A `not found` line is an error: the
 * program could not start inside phase 1 either.
 */
export function parseLdd(output: string, program = 'program'): string[] {
  const libs: string[] = [];
  for (const raw of output.split('\n')) {
    const line = raw.trim();
    if (line === '' || /^(linux-vdso|linux-gate)\.so/.test(line)) continue;
    if (/=>\s*not found/.test(line)) {
      throw new BootTorrentError(
        'BT_ERR_PHASE1',
        `${program} needs ${line.split(/\s/)[0]}, which is not installed`,
      );
    }
    const arrow = /=>\s*(\/\S+)/.exec(line);
    if (arrow) libs.push(arrow[1]!);
    else if (line.startsWith('/')) libs.push(line.split(/\s/)[0]!);
  }
  return [...new Set(libs)];
}

/** The shared libraries (and loader) of a program; [] for a static one. */
export async function sharedLibraries(program: string, signal?: AbortSignal): Promise<string[]> {
  try {
    const { stdout } = await execFileP('ldd', [program], { encoding: 'utf8', signal });
    return parseLdd(stdout, program);
  } catch (err) {
    if (err instanceof BootTorrentError) throw err;
    const e = err as { stdout?: string; stderr?: string; message: string };
    // ldd exits 1 with "not a dynamic executable" for static programs (busybox-static).
    if (/not a dynamic executable|statically linked/.test(`${e.stdout ?? ''}${e.stderr ?? ''}`)) return [];
    throw new BootTorrentError('BT_ERR_PHASE1', `ldd ${program} failed: ${e.message}`, { cause: err });
  }
}
