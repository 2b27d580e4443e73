/**
 * Fault: half of the clients die in the middle of the download. `boottorrent
 * start` runs in its own namespace (reached over a veth), its seeder capped
 * at 2 MB/s so a 24 MiB OS takes a while; six host-mode agents download it
 * together. Three of them are SIGKILLed, each once the server's status
 * shows it at >= 20 %. The other three must still finish: every file's
 * SHA-256 verified against the boot config, and the dry-run load printed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { removedWithTest } from '../helpers/netns.js';
import { NetLab, waitForOutput } from '../../src/demo/lab.js';
import { BIN } from '../helpers/cli.js';
import { type Proc } from '../helpers/faults-peers.js';
import { startAgent, status, writeFaultEnv } from '../helpers/faults-server.js';
import { tempDir } from '../helpers/tmp.js';

const SRV = '10.91.255.2';
const DASH = `${SRV}:8480`;
const AGENTS = 6;
const mac = (i: number) => `52:54:00:91:00:${String(i + 1).padStart(2, '0')}`;

test('faults: three of six agents killed mid-download; the other three finish verified', async (t) => {
  const dir = tempDir(t, 'bt-faults-kill-');
  const env = writeFaultEnv(dir, {
    iface: 'uplink',
    address: SRV,
    seedTime: 2,
    kernelBytes: 4 << 20,
    initrdBytes: 20 << 20,
  });
  const lab = removedWithTest(t, new NetLab('fkill', '10.91.0.1/24'));
  lab.linkToHost('10.91.255.1/30', `${SRV}/30`);
  const server = lab.spawn(process.execPath, [
    '--enable-source-maps',
    BIN,
    'start',
    '--env',
    env.envDir,
    '--phase1',
    env.phase1,
    '--dashboard',
    DASH,
    '--upload-limit',
    '2M',
    // Six agents share the host's one address, so none can be tied to its MAC
    // through the neighbour table; they report, so trust that address.
    '--report-from',
    '10.91.255.1',
  ]);
  await waitForOutput(server, /dashboard http:\/\/\S+; Ctrl-C stops/, 90_000, 'start');

  const agents: { proc: Proc; mac: string; dir: string }[] = [];
  for (let i = 0; i < AGENTS; i++) {
    const adir = tempDir(t, 'bt-faults-kill-agent-');
    agents.push({
      proc: startAgent((fn) => t.after(fn), `http://${SRV}`, mac(i), adir),
      mac: mac(i),
      dir: adir,
    });
  }
  const victims = agents.slice(0, AGENTS / 2);
  const survivors = agents.slice(AGENTS / 2);

  // Kill the victims once the server has seen each of them at >= 20 % (and not done).
  // One status request at a time, each with its own deadline: a poll that
  // fired every 200 ms without waiting piled requests up on a loaded machine.
  let seen = 'no status answer yet';
  const deadline = Date.now() + 120_000;
  const allDead = () =>
    victims.every((v) => v.proc.child.signalCode !== null || v.proc.child.exitCode !== null);
  while (!allDead()) {
    if (Date.now() > deadline) assert.fail(`timed out: victims at >= 20 %: ${seen}`);
    try {
      const snap = await status(DASH, 10_000);
      const rows = victims.map((v) => snap.clients.find((c) => c.mac === v.mac));
      seen = rows.map((r, i) => `${victims[i]?.mac} ${r?.stage} ${r?.progress}`).join('; ');
      // Each as soon as it is there: they need not get there together.
      victims.forEach((v, i) => {
        const r = rows[i];
        if (r && r.stage === 'downloading' && r.progress >= 0.2) v.proc.child.kill('SIGKILL');
      });
    } catch (err) {
      seen = `status failed: ${(err as Error).message}`;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  for (const v of victims) {
    const { signal } = await v.proc.exited;
    assert.equal(signal, 'SIGKILL', `${v.mac} was killed, not finished: ${v.proc.output()}`);
    assert.doesNotMatch(v.proc.output(), /verified \d+ files/, `${v.mac} died before verifying`);
  }

  for (const s of survivors) {
    const { code } = await new Promise<{ code: number | null }>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${s.mac} did not finish: ${s.proc.output().slice(-3000)}`)),
        150_000,
      );
      void s.proc.exited.then((r) => {
        clearTimeout(timer);
        resolve(r);
      });
    });
    assert.equal(code, 0, s.proc.output());
    assert.match(s.proc.output(), /boottorrent-agent: verified \d+ files of alpha/);
    assert.match(s.proc.output(), /dry-run: would run: kexec -l/);
    for (const [name, data] of Object.entries(env.files))
      assert.equal(
        createHash('sha256')
          .update(readFileSync(join(s.dir, 'alpha', name)))
          .digest('hex'),
        createHash('sha256').update(data).digest('hex'),
        `${s.mac} ${name}`,
      );
  }
  await lab.stop(server, 10_000);
});
