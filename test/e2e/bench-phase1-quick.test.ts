// `bench:swarm --phase1 --quick`: the end-to-end boot benchmark with the
// real server (`boottorrent start` in a namespace), four emulated clients
// that fetch boot.ipxe, the kernel and initramfs (and, with peers, run stage
// 0's protocol), then the real agent. Every method must get every client a
// verified OS; with clients powered on 6 s apart, peer-served phase 1 must
// take less phase 1 from the server than today's design (later clients load
// the payload from an earlier client's agent). No time is asserted.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { requireProgram } from '../helpers/programs.js';
import { stopWithTest } from '../helpers/reaper.js';
import { tempDir } from '../helpers/tmp.js';

const SCRIPT = new URL('../../bench/swarm.js', import.meta.url).pathname;

interface Row {
  method: string;
  n: number;
  verified: number;
  phase1Copies: number;
  osCopies: number;
  serverPhase1: number;
  kernelsFromPeers: number;
  error?: string;
}

test('bench:swarm --phase1 --quick: every client of every method boots a verified OS; peers take phase 1 off the server', async (t) => {
  for (const [p, pkg] of [
    ['ip', 'iproute2'],
    ['tc', 'iproute2'],
    ['curl', 'curl'],
  ] as const)
    requireProgram(p, pkg);
  const dir = tempDir(t, 'bt-bench-phase1-test-');
  const json = join(dir, 'out.json');
  const child = spawn(process.execPath, [SCRIPT, '--phase1', '--quick', '--stagger', '6', '--json', json], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const hang = setTimeout(() => child.kill('SIGTERM'), 400_000);
  t.after(() => clearTimeout(hang));
  stopWithTest(t, child, 'SIGTERM', 30_000);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(hang);
  const prefix = /lab (btb-[0-9a-f]{6}-)/.exec(out)?.[1];
  assert.ok(prefix, `no lab line in:\n${out}`);
  const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.startsWith(prefix));
  assert.deepEqual(left, [], 'namespaces left behind');
  assert.equal(code, 0, out);
  for (const m of ['central', 'peers', 'grub', 'http'])
    assert.match(
      out,
      new RegExp(
        `^N=4 method=${m} all_booted=\\d+\\.\\ds server_phase1_copies=\\d+\\.\\d\\d server_os_copies=\\d+\\.\\d\\d$`,
        'm',
      ),
    );
  const { rows, phase1Size, osSize } = JSON.parse(readFileSync(json, 'utf8')) as {
    rows: Row[];
    phase1Size: number;
    osSize: number;
  };
  const by = new Map(rows.map((r) => [r.method, r]));
  for (const r of rows) {
    assert.equal(r.error, undefined, `${r.method}: ${r.error}`);
    assert.equal(r.verified, 4, `${r.method}: ${r.verified}/4 clients verified`);
  }
  // Today's design: every client's kernel and initramfs from the server
  // (the server counts what its sockets wrote: HTTP headers too).
  for (const m of ['central', 'http']) {
    const sent = by.get(m)!.serverPhase1;
    assert.ok(sent >= 4 * phase1Size && sent < 4 * phase1Size + 65_536, `${m}: ${sent} B of phase 1 sent`);
  }
  // Central HTTP: the whole OS from the server to every client.
  assert.equal(by.get('http')!.osCopies, 4, out);
  assert.ok(osSize > 0);
  // Peers: at least one payload came from another client.
  assert.ok(
    by.get('peers')!.phase1Copies < by.get('central')!.phase1Copies,
    `peer-served phase 1 took ${by.get('peers')!.phase1Copies} copies from the server, central ${by.get('central')!.phase1Copies}:\n${out}`,
  );
  // GRUB (peers.phase1_loader: grub): a later client's kernel came from an
  // earlier one's agent (today's design and peers: always from the server).
  assert.ok(by.get('grub')!.kernelsFromPeers >= 1, `no kernel came from a peer through GRUB:\n${out}`);
  for (const m of ['central', 'peers', 'http']) assert.equal(by.get(m)!.kernelsFromPeers, 0, m);
  // Its program and configs count as phase 1 too, and it still took fewer.
  assert.ok(
    by.get('grub')!.phase1Copies < by.get('central')!.phase1Copies,
    `phase 1 through GRUB took ${by.get('grub')!.phase1Copies} copies from the server, central ${by.get('central')!.phase1Copies}:\n${out}`,
  );
});
