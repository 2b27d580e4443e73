// The real thing: QEMU machines PXE-boot from our server (DHCP, TFTP, HTTP)
// inside a namespace LAN and run a marker kernel that prints a line on the
// serial console. BIOS (SeaBIOS + the NIC's iPXE ROM) in full and in proxy
// mode beside dnsmasq; UEFI (OVMF: its own PXE, then our ipxe.efi over TFTP;
// and snponly.efi, iPXE on the firmware's own network driver).
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Lab, waitForOutput } from '../helpers/netns.js';
import { debianKernel, markerInitrd } from '../helpers/marker-os.js';
import { requireProgram } from '../helpers/programs.js';
import { tempDir } from '../helpers/tmp.js';

const qemu = requireProgram('qemu-system-x86_64', 'qemu-system-x86');
const OVMF = '/usr/share/ovmf/OVMF.fd';
const SERVER = '10.33.0.1';
const fixture = new URL('./fixtures/netboot-server.js', import.meta.url).pathname;

interface Setup {
  lab: Lab;
  ns: string;
  dir: string;
  marker: string;
}

function setup(t: TestContext): Setup {
  const lab = new Lab(t);
  const ns = lab.ns('pxe');
  lab.bridge(ns, 'br0', `${SERVER}/24`);
  const dir = tempDir(t);
  const marker = `BT-MARKER-${lab.id}`;
  copyFileSync(debianKernel(), join(dir, 'vmlinuz'));
  writeFileSync(join(dir, 'marker.img'), markerInitrd(marker));
  return { lab, ns, dir, marker };
}

async function startServer(s: Setup, dhcp: object, extra: object = {}) {
  const config = {
    ...extra,
    interface: 'br0',
    serverIp: SERVER,
    dhcp,
    httpPort: 80,
    phase1: { dir: s.dir, kernel: 'vmlinuz', initrds: ['marker.img'], cmdline: 'console=ttyS0 quiet' },
  };
  const server = s.lab.spawn(s.ns, process.execPath, [
    '--enable-source-maps',
    fixture,
    JSON.stringify(config),
  ]);
  await waitForOutput(server, /READY/, 20_000, 'netboot server');
  return server;
}

async function bootVm(s: Setup, tap: string, mac: string, firmware: 'bios' | 'uefi', minutes: number) {
  s.lab.tap(s.ns, tap, 'br0');
  const serial = join(s.dir, `${tap}.serial`);
  writeFileSync(serial, '');
  const vm = s.lab.spawn(s.ns, qemu, [
    '-accel',
    'tcg',
    '-m',
    '512',
    '-display',
    'none',
    '-monitor',
    'none',
    '-serial',
    `file:${serial}`,
    '-no-reboot',
    '-boot',
    'n',
    ...(firmware === 'uefi' ? ['-bios', OVMF] : []),
    '-netdev',
    `tap,id=n0,ifname=${tap},script=no,downscript=no`,
    // UEFI: no option ROM, so OVMF's own virtio driver and EDK2's PXE boot
    // (the path of real UEFI machines), not the iPXE inside QEMU's ROM.
    '-device',
    `virtio-net-pci,netdev=n0,mac=${mac}${firmware === 'uefi' ? ',romfile=' : ''}`,
  ]);
  const deadline = Date.now() + minutes * 60_000;
  for (;;) {
    const text = readFileSync(serial, 'latin1');
    const m = new RegExp(`${s.marker} cmdline: (.*)`).exec(text);
    if (m) return { cmdline: m[1]!, serial: text, vm };
    if (vm.child.exitCode !== null && !text.includes(s.marker)) {
      throw new Error(`VM exited without the marker:\n${text.slice(-3000)}\n${vm.output()}`);
    }
    if (Date.now() > deadline)
      throw new Error(`no marker within ${minutes} min; serial:\n${text.slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

test('BIOS VM PXE-boots from our server in full DHCP mode and runs the marker kernel', async (t) => {
  const s = setup(t);
  const server = await startServer(s, {
    mode: 'full',
    rangeStart: '10.33.0.100',
    rangeEnd: '10.33.0.120',
    leasesFile: join(s.dir, 'leases.json'),
  });
  const mac = '52:54:00:33:00:01';
  const r = await bootVm(s, 'tap0', mac, 'bios', 4);
  assert.match(r.cmdline, new RegExp(`boottorrent\\.server=http://${SERVER} boottorrent\\.mac=${mac}`));
  const log = server.output();
  assert.match(log, new RegExp(`${mac}`), 'the server saw the client');
  assert.match(log, /phase 1 script/);
});

test('BIOS VM boots in proxy mode while dnsmasq hands out the addresses', async (t) => {
  requireProgram('dnsmasq', 'dnsmasq-base');
  const s = setup(t);
  const dhcpNs = s.lab.ns('lan-dhcp');
  s.lab.link(s.ns, 'br0', dhcpNs, 'eth0', '10.33.0.2/24');
  // The network's own DHCP server: addresses only, no boot information.
  const dnsmasq = s.lab.spawn(dhcpNs, 'dnsmasq', [
    '--no-daemon',
    '--conf-file=/dev/null',
    '--port=0',
    '--interface=eth0',
    '--bind-interfaces',
    '--dhcp-range=10.33.0.150,10.33.0.160,1h',
    `--dhcp-leasefile=${join(s.dir, 'dnsmasq.leases')}`,
    `--pid-file=${join(s.dir, 'dnsmasq.pid')}`,
    '--log-dhcp',
  ]);
  await waitForOutput(dnsmasq, /DHCP, IP range/, 10_000, 'dnsmasq');
  const server = await startServer(s, { mode: 'proxy' });
  const mac = '52:54:00:33:00:02';
  const r = await bootVm(s, 'tap1', mac, 'bios', 4);
  assert.match(r.cmdline, new RegExp(`boottorrent\\.mac=${mac}`));
  assert.match(dnsmasq.output(), /DHCPACK\(eth0\) 10\.33\.0\.15\d/, 'the address came from dnsmasq');
  assert.match(server.output(), new RegExp(mac), 'the boot information came from us');
});

test('UEFI (OVMF) VM PXE-boots: firmware PXE, ipxe.efi over TFTP, then HTTP', async (t) => {
  const s = setup(t);
  const server = await startServer(s, { mode: 'full', rangeStart: '10.33.0.100', rangeEnd: '10.33.0.120' });
  const mac = '52:54:00:33:00:03';
  const r = await bootVm(s, 'tap2', mac, 'uefi', 12);
  assert.match(r.cmdline, new RegExp(`boottorrent\\.mac=${mac}`));
  assert.match(server.output(), /ipxe\.efi/, `the firmware fetched ipxe.efi over TFTP:\n${server.output()}`);
});

test("UEFI (OVMF) VM PXE-boots with snponly.efi (uefi_loader): iPXE on the firmware's network driver", async (t) => {
  const s = setup(t);
  const server = await startServer(
    s,
    { mode: 'full', rangeStart: '10.33.0.100', rangeEnd: '10.33.0.120' },
    { uefiLoader: 'snponly.efi' },
  );
  const mac = '52:54:00:33:00:04';
  const r = await bootVm(s, 'tap3', mac, 'uefi', 12);
  assert.match(r.cmdline, new RegExp(`boottorrent\\.mac=${mac}`));
  const log = server.output();
  assert.match(log, /snponly\.efi/, `the firmware fetched snponly.efi over TFTP:\n${log}`);
  assert.doesNotMatch(log, /ipxe\.efi/, 'and not ipxe.efi');
});
