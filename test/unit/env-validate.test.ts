// `validate`: every problem at once, each naming the file, the line, the
// field and a fix. Machine-dependent checks run against an injected
// interface table or against loopback ports the test holds itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';
import { mkdirSync, writeFileSync } from 'node:fs';
import { generateKeyPairSync } from 'node:crypto';
import { createTorrent } from '../../src/torrent/create.js';
import { join } from 'node:path';
import type { NetworkInterfaceInfo } from 'node:os';
import { formatProblem, loadEnvironment, validate } from '../../src/env/index.js';
import { tempDir } from '../helpers/tmp.js';
import { BASE_V1, expectProblem, freePort, freePorts, v1Env, writeEnv } from '../helpers/env.js';

const NO_MACHINE = { machineChecks: false } as const;
const MAIN = /Boottorrent\.yaml$/;

test('missing Boottorrent.yaml names the file and says how to make one', async (t) => {
  const dir = tempDir(t);
  const problems = await validate(dir, NO_MACHINE);
  assert.equal(problems.length, 1);
  expectProblem(problems, {
    file: MAIN,
    field: '(file)',
    message: /no Boottorrent\.yaml/,
    fix: /boottorrent init/,
  });
});

test('a lower-case boottorrent.yaml gets a rename fix', async (t) => {
  const dir = writeEnv(t, { 'boottorrent.yaml': BASE_V1 });
  expectProblem(await validate(dir, NO_MACHINE), {
    file: MAIN,
    field: '(file)',
    message: /no Boottorrent/,
    fix: /rename boottorrent\.yaml/,
  });
});

test('YAML syntax error: file, line and column', async (t) => {
  const dir = v1Env(t, 'version: 1\nserver:\n  address: 10.0.0.1\n   interface: [eth0\nboot: {}\n');
  const p = expectProblem(await validate(dir, NO_MACHINE), {
    file: MAIN,
    field: '(syntax)',
    message: /YAML syntax error/,
  });
  assert.ok(p.line !== undefined && p.line >= 3, `line ${p.line}`);
  assert.ok(p.column !== undefined);
});

test('duplicate keys are a syntax problem', async (t) => {
  const dir = v1Env(t, `${BASE_V1}log_level: info\nlog_level: debug\n`);
  expectProblem(await validate(dir, NO_MACHINE), {
    file: MAIN,
    field: '(syntax)',
    message: /unique/i,
    line: 11,
  });
});

test('wrong types: field, line and the expected type', async (t) => {
  const dir = v1Env(
    t,
    BASE_V1.replace('  default_os: linux', '  default_os: linux\n  timeout: soon\n  seed_time: -5'),
  );
  const problems = await validate(dir, NO_MACHINE);
  expectProblem(problems, {
    file: MAIN,
    field: 'boot.timeout',
    line: 10,
    message: /whole number.*'soon'/,
    fix: /whole number/,
  });
  expectProblem(problems, {
    file: MAIN,
    field: 'boot.seed_time',
    line: 11,
    message: /-5 is out of range/,
    fix: /0 or more/,
  });
});

test('unknown keys are errors with a did-you-mean', async (t) => {
  const dir = v1Env(t, BASE_V1.replace('  default_os: linux', '  defualt_os: linux'), {
    'oss/linux/config.yaml': 'dispname: Linux\nname: Linux\nmethod: kexec\nkernel: vmlinuz\n',
  });
  const problems = await validate(dir, NO_MACHINE);
  expectProblem(problems, {
    file: MAIN,
    field: 'boot.defualt_os',
    line: 9,
    message: /unknown field 'defualt_os'.*did you mean 'default_os'/,
    fix: /rename it to 'default_os'/,
  });
  const v1os = v1Env(t, BASE_V1, {
    'oss/linux/config.yaml': 'name: Linux\nmethod: kexec\nkernal: vmlinuz\n',
  });
  expectProblem(await validate(v1os, NO_MACHINE), {
    file: /oss\/linux\/config\.yaml$/,
    field: 'kernal',
    line: 3,
    message: /did you mean 'kernel'/,
  });
});

test('missing required fields name the section', async (t) => {
  const dir = v1Env(t, 'version: 1\nserver:\n  interface: eth0\nboot: { default_os: linux }\n');
  expectProblem(await validate(dir, NO_MACHINE), {
    file: MAIN,
    field: 'server.address',
    line: 3,
    message: /missing required field 'address' in server/,
    fix: /add address: 10\.0\.0\.1/,
  });
  const full = v1Env(t, BASE_V1.replace('  range: 10.0.0.100-10.0.0.199\n', ''));
  expectProblem(await validate(full, NO_MACHINE), {
    file: MAIN,
    field: 'dhcp.range',
    message: /needed when mode is full/,
  });
});

test('a file without version is refused with the fix', async (t) => {
  const dir = v1Env(t, BASE_V1.replace('version: 1\n', ''));
  expectProblem(await validate(dir, NO_MACHINE), {
    file: MAIN,
    field: 'version',
    line: 1,
    message: /missing version/,
    fix: /version: 1/,
  });
});

test('unknown method, with the choices', async (t) => {
  const dir = v1Env(t, BASE_V1, { 'oss/linux/config.yaml': 'name: Linux\nmethod: kexex\nkernel: vmlinuz\n' });
  expectProblem(await validate(dir, NO_MACHINE), {
    file: /oss\/linux\/config\.yaml$/,
    field: 'method',
    line: 2,
    message: /'kexex'.*not one of kexec, qemu, bin.*did you mean 'kexec'/,
    fix: /kexec \| qemu \| bin/,
  });
  const v0 = v1Env(t, BASE_V1, { 'oss/linux/config.yaml': 'dispname: Linux\nmethod: qemu-x86_64\n' });
  expectProblem(await validate(v0, NO_MACHINE), {
    file: /oss\/linux\/config\.yaml$/,
    field: 'method',
    line: 2,
    message: /bin-qemu-x86_64/,
  });
});

test('kexec kernel and initrd files missing from the OS folder', async (t) => {
  const dir = v1Env(t, BASE_V1, {
    'oss/linux/vmlinuz': null,
    'oss/linux/config.yaml':
      'name: Linux\nmethod: kexec\nkernel: vmlinuz\ninitrd: [initrd.img, missing.cpio]\n',
  });
  const problems = await validate(dir, NO_MACHINE);
  expectProblem(problems, {
    file: /oss\/linux\/config\.yaml$/,
    field: 'kernel',
    line: 3,
    message: /kernel 'vmlinuz' is not a file in oss\/linux/,
    fix: /copy the file to oss\/linux\/vmlinuz/,
  });
  expectProblem(problems, {
    file: /oss\/linux\/config\.yaml$/,
    field: 'initrd[1]',
    line: 4,
    message: /initrd 'missing\.cpio'/,
  });
  assert.equal(problems.length, 2);
});

test('files outside the OS folder are refused', async (t) => {
  const dir = v1Env(t, BASE_V1, {
    'oss/linux/config.yaml': 'name: Linux\nmethod: kexec\nkernel: ../../etc/vmlinuz\n',
  });
  expectProblem(await validate(dir, NO_MACHINE), {
    file: /config\.yaml$/,
    field: 'kernel',
    message: /outside the OS folder/,
  });
});

test('bin program missing; qemu -cdrom file missing; unterminated quote', async (t) => {
  const dir = v1Env(t, BASE_V1, {
    'oss/tool/config.yaml': 'name: Tool\nmethod: bin\nbin: hello\n',
    'oss/alpine/config.yaml': 'dispname: Alpine\nmethod: bin-qemu-x86_64\nargs: "-m 256 -cdrom alpine.iso"\n',
    'oss/dos/config.yaml': 'name: DOS\nmethod: qemu\nargs: "-fda \'odin.img"\n',
  });
  const problems = await validate(dir, NO_MACHINE);
  expectProblem(problems, {
    file: /oss\/tool\/config\.yaml$/,
    field: 'bin',
    line: 3,
    message: /program 'hello' is not a file in oss\/tool/,
  });
  expectProblem(problems, {
    file: /oss\/alpine\/config\.yaml$/,
    field: 'args',
    line: 3,
    message: /-cdrom file 'alpine\.iso'/,
  });
  expectProblem(problems, {
    file: /oss\/dos\/config\.yaml$/,
    field: 'args',
    line: 3,
    message: /unterminated quote/,
  });
});

test('v1 refuses fields the method does not use', async (t) => {
  const dir = v1Env(t, BASE_V1, {
    'oss/tool/config.yaml': 'name: Tool\nmethod: bin\nbin: t.sh\nkernel: vmlinuz\n',
    'oss/tool/t.sh': '#!/bin/sh\n',
  });
  expectProblem(await validate(dir, NO_MACHINE), {
    file: /oss\/tool\/config\.yaml$/,
    field: 'kernel',
    line: 4,
    message: /only used by method kexec/,
  });
});

test('an OS folder without config.yaml', async (t) => {
  const dir = v1Env(t, BASE_V1, { 'oss/empty/readme.txt': 'x' });
  expectProblem(await validate(dir, NO_MACHINE), {
    file: /oss\/empty\/config\.yaml$/,
    field: '(file)',
    message: /has no config\.yaml/,
  });
});

test('default_os not an OS folder (global, per host, display name given instead)', async (t) => {
  const dir = v1Env(
    t,
    BASE_V1.replace('default_os: linux', 'default_os: linx') +
      'hosts:\n  "52:54:00:12:34:56": { default_os: Linux }\n',
  );
  const problems = await validate(dir, NO_MACHINE);
  expectProblem(problems, {
    file: MAIN,
    field: 'boot.default_os',
    line: 9,
    message: /'linx' is not a folder of oss\//,
    fix: /did you mean 'linux'/,
  });
  expectProblem(problems, {
    file: MAIN,
    field: 'hosts.52:54:00:12:34:56.default_os',
    line: 11,
    message: /'Linux' is not a folder/,
    fix: /folder name 'linux'/,
  });
});

test('default_os is needed when a timeout boots it', async (t) => {
  const dir = v1Env(t, 'version: 1\nserver: { address: 10.0.0.1 }\nboot: { timeout: 10 }\n');
  expectProblem(await validate(dir, NO_MACHINE), {
    file: MAIN,
    field: 'boot.default_os',
    message: /no default_os/,
    fix: /default_os: linux/,
  });
  const forever = v1Env(t, 'version: 1\nserver: { address: 10.0.0.1 }\nboot: { timeout: -1 }\n');
  assert.deepEqual(await validate(forever, NO_MACHINE), []);
});

test('two OSs with one display name', async (t) => {
  const dir = v1Env(t, BASE_V1, {
    'oss/other/config.yaml': '# same name\nname: Linux\nmethod: bin\nbin: run.sh\n',
    'oss/other/run.sh': '#!/bin/sh\n',
  });
  const problems = await validate(dir, NO_MACHINE);
  const p = expectProblem(problems, {
    file: /oss\/other\/config\.yaml$/,
    field: 'name',
    line: 2,
    message: /'Linux' is also used by .*oss\/linux\/config\.yaml/,
  });
  assert.match(p.fix, /own name/);
});

test('bad MAC in hosts and in allow_macs', async (t) => {
  const dir = v1Env(
    t,
    `${BASE_V1}hosts:\n  "52:54:00:12:34": { timeout: 1 }\nallow_macs: ["zz:54:00:12:34:56"]\n`,
  );
  const problems = await validate(dir, NO_MACHINE);
  expectProblem(problems, {
    file: MAIN,
    field: 'hosts.52:54:00:12:34',
    line: 11,
    message: /not a MAC address/,
    fix: /52:54:00:12:34:56/,
  });
  expectProblem(problems, {
    file: MAIN,
    field: 'allow_macs[0]',
    line: 12,
    message: /wrong form/,
    fix: /MAC/,
  });
});

test('dhcp range reversed, or holding the server address', async (t) => {
  const rev = v1Env(t, BASE_V1.replace('10.0.0.100-10.0.0.199', '10.0.0.199-10.0.0.100'));
  expectProblem(await validate(rev, NO_MACHINE), {
    file: MAIN,
    field: 'dhcp.range',
    line: 7,
    message: /reversed/,
    fix: /10\.0\.0\.100-10\.0\.0\.199/,
  });
  const own = v1Env(t, BASE_V1.replace('10.0.0.100-10.0.0.199', '10.0.0.1-10.0.0.50'));
  expectProblem(await validate(own, NO_MACHINE), {
    file: MAIN,
    field: 'dhcp.range',
    message: /server's own address/,
  });
  const form = v1Env(t, BASE_V1.replace('10.0.0.100-10.0.0.199', '10.0.0.100,10.0.0.199'));
  expectProblem(await validate(form, NO_MACHINE), {
    file: MAIN,
    field: 'dhcp.range',
    message: /wrong form/,
    fix: /FIRST-LAST/,
  });
});

test('neither tracker nor LSD enabled: no way to find peers (v1 and v0 names)', async (t) => {
  const dir = v1Env(t, `${BASE_V1}tracker: { enabled: false }\npeers: { lsd: false }\n`);
  expectProblem(await validate(dir, NO_MACHINE), {
    file: MAIN,
    field: 'tracker.enabled',
    line: 10,
    message: /no way to find peers/,
    fix: /tracker\.enabled: true/,
  });
  const v0 = writeEnv(t, {
    'Boottorrent.yaml':
      'boottorrent: { version: 0, default_os: a, host_ip: 10.0.0.1 }\ndnsmasq: { enable_dhcp: False }\nopentracker: { enable: False }\naria2: { bt_enable_lpd: False }\n',
    'oss/a/config.yaml': 'dispname: A\nmethod: bin\nbin: a\n',
    'oss/a/a': 'x',
  });
  expectProblem(await validate(v0, NO_MACHINE), {
    file: MAIN,
    field: 'opentracker.enable',
    line: 3,
    message: /no way to find peers/,
  });
});

test('v0 problems use the v0 field names', async (t) => {
  const dir = writeEnv(t, {
    'Boottorrent.yaml':
      'boottorrent:\n  version: 1\n  default_os: nothere\n  host_ip: 10.0.0.300\ndnsmasq: {}\nopentracker: { port: 70000 }\naria2: { console_log_level: loud }\n',
    'oss/a/config.yaml': 'dispname: A\nmethod: bin\nbin: a\n',
    'oss/a/a': 'x',
  });
  const problems = await validate(dir, NO_MACHINE);
  expectProblem(problems, { file: MAIN, field: 'boottorrent.version', line: 2, message: /must be 0/ });
  expectProblem(problems, {
    file: MAIN,
    field: 'boottorrent.default_os',
    line: 3,
    message: /'nothere' is not a folder/,
  });
  expectProblem(problems, {
    file: MAIN,
    field: 'boottorrent.host_ip',
    line: 4,
    message: /not a dotted IPv4/,
  });
  expectProblem(problems, {
    file: MAIN,
    field: 'opentracker.port',
    line: 6,
    message: /70000 is out of range/,
    fix: /1 to 65535/,
  });
  expectProblem(problems, {
    file: MAIN,
    field: 'aria2.console_log_level',
    line: 7,
    message: /not one of debug, info, notice, warn, error/,
  });
  const missing = writeEnv(t, {
    'Boottorrent.yaml': 'boottorrent: { version: 0, host_ip: 10.0.0.1, timeout: -1 }\n',
    'oss/.keep': '',
  });
  expectProblem(await validate(missing, NO_MACHINE), {
    file: MAIN,
    field: 'dnsmasq',
    message: /missing required field 'dnsmasq'/,
  });
});

test('every problem at once, formatted file:line:col: field: message (fix: ...)', async (t) => {
  const dir = v1Env(
    t,
    BASE_V1.replace('mode: full', 'mode: fll').replace('default_os: linux', 'default_os: x') +
      'colour: red\n',
    {
      'oss/linux/vmlinuz': null,
    },
  );
  const problems = await validate(dir, NO_MACHINE);
  assert.equal(problems.length, 4, problems.map(formatProblem).join('\n'));
  const line = formatProblem(expectProblem(problems, { file: MAIN, field: 'dhcp.mode', message: /fll/ }));
  assert.match(
    line,
    /Boottorrent\.yaml:6:9: dhcp\.mode: 'fll' \(a string\) is not one of full, proxy, off \(did you mean 'full'\?\) \(fix: use one of full \| proxy \| off\)$/,
  );
});

// ---- checks that depend on the machine --------------------------------------------

const iface = (address: string, netmask: string, cidr: string): NetworkInterfaceInfo => ({
  address,
  netmask,
  family: 'IPv4',
  mac: '52:54:00:00:00:01',
  internal: false,
  cidr,
});

/** A machine with eth1 = 10.0.0.5/24; the ports are checked for real, so the env uses loopback-free ones. */
const fakeMachine = () => ({ eth1: [iface('10.0.0.5', '255.255.255.0', '10.0.0.5/24')] });

test('interface missing, or without the configured address', async (t) => {
  const ipxe = tempDir(t);
  for (const f of ['undionly.kpxe', 'ipxe.efi']) writeFileSync(join(ipxe, f), 'x');
  const quiet = `  ipxe_dir: ${ipxe}\n  tftp: false\n  http_port: ${await freePort()}\n`;
  const base =
    BASE_V1.replace('  address: 10.0.0.1\n', `  address: 10.0.0.1\n${quiet}`)
      .replace('mode: full', 'mode: off')
      .replace('  range: 10.0.0.100-10.0.0.199\n', '') +
    'tracker: { enabled: false }\npeers: { lsd: true }\n';
  const noIface = v1Env(t, base.replace('eth1', 'eth9'));
  expectProblem(await validate(noIface, { networkInterfaces: fakeMachine }), {
    file: MAIN,
    field: 'server.interface',
    line: 3,
    message: /no network interface 'eth9'.*eth1/,
    fix: /eth1/,
  });
  const noAddr = v1Env(t, base);
  expectProblem(await validate(noAddr, { networkInterfaces: fakeMachine }), {
    file: MAIN,
    field: 'server.address',
    line: 4,
    message: /eth1 does not have address 10\.0\.0\.1 \(it has 10\.0\.0\.5\/24\)/,
    fix: /ip addr add 10\.0\.0\.1\/24 dev eth1/,
  });
});

test('dhcp range outside the interface subnet', async (t) => {
  const machine = () => ({ eth1: [iface('10.0.0.1', '255.255.255.0', '10.0.0.1/24')] });
  const dir = v1Env(t, BASE_V1.replace('10.0.0.100-10.0.0.199', '10.0.0.100-10.0.1.20'));
  expectProblem(await validate(dir, { networkInterfaces: machine }), {
    file: MAIN,
    field: 'dhcp.range',
    line: 7,
    message: /10\.0\.1\.20 is outside the interface's subnet 10\.0\.0\.1\/24/,
  });
});

/** A loopback environment whose only machine-dependent parts are the given ports and iPXE folder. */
function loopbackEnv(
  t: Parameters<typeof v1Env>[0],
  httpPort: number,
  trackerPort: number,
  ipxeDir: string,
): string {
  return v1Env(
    t,
    `version: 1
server:
  interface: lo
  address: 127.0.0.1
  http_port: ${httpPort}
  tftp: false
  ipxe_dir: ${ipxeDir}
dhcp: { mode: off }
tracker: { enabled: true, port: ${trackerPort} }
boot: { default_os: linux }
`,
  );
}

test('TCP and UDP ports in use are named with the field', async (t) => {
  const ipxe = tempDir(t);
  for (const f of ['undionly.kpxe', 'ipxe.efi']) writeFileSync(join(ipxe, f), 'x');
  const tcp = createServer();
  await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
  t.after(() => tcp.close());
  const udp = createSocket('udp4');
  await new Promise<void>((r) => udp.bind(0, '127.0.0.1', r));
  t.after(() => udp.close());
  const httpPort = (tcp.address() as { port: number }).port;
  const trackerPort = udp.address().port;
  const dir = loopbackEnv(t, httpPort, trackerPort, ipxe);
  const problems = await validate(dir);
  expectProblem(problems, {
    file: MAIN,
    field: 'server.http_port',
    line: 5,
    message: new RegExp(`TCP port ${httpPort} \\(boot HTTP server\\) is already in use`),
    fix: /stop the program/,
  });
  expectProblem(problems, {
    file: MAIN,
    field: 'tracker.port',
    line: 9,
    message: new RegExp(`UDP port ${trackerPort} \\(tracker \\(UDP\\)\\) is already in use`),
  });
});

test('iPXE binaries missing from the configured folder', async (t) => {
  const ipxe = tempDir(t);
  writeFileSync(join(ipxe, 'ipxe.efi'), 'x');
  const dir = loopbackEnv(t, ...((await freePorts(2)) as [number, number]), ipxe);
  const problems = await validate(dir);
  assert.equal(problems.length, 1, problems.map(formatProblem).join('\n'));
  expectProblem(problems, {
    file: MAIN,
    field: 'server.ipxe_dir',
    line: 7,
    message: /iPXE binaries missing .*undionly\.kpxe/,
    fix: /put undionly\.kpxe/,
  });
});

test('a loopback environment with free ports and iPXE passes every machine check', async (t) => {
  const ipxe = tempDir(t);
  for (const f of ['undionly.kpxe', 'ipxe.efi']) writeFileSync(join(ipxe, f), 'x');
  const dir = loopbackEnv(t, ...((await freePorts(2)) as [number, number]), ipxe);
  assert.deepEqual(await validate(dir), []);
});

test('empty files, a machine twice in hosts, the tracker on the HTTP port', async (t) => {
  const empty = v1Env(t, '', { 'oss/linux/config.yaml': '' });
  const p1 = await validate(empty, NO_MACHINE);
  expectProblem(p1, { file: MAIN, field: '(document)', message: /empty/, fix: /version: 1/ });
  expectProblem(p1, { file: /oss\/linux\/config\.yaml$/, field: '(document)', message: /empty/ });
  assert.equal(p1.length, 2);
  const twice = v1Env(
    t,
    `${BASE_V1}hosts:\n  "52:54:00:12:34:56": { timeout: 1 }\n  52-54-00-12-34-56: { timeout: 2 }\ntracker: { port: 80 }\n`,
  );
  const p2 = await validate(twice, NO_MACHINE);
  expectProblem(p2, {
    file: MAIN,
    field: 'hosts.52-54-00-12-34-56',
    line: 12,
    message: /same machine as hosts\.52:54:00:12:34:56/,
  });
  expectProblem(p2, { file: MAIN, field: 'tracker.port', line: 13, message: /also the HTTP port/ });
});

test('TFTP off while our DHCP serves PXE is a problem naming both fields; with dhcp.mode off it is fine', async (t) => {
  const bad = v1Env(t, BASE_V1.replace('  address: 10.0.0.1', '  address: 10.0.0.1\n  tftp: false'));
  const problems = await validate(bad, { machineChecks: false });
  expectProblem(problems, {
    file: /Boottorrent\.yaml$/,
    field: 'server.tftp',
    message: /TFTP is off but dhcp\.mode is full: .*nothing would answer/,
    fix: /dhcp\.mode to off/,
  });
  const ok = v1Env(
    t,
    BASE_V1.replace('  address: 10.0.0.1', '  address: 10.0.0.1\n  tftp: false')
      .replace('  mode: full', '  mode: off')
      .replace('  range: 10.0.0.100-10.0.0.199\n', ''),
  );
  assert.deepEqual(await validate(ok, { machineChecks: false }), []);
});

test('uefi_chain: signed needs TFTP (GRUB has no HTTP); an unknown chain is a schema problem', async (t) => {
  const off = v1Env(
    t,
    BASE_V1.replace(
      '  address: 10.0.0.1',
      '  address: 10.0.0.1\n  tftp: false\n  uefi_chain: signed',
    ).replace(/mode: \w+/, 'mode: off'),
  );
  expectProblem(await validate(off, { machineChecks: false }), {
    file: /Boottorrent\.yaml$/,
    field: 'server.tftp',
    message: /uefi_chain is signed: Debian's signed GRUB loads phase 1 over TFTP only/,
    fix: /server\.uefi_chain: ipxe/,
  });
  const typo = v1Env(t, BASE_V1.replace('  address: 10.0.0.1', '  address: 10.0.0.1\n  uefi_chain: shim'));
  expectProblem(await validate(typo, { machineChecks: false }), {
    file: /Boottorrent\.yaml$/,
    field: 'server.uefi_chain',
    message: /ipxe|signed/,
  });
  const good = v1Env(t, BASE_V1.replace('  address: 10.0.0.1', '  address: 10.0.0.1\n  uefi_chain: signed'));
  assert.deepEqual(await validate(good, { machineChecks: false }), []);
});

test('dhcp.subnets (relayed subnets): loaded per subnet, and every mistake named with its field and fix', async (t) => {
  const good = v1Env(
    t,
    `${BASE_V1.replace('  range: 10.0.0.100-10.0.0.199\n', '  range: 10.0.0.100-10.0.0.199\n  dns: 10.0.0.53\n  subnets:\n    - { subnet: 10.1.0.0/24, range: 10.1.0.100-10.1.0.199, router: 10.1.0.1 }\n    - { subnet: 10.2.0.0/23, range: 10.2.1.10-10.2.1.250, dns: [10.2.0.53] }\n')}`,
  );
  assert.deepEqual(await validate(good, NO_MACHINE), []);
  const env = await loadEnvironment(good, NO_MACHINE);
  assert.deepEqual(env.dhcp.subnets, [
    {
      subnet: '10.1.0.0/24',
      range: { first: '10.1.0.100', last: '10.1.0.199' },
      router: '10.1.0.1',
      dns: null,
    },
    {
      subnet: '10.2.0.0/23',
      range: { first: '10.2.1.10', last: '10.2.1.250' },
      router: null,
      dns: ['10.2.0.53'],
    },
  ]);
  const bad = v1Env(
    t,
    `${BASE_V1.replace(
      '  range: 10.0.0.100-10.0.0.199\n',
      `  range: 10.0.0.100-10.0.0.199
  subnets:
    - { subnet: 10.1.0.7/24, range: 10.1.0.100-10.1.0.199 }
    - { subnet: 10.1.0.128/25, range: 10.1.0.130-10.1.0.140 }
    - { subnet: 10.0.0.0/16, range: 10.0.5.1-10.0.5.9 }
    - { subnet: 10.3.0.0/24 }
    - { subnet: 10.4.0.0/24, range: 10.4.0.0-10.4.0.20 }
    - { subnet: 10.5.0.0/24, range: 10.5.0.20-10.5.0.10 }
    - { subnet: 10.6.0.0/24, range: 10.6.0.10-10.6.0.20, router: 10.7.0.1 }
    - { subnet: 10.8.0.0/24, range: 10.8.0.10-10.8.0.20, router: 10.8.0.15 }
    - { subnet: 10.9.0.0/31, range: 10.9.0.0-10.9.0.1 }
    - { subnet: nonsense }
`,
    )}`,
  );
  const problems = await validate(bad, NO_MACHINE);
  const want: [string, RegExp, RegExp][] = [
    ['dhcp.subnets[0].subnet', /10\.1\.0\.7\/24 is an address, not a network/, /write 10\.1\.0\.0\/24/],
    [
      'dhcp.subnets[1].subnet',
      /10\.1\.0\.128\/25 overlaps 10\.1\.0\.0\/24 \(dhcp\.subnets\[0\]\)/,
      /must not overlap/,
    ],
    [
      'dhcp.subnets[2].subnet',
      /server's own address 10\.0\.0\.1 lies in 10\.0\.0\.0\/16/,
      /own subnet uses dhcp\.range/,
    ],
    ['dhcp.subnets[3]', /no range for 10\.3\.0\.0\/24/, /add range: FIRST-LAST inside 10\.3\.0\.0\/24/],
    [
      'dhcp.subnets[4].range',
      /not inside 10\.4\.0\.0\/24 \(between its network and broadcast/,
      /10\.4\.0\.1-10\.4\.0\.254/,
    ],
    ['dhcp.subnets[5].range', /reversed/, /write 10\.5\.0\.10-10\.5\.0\.20/],
    ['dhcp.subnets[6].router', /router 10\.7\.0\.1 is not an address in 10\.6\.0\.0\/24/, /router's address/],
    ['dhcp.subnets[7].router', /router 10\.8\.0\.15 lies inside the range/, /leave out the router/],
    ['dhcp.subnets[8].subnet', /no room for a relay and clients/, /\/30 or less/],
    ['dhcp.subnets[9].subnet', /nonsense/, /10\.1\.0\.0\/24/],
  ];
  for (const [field, message, fix] of want) expectProblem(problems, { file: MAIN, field, message, fix });
  const line = problems.find((p) => p.field === 'dhcp.subnets[5].range')?.line;
  assert.equal(line, 14, 'the line of that subnet entry');

  const proxy = v1Env(
    t,
    `${BASE_V1.replace('  mode: full\n  range: 10.0.0.100-10.0.0.199\n', '  mode: proxy\n  subnets:\n    - { subnet: 10.1.0.0/24, range: 10.1.0.100-10.1.0.199 }\n    - { subnet: 10.2.0.0/24 }\n')}`,
  );
  const pp = await validate(proxy, NO_MACHINE);
  expectProblem(pp, {
    file: MAIN,
    field: 'dhcp.subnets[0].range',
    message: /only given in mode full \(mode is proxy/,
    fix: /remove range/,
  });
  assert.equal(pp.length, 1, pp.map((p) => formatProblem(p)).join('\n'));
  const off = v1Env(
    t,
    `${BASE_V1.replace('  mode: full\n  range: 10.0.0.100-10.0.0.199\n', '  mode: off\n  subnets: [{ subnet: 10.2.0.0/24 }]\n')}`,
  );
  expectProblem(await validate(off, NO_MACHINE), {
    file: MAIN,
    field: 'dhcp.subnets',
    message: /only used in mode full or proxy/,
    fix: /remove subnets/,
  });
});

test('server.uefi_loader: snponly.efi or ipxe.efi; anything else names the two', async (t) => {
  const dir = v1Env(
    t,
    BASE_V1.replace('  address: 10.0.0.1', '  address: 10.0.0.1\n  uefi_loader: undionly.kpxe'),
  );
  const problems = await validate(dir, NO_MACHINE);
  expectProblem(problems, {
    file: MAIN,
    field: 'server.uefi_loader',
    line: 5,
    message: /undionly\.kpxe/,
    fix: /ipxe\.efi.*snponly\.efi|snponly\.efi.*ipxe\.efi/,
  });
  const ok = v1Env(
    t,
    BASE_V1.replace('  address: 10.0.0.1', '  address: 10.0.0.1\n  uefi_loader: snponly.efi'),
  );
  assert.deepEqual(await validate(ok, NO_MACHINE), []);
});

test('server.upstream: a satellite needs no oss/ and no default_os; its key must be an Ed25519 public key', async (t) => {
  const pub = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'pem' }).toString();
  const yaml = (extra: string) =>
    `version: 1\nserver:\n  interface: eth1\n  address: 10.0.0.1\n  upstream: http://10.9.0.1:8080/\n${extra}dhcp:\n  mode: off\nboot:\n  timeout: 5\n`;
  const ok = writeEnv(t, { 'Boottorrent.yaml': yaml('  upstream_key: up.pem\n'), 'up.pem': pub });
  assert.deepEqual(await validate(ok, NO_MACHINE), []);
  const env = await loadEnvironment(ok, NO_MACHINE);
  assert.deepEqual(env.server.upstream, { url: 'http://10.9.0.1:8080', key: join(env.dir, 'up.pem') });
  assert.deepEqual(env.oss, []);
  assert.equal(env.boot.defaultOs, null);

  // Without a key: allowed (the first key seen is kept).
  assert.deepEqual(await validate(writeEnv(t, { 'Boottorrent.yaml': yaml('') }), NO_MACHINE), []);

  // OS folders in a satellite: it would not serve them.
  const withOss = v1Env(t, yaml(''));
  expectProblem(await validate(withOss, NO_MACHINE), {
    file: MAIN,
    field: 'server.upstream',
    message: /satellite.*oss\/ holds linux/,
    fix: /upstream's environment/,
  });

  // A key that is not there, or not a public Ed25519 key.
  const missing = writeEnv(t, { 'Boottorrent.yaml': yaml('  upstream_key: nope.pem\n') });
  expectProblem(await validate(missing, NO_MACHINE), {
    file: MAIN,
    field: 'server.upstream_key',
    message: /nope\.pem does not exist/,
    fix: /signing-key\.pub\.pem/,
  });
  const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 })
    .publicKey.export({ type: 'spki', format: 'pem' })
    .toString();
  const wrongType = writeEnv(t, { 'Boottorrent.yaml': yaml('  upstream_key: up.pem\n'), 'up.pem': rsa });
  expectProblem(await validate(wrongType, NO_MACHINE), {
    file: MAIN,
    field: 'server.upstream_key',
    message: /rsa key, not Ed25519/,
  });

  // Not a plain http URL; this server itself.
  const https = writeEnv(t, { 'Boottorrent.yaml': yaml('').replace('http://10.9.0.1:8080/', 'https://x/y') });
  expectProblem(await validate(https, NO_MACHINE), {
    file: MAIN,
    field: 'server.upstream',
    message: /https:\/\/x\/y/,
    fix: /http:\/\/10\.0\.0\.1/,
  });
  const self = writeEnv(t, {
    'Boottorrent.yaml': yaml('').replace('http://10.9.0.1:8080/', 'http://10.0.0.1'),
  });
  expectProblem(await validate(self, NO_MACHINE), {
    file: MAIN,
    field: 'server.upstream',
    message: /this server itself/,
  });

  // upstream_key alone: a warning, not a problem.
  const alone = v1Env(
    t,
    `${BASE_V1.replace('  address: 10.0.0.1', '  address: 10.0.0.1\n  upstream_key: k.pem')}`,
  );
  const inspected = await loadEnvironment(alone, NO_MACHINE);
  assert.ok(
    inspected.warnings.some((w) => w.field === 'server.upstream_key' && /not a satellite/.test(w.message)),
  );
});

test('OS config torrent: a .torrent of a folder named like the OS, with a web seed, naming the files it holds', async (t) => {
  const src = tempDir(t, 'bt-env-torrent-');
  const mk = async (name: string, urlList: string[]) => {
    const folder = join(src, name);
    mkdirSync(folder, { recursive: true });
    writeFileSync(join(folder, 'vmlinuz'), 'kernel');
    writeFileSync(join(folder, 'initrd.img'), 'initrd');
    return (await createTorrent(folder, { name, urlList })).torrent.toString('latin1');
  };
  const cfg = (extra = '') =>
    `name: Linux\nmethod: kexec\nkernel: vmlinuz\ninitrd: initrd.img\ncmdline: quiet\ntorrent: linux.torrent\n${extra}`;
  const files = async (torrentName: string, urlList: string[], config = cfg()) => ({
    'oss/linux/config.yaml': config,
    'oss/linux/vmlinuz': null,
    'oss/linux/initrd.img': null,
    'oss/linux/linux.torrent': await mk(torrentName, urlList),
  });
  const write = (f: Record<string, string | null>) => {
    const dir = v1Env(t, BASE_V1, f);
    // v1Env writes text: the torrent must be its bytes.
    writeFileSync(join(dir, 'oss/linux/linux.torrent'), Buffer.from(f['oss/linux/linux.torrent']!, 'latin1'));
    return dir;
  };
  const ok = write(await files('linux', ['http://mirror.example/os/']));
  assert.deepEqual(await validate(ok, NO_MACHINE), []);
  const env = await loadEnvironment(ok, NO_MACHINE);
  assert.equal(env.oss[0]!.torrent, join(env.dir, 'oss', 'linux', 'linux.torrent'));

  expectProblem(await validate(write(await files('debian', ['http://m/'])), NO_MACHINE), {
    file: /oss\/linux\/config\.yaml$/,
    field: 'torrent',
    message: /folder named 'debian'.*\('linux'\)/,
    fix: /rename oss\/linux\/ to oss\/debian\//,
  });
  expectProblem(await validate(write(await files('linux', [])), NO_MACHINE), {
    file: /oss\/linux\/config\.yaml$/,
    field: 'torrent',
    message: /no web seed/,
    fix: /web_seeds/,
  });
  // web_seeds in the config serve as well.
  const viaConfig = write(await files('linux', [], cfg('web_seeds: [http://m/]\n')));
  assert.deepEqual(await validate(viaConfig, NO_MACHINE), []);
  expectProblem(
    await validate(
      write(await files('linux', ['http://m/'], cfg().replace('kernel: vmlinuz', 'kernel: bzImage'))),
      NO_MACHINE,
    ),
    {
      file: /oss\/linux\/config\.yaml$/,
      field: 'kernel',
      message: /'bzImage' is not a file of linux\.torrent/,
    },
  );
  const missing = v1Env(t, BASE_V1, { 'oss/linux/config.yaml': cfg() });
  expectProblem(await validate(missing, NO_MACHINE), {
    file: /oss\/linux\/config\.yaml$/,
    field: 'torrent',
    message: /'linux\.torrent' is not a file in oss\/linux\//,
  });
});

test('peers.phase1_loader: grub without peers.phase1 is a warning; an unknown loader is a schema problem', async (t) => {
  const alone = v1Env(t, `${BASE_V1}peers:\n  phase1_loader: grub\n`);
  const inspected = await loadEnvironment(alone, NO_MACHINE);
  assert.equal(inspected.peers.phase1Loader, 'grub');
  assert.ok(
    inspected.warnings.some(
      (w) =>
        w.field === 'peers.phase1_loader' &&
        /peers\.phase1 is off/.test(w.message) &&
        /phase1: true/.test(w.fix),
    ),
    JSON.stringify(inspected.warnings),
  );
  const both = await loadEnvironment(
    v1Env(t, `${BASE_V1}peers:\n  phase1: true\n  phase1_loader: grub\n`),
    NO_MACHINE,
  );
  assert.ok(!both.warnings.some((w) => w.field === 'peers.phase1_loader'));
  expectProblem(await validate(v1Env(t, `${BASE_V1}peers:\n  phase1_loader: shim\n`), NO_MACHINE), {
    file: MAIN,
    field: 'peers.phase1_loader',
    message: /ipxe|grub|allowed|one of/,
  });
});
