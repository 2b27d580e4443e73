// Loading environments: the older tool's v0 layout maps onto the v1 model,
// init's output validates, and the result is one frozen object.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import {
  EnvironmentError,
  initEnvironment,
  inspectEnvironment,
  loadEnvironment,
  splitArgs,
  validate,
} from '../../src/env/index.js';
import { SCHEMA_DIR, SUPPORTED_KEYWORDS } from '../../src/env/schema.js';
import { tempDir } from '../helpers/tmp.js';
import { BASE_V1, v1Env, writeEnv } from '../helpers/env.js';

const NO_MACHINE = { machineChecks: false } as const;

/** Laid out like the older tool's shipped examples. */
const V0_FILES: Record<string, string> = {
  'Boottorrent.yaml': `boottorrent:
    version: 0
    timeout: 30
    default_os: linuxos
    seed_time: 30
    host_ip: 192.168.1.1
dnsmasq:
    enable_dhcp: True
    # user: nobody
    interface: eth0
    bind_interfaces: True
    dhcp_range: "192.168.1.50,192.168.1.150,12h"
    enable_tftp: True
opentracker:
    enable: True
    port: 10001
aria2:
    bt_enable_lpd: False
    enable_peer_exchange: True
    console_log_level: error
`,
  'oss/linuxos/config.yaml':
    'dispname: TestOS\nmethod: kexec\nkernel: vmlinuz\ninitrd: initramfs.img\ncmdline: "break"\n',
  'oss/linuxos/vmlinuz': 'k',
  'oss/linuxos/initramfs.img': 'i',
  'oss/alpine/config.yaml': 'dispname: Alpine Linux\nmethod: bin-qemu-x86_64\nargs: "-cdrom alpine.iso"\n',
  'oss/alpine/alpine.iso': 'iso',
  'oss/freedos/config.yaml': 'dispname: FreeDOS\nmethod: bin-qemu-x86_64\nargs: "-fda odin1440.img"\n',
  'oss/freedos/odin1440.img': 'floppy',
  'oss/hello/config.yaml': 'dispname: Hello\nmethod: bin\nbin: hello\nbinargs: ""\n',
  'oss/hello/hello': 'ELF',
};

test('a v0 environment (the older tool example layout) loads and maps onto v1', async (t) => {
  const dir = writeEnv(t, V0_FILES);
  const env = await loadEnvironment(dir, NO_MACHINE);
  assert.equal(env.sourceVersion, 0);
  assert.deepEqual(env.server, {
    interface: 'eth0',
    address: '192.168.1.1',
    httpPort: 80,
    tftp: true,
    ipxeDir: '/usr/lib/ipxe',
    uefiChain: 'ipxe',
    uefiLoader: 'ipxe.efi',
    uki: null,
    upstream: null,
  });
  assert.deepEqual(env.dhcp, {
    mode: 'full',
    range: { first: '192.168.1.50', last: '192.168.1.150' },
    leaseSeconds: 12 * 3600,
    router: null,
    dns: [],
    subnets: [],
  });
  assert.deepEqual(env.tracker, { enabled: true, port: 10001 });
  assert.deepEqual(env.peers, { lsd: false, pex: true, phase1: false, phase1Loader: 'ipxe' });
  assert.deepEqual(env.boot, { defaultOs: 'linuxos', timeout: 30, seedTime: 30 });
  assert.equal(env.logLevel, 'error');
  assert.equal(env.hosts.size, 0);
  assert.equal(env.allowMacs, null);
  assert.deepEqual(
    env.oss.map((o) => [o.id, o.name, o.method, o.sourceVersion]),
    [
      ['alpine', 'Alpine Linux', 'qemu', 0],
      ['freedos', 'FreeDOS', 'qemu', 0],
      ['hello', 'Hello', 'bin', 0],
      ['linuxos', 'TestOS', 'kexec', 0],
    ],
  );
  const byId = new Map(env.oss.map((o) => [o.id, o]));
  const linux = byId.get('linuxos');
  assert.ok(linux?.method === 'kexec');
  assert.equal(linux.kernel, 'vmlinuz');
  assert.deepEqual(linux.initrd, ['initramfs.img']);
  assert.equal(linux.cmdline, 'break');
  assert.equal(linux.dir, join(dir, 'oss', 'linuxos'));
  const alpine = byId.get('alpine');
  assert.ok(alpine?.method === 'qemu');
  assert.deepEqual(alpine.args, ['-cdrom', 'alpine.iso']);
  const dos = byId.get('freedos');
  assert.ok(dos?.method === 'qemu');
  assert.deepEqual(dos.args, ['-fda', 'odin1440.img']);
  const hello = byId.get('hello');
  assert.ok(hello?.method === 'bin');
  assert.equal(hello.bin, 'hello');
  assert.deepEqual(hello.args, []);
});

test('v0: enable_dhcp False maps to mode off, dnsmasq proxy range to proxy, notice to info', async (t) => {
  const off = writeEnv(t, {
    ...V0_FILES,
    'Boottorrent.yaml': V0_FILES['Boottorrent.yaml']!.replace(
      'enable_dhcp: True',
      'enable_dhcp: False',
    ).replace('console_log_level: error', 'console_log_level: notice'),
  });
  const e1 = await loadEnvironment(off, NO_MACHINE);
  assert.equal(e1.dhcp.mode, 'off');
  assert.equal(e1.logLevel, 'info');
  const proxy = writeEnv(t, {
    ...V0_FILES,
    'Boottorrent.yaml': V0_FILES['Boottorrent.yaml']!.replace(
      '"192.168.1.50,192.168.1.150,12h"',
      '"192.168.1.0,proxy"',
    ),
  });
  const e2 = await loadEnvironment(proxy, NO_MACHINE);
  assert.equal(e2.dhcp.mode, 'proxy');
  assert.equal(e2.dhcp.range, null);
});

test('a v1 environment loads every field, hosts keyed by normalised MAC', async (t) => {
  const dir = v1Env(
    t,
    `version: 1
server: { interface: eth1, address: 10.0.0.1, http_port: 8080, tftp: true, ipxe_dir: /opt/ipxe, uefi_chain: signed, uefi_loader: snponly.efi }
dhcp: { mode: full, range: 10.0.0.100-10.0.0.199, lease_time: 90m, router: 10.0.0.254, dns: 10.0.0.53 }
tracker: { enabled: false }
peers: { lsd: true, pex: false, phase1: true, phase1_loader: grub }
boot: { default_os: linux, timeout: -1, seed_time: 0 }
hosts:
  52-54-00-AB-CD-EF: { default_os: linux, timeout: 5, name: bench-1 }
allow_macs: ["52:54:00:AB:CD:EF"]
log_level: debug
`,
    {
      'oss/linux/config.yaml':
        'name: Linux\nmethod: kexec\nkernel: vmlinuz\ninitrd: [initrd.img, initrd.img]\n',
    },
  );
  const env = await loadEnvironment(dir, NO_MACHINE);
  assert.equal(env.sourceVersion, 1);
  assert.deepEqual(env.server, {
    interface: 'eth1',
    address: '10.0.0.1',
    httpPort: 8080,
    tftp: true,
    ipxeDir: '/opt/ipxe',
    uefiChain: 'signed',
    uefiLoader: 'snponly.efi',
    uki: null,
    upstream: null,
  });
  assert.deepEqual(env.dhcp, {
    mode: 'full',
    range: { first: '10.0.0.100', last: '10.0.0.199' },
    leaseSeconds: 5400,
    router: '10.0.0.254',
    dns: ['10.0.0.53'],
    subnets: [],
  });
  assert.deepEqual(env.tracker, { enabled: false, port: 6969 });
  assert.deepEqual(env.peers, { lsd: true, pex: false, phase1: true, phase1Loader: 'grub' });
  assert.deepEqual(env.boot, { defaultOs: 'linux', timeout: -1, seedTime: 0 });
  assert.deepEqual(
    [...env.hosts],
    [['52:54:00:ab:cd:ef', { defaultOs: 'linux', timeout: 5, name: 'bench-1' }]],
  );
  assert.deepEqual(env.allowMacs, ['52:54:00:ab:cd:ef']);
  assert.equal(env.logLevel, 'debug');
  const linux = env.oss[0];
  assert.ok(linux?.method === 'kexec');
  assert.deepEqual(linux.initrd, ['initrd.img', 'initrd.img']);
  assert.equal(linux.cmdline, '');
});

test('the Environment is frozen, hosts map included', async (t) => {
  const env = await loadEnvironment(
    v1Env(t, `${BASE_V1}hosts:\n  "52:54:00:12:34:56": { timeout: 1 }\n`),
    NO_MACHINE,
  );
  assert.ok(Object.isFrozen(env) && Object.isFrozen(env.server) && Object.isFrozen(env.oss[0]));
  assert.throws(() => {
    (env.boot as { timeout: number }).timeout = 1;
  }, TypeError);
  assert.throws(() => (env.hosts as Map<string, unknown>).set('x', {}), TypeError);
});

test('defaults of v1: proxy DHCP, tracker on 6969, http 80, pex on, lsd off, info', async (t) => {
  const env = await loadEnvironment(
    v1Env(t, 'version: 1\nserver: { address: 10.0.0.1 }\nboot: { default_os: linux }\n'),
    NO_MACHINE,
  );
  assert.equal(env.server.interface, null);
  assert.equal(env.server.httpPort, 80);
  assert.equal(env.dhcp.mode, 'proxy');
  assert.deepEqual(env.tracker, { enabled: true, port: 6969 });
  assert.deepEqual(env.peers, { lsd: false, pex: true, phase1: false, phase1Loader: 'ipxe' });
  assert.deepEqual(env.boot, { defaultOs: 'linux', timeout: 30, seedTime: 30 });
  assert.equal(env.logLevel, 'info');
});

test('init output validates, boots oss/hello, and its examples are valid YAML', async (t) => {
  const dir = join(tempDir(t), 'lab');
  const r = initEnvironment(dir, {
    networkInterfaces: () => ({
      lo: [
        {
          address: '127.0.0.1',
          netmask: '255.0.0.0',
          family: 'IPv4',
          mac: '00:00:00:00:00:00',
          internal: true,
          cidr: '127.0.0.1/8',
        },
      ],
      eth1: [
        {
          address: '10.0.0.1',
          netmask: '255.255.255.0',
          family: 'IPv4',
          mac: '52:54:00:00:00:01',
          internal: false,
          cidr: '10.0.0.1/24',
        },
      ],
    }),
  });
  assert.equal(r.interface, 'eth1');
  assert.deepEqual(await validate(dir, NO_MACHINE), []);
  const env = await loadEnvironment(dir, NO_MACHINE);
  assert.equal(env.dhcp.mode, 'proxy');
  assert.equal(env.server.interface, 'eth1');
  assert.equal(env.boot.defaultOs, 'hello');
  assert.deepEqual(
    env.oss.map((o) => o.id),
    ['hello'],
  );
  const yaml = readFileSync(join(dir, 'Boottorrent.yaml'), 'utf8');
  assert.match(yaml, /proxy: the safe default/);
  // Each example becomes a valid OS once its files exist.
  for (const ex of readdirSync(join(dir, 'oss-examples'))) {
    if (!statSync(join(dir, 'oss-examples', ex)).isDirectory()) continue;
    const cfg = parseYaml(readFileSync(join(dir, 'oss-examples', ex, 'config.yaml'), 'utf8')) as Record<
      string,
      string
    >;
    const copy = join(dir, 'oss', ex);
    mkdirSync(copy);
    writeFileSync(join(copy, 'config.yaml'), readFileSync(join(dir, 'oss-examples', ex, 'config.yaml')));
    for (const f of [
      cfg.kernel,
      cfg.initrd,
      cfg.bin,
      ...(splitArgs(cfg.args ?? '') ?? []).filter((a) => /\.(img|iso)$/.test(a)),
    ])
      if (f) writeFileSync(join(copy, f), 'x');
  }
  const full = await loadEnvironment(dir, NO_MACHINE);
  assert.deepEqual(full.oss.map((o) => o.method).sort(), ['bin', 'bin', 'kexec', 'qemu']);
});

test('init refuses a non-empty folder', (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'keep.txt'), 'mine');
  assert.throws(() => initEnvironment(dir), /not empty/);
  assert.equal(readFileSync(join(dir, 'keep.txt'), 'utf8'), 'mine');
});

test('loadEnvironment throws EnvironmentError listing every problem', async (t) => {
  const dir = v1Env(
    t,
    'version: 1\nserver: { address: 10.0.0.1, colour: red }\nboot: { default_os: nope }\n',
  );
  const err = await loadEnvironment(dir, NO_MACHINE).then(
    () => assert.fail('should throw'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof EnvironmentError);
  assert.equal(err.code, 'BT_ERR_ENV');
  assert.equal(err.problems.length, 2);
  const insp = await inspectEnvironment(dir, NO_MACHINE);
  assert.equal(insp.env, null);
});

test('splitArgs splits like a shell: quotes, escapes; null on an open quote', () => {
  assert.deepEqual(splitArgs(`-m 512 -append "console=ttyS0 quiet" -name 'a b' x\\ y ""`), [
    '-m',
    '512',
    '-append',
    'console=ttyS0 quiet',
    '-name',
    'a b',
    'x y',
    '',
  ]);
  assert.equal(splitArgs('-cdrom "alpine.iso'), null);
});

test('schema files use only keywords the loader understands (one source of truth)', () => {
  const bad: string[] = [];
  const walk = (s: unknown, path: string, inMap: boolean) => {
    if (s === null || typeof s !== 'object') return;
    if (Array.isArray(s)) return s.forEach((x, i) => walk(x, `${path}[${i}]`, false));
    for (const [k, v] of Object.entries(s as Record<string, unknown>)) {
      if (!inMap && !SUPPORTED_KEYWORDS.has(k)) bad.push(`${path}.${k}`);
      const isMap = !inMap && (k === 'properties' || k === '$defs');
      if (k === 'enum' || k === 'const' || k === 'default' || k === 'required') continue;
      walk(v, `${path}.${k}`, isMap);
    }
  };
  const names = readdirSync(SCHEMA_DIR).filter((f) => f.endsWith('.schema.json'));
  assert.deepEqual(names.sort(), [
    'boottorrent.v0.schema.json',
    'boottorrent.v1.schema.json',
    'os.v0.schema.json',
    'os.v1.schema.json',
  ]);
  for (const f of names) walk(JSON.parse(readFileSync(join(SCHEMA_DIR, f), 'utf8')), f, false);
  assert.deepEqual(bad, []);
});

test('v0 as the older tool accepted it: unknown keys and quoted numbers load with a warning each naming file, line and field; v1 stays strict', async (t) => {
  const yaml = V0_FILES['Boottorrent.yaml']!.replace('    port: 10001', '    port: "10001"')
    .replace('    seed_time: 30', "    seed_time: '45'")
    .replace(
      '    console_log_level: error',
      '    console_log_level: error\n    enable_dht: False\n    check_integrity: True\n    seed_ratio: 0.0',
    );
  const dir = writeEnv(t, {
    ...V0_FILES,
    'Boottorrent.yaml': yaml,
    'oss/hello/config.yaml': 'dispname: Hello\nmethod: bin\nbin: hello\nbinargs: ""\nicon: hello.png\n',
  });
  const { env, problems, warnings } = await inspectEnvironment(dir, NO_MACHINE);
  assert.deepEqual(problems, []);
  assert.ok(env);
  assert.equal(env.tracker.port, 10001, 'the quoted port read as a number');
  assert.equal(env.boot.seedTime, 45);
  assert.deepEqual(env.warnings, warnings);
  const lines = warnings.map((w) => `${w.file.slice(dir.length + 1)}:${w.line}: ${w.field}: ${w.message}`);
  assert.deepEqual(lines, [
    'Boottorrent.yaml:5: boottorrent.seed_time: quoted number "45" read as 45',
    'Boottorrent.yaml:16: opentracker.port: quoted number "10001" read as 10001',
    "Boottorrent.yaml:21: aria2.enable_dht: unknown field 'enable_dht' in aria2 is ignored (BootTorrent does not use it)",
    "Boottorrent.yaml:22: aria2.check_integrity: unknown field 'check_integrity' in aria2 is ignored (BootTorrent does not use it)",
    "Boottorrent.yaml:23: aria2.seed_ratio: unknown field 'seed_ratio' in aria2 is ignored (BootTorrent does not use it)",
    "oss/hello/config.yaml:5: icon: unknown field 'icon' is ignored (BootTorrent does not use it)",
  ]);
  for (const w of warnings) assert.match(w.fix, /\S/);

  // Version 1: the same mistakes are problems, not warnings.
  const strict = v1Env(t, `${BASE_V1}tracker:\n  port: "10001"\n  enable_dht: false\n`);
  const v1 = await inspectEnvironment(strict, NO_MACHINE);
  assert.equal(v1.env, null);
  assert.deepEqual(v1.warnings, []);
  assert.ok(v1.problems.some((p) => p.field === 'tracker.port' && /must be/.test(p.message)));
  assert.ok(v1.problems.some((p) => p.field === 'tracker.enable_dht' && /unknown field/.test(p.message)));
});

test('v0 lenient mode: an unknown field close to a known one is a typo, still a problem with its suggestion', async (t) => {
  const yaml = V0_FILES['Boottorrent.yaml']!.replace('    enable_dhcp: True', '    enable_dchp: False');
  const { env, problems, warnings } = await inspectEnvironment(
    writeEnv(t, { ...V0_FILES, 'Boottorrent.yaml': yaml }),
    NO_MACHINE,
  );
  assert.equal(env, null);
  assert.ok(
    problems.some((p) => p.field === 'dnsmasq.enable_dchp' && /did you mean 'enable_dhcp'/.test(p.message)),
    JSON.stringify(problems),
  );
  assert.ok(!warnings.some((w) => w.field === 'dnsmasq.enable_dchp'));
});
