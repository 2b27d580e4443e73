import { spawn, type ChildProcess } from 'node:child_process';
import type { TestContext } from 'node:test';
import { requireProgram } from './programs.js';
import { aria2cSwarmArgs } from '../../src/demo/aria2c.js';

/**
 * Starts a real aria2c on a torrent, confined to loopback peers: no DHT, no
 * LPD, no PEX, no config file, so its only source of peers is the tracker
 * in the torrent (ours, on 127.0.0.1). Killed by PID when the test ends.
 */
export function startAria2c(
  t: TestContext,
  torrentPath: string,
  dir: string,
  opts: { seed?: boolean; uploadLimit?: number; listenPort?: number; extra?: string[] } = {},
): { child: ChildProcess; log: () => string } {
  const aria2c = requireProgram('aria2c', 'aria2');
  const args = [
    ...aria2cSwarmArgs({
      dir,
      listenPort: opts.listenPort ?? 20000 + Math.floor(Math.random() * 30000),
      stopWithPid: process.pid,
    }),
    ...(opts.seed ? ['--check-integrity=true'] : []),
    ...(opts.uploadLimit ? [`--max-overall-upload-limit=${opts.uploadLimit}`] : []),
    ...(opts.extra ?? []),
    torrentPath,
  ];
  const child = spawn(aria2c, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return { child, log: () => out };
}
