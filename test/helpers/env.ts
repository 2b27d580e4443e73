import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { tempDir } from './tmp.js';
import type { Problem } from '../../src/env/index.js';

/** Writes an environment folder: `files` maps relative paths to contents. */
export function writeEnv(t: TestContext, files: Record<string, string>): string {
  const dir = tempDir(t, 'bt-env-');
  for (const [rel, text] of Object.entries(files)) {
    const full = join(dir, rel);
    mkdirSync(dirname(full), { recursive: true });
    writeFileSync(full, text);
    if (rel.endsWith('.sh')) chmodSync(full, 0o755);
  }
  return dir;
}

/** A minimal valid v1 environment plus overrides (a key set to null is left out). */
export function v1Env(t: TestContext, yaml: string, extra: Record<string, string | null> = {}): string {
  const files: Record<string, string> = {
    'Boottorrent.yaml': yaml,
    'oss/linux/config.yaml':
      'name: Linux\nmethod: kexec\nkernel: vmlinuz\ninitrd: initrd.img\ncmdline: quiet\n',
    'oss/linux/vmlinuz': 'kernel',
    'oss/linux/initrd.img': 'initrd',
  };
  for (const [k, v] of Object.entries(extra)) {
    if (v === null) delete files[k];
    else files[k] = v;
  }
  return writeEnv(t, files);
}

export const BASE_V1 = `version: 1
server:
  interface: eth1
  address: 10.0.0.1
dhcp:
  mode: full
  range: 10.0.0.100-10.0.0.199
boot:
  default_os: linux
`;

/** Asserts one problem matches every given property (regexps for strings). */
export function expectProblem(
  problems: readonly Problem[],
  want: { file: RegExp; field: string | RegExp; message: RegExp; line?: number; fix?: RegExp },
): Problem {
  const hit = problems.find(
    (p) =>
      want.file.test(p.file) &&
      (typeof want.field === 'string' ? p.field === want.field : want.field.test(p.field)) &&
      want.message.test(p.message) &&
      (want.line === undefined || p.line === want.line) &&
      (want.fix === undefined || want.fix.test(p.fix)),
  );
  assert.ok(
    hit,
    `no problem like ${JSON.stringify(want, (_k, v: unknown) => (v instanceof RegExp ? String(v) : v))} in:\n${JSON.stringify(problems, null, 1)}`,
  );
  return hit;
}

/** `n` distinct TCP ports free right now on 127.0.0.1 (held at once, so no two are the same). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = Array.from({ length: n }, () => createServer());
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.listen(0, '127.0.0.1', r))));
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  return ports;
}

/** A TCP port free right now on 127.0.0.1 (for two, freePorts: one after the other may repeat). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}
