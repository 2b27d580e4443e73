/**
 * Satellite servers (#21 item 2): two real `boottorrent start` processes in
 * their own namespaces. The upstream serves an OS on the core network; the
 * satellite (server.upstream, its key pinned) sits on the core network and
 * on its clients' subnet, routes between them, takes the upstream's
 * catalog, fetches the OS from the swarm, checks it and serves it. Host-mode
 * agents on the satellite's subnet (the real agent, checking the
 * satellite's signature) boot from it and announce to both trackers, so
 * they are in the upstream's swarm too. Then the upstream stops: the
 * satellite keeps booting clients, also after a restart of its own. A
 * satellite whose pinned key is not the upstream's refuses the catalog and
 * serves nothing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LabProcess } from '../../src/util/netns.js';
import { BIN } from '../helpers/cli.js';
import { AGENT_MAIN } from '../helpers/agent-fixture.js';
import { startProc, until } from '../helpers/faults-peers.js';
import { writeFaultEnv } from '../helpers/faults-server.js';
import type { ServerSnapshot } from '../../src/server/state.js';
import type { BootConfig } from '../../src/boot-config.js';
import { Lab, waitForOutput } from '../helpers/netns.js';
import { tempDir } from '../helpers/tmp.js';

const UP = '10.95.0.1';
const SAT_CORE = '10.95.0.2';
const SAT = '10.96.0.1';

test('satellite: takes the upstream catalog, boots its subnet from the swarm, and keeps booting when the upstream is gone', async (t) => {
  const dir = tempDir(t, 'bt-satellite-');
  const lab = new Lab(t);
  const core = lab.ns('score');
  lab.bridge(core, 'br0', '10.95.0.254/24');
  const upNs = lab.ns('sup');
  lab.link(core, 'br0', upNs, 'eth0', `${UP}/24`);
  const satNs = lab.ns('ssat');
  lab.link(core, 'br0', satNs, 'eth0', `${SAT_CORE}/24`);
  lab.bridge(satNs, 'br1', `${SAT}/24`);
  // The satellite routes its subnet to the core (clients reach the upstream's tracker).
  lab.ip(upNs, 'route', 'add', '10.96.0.0/24', 'via', SAT_CORE);
  execFileSync('ip', ['netns', 'exec', satNs, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  const clients = [0, 1, 2].map((i) => {
    const ns = lab.ns(`sc${i}`);
    lab.link(satNs, 'br1', ns, 'eth0', `10.96.0.${10 + i}/24`);
    lab.ip(ns, 'route', 'add', 'default', 'via', SAT);
    return { ns, mac: `02:00:00:96:00:0${i + 1}`, dir: tempDir(t, `bt-satellite-agent${i}-`) };
  });

  // The upstream: one kexec OS (6 MiB) in oss/alpha.
  const upEnv = writeFaultEnv(join(dir, 'up'), {
    iface: 'eth0',
    address: UP,
    seedTime: 1,
    kernelBytes: 2 << 20,
    initrdBytes: 4 << 20,
  });
  const start = async (ns: string, envDir: string, phase1: string, dashboard: string, ready = true) => {
    const p = lab.spawn(ns, process.execPath, [
      '--enable-source-maps',
      BIN,
      'start',
      '--env',
      envDir,
      '--phase1',
      phase1,
      '--dashboard',
      dashboard,
    ]);
    if (ready) await waitForOutput(p, /dashboard http:\/\/\S+; Ctrl-C stops/, 90_000, 'start');
    return p;
  };
  const upstream = await start(upNs, upEnv.envDir, upEnv.phase1, `${UP}:8480`);

  // The satellite: no oss/, the upstream's key pinned.
  const satDir = join(dir, 'sat');
  mkdirSync(satDir, { recursive: true });
  const satEnv = (name: string, key: string, boot: string[] = []) => {
    const envDir = join(satDir, name);
    mkdirSync(envDir, { recursive: true });
    writeFileSync(join(envDir, 'upstream.pem'), key);
    writeFileSync(
      join(envDir, 'Boottorrent.yaml'),
      [
        'version: 1',
        'server:',
        '  interface: br1',
        `  address: ${SAT}`,
        `  upstream: http://${UP}`,
        '  upstream_key: upstream.pem',
        'dhcp:',
        '  mode: off',
        'boot:',
        ...boot,
        '  timeout: 0',
        '  seed_time: 1',
        '',
      ].join('\n'),
    );
    return envDir;
  };
  const upKey = readFileSync(join(upEnv.envDir, '.boottorrent', 'signing-key.pub.pem'), 'utf8');
  // default_os names an OS the upstream does not have (validate cannot know): said at start, alpha boots.
  const envDir = satEnv('good', upKey, ['  default_os: gamma']);
  let satellite: LabProcess = await start(satNs, envDir, upEnv.phase1, `${SAT}:8480`);
  await waitForOutput(satellite, /OS from the upstream checked and served/, 120_000, 'satellite fetch');
  await waitForOutput(
    satellite,
    /names OSs the upstream's catalog does not have: gamma \(boot\.default_os\).*use one of: alpha/,
    30_000,
    'unknown default_os',
  );
  const satKey = join(envDir, '.boottorrent', 'signing-key.pub.pem');

  const agent = (c: (typeof clients)[number]) =>
    startProc((f) => t.after(f), 'ip', [
      'netns',
      'exec',
      c.ns,
      process.execPath,
      '--enable-source-maps',
      AGENT_MAIN,
      '--server',
      `http://${SAT}`,
      '--server-key',
      satKey,
      '--mac',
      c.mac,
      '--dir',
      c.dir,
      '--no-network',
      '--dry-run',
      '--port',
      '0',
    ]);
  const booted = async (c: (typeof clients)[number]) => {
    const a = agent(c);
    const { code } = await a.exited;
    assert.equal(code, 0, a.output());
    assert.match(a.output(), /boottorrent-agent: verified 3 files of alpha/);
    assert.match(a.output(), /dry-run: would run: kexec -l/);
    for (const [name, data] of Object.entries(upEnv.files))
      assert.equal(
        createHash('sha256')
          .update(readFileSync(join(c.dir, 'alpha', name)))
          .digest('hex'),
        createHash('sha256').update(data).digest('hex'),
        `${c.mac} ${name}`,
      );
    return a.output();
  };

  // 1. Two clients boot from the satellite while the upstream runs.
  await Promise.all([booted(clients[0]!), booted(clients[1]!)]);
  const satStatus = nsStatus(satNs, envDir);
  assert.equal(satStatus.server.upstream?.reachable, true);
  assert.deepEqual(
    satStatus.swarms.map((s) => s.os),
    ['alpha'],
  );
  // One swarm: the satellite announces to the upstream's tracker (a seeder
  // there beside the upstream's own), and its clients are told to as well.
  const upStatus = nsStatus(upNs, upEnv.envDir);
  assert.ok(
    upStatus.swarms[0]!.seeders >= 2 && upStatus.swarms[0]!.completed >= 1,
    `the upstream's tracker knows the satellite: ${JSON.stringify(upStatus.swarms)}`,
  );
  const config = JSON.parse(
    execFileSync(
      'ip',
      [
        'netns',
        'exec',
        clients[0]!.ns,
        process.execPath,
        '-e',
        `fetch('http://${SAT}/api/v1/boot/${clients[0]!.mac}').then((r) => r.text()).then((t) => process.stdout.write(t))`,
      ],
      { encoding: 'utf8', timeout: 30_000 },
    ),
  ) as BootConfig;
  assert.deepEqual(config.peers.trackers, [
    `http://${SAT}/announce`,
    `udp://${SAT}:6969/announce`,
    `http://${UP}/announce`,
    `udp://${UP}:6969/announce`,
  ]);
  assert.deepEqual(config.peers.seeds, [`${SAT}:6881`]);
  // The satellite took the OS from the swarm, not from a copy of the folder.
  const dataDir = join(envDir, '.boottorrent', 'upstream', 'data');
  assert.equal(readdirSync(dataDir).filter((n) => n.endsWith('.ok')).length, 1);

  // 2. The upstream goes away: the satellite says so and still boots a client.
  await stopProc(upstream);
  await booted(clients[2]!);

  // 3. The satellite restarts with the upstream gone: it serves its kept catalog and data.
  await stopProc(satellite);
  satellite = await start(satNs, envDir, upEnv.phase1, `${SAT}:8480`);
  await waitForOutput(
    satellite,
    /serving the kept catalog until the upstream answers/,
    30_000,
    'kept catalog',
  );
  await until(
    () => /cannot take the catalog from the upstream/.test(satellite.output()),
    30_000,
    () => satellite.output().slice(-2000),
  );
  const again = { ...clients[0]!, dir: tempDir(t, 'bt-satellite-again-') };
  await booted(again);
  const after = nsStatus(satNs, envDir);
  assert.equal(after.server.upstream?.reachable, false);
  await stopProc(satellite);

  // 4. A satellite that pins another key refuses the upstream's catalog (the upstream runs again).
  const back = await start(upNs, upEnv.envDir, upEnv.phase1, `${UP}:8480`);
  const other = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }).toString();
  const wrongEnv = satEnv('wrong-key', other);
  const wrong = await start(satNs, wrongEnv, upEnv.phase1, `${SAT}:8480`);
  await until(
    () => /not signed by the upstream's key/.test(wrong.output()),
    30_000,
    () => wrong.output().slice(-2000),
  );
  const refused = nsStatus(satNs, wrongEnv);
  assert.equal(refused.swarms.length, 0, 'no OS served from a catalog it could not check');
  assert.equal(existsSync(join(wrongEnv, '.boottorrent', 'upstream', 'catalog.signed')), false);
  await stopProc(wrong);
  await stopProc(back);

  /** `boottorrent status --json` inside the server's namespace (its dashboard listens there only). */
  function nsStatus(ns: string, env: string): ServerSnapshot {
    const out = execFileSync(
      'ip',
      ['netns', 'exec', ns, process.execPath, BIN, 'status', '--env', env, '--json'],
      { encoding: 'utf8', timeout: 30_000 },
    );
    return JSON.parse(out) as ServerSnapshot;
  }

  async function stopProc(p: LabProcess): Promise<void> {
    if (p.child.exitCode !== null || p.child.signalCode !== null) return;
    const done = new Promise((r) => p.child.once('exit', r));
    p.child.kill('SIGTERM');
    const hard = setTimeout(() => p.child.kill('SIGKILL'), 10_000);
    await done;
    clearTimeout(hard);
    assert.equal(p.child.exitCode, 0, p.output().slice(-3000));
  }
});
