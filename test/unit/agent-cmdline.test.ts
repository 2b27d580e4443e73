/** Where the agent learns its server and MAC: kernel command line (phase 1) and host flags. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isBootTorrentError } from '../../src/errors.js';
import { argsFromFlags, argsFromKernelCmdline, kernelParams } from '../../src/agent/cmdline.js';
import {
  hasAccel,
  hasDisplay,
  qemuCommand,
  hasMonitor,
  qemuScreen,
  kexecCommands,
  insideFolder,
  showCommand,
} from '../../src/agent/steps.js';
import { UDHCPC_SCRIPT } from '../../src/agent/network.js';

test('cmdline: the boottorrent.* words of a real phase-1 command line', () => {
  const line =
    'initrd=initrd0 initrd=initrd1 console=ttyS0 quiet boottorrent.server=http://10.0.0.1:8080 boottorrent.mac=52:54:00:AB:cd:01\n';
  const a = argsFromKernelCmdline(line);
  assert.equal(a.server, 'http://10.0.0.1:8080');
  assert.equal(a.mac, '52:54:00:ab:cd:01');
  assert.equal(a.dir, '/tmp/boottorrent');
  assert.equal(a.network, true);
  assert.equal(a.hostMode, false);
  assert.equal(a.dryRun, false);
  assert.equal(kernelParams(line).get('console'), 'ttyS0');
  assert.equal(
    argsFromKernelCmdline(`${line} boottorrent.server=http://10.0.0.2/`).server,
    'http://10.0.0.2',
    'last wins, no trailing slash',
  );
});

test('cmdline: missing or bad values are usage errors naming the parameter', () => {
  const cases: [string, RegExp][] = [
    ['console=ttyS0 boottorrent.mac=52:54:00:00:00:01', /boottorrent\.server=/],
    ['boottorrent.server=http://10.0.0.1', /boottorrent\.mac=/],
    ['boottorrent.server=ftp://x boottorrent.mac=52:54:00:00:00:01', /http/],
    ['boottorrent.server=http://10.0.0.1 boottorrent.mac=zz', /not a MAC/],
  ];
  for (const [line, re] of cases) {
    assert.throws(
      () => argsFromKernelCmdline(line),
      (err) => isBootTorrentError(err, 'BT_ERR_USAGE') && re.test(err.message),
      line,
    );
  }
});

test('cmdline: host-mode flags', () => {
  const a = argsFromFlags([
    '--server',
    'http://127.0.0.1:8080',
    '--mac',
    '52-54-00-00-00-01',
    '--dir',
    '/tmp/x',
    '--no-network',
    '--dry-run',
    '--port',
    '0',
  ]);
  assert.deepEqual(
    {
      server: a.server,
      mac: a.mac,
      dir: a.dir,
      network: a.network,
      dryRun: a.dryRun,
      hostMode: a.hostMode,
      port: a.port,
    },
    {
      server: 'http://127.0.0.1:8080',
      mac: '52:54:00:00:00:01',
      dir: '/tmp/x',
      network: false,
      dryRun: true,
      hostMode: true,
      port: 0,
    },
  );
  const d = argsFromFlags(['--server', 'http://s', '--mac', '525400000001']);
  assert.equal(d.dir, '/tmp/boottorrent');
  assert.equal(d.network, true);
  for (const bad of [
    [],
    ['--server', 'http://s'],
    ['--mac', '52:54:00:00:00:01'],
    ['--server', 'http://s', '--mac', 'x'],
    ['--bogus'],
    ['--server', 'http://s', '--mac', '525400000001', '--port', '70000'],
  ]) {
    assert.throws(
      () => argsFromFlags(bad),
      (err) => isBootTorrentError(err, 'BT_ERR_USAGE'),
      bad.join(' '),
    );
  }
});

test('load plans: qemu accelerator, kexec commands, folder confinement', () => {
  assert.equal(hasAccel(['-accel', 'tcg']), true);
  assert.equal(hasAccel(['-enable-kvm']), true);
  assert.equal(hasAccel(['-machine', 'q35,accel=tcg']), true);
  assert.equal(hasAccel(['-M', 'pc', '-m', '512']), false);
  assert.deepEqual(qemuCommand(['-m', '512'], '/d/os', true).args, ['-m', '512', '-accel', 'kvm']);
  assert.deepEqual(qemuCommand(['-m', '512'], '/d/os', false).args, ['-m', '512']);
  assert.deepEqual(qemuCommand(['-accel', 'tcg'], '/d/os', true).args, ['-accel', 'tcg']);
  assert.equal(qemuCommand([], '/d/os', false).cwd, '/d/os');
  const [load, exec] = kexecCommands('/d/os/vmlinuz', '/d/initrd', 'root=/dev/sda1 quiet');
  assert.deepEqual(load.args, [
    '-l',
    '/d/os/vmlinuz',
    '--initrd=/d/initrd',
    '--command-line=root=/dev/sda1 quiet',
  ]);
  assert.deepEqual(exec.args, ['-e']);
  assert.deepEqual(kexecCommands('/k', undefined, '')[0].args, ['-l', '/k', '--command-line=']);
  assert.equal(
    showCommand(load),
    "kexec -l /d/os/vmlinuz --initrd=/d/initrd '--command-line=root=/dev/sda1 quiet'",
  );
  assert.equal(insideFolder('/d/os', 'a/b'), '/d/os/a/b');
  assert.throws(
    () => insideFolder('/d/os', '../x'),
    (err) => isBootTorrentError(err, 'BT_ERR_AGENT'),
  );
  assert.throws(
    () => insideFolder('/d/os', '/etc/passwd'),
    (err) => isBootTorrentError(err, 'BT_ERR_AGENT'),
  );
});

test('udhcpc script: applies address and default route with ip, for bound and renew', () => {
  assert.match(UDHCPC_SCRIPT, /^#!\/bin\/sh\n/);
  assert.match(UDHCPC_SCRIPT, /bound\|renew\)/);
  assert.match(UDHCPC_SCRIPT, /ip addr add "\$ip\/\$\{mask:-24\}"/);
  assert.match(UDHCPC_SCRIPT, /ip route add default via "\$r" dev "\$interface"/);
});

test('qemu on the client console: curses when the args choose no display, with a UTF-8 locale; the args win otherwise', () => {
  const rows: { args: string[]; display: boolean }[] = [
    { args: ['-fda', 'dos.img'], display: false },
    { args: ['-cdrom', 'x.iso', '-display', 'none'], display: true },
    { args: ['-nographic'], display: true },
    { args: ['-vnc', ':1'], display: true },
    { args: ['--display', 'sdl'], display: true },
    { args: ['-curses'], display: true },
  ];
  for (const r of rows) {
    assert.equal(hasDisplay(r.args), r.display, r.args.join(' '));
    const c = qemuCommand(r.args, '/d/os', false, 'curses');
    assert.deepEqual(
      c.args,
      r.display ? [...r.args, '-monitor', 'none'] : [...r.args, '-monitor', 'none', '-display', 'curses'],
      r.args.join(' '),
    );
    assert.deepEqual(c.env, { LC_ALL: 'C.UTF-8' });
  }
  // Host mode (not the client's console): the args as given.
  assert.deepEqual(qemuCommand(['-fda', 'dos.img'], '/d/os', false).args, ['-fda', 'dos.img']);
  assert.equal(qemuCommand(['-fda', 'dos.img'], '/d/os', false).env, undefined);
});

test('qemu on a framebuffer: QEMU serves VNC on loopback only, behind a password its viewer is given, with no monitor; the args win when they choose a display', () => {
  const vnc = { display: 2, password: 'aB3_-x9Z' };
  const c = qemuCommand(['-fda', 'dos.img'], '/d/os', false, 'framebuffer', vnc);
  assert.deepEqual(c.args, [
    '-fda',
    'dos.img',
    '-monitor',
    'none',
    '-display',
    'none',
    '-object',
    'secret,id=btvnc,data=aB3_-x9Z',
    '-vnc',
    '127.0.0.1:2,password-secret=btvnc',
  ]);
  assert.equal(c.viewer?.file, 'directvnc');
  assert.deepEqual(c.viewer?.args, ['127.0.0.1:2', '--password', 'aB3_-x9Z']);
  assert.match(c.viewer?.env?.DFBARGS ?? '', /system=fbdev/);
  // No password, or one that would break QEMU's option syntax: refused, never an open server.
  for (const password of ['', 'a,b', '123456789'])
    assert.throws(() =>
      qemuCommand(['-fda', 'dos.img'], '/d/os', false, 'framebuffer', { display: 0, password }),
    );
  const chosen = qemuCommand(['-fda', 'dos.img', '-vnc', ':3'], '/d/os', false, 'framebuffer', vnc);
  assert.deepEqual(chosen.args, ['-fda', 'dos.img', '-vnc', ':3', '-monitor', 'none']);
  assert.equal(chosen.viewer, undefined);
  // A monitor the args place stays where they put it.
  assert.deepEqual(qemuCommand(['-monitor', 'stdio'], '/d/os', false, 'curses').args, [
    '-monitor',
    'stdio',
    '-display',
    'curses',
  ]);
  assert.ok(hasMonitor(['-qmp', 'unix:/q,server']) && !hasMonitor(['-m', '64']));
});

test('which screen a qemu guest gets: framebuffer when there is one, the viewer, and a screen console; curses otherwise', () => {
  const rows: { on: boolean; fb: boolean; viewer: boolean; cmdline: string; want: string }[] = [
    {
      on: true,
      fb: true,
      viewer: true,
      cmdline: 'console=ttyS0,115200n8 console=tty0 quiet',
      want: 'framebuffer',
    },
    { on: true, fb: true, viewer: true, cmdline: 'quiet', want: 'framebuffer' },
    { on: true, fb: true, viewer: true, cmdline: 'console=tty0 console=ttyS0,115200n8', want: 'curses' },
    { on: true, fb: false, viewer: true, cmdline: 'console=tty0', want: 'curses' },
    { on: true, fb: true, viewer: false, cmdline: 'console=tty0', want: 'curses' },
    { on: false, fb: true, viewer: true, cmdline: 'console=tty0', want: 'none' },
  ];
  for (const r of rows)
    assert.equal(
      qemuScreen(r.on, { framebuffer: r.fb, viewer: r.viewer, cmdline: r.cmdline }),
      r.want,
      JSON.stringify(r),
    );
});
