/**
 * The agent's qemu method with a real guest: a 512-byte x86 boot sector,
 * assembled here by hand, that writes a marker to COM1 and halts. The agent
 * downloads it, verifies it and runs qemu-system-x86_64 in the OS folder;
 * the marker on the agent's console proves the guest ran.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { requireProgram } from '../helpers/programs.js';
import { runAgent, startFixture } from '../helpers/agent-fixture.js';
import { markerBootSector } from '../helpers/marker-os.js';

test('agent: the qemu method boots a real guest from the downloaded folder', async (t) => {
  requireProgram('qemu-system-x86_64', 'qemu-system-x86');
  const marker = `BTQEMU-${process.pid}-OK`;
  const fx = await startFixture(t, {
    oss: [
      {
        id: 'tiny',
        name: 'Tiny guest',
        method: 'qemu',
        // A relative file: qemu must run in the OS folder.
        args: '-drive format=raw,file=boot.img -display none -serial stdio -monitor none -accel tcg -no-reboot -m 32'.split(
          ' ',
        ),
        files: { 'boot.img': markerBootSector(marker) },
      },
    ],
    default: 'tiny',
    timeout: 0,
  });
  const agent = runAgent(t, fx.server);
  await agent.waitFor(/verified 1 files of tiny/);
  await agent.waitFor(/loading tiny via qemu/);
  const run = await agent.waitFor(/running (\S+) .*-accel tcg/);
  assert.equal(run[1], 'qemu-system-x86_64');
  assert.doesNotMatch(run[0], /-accel kvm/, 'no second accelerator when the args choose one');
  await agent.waitFor(new RegExp(marker), 60_000);

  // The guest halts and never exits: stop the qemu the agent started.
  const pids = execFileSync('ps', ['-o', 'pid=', '--ppid', String(agent.child.pid)], { encoding: 'utf8' })
    .split('\n')
    .map((s) => Number(s.trim()))
    .filter((n) => n > 0);
  assert.equal(pids.length, 1, `one child of the agent: ${pids.join(',')}`);
  process.kill(pids[0]!, 'SIGTERM');
  // qemu exits 0 on SIGTERM ("terminating on signal 15").
  await agent.waitFor(/boottorrent-agent: tiny exited with (status|signal)/);
  await agent.waitFor(/Press r to run it again, m for the menu/);
  agent.send('q');
  assert.equal((await agent.exited).code, 0);
  assert.ok(fx.reports.some((r) => r.body.stage === 'running' && r.body.os === 'tiny'));
});
