/**
 * `boottorrent wake` on a namespace LAN (#17 item 2): the server's namespace
 * has the served bridge br0 and a second link (uplink); tcpdump captures on
 * both while `wake` wakes two hosts by name and one by MAC over --spread 1.
 * Checked in the capture: every magic packet's bytes (Ethernet broadcast,
 * from the served address to 255.255.255.255, UDP 9, six 0xff and the MAC
 * sixteen times), three per machine, the machines' first packets at least
 * the spread's step apart, and nothing on the other link.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NetLab, labEnvYaml } from '../../src/demo/lab.js';
import { magicPacket } from '../../src/wol/wake.js';
import { BIN } from '../helpers/cli.js';
import { removedWithTest } from '../helpers/netns.js';
import { requireProgram } from '../helpers/programs.js';
import { onProcessEnd, stopSync } from '../helpers/reaper.js';
import { tempDir } from '../helpers/tmp.js';
import { childEnded } from '../helpers/wait.js';

const LAN = '10.76.0';

interface Frame {
  ms: number;
  data: Buffer;
}

/** The frames of a classic pcap file (Ethernet link type). */
function readPcap(buf: Buffer): Frame[] {
  if (buf.length < 24) return [];
  const magic = buf.readUInt32LE(0);
  const nano = magic === 0xa1b23c4d;
  if (magic !== 0xa1b2c3d4 && !nano)
    throw new Error(`not a little-endian pcap file (magic ${magic.toString(16)})`);
  assert.equal(buf.readUInt32LE(20), 1, 'Ethernet link type');
  const frames: Frame[] = [];
  for (let off = 24; off + 16 <= buf.length;) {
    const sec = buf.readUInt32LE(off);
    const frac = buf.readUInt32LE(off + 4);
    const len = buf.readUInt32LE(off + 8);
    frames.push({
      ms: sec * 1000 + (nano ? frac / 1e6 : frac / 1e3),
      data: buf.subarray(off + 16, off + 16 + len),
    });
    off += 16 + len;
  }
  return frames;
}

test('wake: magic packets by host name and MAC leave the served interface only, as broadcasts, paced over --spread', async (t) => {
  const tcpdump = requireProgram('tcpdump', 'tcpdump');
  const dir = tempDir(t, 'bt-wake-');
  const env = join(dir, 'env');
  mkdirSync(join(env, 'oss', 'tool'), { recursive: true });
  writeFileSync(join(env, 'oss', 'tool', 'run.sh'), '#!/bin/sh\necho hi\n');
  chmodSync(join(env, 'oss', 'tool', 'run.sh'), 0o755);
  writeFileSync(join(env, 'oss', 'tool', 'config.yaml'), 'name: Tool\nmethod: bin\nbin: run.sh\n');
  const macs = ['52:54:00:76:00:01', '52:54:00:76:00:02', '52:54:00:76:00:03'];
  writeFileSync(
    join(env, 'Boottorrent.yaml'),
    labEnvYaml({
      lan: LAN,
      range: [100, 200],
      defaultOs: 'tool',
      timeout: 0,
      seedTime: 0,
      hosts: { [macs[0]!]: '{ name: pc-01 }', [macs[1]!]: '{ name: pc-02 }' },
    }),
  );
  const lab = removedWithTest(t, new NetLab('wol', `${LAN}.1/24`));
  lab.linkToHost('10.76.255.1/30', '10.76.255.2/30');

  const capture = (iface: string) => {
    const file = join(dir, `${iface}.pcap`);
    const child = spawn(
      'ip',
      [
        'netns',
        'exec',
        lab.ns,
        tcpdump,
        '-i',
        iface,
        '--immediate-mode',
        '-U',
        '-n',
        '-w',
        file,
        'udp port 9',
      ],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    const forget = onProcessEnd(() => stopSync(child.pid, 'SIGKILL', 0));
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const listening = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`tcpdump on ${iface} did not start: ${err}`)), 20_000);
      child.stderr.on('data', () => {
        if (/listening on/.test(err)) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    const stop = async () => {
      child.kill('SIGINT');
      await childEnded(child);
      forget();
      return readPcap(readFileSync(file));
    };
    t.after(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    return { listening, stop };
  };
  const served = capture('br0');
  const other = capture('uplink');
  await Promise.all([served.listening, other.listening]);

  const woke = spawn(
    'ip',
    [
      'netns',
      'exec',
      lab.ns,
      process.execPath,
      BIN,
      'wake',
      '--env',
      env,
      '--spread',
      '1',
      'pc-01',
      'PC-02',
      macs[2]!,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  woke.stdout.on('data', (d: Buffer) => (out += d.toString()));
  woke.stderr.on('data', (d: Buffer) => (out += d.toString()));
  const { code } = await childEnded(woke);
  assert.equal(code, 0, out);
  assert.match(out, /woke pc-01 \(52:54:00:76:00:01\) \[1\/3\]/);
  assert.match(out, /woke pc-02 \(52:54:00:76:00:02\) \[2\/3\]/);
  assert.match(out, /woke 52:54:00:76:00:03 \[3\/3\]/);
  // tcpdump -U writes each packet as it comes; give the last one a moment.
  await new Promise((r) => setTimeout(r, 500));
  const frames = await served.stop();
  const elsewhere = await other.stop();
  assert.equal(elsewhere.length, 0, 'nothing left by the other link');

  const firstAt: number[] = [];
  for (const [i, mac] of macs.entries()) {
    const want = magicPacket(mac);
    const mine = frames.filter(
      (f) => f.data.length >= 42 + 102 && f.data.subarray(42, 42 + 102).equals(want),
    );
    assert.equal(mine.length, 3, `three packets for ${mac}`);
    for (const f of mine) {
      assert.equal(f.data.subarray(0, 6).toString('hex'), 'ffffffffffff', 'Ethernet broadcast');
      assert.equal(f.data.readUInt16BE(12), 0x0800, 'IPv4');
      assert.equal(f.data[23], 17, 'UDP');
      assert.equal([...f.data.subarray(26, 30)].join('.'), `${LAN}.1`, 'from the served address');
      assert.equal([...f.data.subarray(30, 34)].join('.'), '255.255.255.255');
      assert.equal(f.data.readUInt16BE(36), 9, 'UDP port 9');
      assert.equal(f.data.readUInt16BE(38), 8 + 102, 'UDP length: the 102-byte magic packet');
    }
    firstAt[i] = mine[0]!.ms;
  }
  assert.equal(frames.length, 9, 'no other packet');
  // --spread 1 over three machines: 0, 0.5 and 1 s. Timers never fire early.
  for (let i = 1; i < firstAt.length; i++)
    assert.ok(
      firstAt[i]! - firstAt[i - 1]! >= 450,
      `machine ${i + 1} woke ${firstAt[i]! - firstAt[i - 1]!} ms after the one before`,
    );
});
