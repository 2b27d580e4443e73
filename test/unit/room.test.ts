// Names and groups (issue #17 item 1): MAC matching by list, range and
// pattern; precedence host > group > boot; groups that share a machine;
// validate's problems for hosts: and groups:, with file, line, field, fix.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inspectEnvironment, loadEnvironment } from '../../src/env/load.js';
import {
  groupMatches,
  machineOf,
  macString,
  macValue,
  parseMacPattern,
  parseMacRange,
  resolveTarget,
  sharedMac,
} from '../../src/env/room.js';
import type { Group } from '../../src/env/types.js';
import { BASE_V1, expectProblem, v1Env } from '../helpers/env.js';

const NO_MACHINE = { machineChecks: false } as const;
const MAIN = /Boottorrent\.yaml$/;

const group = (name: string, g: Partial<Group>): Group => ({
  name,
  macs: [],
  ranges: [],
  patterns: [],
  broadcasts: [],
  ...g,
});

test('MAC values, ranges (either separator) and patterns (? per digit, trailing *)', () => {
  assert.equal(macString(macValue('52:54:00:0a:bc:ff')), '52:54:00:0a:bc:ff');
  assert.deepEqual(parseMacRange('52:54:00:00:01:00 - 52:54:00:00:01:ff'), {
    first: 0x525400000100,
    last: 0x5254000001ff,
  });
  assert.deepEqual(parseMacRange('52-54-00-00-01-00-52-54-00-00-01-0f'), {
    first: 0x525400000100,
    last: 0x52540000010f,
  });
  assert.equal(parseMacRange('52:54:00:00:01:ff-52:54:00:00:01:00'), null, 'reversed');
  assert.equal(parseMacRange('52:54:00:00:01:ff'), null);
  assert.deepEqual(parseMacPattern('52:54:00:0?:*'), [5, 2, 5, 4, 0, 0, 0, -1, -1, -1, -1, -1]);
  assert.deepEqual(parseMacPattern('*'), new Array(12).fill(-1));
  assert.equal(parseMacPattern('52:54:00'), null, 'short without *');
  assert.equal(parseMacPattern('52:54:zz:*'), null);

  const g = group('room-b', {
    macs: ['aa:bb:cc:dd:ee:01'],
    ranges: [parseMacRange('52:54:00:00:01:00-52:54:00:00:01:0f')!],
    patterns: [parseMacPattern('02:00:00:??:00:*')!],
  });
  assert.ok(groupMatches(g, 'aa:bb:cc:dd:ee:01'));
  assert.ok(groupMatches(g, '52:54:00:00:01:0f'));
  assert.ok(!groupMatches(g, '52:54:00:00:01:10'));
  assert.ok(groupMatches(g, '02:00:00:7f:00:33'));
  assert.ok(!groupMatches(g, '02:00:00:7f:01:33'));
});

test('a MAC two groups share is found for every kind of pair, and none when they do not overlap', () => {
  const range = (s: string) => group('r', { ranges: [parseMacRange(s)!] });
  const pat = (s: string) => group('p', { patterns: [parseMacPattern(s)!] });
  assert.equal(
    sharedMac(range('52:54:00:00:00:10-52:54:00:00:00:20'), range('52:54:00:00:00:20-52:54:00:00:00:30')),
    '52:54:00:00:00:20',
  );
  assert.equal(
    sharedMac(range('52:54:00:00:00:10-52:54:00:00:00:1f'), range('52:54:00:00:00:20-52:54:00:00:00:30')),
    undefined,
  );
  assert.equal(sharedMac(pat('52:54:00:00:*'), pat('52:54:??:00:01:*')), '52:54:00:00:01:00');
  assert.equal(sharedMac(pat('52:54:00:00:*'), pat('52:54:00:01:*')), undefined);
  // The smallest address of the range the pattern matches (digits past the first that differs reset).
  assert.equal(
    sharedMac(range('52:54:00:00:00:fe-52:54:00:00:02:00'), pat('52:54:00:00:01:?0')),
    '52:54:00:00:01:00',
  );
  assert.equal(sharedMac(range('52:54:00:00:00:00-52:54:00:00:00:ff'), pat('52:54:00:00:01:*')), undefined);
  assert.equal(
    sharedMac(group('a', { macs: ['52:54:00:00:00:05'] }), range('52:54:00:00:00:00-52:54:00:00:00:ff')),
    '52:54:00:00:00:05',
  );
});

test('precedence: the host, then its groups in file order, then boot:; overlays of every group, then the host', () => {
  const env = {
    boot: { defaultOs: 'linux', timeout: 30, seedTime: 30 },
    hosts: new Map([['52:54:00:00:00:07', { name: 'pc-07', timeout: 3, overlay: '/env/overlays/pc-07' }]]),
    groups: [
      group('room-b', {
        macs: ['52:54:00:00:00:07', '52:54:00:00:00:08'],
        defaultOs: 'exam',
        timeout: 5,
        overlay: '/env/overlays/room-b',
      }),
      group('all', {
        patterns: [parseMacPattern('*')!],
        seedTime: 0,
        cmdline: 'quiet',
        overlay: '/env/overlays/all',
      }),
    ],
  };
  const pc07 = machineOf(env, '52:54:00:00:00:07');
  assert.deepEqual(pc07, {
    mac: '52:54:00:00:00:07',
    name: 'pc-07',
    groups: ['room-b', 'all'],
    oss: null,
    defaultOs: 'exam',
    timeout: 3,
    seedTime: 0,
    cmdline: 'quiet',
    overlays: ['/env/overlays/room-b', '/env/overlays/all', '/env/overlays/pc-07'],
  });
  const other = machineOf(env, 'aa:00:00:00:00:01');
  assert.equal(other.defaultOs, 'linux');
  assert.equal(other.timeout, 30);
  assert.deepEqual(other.groups, ['all']);
  assert.equal(machineOf(env, '52:54:00:00:00:08').timeout, 5);
  // Targets: a host by name, a group by name (its listed MACs, hosts it matches, machines seen), a MAC.
  assert.deepEqual(resolveTarget(env, 'PC-07'), {
    kind: 'host',
    label: 'pc-07',
    macs: ['52:54:00:00:00:07'],
  });
  const g = resolveTarget(env, 'room-b', ['52:54:00:00:00:99']);
  assert.deepEqual(g?.macs, ['52:54:00:00:00:07', '52:54:00:00:00:08']);
  const all = resolveTarget(env, 'all', ['52:54:00:00:00:99']);
  assert.deepEqual(all?.macs, ['52:54:00:00:00:07', '52:54:00:00:00:99']);
  assert.equal(all?.unlisted, 'pattern');
  assert.equal(resolveTarget(env, 'nobody'), undefined);
});

const TWO_OS = {
  'oss/exam/config.yaml': 'name: Exam\nmethod: kexec\nkernel: vmlinuz\ncmdline: quiet\n',
  'oss/exam/vmlinuz': 'kernel',
};

test('hosts and groups load: names, settings, overlays as absolute paths, ranges and patterns', async (t) => {
  const dir = v1Env(
    t,
    `${BASE_V1}hosts:
  '52:54:00:00:00:07': {name: pc-07, seed_time: 0}
groups:
  room-b:
    range: 52:54:00:00:00:00-52:54:00:00:00:ff
    pattern: ['02:00:00:*']
    broadcast: 10.1.2.255
    oss: [exam, linux]
    default_os: exam
    cmdline: exam.mode=1
    overlay: overlays/room-b
`,
    { ...TWO_OS, 'overlays/room-b/etc/hostname': '{{name}}\n' },
  );
  chmodSync(join(dir, 'overlays/room-b/etc/hostname'), 0o600);
  const env = await loadEnvironment(dir, NO_MACHINE);
  assert.deepEqual(env.hosts.get('52:54:00:00:00:07'), { name: 'pc-07', seedTime: 0 });
  const g = env.groups[0]!;
  assert.equal(g.name, 'room-b');
  assert.deepEqual(g.oss, ['exam', 'linux']);
  assert.equal(g.overlay, join(dir, 'overlays/room-b'));
  assert.equal(g.ranges.length, 1);
  assert.equal(g.patterns.length, 1);
  assert.deepEqual(g.broadcasts, ['10.1.2.255']);
  assert.deepEqual(resolveTarget(env, 'room-b')?.broadcasts, ['10.1.2.255']);
  const m = machineOf(env, '52:54:00:00:00:07');
  assert.equal(m.defaultOs, 'exam');
  assert.equal(m.seedTime, 0);
  assert.equal(m.cmdline, 'exam.mode=1');
});

test('validate: groups sharing a machine and disagreeing, names that clash, OS ids, empty groups, file and line', async (t) => {
  const yaml = `${BASE_V1}hosts:
  '52:54:00:00:00:07': {name: pc-07}
  '52:54:00:00:00:08': {name: PC-07}
  '52:54:00:00:00:09': {name: pc-09, oss: [exam], default_os: linux}
groups:
  room-b:
    range: 52:54:00:00:00:00-52:54:00:00:00:ff
    default_os: exam
  lab:
    pattern: '52:54:00:00:00:?0'
    default_os: linux
    timeout: 5
  pc-07:
    macs: ['aa:00:00:00:00:01']
  empty: {}
  broken:
    range: 52:54:00:00:00:ff-52:54:00:00:00:00
    oss: [nope]
`;
  const dir = v1Env(t, yaml, TWO_OS);
  const { problems } = await inspectEnvironment(dir, NO_MACHINE);
  expectProblem(problems, {
    file: MAIN,
    field: 'groups.lab',
    message: /shares machine 52:54:00:00:00:00 with groups\.room-b and sets default_os differently/,
    line: 19,
    fix: /same default_os|not overlap/,
  });
  expectProblem(problems, {
    file: MAIN,
    field: 'hosts.52:54:00:00:00:08.name',
    message: /also the name of hosts\.52:54:00:00:00:07/,
  });
  expectProblem(problems, {
    file: MAIN,
    field: 'hosts.52:54:00:00:00:09.default_os',
    message: /not in this entry's oss/,
  });
  expectProblem(problems, {
    file: MAIN,
    field: 'groups.pc-07',
    message: /also the name of hosts\.52:54:00:00:00:07/,
    line: 22,
  });
  expectProblem(problems, {
    file: MAIN,
    field: 'groups.empty',
    message: /matches no machine/,
    fix: /macs:, range: or pattern:/,
  });
  expectProblem(problems, { file: MAIN, field: 'groups.broken.range', message: /ends before it starts/ });
  expectProblem(problems, {
    file: MAIN,
    field: 'groups.broken.oss',
    message: /'nope' is not a folder of oss/,
    fix: /exam, linux/,
  });
});

test('validate: a bad pattern or MAC in a group is a schema problem with the fix', async (t) => {
  const dir = v1Env(t, `${BASE_V1}groups:\n  room-b:\n    macs: [pc-01]\n    pattern: '52:54:*:01'\n`);
  const { problems } = await inspectEnvironment(dir, NO_MACHINE);
  expectProblem(problems, {
    file: MAIN,
    field: /groups\.room-b\.macs/,
    message: /./,
    fix: /52:54:00:12:34:56/,
  });
  expectProblem(problems, {
    file: MAIN,
    field: /groups\.room-b\.pattern/,
    message: /./,
    fix: /trailing ':\*'/,
  });
});

test('validate: overlays stay inside the environment, hold plain files and known placeholders; readable secrets warn', async (t) => {
  const yaml = `${BASE_V1}hosts:
  '52:54:00:00:00:07': {name: pc-07, overlay: overlays/pc-07}
  '52:54:00:00:00:08': {overlay: ../outside}
  '52:54:00:00:00:09': {overlay: overlays/missing}
`;
  const dir = v1Env(t, yaml, {
    'overlays/pc-07/etc/hostname': '{{name}}\n',
    'overlays/pc-07/etc/motd': 'Welcome to {{hostname}}\n',
    'overlays/pc-07/etc/ssh/ssh_host_ed25519_key': 'secret',
  });
  chmodSync(join(dir, 'overlays/pc-07/etc/hostname'), 0o600);
  chmodSync(join(dir, 'overlays/pc-07/etc/motd'), 0o600);
  chmodSync(join(dir, 'overlays/pc-07/etc/ssh/ssh_host_ed25519_key'), 0o644);
  mkdirSync(join(dir, 'outside'));
  symlinkSync('/etc/passwd', join(dir, 'overlays/pc-07/passwd'));
  const { problems, warnings } = await inspectEnvironment(dir, NO_MACHINE);
  expectProblem(problems, {
    file: MAIN,
    field: 'hosts.52:54:00:00:00:08.overlay',
    message: /not a folder inside the environment/,
  });
  expectProblem(problems, {
    file: /overlays\/missing$/,
    field: /overlay/,
    message: /does not exist/,
    fix: /mkdir -p/,
  });
  expectProblem(problems, { file: /overlays\/pc-07\/passwd$/, field: /overlay/, message: /symbolic link/ });
  expectProblem(problems, {
    file: /etc\/motd$/,
    field: /overlay/,
    message: /unknown placeholder \{\{hostname\}\}/,
    fix: /\{\{name\}\}/,
  });
  expectProblem(warnings, {
    file: /ssh_host_ed25519_key$/,
    field: /overlay/,
    message: /readable by other users/,
    fix: /chmod go-rw/,
  });
  assert.ok(!warnings.some((w) => w.file.endsWith('hostname')), 'a 0600 file does not warn');
});

test('a group default outside its menu, and boot.default_os outside a group menu, are problems', async (t) => {
  const dir = v1Env(
    t,
    `${BASE_V1}groups:\n  exams:\n    macs: ['52:54:00:00:00:01']\n    oss: [exam]\n`,
    TWO_OS,
  );
  const { problems } = await inspectEnvironment(dir, NO_MACHINE);
  expectProblem(problems, {
    file: MAIN,
    field: 'groups.exams',
    message: /not boot\.default_os 'linux'/,
    fix: /default_os: exam/,
  });
});

test('version 0 files have no groups; environments without them load as before', async (t) => {
  const dir = v1Env(t, BASE_V1);
  const env = await loadEnvironment(dir, NO_MACHINE);
  assert.deepEqual(env.groups, []);
  writeFileSync(join(dir, 'Boottorrent.yaml'), `${BASE_V1}groups:\n  a:\n    macs: ['52:54:00:00:00:01']\n`);
  assert.equal((await loadEnvironment(dir, NO_MACHINE)).groups.length, 1);
});

test("review fixes: a short pattern, two groups that combine into a default their menu lacks, an overlay through a link, merged-/usr folders, the sum of a machine's overlays", async (t) => {
  const yaml = `${BASE_V1}hosts:
  '52:54:00:00:00:07': {name: pc-07, overlay: overlays/big-b}
groups:
  short:
    pattern: '52:54:00'
  a:
    macs: ['52:54:00:00:00:07']
    oss: [linux]
    overlay: overlays/big-a
  b:
    macs: ['52:54:00:00:00:07']
    default_os: exam
  c:
    macs: ['52:54:00:00:00:08']
    overlay: linked
  d:
    macs: ['52:54:00:00:00:09']
    overlay: overlays/usr
`;
  const dir = v1Env(t, yaml, {
    ...TWO_OS,
    'overlays/usr/lib/x': 'x',
  });
  const { mkdirSync: mk, writeFileSync: wf } = await import('node:fs');
  mk(join(dir, 'overlays/big-a'), { recursive: true });
  mk(join(dir, 'overlays/big-b'), { recursive: true });
  wf(join(dir, 'overlays/big-a/blob'), Buffer.alloc(9 * 1024 * 1024));
  wf(join(dir, 'overlays/big-b/blob2'), Buffer.alloc(9 * 1024 * 1024));
  symlinkSync('/etc', join(dir, 'linked'));
  const { problems, warnings } = await inspectEnvironment(dir, NO_MACHINE);
  expectProblem(problems, {
    file: MAIN,
    field: 'groups.short.pattern',
    message: /fewer than six pairs/,
    fix: /52:54:00:\*/,
  });
  expectProblem(problems, {
    file: MAIN,
    field: 'groups.b',
    message: /together they boot 'exam', which their menu \(oss: linux\) does not offer/,
  });
  expectProblem(problems, {
    file: MAIN,
    field: 'groups.c.overlay',
    message: /leads out of the environment through a symbolic link/,
  });
  expectProblem(problems, {
    file: MAIN,
    field: /hosts\.52:54:00:00:00:07/,
    message: /more than the 16777216 one machine is sent/,
  });
  expectProblem(warnings, {
    file: /overlays\/usr\/lib$/,
    field: /overlay/,
    message: /merged-\/usr/,
    fix: /usr\/lib/,
  });
  // A range with a schema problem is not also "matches no machine".
  const bad = v1Env(t, `${BASE_V1}groups:\n  r:\n    range: [5]\n`);
  const p2 = (await inspectEnvironment(bad, NO_MACHINE)).problems;
  assert.ok(!p2.some((p) => /matches no machine/.test(p.message)), JSON.stringify(p2));
});
