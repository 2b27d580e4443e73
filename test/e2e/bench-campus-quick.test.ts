// `bench:campus --quick`: three subnets of two clients behind a router
// running a real DHCP relay (isc-dhcp-relay). Every client leases from its
// subnet's pool through the relay and ends with a verified image, with the
// swarm's locality on and off. No time is asserted. The benchmark removes
// its namespaces; the test checks none is left.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { requireProgram } from '../helpers/programs.js';
import { stopWithTest } from '../helpers/reaper.js';
import { tempDir } from '../helpers/tmp.js';

const SCRIPT = new URL('../../bench/campus.js', import.meta.url).pathname;

interface Row {
  mode: string;
  perSubnet: number;
  clients: number;
  verified: number;
  routerBytes: number;
  importCopies: number;
  serverCopies: number;
  error?: string;
}

test('bench:campus --quick: clients on three relayed subnets lease through the relay and verify the image, locality on and off', async (t) => {
  requireProgram('ip', 'iproute2');
  requireProgram('tc', 'iproute2');
  requireProgram('dhcrelay', 'isc-dhcp-relay');
  requireProgram('busybox', 'busybox-static');
  const dir = tempDir(t, 'bt-bench-campus-test-');
  const json = join(dir, 'out.json');
  const child = spawn(process.execPath, [SCRIPT, '--quick', '--json', json], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const hang = setTimeout(() => child.kill('SIGTERM'), 170_000);
  t.after(() => clearTimeout(hang));
  stopWithTest(t, child, 'SIGTERM', 30_000);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(hang);
  const prefix = /lab (btc-[0-9a-f]{6}-)/.exec(out)?.[1];
  assert.ok(prefix, `no lab line in:\n${out}`);
  const left = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.startsWith(prefix));
  assert.deepEqual(left, [], 'namespaces left behind');
  assert.equal(code, 0, out);
  assert.match(out, /DHCP through the relay: 6 clients leased/);
  const { rows } = JSON.parse(readFileSync(json, 'utf8')) as { rows: Row[] };
  assert.deepEqual(rows.map((r) => r.mode).sort(), ['flat', 'locality']);
  for (const r of rows) {
    assert.equal(r.error, undefined, `${r.mode}: ${r.error}`);
    assert.equal(r.verified, 6, `${r.mode}: ${r.verified}/6 clients with the right SHA-256`);
    // Every subnet got the image over its router link at least once; the counters saw it.
    assert.ok(r.importCopies >= 3, `${r.mode}: ${r.importCopies} copies into 3 subnets`);
    assert.ok(r.serverCopies >= 1, `${r.mode}: server sent ${r.serverCopies} copies`);
  }
});
