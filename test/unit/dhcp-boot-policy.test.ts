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
  assert.deepEqual(p.bootFor(client('uefi-arm64')), {
    kind: 'tftp',
    nextServer: '10.0.0.1',
    file: 'ipxe-arm64.efi',
  });
  assert.deepEqual(p.bootFor(client('uefi-x64-http')), { kind: 'http', url: 'http://10.0.0.1/ipxe.efi' });
  assert.deepEqual(p.bootFor(client('uefi-arm64-http')), {
    kind: 'http',
    url: 'http://10.0.0.1/ipxe-arm64.efi',
  });
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
