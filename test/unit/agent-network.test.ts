// The agent finds the NIC the server booted by its MAC (#18 item 6), from
// /sys/class/net as the kernel lays it out (a folder written here).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { interfaceWithMac } from '../../src/agent/network.js';
import { tempDir } from '../helpers/tmp.js';

test('interfaceWithMac: the interface whose address is the MAC, whatever the case; undefined when none', async (t) => {
  const sys = tempDir(t);
  const nic = (name: string, address: string) => {
    mkdirSync(join(sys, name));
    writeFileSync(join(sys, name, 'address'), `${address}\n`);
  };
  nic('lo', '00:00:00:00:00:00');
  nic('eth0', '52:54:00:99:00:01');
  nic('eth1', '52:54:00:AB:CD:EF');
  assert.equal(await interfaceWithMac('52:54:00:99:00:01', sys), 'eth0');
  assert.equal(await interfaceWithMac('52:54:00:ab:cd:ef', sys), 'eth1');
  assert.equal(await interfaceWithMac('52:54:00:00:00:02', sys), undefined);
  assert.equal(await interfaceWithMac('52:54:00:00:00:02', join(sys, 'missing')), undefined);
});
