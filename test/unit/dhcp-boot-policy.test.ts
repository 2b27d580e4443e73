/** DefaultBootPolicy: the boot chain per architecture, and no chainload loop for iPXE. */

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { DefaultBootPolicy } from '../../src/server/boot-policy.js';
import type { BootClient } from '../../src/server/boot-policy.js';

const client = (arch: BootClient['arch'], ipxe = false): BootClient => ({
  mac: '52:54:00:00:00:01',
  arch,
  ipxe,
});

test('DefaultBootPolicy: the boot chain', () => {
  const p = new DefaultBootPolicy({ serverIp: '10.0.0.1' });
  assert.deepEqual(p.bootFor(client('bios')), {
    kind: 'tftp',
    nextServer: '10.0.0.1',
    file: 'undionly.kpxe',
  });
  assert.deepEqual(p.bootFor(client('uefi-x64')), { kind: 'tftp', nextServer: '10.0.0.1', file: 'ipxe.efi' });
  assert.deepEqual(p.bootFor(client('uefi-x64-http')), { kind: 'http', url: 'http://10.0.0.1/ipxe.efi' });
  // No ARM64 build unless one is configured (Debian's ipxe package has none): no file that does not exist.
  assert.equal(p.bootFor(client('uefi-arm64')), undefined);
  assert.equal(p.bootFor(client('uefi-arm64-http')), undefined);
  for (const arch of ['bios', 'uefi-x64', 'uefi-arm64'] as const) {
    assert.deepEqual(p.bootFor(client(arch, true)), {
      kind: 'ipxe-script',
      url: 'http://10.0.0.1/boot.ipxe?mac=${mac}',
    });
  }
  assert.equal(p.bootFor(client('uefi-ia32')), undefined);
  assert.equal(p.bootFor(client('unknown')), undefined);
});

test('DefaultBootPolicy: options', () => {
  const p = new DefaultBootPolicy({
    serverIp: '10.0.0.1',
    httpPort: 8080,
    uefiLoader: 'snponly.efi',
    biosFile: 'x.kpxe',
    ia32File: 'i.efi',
    arm64File: 'ipxe-arm64.efi',
  });
  assert.deepEqual(p.bootFor(client('uefi-arm64')), {
    kind: 'tftp',
    nextServer: '10.0.0.1',
    file: 'ipxe-arm64.efi',
  });
  assert.deepEqual(p.bootFor(client('uefi-arm64-http')), {
    kind: 'http',
    url: 'http://10.0.0.1:8080/ipxe-arm64.efi',
  });
  assert.deepEqual(p.bootFor(client('uefi-x64')), {
    kind: 'tftp',
    nextServer: '10.0.0.1',
    file: 'snponly.efi',
  });
  assert.deepEqual(p.bootFor(client('uefi-x64-http')), {
    kind: 'http',
    url: 'http://10.0.0.1:8080/snponly.efi',
  });
  assert.deepEqual(p.bootFor(client('bios')), { kind: 'tftp', nextServer: '10.0.0.1', file: 'x.kpxe' });
  assert.deepEqual(p.bootFor(client('uefi-ia32')), { kind: 'tftp', nextServer: '10.0.0.1', file: 'i.efi' });
  assert.equal(p.bootFor(client('bios', true))?.kind, 'ipxe-script');
});

test('DefaultBootPolicy: why a firmware client gets no offer names its architecture', () => {
  const p = new DefaultBootPolicy({ serverIp: '10.0.0.1' });
  const rows: { arch: BootClient['arch']; codes: number[]; why: RegExp | undefined }[] = [
    { arch: 'bios', codes: [0], why: undefined },
    { arch: 'uefi-x64', codes: [7], why: undefined },
    {
      arch: 'uefi-arm64',
      codes: [11],
      why: /^architecture not served: ARM64 UEFI \(client architecture 11\)/,
    },
    { arch: 'uefi-arm64-http', codes: [19], why: /^architecture not served: ARM64 UEFI/ },
    { arch: 'uefi-ia32', codes: [6], why: /^architecture not served: 32-bit UEFI \(client architecture 6\)/ },
    {
      arch: 'unknown',
      codes: [10],
      why: /^architecture not served: unknown firmware \(client architecture 10\)/,
    },
  ];
  for (const r of rows) {
    const why = p.unservedArch(client(r.arch), r.codes);
    if (r.why) assert.match(why ?? '', r.why, r.arch);
    else assert.equal(why, undefined, r.arch);
    // iPXE is always served, whatever its architecture.
    assert.equal(p.unservedArch(client(r.arch, true), r.codes), undefined);
  }
});
