// `boottorrent init` and `boottorrent validate` as a user runs them: exit
// codes 0/1/2, problems as file:line:col lines, never a stack trace.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { tempDir } from '../helpers/tmp.js';
import { BASE_V1, freePort, v1Env } from '../helpers/env.js';

const noStack = (s: string) => assert.doesNotMatch(s, /\n\s+at /, 'no stack trace for a user error');

test('validate: exit 1 with one line per problem naming file:line:col and field', async (t) => {
  const dir = v1Env(
    t,
    BASE_V1.replace('mode: full', 'mode: fll').replace('default_os: linux', 'default_os: nope'),
  );
  const r = await runCli(['validate', '--env', dir, '--no-machine-checks']);
  assert.equal(r.code, 1, r.stderr);
  noStack(r.stderr);
  assert.match(
    r.stderr,
    /Boottorrent\.yaml:6:9: dhcp\.mode: 'fll' .*\(fix: use one of full \| proxy \| off\)/,
  );
  assert.match(r.stderr, /Boottorrent\.yaml:9:15: boot\.default_os: 'nope' is not a folder of oss\//);
  assert.match(r.stderr, /^2 problems in /m);
  assert.equal(r.stdout, '');
});

test('validate: exit 1 without Boottorrent.yaml; exit 2 on a usage error', async (t) => {
  const dir = tempDir(t);
  const r = await runCli(['validate'], { cwd: dir });
  assert.equal(r.code, 1);
  noStack(r.stderr);
  assert.match(
    r.stderr,
    /^Boottorrent\.yaml: \(file\): no Boottorrent\.yaml in \. \(fix: run `boottorrent init \.`/m,
  );
  const u = await runCli(['validate', '--bogus']);
  assert.equal(u.code, 2);
  // One line that says where the usage is (issue 19), not the whole usage.
  assert.match(
    u.stderr,
    /^boottorrent validate: unknown option --bogus \(`boottorrent validate --help` lists the options\)\n$/,
  );
});

test('validate: exit 0 and a one-line summary, machine checks included', async (t) => {
  const ipxe = tempDir(t);
  for (const f of ['undionly.kpxe', 'ipxe.efi']) writeFileSync(join(ipxe, f), 'x');
  const dir = v1Env(
    t,
    `version: 1
server: { interface: lo, address: 127.0.0.1, http_port: ${await freePort()}, tftp: false, ipxe_dir: ${ipxe} }
dhcp: { mode: off }
tracker: { port: ${await freePort()} }
boot: { default_os: linux }
`,
  );
  const r = await runCli(['validate', '--env', dir]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'ok: 1 operating system, default linux, DHCP off on lo\n');
});

test('init writes an environment that validate accepts; a second init refuses', async (t) => {
  const dir = join(tempDir(t), 'lab');
  const r = await runCli(['init', dir]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /Next: boottorrent validate --env /);
  for (const f of [
    'Boottorrent.yaml',
    'oss/README.md',
    'oss/hello/config.yaml',
    'oss-examples/debian-kexec/config.yaml',
  ])
    assert.ok(existsSync(join(dir, f)), f);
  const v = await runCli(['validate', '--env', dir, '--no-machine-checks']);
  assert.equal(v.code, 0, v.stderr);
  assert.match(v.stdout, /^ok: 1 operating system, default hello, DHCP proxy on \S+\n$/);
  const again = await runCli(['init', dir]);
  assert.equal(again.code, 1);
  noStack(again.stderr);
  assert.match(again.stderr, /not empty/);
  const usage = await runCli(['init']);
  assert.equal(usage.code, 2);
});

test('validate: a version 0 file with settings BootTorrent ignores exits 0 with a warning line each (text and --json)', async (t) => {
  const dir = tempDir(t);
  writeFileSync(
    join(dir, 'Boottorrent.yaml'),
    `boottorrent:
    version: 0
    timeout: 30
    default_os: linuxos
    host_ip: 127.0.0.1
dnsmasq:
    enable_dhcp: False
    interface: lo
opentracker:
    enable: True
    port: "10001"
aria2:
    enable_dht: False
`,
  );
  mkdirSync(join(dir, 'oss', 'linuxos'), { recursive: true });
  writeFileSync(
    join(dir, 'oss', 'linuxos', 'config.yaml'),
    'dispname: TestOS\nmethod: kexec\nkernel: vmlinuz\n',
  );
  writeFileSync(join(dir, 'oss', 'linuxos', 'vmlinuz'), 'k');
  const r = await runCli(['validate', '--env', dir, '--no-machine-checks']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(
    r.stderr,
    /^warning: \S+Boottorrent\.yaml:11:11: opentracker\.port: quoted number "10001" read as 10001 \(fix: write 10001 without quotes\)$/m,
  );
  assert.match(
    r.stderr,
    /^warning: \S+Boottorrent\.yaml:13:5: aria2\.enable_dht: unknown field 'enable_dht' in aria2 is ignored/m,
  );
  assert.match(
    r.stdout,
    /^ok: 1 operating system, default linuxos, DHCP off on lo \(version 0 format, read as version 1\); 2 warnings above\n$/,
  );
  const j = await runCli(['validate', '--env', dir, '--no-machine-checks', '--json']);
  assert.equal(j.code, 0, j.stderr);
  const out = JSON.parse(j.stdout) as { ok: boolean; warnings: { field: string }[] };
  assert.equal(out.ok, true);
  assert.deepEqual(
    out.warnings.map((w) => w.field),
    ['opentracker.port', 'aria2.enable_dht'],
  );
});
