/**
 * Fault: a client in the swarm serves corrupt pieces. A lying peer (our
 * wire codec) claims every piece, answers every request at once, and flips
 * a byte in every even piece. The honest seeder is capped at 1 MB/s and
 * the image (12 MiB) is three times the agent's request queue to one peer,
 * so the agent asks the liar for much. The host-mode agent must detect the hash
 * failures, ban the liar, get the pieces elsewhere, verify every file and
 * only then run the OS's program (bin method, not a dry run: the program
 * prints a marker). And with a wrong SHA-256 in the boot config, the agent
 * shows the failure and never runs the program. On 127.0.0.1.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseTorrent } from '../../src/torrent/metainfo.js';
import { runAgent, startFixture, type Fixture, type OsSpec } from '../helpers/agent-fixture.js';
import { LyingPeer, freeTcpPort } from '../helpers/faults-peers.js';
import { pseudoRandomBytes } from '../helpers/tmp.js';

const HOST = '127.0.0.1';

function os(extra: Partial<OsSpec> = {}): OsSpec {
  return {
    id: 'alpha',
    name: 'Alpha',
    method: 'bin',
    bin: 'run.sh',
    args: [],
    files: {
      'run.sh': '#!/bin/sh\necho "MARKER-RAN-ALPHA"\n',
      'data/blob.bin': pseudoRandomBytes(12 << 20, 41),
    },
    ...extra,
  } as OsSpec;
}

/** The liar for the fixture's one OS, with the real content to start from. */
async function liarFor(fx: Fixture, spec: OsSpec): Promise<LyingPeer> {
  const bootOs = fx.config.oss[0]!;
  const meta = parseTorrent(Buffer.from(await (await fetch(bootOs.torrentUrl)).arrayBuffer()));
  const data = Buffer.concat(
    meta.files.map((f) => {
      const content = spec.files[f.path.join('/')]!;
      return typeof content === 'string' ? Buffer.from(content) : content;
    }),
  );
  assert.equal(data.length, meta.length);
  return new LyingPeer(meta, data, (piece) => piece % 2 === 0);
}

test('faults: a peer serving corrupt pieces is detected and banned; the agent verifies, then runs', async (t) => {
  const spec = os();
  const fx = await startFixture(t, {
    oss: [spec],
    default: 'alpha',
    timeout: 0,
    seedTime: 1,
    uploadLimit: 1 << 20,
  });
  const port = await freeTcpPort(HOST);
  const agent = runAgent(t, fx.server, ['--port', String(port), '--verbose']);
  const liar = await liarFor(fx, spec);
  t.after(() => liar.close());
  liar.attack(HOST, port);

  await agent.waitFor(/MARKER-RAN-ALPHA/, 120_000);
  const out = agent.output();
  assert.ok(liar.handshakes >= 1, 'the liar got into the swarm');
  assert.ok(liar.corruptBlocks >= 1, `the liar served corrupt data: ${out}`);
  assert.match(out, /piece failed its hash check/);
  assert.match(out, /banned peer.*corrupt data/);
  assert.ok(liar.closedByRemote, 'the agent dropped the liar');
  // The order: verified every file, then loaded, then the program ran.
  const verified = out.search(/verified \d+ files of alpha/);
  const loading = out.search(/loading alpha via bin/);
  assert.ok(verified >= 0 && loading > verified, 'verified before loading');
  assert.ok(out.search(/MARKER-RAN-ALPHA/) > loading);
  await agent.waitFor(/alpha exited with status 0/);
  agent.send('q');
  assert.equal((await agent.exited).code, 0, agent.output());
});

test('faults: with a wrong SHA-256 in the boot config (and the liar around), nothing runs', async (t) => {
  const spec = os({ badSha: 'data/blob.bin' });
  const fx = await startFixture(t, {
    oss: [spec],
    default: 'alpha',
    timeout: 0,
    seedTime: 1,
    uploadLimit: 4 << 20,
  });
  const port = await freeTcpPort(HOST);
  const agent = runAgent(t, fx.server, ['--port', String(port)]);
  const liar = await liarFor(fx, spec);
  t.after(() => liar.close());
  liar.attack(HOST, port);

  await agent.waitFor(/FAILED: verification of Alpha[\s\S]*Press r to retry/, 120_000);
  assert.match(agent.output(), /SHA-256 of data\/blob\.bin is [0-9a-f]{64}, the boot config says/);
  agent.send('q');
  assert.equal((await agent.exited).code, 0, agent.output());
  assert.doesNotMatch(agent.output(), /MARKER-RAN-ALPHA/);
  assert.doesNotMatch(agent.output(), /loading alpha via/);
  assert.doesNotMatch(agent.output(), /verified \d+ files of alpha/);
});
