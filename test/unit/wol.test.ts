/** Wake-on-LAN (#17 item 2): the magic packet's bytes, the pacing, and which machines a TARGET names. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { magicPacket, wakeSchedule } from '../../src/wol/wake.js';
import { resolveTargets } from '../../src/cli/wake.js';

test('magic packet: six 0xff bytes, then the MAC sixteen times (102 bytes), from any MAC form', () => {
  const p = magicPacket('52-54-00-AB-cd-01');
  assert.equal(p.length, 102);
  assert.deepEqual([...p.subarray(0, 6)], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
  for (let i = 0; i < 16; i++)
    assert.deepEqual(
      [...p.subarray(6 + i * 6, 12 + i * 6)],
      [0x52, 0x54, 0x00, 0xab, 0xcd, 0x01],
      `copy ${i}`,
    );
  assert.deepEqual(magicPacket('525400abcd01'), p);
  assert.throws(() => magicPacket('52:54:00:ab:cd'), /not a MAC address/);
});

test('schedule: the wake-ups spread evenly over the whole time, first at 0 and last at the end', () => {
  assert.deepEqual(wakeSchedule(0, 1000), []);
  assert.deepEqual(wakeSchedule(1, 1000), [0]);
  assert.deepEqual(wakeSchedule(3, 1000), [0, 500, 1000]);
  assert.deepEqual(wakeSchedule(4, 0), [0, 0, 0, 0]);
  assert.deepEqual(wakeSchedule(5, 2000), [0, 500, 1000, 1500, 2000]);
});

test('targets: MACs in any form, host and group names (any case), --all, duplicates once; an unknown name says what was meant', () => {
  const hosts = new Map([
    ['52:54:00:00:00:01', { name: 'pc-01' }],
    ['52:54:00:00:00:02', { name: 'pc-02' }],
    ['52:54:00:00:00:03', {}],
  ]);
  const groups = [
    {
      name: 'room-b',
      macs: ['52:54:00:00:00:09'],
      ranges: [{ first: 0x525400000100, last: 0x525400000102 }],
      patterns: [[5, 2, 5, 4, 0, 0, 0, 0, 0, 0, -1, -1]],
      broadcasts: [],
    },
  ];
  const env = { hosts, groups };
  assert.deepEqual(resolveTargets(['PC-02', '52-54-00-00-00-03', '52:54:00:00:00:02'], env, false), [
    { mac: '52:54:00:00:00:02', name: 'pc-02' },
    { mac: '52:54:00:00:00:03' },
  ]);
  assert.deepEqual(
    resolveTargets([], env, true).map((t) => t.mac),
    ['52:54:00:00:00:01', '52:54:00:00:00:02', '52:54:00:00:00:03'],
  );
  assert.deepEqual(resolveTargets(['aa:bb:cc:dd:ee:ff'], env, false), [{ mac: 'aa:bb:cc:dd:ee:ff' }]);
  // A group: its listed MACs, its small range address by address, and the hosts its pattern matches.
  const warned: string[] = [];
  assert.deepEqual(
    resolveTargets(['ROOM-B'], env, false, (l) => warned.push(l)).map((t) => t.name ?? t.mac),
    [
      'pc-01',
      'pc-02',
      '52:54:00:00:00:03',
      '52:54:00:00:00:09',
      '52:54:00:00:01:00',
      '52:54:00:00:01:01',
      '52:54:00:00:01:02',
    ],
  );
  assert.match(warned.join('\n'), /room-b also matches by pattern/);
  assert.throws(
    () => resolveTargets(['pc-1'], env, false),
    /pc-1: not a MAC address, nor the name of a host or group.*did you mean pc-01\?/,
  );
  assert.throws(
    () => resolveTargets(['lab'], { hosts: new Map(), groups: [] }, false),
    /no host or group has a name/,
  );
});
