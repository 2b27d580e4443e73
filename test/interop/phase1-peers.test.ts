// Phase 1 served by peers (#16), without VMs: `boottorrent start` with
// peers.phase1 on in its own namespace, and a real agent (host mode) that
// serves its phase-1 payload and says so in its reports. Checks the boot
// script (kernel + stage 0 + the payload's SHA-256), what stage 0 is told
// (the server first, then the agent's URL, which serves the very bytes),
// and that a source reported as serving a wrong payload is not offered
// again. The QEMU test (test/e2e/phase1-peers.test.ts) boots real stage 0s.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { removedWithTest } from '../helpers/netns.js';
import { NetLab, waitForOutput } from '../../src/demo/lab.js';
import { BIN } from '../helpers/cli.js';
import { AGENT_MAIN } from '../helpers/agent-fixture.js';
import { startProc } from '../helpers/faults-peers.js';
import { writeFaultEnv } from '../helpers/faults-server.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';
import { waitUntil } from '../helpers/wait.js';

const SRV = '10.93.255.2';
const HOST = '10.93.255.1';
const A = '52:54:00:93:00:01';
const B = '52:54:00:93:00:02';
const C = '52:54:00:93:00:03';
const D = '52:54:00:93:00:04';

const text = async (path: string) => (await (await fetch(`http://${SRV}${path}`)).text()).trim();

test('peers.phase1: the server hands out kernel + stage 0, then the payload from a serving agent, and drops a bad source', async (t) => {
  const dir = tempDir(t, 'bt-p1peers-');
  const env = writeFaultEnv(dir, {
    iface: 'uplink',
    address: SRV,
    seedTime: 30,
    kernelBytes: 1 << 20,
    initrdBytes: 1 << 20,
    extra: ['peers:', '  phase1: true'],
  });
  const payload = pseudoRandomBytes(3 << 20, 93);
  const sha = createHash('sha256').update(payload).digest('hex');
  writeFileSync(join(env.phase1, 'initrd.img'), payload);
  writeFileSync(join(env.phase1, 'stage0.img'), 'stage 0');
  const mine = join(dir, 'my-phase1.img');
  writeFileSync(mine, payload);

  const lab = removedWithTest(t, new NetLab('p1peer', '10.93.0.1/24'));
  lab.linkToHost(`${HOST}/30`, `${SRV}/30`);
  const server = lab.spawn(process.execPath, [
    '--enable-source-maps',
    BIN,
    'start',
    '--env',
    env.envDir,
    '--phase1',
    env.phase1,
    '--dashboard',
    `${SRV}:8480`,
    '--report-from',
    HOST,
  ]);
  await waitForOutput(server, /dashboard http:\/\/\S+; Ctrl-C stops/, 90_000, 'start');
  assert.match(server.output(), /phase 1 is served by peers/);

  // iPXE loads the kernel and stage 0 here; the payload's digest rides on the command line.
  const script = await text(`/boot.ipxe?mac=${A}`);
  assert.match(
    script,
    /^kernel http:\/\/10\.93\.255\.2\/phase1\/vmlinuz\?mac=\S+ .*boottorrent\.payload=([0-9a-f]{64})/m,
  );
  assert.equal(/boottorrent\.payload=([0-9a-f]{64})/.exec(script)?.[1], sha);
  assert.match(script, /^initrd --name initrd0 http:\/\/10\.93\.255\.2\/phase1\/stage0\.img\?mac=/m);
  assert.doesNotMatch(script, /initrd\.img/);

  // No peer yet: the first stage 0 gets the server's payload.
  assert.equal(await text(`/api/v1/phase1/${A}`), `get http://${SRV}/phase1/initrd.img?mac=${A}`);
  assert.equal((await fetch(`http://${SRV}/api/v1/phase1/not-a-mac`)).status, 400);

  // A's agent comes up and serves its payload; the server offers it to B.
  const agent = startProc((fn) => t.after(fn), process.execPath, [
    AGENT_MAIN,
    '--server',
    `http://${SRV}`,
    '--mac',
    A,
    '--dir',
    join(dir, 'agent'),
    '--no-network',
    '--dry-run',
    '--port',
    '0',
    '--share-phase1',
    mine,
    '--share-port',
    '0',
  ]);
  const port = Number(
    (
      await waitUntil(
        () => /serving phase 1 to later clients on port (\d+)/.exec(agent.output()) ?? undefined,
        60_000,
        'the agent serving phase 1',
        () => agent.output(),
      )
    )[1],
  );
  const peerUrl = `http://${HOST}:${port}/phase1/payload`;
  // Its first report with the port reaches the server within a second or so; ask until it has.
  let answer = '';
  for (const deadline = Date.now() + 60_000; answer !== `get ${peerUrl}`;) {
    assert.ok(Date.now() < deadline, `B was never sent to the agent; last answer: ${answer}`);
    await new Promise((r) => setTimeout(r, 250));
    answer = await text(`/api/v1/phase1/${B}`);
  }
  // What the peer serves is the payload, byte for byte (stage 0 checks it anyway).
  const got = Buffer.from(await (await fetch(peerUrl)).arrayBuffer());
  assert.equal(createHash('sha256').update(got).digest('hex'), sha);
  assert.equal(
    (await fetch(`http://${HOST}:${port}/etc/passwd`)).status,
    404,
    'the payload and nothing else',
  );

  // C says that source sent a wrong payload: neither C nor D is sent there again.
  const c = await text(`/api/v1/phase1/${C}?failed=${encodeURIComponent(peerUrl)}&why=bad`);
  assert.notEqual(c, `get ${peerUrl}`);
  assert.match(c, /^(get http:\/\/10\.93\.255\.2\/phase1\/initrd\.img\?mac=|wait \d+$)/);
  assert.notEqual(await text(`/api/v1/phase1/${D}`), `get ${peerUrl}`);
  await waitForOutput(server, new RegExp(`client ${B} .*loads phase 1 from peer ${A}`), 5000, 'log line');
  await waitForOutput(server, /stage 0 could not use a phase-1 source.*why=bad/, 5000, 'bad source logged');

  // The agent finishes its dry run and stops serving.
  const { code } = await agent.exited;
  assert.equal(code, 0, agent.output());
  await assert.rejects(fetch(peerUrl), 'no longer serving once the agent is done');
  await lab.stop(server, 10_000);
});
