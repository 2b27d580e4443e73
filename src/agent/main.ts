/**
 * PLACEHOLDER agent, bundled into phase 1 until the real agent (issue 5's
 * other half) replaces this file: it proves that Node runs inside phase 1 and
 * sees the kernel command line the boot script set, then exits 0.
 */
import { readFileSync } from 'node:fs';

/** Reads `key=value` words of the kernel command line (no quoting: ours has none). */
function kernelParams(text: string): Map<string, string> {
  const params = new Map<string, string>();
  for (const word of text.trim().split(/\s+/)) {
    const eq = word.indexOf('=');
    if (eq > 0) params.set(word.slice(0, eq), word.slice(eq + 1));
  }
  return params;
}

let cmdline = '';
try {
  cmdline = readFileSync('/proc/cmdline', 'utf8');
} catch {
  // Outside phase 1 (no /proc): print what we can.
}
const params = kernelParams(cmdline);
process.stdout.write(
  'BootTorrent agent: phase 1 is up (agent not implemented yet)' +
    ` boottorrent.server=${params.get('boottorrent.server') ?? '(none)'}` +
    ` boottorrent.mac=${params.get('boottorrent.mac') ?? '(none)'}` +
    ` node=${process.version}\n`,
);
