/**
 * The agent end to end on loopback, as a child process in host mode: a
 * test server hands out a boot config and torrents, our engine seeds the OS
 * folders, the menu is driven through stdin, and the chosen OS's program
 * really runs (or, when something is wrong, does not).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';
import { TOKEN, runAgent, startFixture, type OsSpec } from '../helpers/agent-fixture.js';

const DOWN = '\x1b[B';
const ENTER = '\r';

function binOs(id: string, marker: string, extra: Partial<OsSpec> = {}): OsSpec {
  return {
    id,
    name: `${id[0]!.toUpperCase()}${id.slice(1)} Linux`,
    method: 'bin',
    bin: 'run.sh',
    args: ['hello'],
    files: {
      // Prints its marker, its argument and the folder it runs in.
      'run.sh': `#!/bin/sh\necho "${marker} arg=$1 cwd=$(pwd)"\n`,
      'data/blob.bin': pseudoRandomBytes(3 << 20, id.length),
    },
    ...extra,
  } as OsSpec;
}

test('agent: arrow down + Enter picks the 2nd OS, downloads it past a dead tracker, verifies it and runs it', async (t) => {
  const fx = await startFixture(t, {
    oss: [binOs('alpha', 'MARKER-ALPHA'), binOs('beta', 'MARKER-BETA')],
    default: 'alpha',
    timeout: 60,
    seedTime: 1,
    // ~3 s at 1 MiB/s: the download spans several report intervals.
    uploadLimit: 1 << 20,
  });
  const agent = runAgent(t, fx.server);
  await agent.waitFor(/Booting Alpha Linux in \d+ s/);
  agent.send(DOWN);
  agent.send(ENTER);
  await agent.waitFor(/boottorrent-agent: chose beta/);
  await agent.waitFor(/boottorrent-agent: stage=downloading os=beta/);
  await agent.waitFor(/boottorrent-agent: verified 2 files of beta/);
  await agent.waitFor(/boottorrent-agent: stage=seeding os=beta/);
  await agent.waitFor(/boottorrent-agent: loading beta via bin/);
  const m = await agent.waitFor(/MARKER-BETA arg=hello cwd=(\S+)/);
  assert.equal(m[1], join(agent.dir, 'beta'), 'the program runs in its OS folder');
  await agent.waitFor(/beta exited with status 0/);
  assert.doesNotMatch(agent.output(), /MARKER-ALPHA/);
  assert.doesNotMatch(agent.output(), /stage=downloading os=alpha/);
  // The downloaded data is the seeded data.
  assert.deepEqual(readFileSync(join(agent.dir, 'beta/data/blob.bin')), pseudoRandomBytes(3 << 20, 4));

  agent.send('q');
  const { code } = await agent.exited;
  assert.equal(code, 0);
  const rss = /agent peak RSS (\d+) MB/.exec(agent.output());
  assert.ok(rss, 'peak RSS printed');
  assert.ok(Number(rss[1]) < 150, `agent peak RSS ${rss[1]} MB < 150 MB`);

  // Reports: every one carries the token; progress never goes back and reaches 1.
  assert.ok(fx.reports.length > 0, 'reports arrived');
  for (const r of fx.reports) assert.equal(r.token, TOKEN);
  const stages = fx.reports.map((r) => r.body.stage);
  for (const s of ['menu', 'downloading', 'verifying', 'seeding', 'running'])
    assert.ok(stages.includes(s), s);
  const progress = fx.reports
    .filter(
      (r) => r.body.stage === 'downloading' && r.body.os === 'beta' && typeof r.body.progress === 'number',
    )
    .map((r) => r.body.progress as number);
  assert.ok(progress.length >= 2, `several progress reports: ${progress.join(', ')}`);
  for (let i = 1; i < progress.length; i++)
    assert.ok(progress[i]! >= progress[i - 1]!, `${progress.join(', ')}`);
  assert.ok(new Set(progress).size >= 2, `progress moves: ${progress.join(', ')}`);
  assert.equal(progress.at(-1), 1);
  const dl = fx.reports.find((r) => r.body.stage === 'downloading' && typeof r.body.peakRss === 'number');
  assert.ok(dl, 'downloading reports carry peakRss');
});

test('agent: a torrent the server lacks (404) shows the failure screen; r retries, m goes back to the menu', async (t) => {
  const fx = await startFixture(t, {
    oss: [binOs('gone', 'MARKER-GONE', { missingTorrent: true })],
    default: 'gone',
    timeout: 0,
  });
  const agent = runAgent(t, fx.server);
  await agent.waitFor(/stage=failed os=gone/);
  await agent.waitFor(/FAILED: torrent of Gone Linux[\s\S]*Press r to retry/);
  assert.match(agent.output(), /HTTP 404/);
  assert.match(agent.output(), /oss\/gone/);
  await agent.waitFor(/Press r to retry, m for the menu, s for a shell/);
  agent.send('r');
  await agent.waitFor(/choice=retry[\s\S]*stage=failed os=gone/);
  agent.send('m');
  await agent.waitFor(/choice=menu[\s\S]*stage=menu[\s\S]*Choose the system to boot/);
  agent.send('q');
  assert.equal((await agent.exited).code, 0);
  const failed = fx.reports.filter((r) => r.body.stage === 'failed');
  assert.ok(failed.length >= 1);
  assert.match(String(failed[0]!.body.error), /404/);
  assert.doesNotMatch(agent.output(), /MARKER-GONE/);
});

test('agent: a boot config without a report token (server could not tie us to the MAC) boots without sending reports', async (t) => {
  const fx = await startFixture(t, {
    oss: [binOs('quiet', 'MARKER-QUIET')],
    default: 'quiet',
    timeout: 0,
    noToken: true,
  });
  const agent = runAgent(t, fx.server);
  await agent.waitFor(/MARKER-QUIET arg=hello/);
  await agent.waitFor(/quiet exited with status 0/);
  agent.send('q');
  assert.equal((await agent.exited).code, 0);
  assert.deepEqual(fx.reports, [], 'no report sent without a token');
});

test('agent: a SHA-256 mismatch fails before anything runs', async (t) => {
  const fx = await startFixture(t, {
    oss: [binOs('evil', 'MARKER-EVIL', { badSha: 'run.sh' })],
    default: 'evil',
    timeout: 0,
  });
  const agent = runAgent(t, fx.server);
  await agent.waitFor(/stage=failed os=evil/);
  await agent.waitFor(/FAILED: verification of Evil Linux[\s\S]*Press r to retry/);
  assert.match(agent.output(), /SHA-256 of run\.sh is [0-9a-f]{64}, the boot config says/);
  await agent.waitFor(/Press r to retry/);
  agent.send('q');
  assert.equal((await agent.exited).code, 0);
  assert.doesNotMatch(agent.output(), /MARKER-EVIL/);
  assert.doesNotMatch(agent.output(), /loading evil via/);
  assert.doesNotMatch(agent.output(), /verified \d+ files of evil/);
});

test('agent: dry run of a kexec OS concatenates its initrds and prints the kexec commands', async (t) => {
  const fx = await startFixture(t, {
    oss: [
      {
        id: 'deb',
        name: 'Debian',
        method: 'kexec',
        kernel: 'vmlinuz',
        initrd: ['initrd.img', 'extra.cpio'],
        cmdline: 'console=ttyS0 quiet',
        files: {
          vmlinuz: pseudoRandomBytes(100_000, 7),
          'initrd.img': pseudoRandomBytes(70_000, 8),
          'extra.cpio': pseudoRandomBytes(5_000, 9),
        },
      },
    ],
    default: 'deb',
    timeout: 0,
  });
  const agent = runAgent(t, fx.server, ['--dry-run']);
  assert.equal((await agent.exited).code, 0, agent.output());
  const out = agent.output();
  assert.match(out, /verified 3 files of deb/);
  assert.match(out, /loading deb via kexec/);
  const m = /would run: kexec -l (\S+) --initrd=(\S+) '--command-line=console=ttyS0 quiet'/.exec(out);
  assert.ok(m, out);
  assert.equal(m[1], join(agent.dir, 'deb/vmlinuz'));
  assert.deepEqual(
    readFileSync(m[2]!),
    Buffer.concat([pseudoRandomBytes(70_000, 8), pseudoRandomBytes(5_000, 9)]),
    'one initrd, the two in order',
  );
  assert.match(out, /would run: kexec -e/);
  assert.match(out, /agent peak RSS \d+ MB/);

  // Again in the same folder (a retry after a failed load): checked, not downloaded again.
  const again = runAgent(t, fx.server, ['--dry-run'], { dir: agent.dir });
  assert.equal((await again.exited).code, 0, again.output());
  assert.match(again.output(), /deb is already here, every file with its SHA-256: no download/);
  assert.match(again.output(), /verified 3 files of deb[\s\S]*would run: kexec -e/);
});

test('agent: a download with no peer stalls into the failure screen, and nothing runs', async (t) => {
  const fx = await startFixture(t, {
    oss: [binOs('lonely', 'MARKER-LONELY')],
    default: 'lonely',
    timeout: 0,
    deadSeeder: true,
  });
  const agent = runAgent(t, fx.server, ['--stall-timeout', '2']);
  await agent.waitFor(/stage=failed os=lonely what="download of Lonely Linux"[\s\S]*Press r to retry/);
  assert.match(agent.output(), /stalled: no data for 2 s, 0 peer\(s\) connected/);
  assert.match(
    agent.output(),
    /Check: that the server's seeder runs and is reachable at 127\.0\.0\.1:\d+ or through udp:/,
  );
  agent.send('r');
  await agent.waitFor(/choice=retry[\s\S]*stage=failed os=lonely[\s\S]*Press r to retry/);
  agent.send('q');
  assert.equal((await agent.exited).code, 0);
  assert.doesNotMatch(agent.output(), /MARKER-LONELY|verified \d+ files/);
  const failed = fx.reports.filter((r) => r.body.stage === 'failed' && r.body.os === 'lonely');
  assert.ok(failed.length >= 1);
  assert.match(String(failed[0]!.body.error), /stalled/);
});

test('agent: s opens a shell on the console; the menu comes back when it exits', async (t) => {
  const fx = await startFixture(t, { oss: [binOs('alpha', 'MARKER-ALPHA')], default: 'alpha', timeout: -1 });
  const agent = runAgent(t, fx.server);
  await agent.waitFor(/Choose the system to boot/);
  assert.doesNotMatch(agent.output(), /Booting/, 'a negative timeout shows no countdown');
  agent.send('s');
  await agent.waitFor(/starting a shell; type exit to come back/);
  // The shell reads the console (here the pipe) once the agent lets go of it.
  agent.send('echo "SHELL-$((6*7))"; exit 3\n');
  await agent.waitFor(/SHELL-42/);
  await agent.waitFor(/shell exited \(status 3\)[\s\S]*stage=menu[\s\S]*Choose the system to boot/);
  agent.send('q');
  assert.equal((await agent.exited).code, 0);
  assert.doesNotMatch(agent.output(), /MARKER-ALPHA|stage=downloading/);
});

test('agent with the server key: a config signed for this request boots; another key, no signature or a replayed one is refused and nothing downloads', async (t) => {
  const genuine = generateKeyPairSync('ed25519');
  const rogue = generateKeyPairSync('ed25519');
  const keyFile = join(tempDir(t, 'bt-agent-key-'), 'server-key.pem');
  writeFileSync(keyFile, genuine.publicKey.export({ type: 'spki', format: 'pem' }));

  const good = await startFixture(t, {
    oss: [binOs('real', 'MARKER-REAL')],
    default: 'real',
    timeout: 0,
    sign: { key: genuine.privateKey, nonce: 'echo' },
  });
  const ok = runAgent(t, good.server, ['--server-key', keyFile]);
  await ok.waitFor(/MARKER-REAL arg=hello/);
  ok.send('q');
  assert.equal((await ok.exited).code, 0);

  // A rogue server offers another OS with a valid-looking SHA-256.
  const cases: { name: string; sign?: { key: KeyObject; nonce: 'echo' | 'stale' | 'none' }; why: RegExp }[] =
    [
      {
        name: 'another key',
        sign: { key: rogue.privateKey, nonce: 'echo' },
        why: /not signed by the server this phase 1 came from/,
      },
      { name: 'no signature', why: /not signed by the server this phase 1 came from/ },
      {
        name: 'replay',
        sign: { key: genuine.privateKey, nonce: 'stale' },
        why: /made for another request .*a replay/,
      },
    ];
  for (const c of cases) {
    const fx = await startFixture(t, {
      oss: [binOs('evil', 'MARKER-EVIL')],
      default: 'evil',
      timeout: 0,
      ...(c.sign ? { sign: c.sign } : {}),
    });
    const agent = runAgent(t, fx.server, ['--server-key', keyFile]);
    await agent.waitFor(c.why, 60_000);
    await agent.waitFor(/FAILED: boot config[\s\S]*Press r to retry/, 60_000);
    agent.send('q');
    assert.equal((await agent.exited).code, 0, c.name);
    assert.doesNotMatch(
      agent.output(),
      /MARKER-EVIL|chose evil|stage=downloading/,
      `${c.name}: nothing ran or downloaded`,
    );
  }
});

/** True while a process with this PID exists. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('agent: SIGTERM while its OS program runs ends the program too and exits 143; SIGINT there is the program’s', async (t) => {
  // The program says its PID, then waits (exec: the PID stays the sleeper's).
  const os = binOs('alpha', 'MARKER-ALPHA', {
    files: { 'run.sh': '#!/bin/sh\necho "PROGRAM-PID=$$"\nexec sleep 300\n' },
  });
  const fx = await startFixture(t, { oss: [os], default: 'alpha', timeout: 1, seedTime: 0 });
  const agent = runAgent(t, fx.server);
  const pid = Number((await agent.waitFor(/PROGRAM-PID=(\d+)/))[1]);
  assert.ok(alive(pid));

  // Ctrl-C on a console reaches the program and the agent alike; the program decides.
  agent.child.kill('SIGINT');
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(agent.child.exitCode, null, 'the agent ignored SIGINT while its program ran');
  assert.ok(alive(pid), 'and the program runs on');

  agent.child.kill('SIGTERM');
  const { code, signal } = await agent.exited;
  assert.equal(signal, null, 'the agent handled it');
  assert.equal(code, 143);
  assert.match(agent.output(), /boottorrent-agent: stopped by SIGTERM; ending \S*run\.sh/);
  assert.ok(!alive(pid), 'the program did not outlive the agent');
});

test('agent: SIGINT at the menu ends it with 130', async (t) => {
  const fx = await startFixture(t, { oss: [binOs('alpha', 'MARKER-ALPHA')], default: 'alpha', timeout: 60 });
  const agent = runAgent(t, fx.server);
  await agent.waitFor(/Booting Alpha Linux in \d+ s/);
  agent.child.kill('SIGINT');
  const { code } = await agent.exited;
  assert.equal(code, 130);
  assert.match(agent.output(), /boottorrent-agent: stopped by SIGINT/);
  assert.doesNotMatch(agent.output(), /stage=downloading/);
});
