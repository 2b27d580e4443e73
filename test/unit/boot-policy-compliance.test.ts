/**
 * Interface compliance (#15): the same table of cases runs against every
 * BootPolicy, the server's (src/server/boot-policy.ts) and the fixed double
 * the unit tests of DHCP and HTTP use (test/helpers/boot-policy.ts), so a
 * test double cannot drift from what the servers really get asked to trust.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseBootConfig } from '../../src/boot-config.js';
import type { BootArch, BootPolicy } from '../../src/boot/policy.js';
import { ServerBootPolicy } from '../../src/server/boot-policy.js';
import { FixedBootPolicy, fixedBootConfig } from '../helpers/boot-policy.js';

const ALLOWED = '52:54:00:00:00:01';
const REFUSED = '52:54:00:00:00:09';
const FIRMWARE: readonly BootArch[] = ['bios', 'uefi-x64', 'uefi-x64-http', 'uefi-arm64', 'uefi-arm64-http'];
const EVERY_ARCH: readonly BootArch[] = [...FIRMWARE, 'uefi-ia32', 'unknown'];

/** Each implementation, set up so that ALLOWED may boot and REFUSED may not. */
const implementations: Record<string, () => BootPolicy> = {
  ServerBootPolicy: () =>
    new ServerBootPolicy(
      {
        serverIp: '10.0.0.1',
        httpPort: 8080,
        // As NetbootServer sets it when the iPXE folder has an ARM64 build.
        arm64File: 'ipxe-arm64.efi',
        publicUrl: 'http://10.0.0.1:8080',
        phase1: { kernel: 'vmlinuz', initrds: ['initrd.img', 'agent.cpio'], cmdline: 'console=ttyS0' },
        allowMacs: [ALLOWED],
      },
      { bootConfig: (mac) => Promise.resolve(fixedBootConfig(mac, 'http://10.0.0.1:8080')) },
    ),
  FixedBootPolicy: () => new FixedBootPolicy({ refuse: [REFUSED] }),
};

/** The table: one question about a client per case, the same for every implementation. */
const cases: { name: string; check: (p: BootPolicy) => void | Promise<void> }[] = [
  {
    name: 'an allowed MAC gets a DHCP offer for every firmware we have a loader for',
    check: (p) => {
      for (const arch of FIRMWARE) assert.ok(p.bootFor({ mac: ALLOWED, arch, ipxe: false }), arch);
    },
  },
  {
    name: 'iPXE gets a script URL, never a loader again (the chainload loop)',
    check: (p) => {
      for (const arch of EVERY_ARCH) {
        const d = p.bootFor({ mac: ALLOWED, arch, ipxe: true });
        assert.equal(d?.kind, 'ipxe-script', arch);
        assert.match(d.url, /^http:\/\/.*\/boot\.ipxe\?mac=\$\{mac\}$/);
      }
    },
  },
  {
    name: 'an architecture without a loader gets no offer',
    check: (p) => assert.equal(p.bootFor({ mac: ALLOWED, arch: 'unknown', ipxe: false }), undefined),
  },
  {
    name: 'an allowed MAC gets a phase-1 image of absolute http URLs and a one-line command line',
    check: (p) => {
      const img = p.phaseOneFor(ALLOWED);
      assert.ok(!('refused' in img));
      for (const u of [img.kernelUrl, ...img.initrdUrls]) assert.match(u, /^http:\/\/[^/]+\//);
      assert.ok(img.initrdUrls.length > 0);
      assert.doesNotMatch(img.cmdline, /[\r\n]/);
    },
  },
  {
    name: "an allowed MAC gets a boot config for that MAC that the agent's parser accepts",
    check: async (p) => {
      const config = await p.bootConfigFor(ALLOWED, '10.0.0.5');
      assert.ok(config);
      assert.equal(config.mac, ALLOWED);
      assert.deepEqual(parseBootConfig(JSON.stringify(config)), config);
    },
  },
  {
    name: 'a refused MAC is refused every question: no offer, a reason instead of phase 1, no boot config',
    check: async (p) => {
      for (const arch of EVERY_ARCH)
        for (const ipxe of [false, true]) assert.equal(p.bootFor({ mac: REFUSED, arch, ipxe }), undefined);
      const img = p.phaseOneFor(REFUSED);
      assert.ok('refused' in img);
      assert.ok(img.refused.length > 0);
      assert.equal(await p.bootConfigFor(REFUSED, '10.0.0.9'), undefined);
    },
  },
  {
    name: 'the same question gets the same answer',
    check: async (p) => {
      const client = { mac: ALLOWED, arch: 'uefi-x64' as const, ipxe: false };
      assert.deepEqual(p.bootFor(client), p.bootFor(client));
      assert.deepEqual(p.phaseOneFor(ALLOWED), p.phaseOneFor(ALLOWED));
      assert.deepEqual(
        await p.bootConfigFor(ALLOWED, '10.0.0.5'),
        await p.bootConfigFor(ALLOWED, '10.0.0.5'),
      );
    },
  },
];

for (const [impl, make] of Object.entries(implementations))
  for (const c of cases) test(`BootPolicy ${impl}: ${c.name}`, () => c.check(make()));

test('ServerBootPolicy: no allow-list lets every MAC boot; no boot config source refuses every config', async () => {
  const p = new ServerBootPolicy({
    serverIp: '10.0.0.1',
    publicUrl: 'http://10.0.0.1',
    phase1: { kernel: 'vmlinuz', initrds: ['initrd.img'], cmdline: '' },
  });
  assert.ok(p.bootFor({ mac: REFUSED, arch: 'bios', ipxe: false }));
  assert.deepEqual(p.phaseOneFor(REFUSED), {
    kernelUrl: `http://10.0.0.1/phase1/vmlinuz?mac=${REFUSED}`,
    initrdUrls: [`http://10.0.0.1/phase1/initrd.img?mac=${REFUSED}`],
    cmdline: '',
  });
  assert.equal(await p.bootConfigFor(REFUSED, '10.0.0.9'), undefined);
});
