/**
 * The release artifacts (issue #19 item 1), built from a clean copy of this
 * checkout's tracked files by scripts/build-deb.sh:
 *
 * - the npm tarball installs with `npm install -g --prefix` and no dev
 *   dependency, and its `boottorrent` runs --version, init, validate and
 *   build-phase1 (whose agent is the bundle packed into the tarball);
 * - the .deb has the app, the pinned Node, the unit, the maintainer scripts
 *   and only the server's runtime dependencies; its unit passes
 *   `systemd-analyze verify` and `security`; installed with `dpkg --root`
 *   into a throwaway root (this machine's /usr and /etc as overlays, in a
 *   mount namespace of its own), its postinst makes the user, the state
 *   folder and /etc/boottorrent, and the unit's command line runs there as
 *   the unit says (user, group, environment, ambient capabilities, no new
 *   privileges): DHCP, TFTP and HTTP listen on their privileged ports, the
 *   state lands in /var/lib/boottorrent, `status` reads it, SIGTERM stops it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  cpSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  statSync,
  symlinkSync,
} from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { removedWithTest } from '../helpers/netns.js';
import { NetLab, waitForOutput } from '../../src/demo/lab.js';
import { tempDir } from '../helpers/tmp.js';

const run = promisify(execFile);
const REPO = new URL('../../../', import.meta.url).pathname;
const DEB_ROOT = join(REPO, 'test/e2e/fixtures/deb-root.sh');
const VERSION = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
const CACHE = join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'boottorrent');

/** Runs a command with a deadline; its output on failure. */
async function sh(
  cmd: string,
  args: string[],
  opts: { cwd?: string; timeoutMs?: number } = {},
): Promise<string> {
  try {
    const { stdout, stderr } = await run(cmd, args, {
      cwd: opts.cwd,
      timeout: opts.timeoutMs ?? 300_000,
      killSignal: 'SIGKILL',
      maxBuffer: 64 * 1024 * 1024,
    });
    return stdout + stderr;
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    throw new Error(
      `${cmd} ${args.join(' ')} failed: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`.slice(0, 8000),
    );
  }
}

/** The unit's settings: key -> values (a key may repeat). */
function parseUnit(text: string): Map<string, string[]> {
  const keys = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (!m) continue;
    keys.set(m[1]!, [...(keys.get(m[1]!) ?? []), m[2]!]);
  }
  return keys;
}

test('npm tarball and .deb from a clean copy: installed without dev dependencies, the service runs as its own user with only its capability', async (t) => {
  const dir = tempDir(t, 'bt-pkg-');

  // 1. A clean copy: the files git tracks or would (no dist/, no build output), with this checkout's dev dependencies.
  const src = join(dir, 'src');
  const tracked = (
    await sh('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: REPO })
  )
    .split('\0')
    .filter(Boolean);
  assert.ok(
    tracked.includes('scripts/build-deb.sh'),
    'the checkout is a git clone with scripts/build-deb.sh',
  );
  for (const f of tracked) {
    if (!existsSync(join(REPO, f))) continue;
    mkdirSync(dirname(join(src, f)), { recursive: true });
    cpSync(join(REPO, f), join(src, f), { verbatimSymlinks: true });
  }
  symlinkSync(join(REPO, 'node_modules'), join(src, 'node_modules'));
  const out = join(dir, 'out');
  const built = await sh('bash', ['scripts/build-deb.sh', '--out', out], { cwd: src, timeoutMs: 600_000 });
  const deb = join(out, `boottorrent_${VERSION}_amd64.deb`);
  const tgz = join(out, `boottorrent-${VERSION}.tgz`);
  assert.ok(existsSync(deb) && existsSync(tgz), built);

  // 2. The tarball, installed as a sysadmin would, into a prefix of its own.
  const prefix = join(dir, 'prefix');
  await sh('npm', ['install', '-g', '--prefix', prefix, tgz, '--no-audit', '--no-fund', '--loglevel=error'], {
    cwd: dir,
  });
  const pkgDir = join(prefix, 'lib/node_modules/boottorrent');
  const deps = readdirSync(join(pkgDir, 'node_modules')).filter((n) => !n.startsWith('.'));
  assert.deepEqual(deps, ['yaml'], 'only the runtime dependency is installed');
  assert.ok(!existsSync(join(pkgDir, 'src')), 'no TypeScript sources in the package');
  const bt = join(prefix, 'bin/boottorrent');
  assert.equal((await sh(bt, ['--version'])).trim(), `boottorrent ${VERSION}`);
  await sh(bt, ['init', join(dir, 'env'), '--interface', 'lo']);
  assert.match(await sh(bt, ['validate', '--env', join(dir, 'env')]), /^ok: /m);
  const p1 = join(dir, 'phase1');
  await sh(bt, ['build-phase1', '--out', p1, '--cache', join(dir, 'p1cache'), '--compress', 'gzip'], {
    timeoutMs: 900_000,
  });
  const manifest = JSON.parse(readFileSync(join(p1, 'manifest.json'), 'utf8')) as {
    files: { path: string; from?: string; sha256: string }[];
  };
  const agent = manifest.files.find((f) => f.path === '/opt/boottorrent/agent.mjs');
  assert.equal(
    agent?.from,
    join(pkgDir, 'dist/agent.mjs'),
    'the agent in phase 1 is the bundle packed in the tarball',
  );
  assert.equal(
    agent?.sha256,
    createHash('sha256')
      .update(readFileSync(join(pkgDir, 'dist/agent.mjs')))
      .digest('hex'),
  );
  assert.ok(existsSync(join(p1, 'vmlinuz')) && existsSync(join(p1, 'initrd.img')));

  // 3. The .deb: fields, files, unit.
  const info = await sh('dpkg-deb', ['-f', deb, 'Package', 'Version', 'Depends', 'Recommends', 'Suggests']);
  assert.match(info, new RegExp(`^Version: ${VERSION.replace(/\./g, '\\.')}$`, 'm'));
  const depends = /^Depends: (.*)$/m.exec(info)?.[1] ?? '';
  for (const needed of ['ipxe', 'busybox-static', 'kexec-tools', 'adduser'])
    assert.match(depends, new RegExp(`\\b${needed}\\b`));
  for (const notServer of [
    'qemu',
    'chromium',
    'nginx',
    'aria2',
    'npm',
    'nodejs',
    'tcpdump',
    'dnsmasq',
    'opentracker',
  ])
    assert.doesNotMatch(depends, new RegExp(notServer), `the server does not depend on ${notServer}`);
  const files = await sh('dpkg-deb', ['-c', deb]);
  for (const f of [
    './usr/bin/boottorrent',
    './usr/lib/boottorrent/node/bin/node',
    './usr/lib/boottorrent/node/PINNED',
    './usr/lib/boottorrent/app/dist/agent.mjs',
    './usr/lib/boottorrent/app/node_modules/yaml/package.json',
    './lib/systemd/system/boottorrent.service',
    './etc/default/boottorrent',
  ])
    assert.match(files, new RegExp(` ${f.replace(/\./g, '\\.')}$`, 'm'), `${f} in the .deb`);
  for (const dev of ['typescript', 'esbuild', 'playwright', 'eslint', '/src/agent/'])
    assert.doesNotMatch(files, new RegExp(`/${dev}`), `no ${dev} in the .deb`);
  const extracted = join(dir, 'deb-files');
  await sh('dpkg-deb', ['-x', deb, extracted]);
  const unitFile = join(extracted, 'lib/systemd/system/boottorrent.service');
  const unit = parseUnit(readFileSync(unitFile, 'utf8'));
  for (const [k, v] of [
    ['User', 'boottorrent'],
    ['ProtectSystem', 'strict'],
    ['StateDirectory', 'boottorrent'],
    ['NoNewPrivileges', 'yes'],
    ['AmbientCapabilities', 'CAP_NET_BIND_SERVICE'],
  ] as const)
    assert.deepEqual(unit.get(k), [v], `${k}= in the unit`);
  // This machine runs no systemd, so step 4 runs the unit's command line
  // without its file-system sandbox: what the sandbox would hide from the
  // first start is checked here. build-phase1 reads the kernel's modules.
  assert.notDeepEqual(
    unit.get('ProtectKernelModules'),
    ['yes'],
    'ProtectKernelModules=yes hides /usr/lib/modules: the first start could not build phase 1',
  );
  for (const hidden of [...(unit.get('InaccessiblePaths') ?? []), ...(unit.get('TemporaryFileSystem') ?? [])])
    assert.doesNotMatch(hidden, /\/(usr\/)?lib\/modules|\/boot|\/usr\b/, `the unit hides ${hidden}`);
  const security = await sh('systemd-analyze', ['security', '--offline=yes', unitFile]);
  const exposure = Number(/Overall exposure level for \S+: ([\d.]+)/.exec(security)?.[1]);
  t.diagnostic(`systemd-analyze security: exposure ${exposure}`);
  assert.ok(exposure <= 2.5, `the unit is hardened (exposure ${exposure}):\n${security.slice(-2000)}`);

  // 4. Installed into a throwaway root in a LAN namespace; the unit's command line, as the unit runs it.
  const lab = removedWithTest(t, new NetLab('pkg', '10.94.0.1/24'));
  const env = new Map<string, string>();
  for (const e of unit.get('Environment') ?? []) {
    const [k, ...v] = e.split('=');
    env.set(k!, v.join('='));
  }
  const defaults = readFileSync(join(extracted, 'etc/default/boottorrent'), 'utf8');
  const extra = /^BOOTTORRENT_ARGS="(.*)"$/m.exec(defaults)?.[1]?.split(/\s+/).filter(Boolean) ?? [];
  const exec = unit.get('ExecStart')![0]!.replace('$BOOTTORRENT_ARGS', extra.join(' ')).trim().split(/\s+/);
  const caps = (list: string | undefined) =>
    (list ?? '')
      .split(/\s+/)
      .filter(Boolean)
      .map((c) => `+${c.replace(/^CAP_/, '').toLowerCase()}`)
      .join(',');
  const ambient = caps(unit.get('AmbientCapabilities')?.[0]);
  const command = [
    'env',
    '-i',
    'PATH=/usr/sbin:/usr/bin:/sbin:/bin',
    ...[...env].map(([k, v]) => `${k}=${v}`),
    'setpriv',
    `--reuid=${unit.get('User')![0]}`,
    `--regid=${unit.get('Group')![0]}`,
    '--init-groups',
    `--inh-caps=-all,${ambient}`,
    `--ambient-caps=-all,${ambient}`,
    `--bounding-set=-all,${caps(unit.get('CapabilityBoundingSet')?.[0])}`,
    ...(unit.get('NoNewPrivileges')?.[0] === 'yes' ? ['--no-new-privs'] : []),
    ...exec,
  ];
  const work = join(dir, 'root-work');
  mkdirSync(work);
  const server = lab.spawn('unshare', [
    '--mount',
    '--propagation',
    'private',
    'bash',
    DEB_ROOT,
    deb,
    work,
    CACHE,
    '--',
    ...command,
  ]);
  await waitForOutput(server, /dashboard http:\/\/\S+; Ctrl-C stops/, 600_000, 'the service');
  const root = join(work, 'root');
  const output = () => server.output().slice(-4000);

  // postinst: user, state, environment.
  const passwd = readFileSync(join(work, 'up/etc/passwd'), 'utf8');
  const uid = Number(/^boottorrent:x:(\d+):/m.exec(passwd)?.[1]);
  assert.ok(
    uid > 0 && uid < 1000,
    `a system user boottorrent: ${passwd.split('\n').find((l) => l.startsWith('boottorrent'))}`,
  );
  assert.equal(readlinkSync(join(work, 'up/etc/boottorrent/.boottorrent')), '/var/lib/boottorrent');
  assert.match(readFileSync(join(work, 'up/etc/boottorrent/Boottorrent.yaml'), 'utf8'), /interface: br0\b/);
  const state = statSync(join(root, 'var/lib/boottorrent'));
  assert.equal(state.uid, uid);
  assert.equal(state.mode & 0o777, 0o700);
  assert.ok(
    existsSync(join(root, 'var/lib/boottorrent/server.json')),
    `server.json in the state folder\n${output()}`,
  );
  assert.equal(statSync(join(root, 'var/lib/boottorrent/secret')).mode & 0o077, 0, 'the secret is private');
  assert.ok(lstatSync(join(work, 'up/etc/boottorrent/.boottorrent')).isSymbolicLink());

  // The process: the service user, with CAP_NET_BIND_SERVICE (bit 10) and nothing else.
  const status = readFileSync(`/proc/${server.child.pid}/status`, 'utf8');
  assert.match(status, new RegExp(`^Uid:\\s+${uid}\\s+${uid}\\s+${uid}\\s+${uid}$`, 'm'));
  assert.match(status, /^CapEff:\s+0000000000000400$/m);
  assert.match(status, /^CapAmb:\s+0000000000000400$/m);
  assert.match(status, /^NoNewPrivs:\s+1$/m);

  // Its privileged ports, and a boot script over HTTP.
  const udp = await sh('ip', ['netns', 'exec', lab.ns, 'ss', '-H', '-lnu']);
  for (const port of [67, 69, 4011])
    assert.match(udp, new RegExp(`:${port}\\s`), `UDP ${port} open:\n${udp}`);
  const tcp = await sh('ip', ['netns', 'exec', lab.ns, 'ss', '-H', '-lnt']);
  assert.match(tcp, /:80\s/, `HTTP on port 80:\n${tcp}`);
  const script = await sh('ip', [
    'netns',
    'exec',
    lab.ns,
    'curl',
    '-sf',
    'http://10.94.0.1/boot.ipxe?mac=52:54:00:94:00:01',
  ]);
  assert.match(script, /^#!ipxe/);

  // status, as the sysadmin runs it, in the same root.
  const st = await sh('nsenter', [
    '-t',
    String(server.child.pid),
    '-m',
    '-n',
    '-r',
    '-w',
    '/usr/bin/boottorrent',
    'status',
    '--env',
    '/etc/boottorrent',
  ]);
  assert.match(st, /hello/, st);

  await lab.stop(server, 30_000);
  assert.equal(server.child.exitCode, 0, output());
  assert.ok(!existsSync(join(root, 'var/lib/boottorrent/server.json')), 'server.json removed on stop');

  // 5. Purge in a fresh throwaway root: the package's files go, an OS the sysadmin added stays.
  const work2 = join(dir, 'root-purge');
  mkdirSync(work2);
  const purge = await sh('unshare', [
    '--mount',
    '--propagation',
    'private',
    'bash',
    DEB_ROOT,
    deb,
    work2,
    '-',
    '--',
    'sh',
    '-ec',
    'mkdir -p /etc/boottorrent/oss/mine && echo "name: Mine" > /etc/boottorrent/oss/mine/config.yaml && ' +
      'dpkg --log=/dev/null --purge boottorrent && echo purged',
  ]);
  assert.match(purge, /purged/, purge);
  assert.match(purge, /left \/etc\/boottorrent/, 'the sysadmin is told what stayed');
  const etc = join(work2, 'up/etc/boottorrent');
  assert.equal(readFileSync(join(etc, 'oss/mine/config.yaml'), 'utf8'), 'name: Mine\n', 'the admin OS stays');
  assert.deepEqual(readdirSync(etc), ['oss'], 'only the admin files are left');
  assert.deepEqual(readdirSync(join(etc, 'oss')), ['mine']);
  assert.ok(!existsSync(join(work2, 'root/var/lib/boottorrent')), 'the state folder is gone');
});
