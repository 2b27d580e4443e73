// Two hosts on a namespace LAN, a torrent with no tracker: `get` finds the
// seeder by Local Service Discovery alone (BEP 14) and downloads from it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createTorrent } from '../../src/torrent/create.js';
import { BIN } from '../helpers/cli.js';
import { Lab, waitForOutput } from '../helpers/netns.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';

test('get finds a seeder through LSD only, with no tracker and no peer given', async (t) => {
  const dir = tempDir(t);
  const lab = new Lab(t);
  const a = lab.ns('lsd-seed');
  const b = lab.ns('lsd-get');
  lab.bridge(a, 'br0', '10.78.0.1/24');
  lab.link(a, 'br0', b, 'eth0', '10.78.0.2/24');
  // Multicast leaves by the route for 224/4; the namespaces have no default route.
  lab.ip(a, 'route', 'add', '224.0.0.0/4', 'dev', 'br0');
  lab.ip(b, 'route', 'add', '224.0.0.0/4', 'dev', 'eth0');
  mkdirSync(join(dir, 'seed'));
  const data = pseudoRandomBytes(3 * 1024 * 1024 + 5, 12);
  writeFileSync(join(dir, 'seed', 'os.img'), data);
  const { torrent, meta } = await createTorrent(join(dir, 'seed', 'os.img'), { pieceLength: 65536 });
  assert.deepEqual(meta.announce, []);
  writeFileSync(join(dir, 'os.torrent'), torrent);
  const seeder = lab.spawn(a, process.execPath, [
    BIN,
    'seed',
    join(dir, 'os.torrent'),
    join(dir, 'seed'),
    '--host',
    '10.78.0.1',
    '--port',
    '6881',
    '--lsd',
    '10.78.0.1',
    '-v',
  ]);
  await waitForOutput(seeder, /seeding [0-9a-f]{40}/, 20_000, 'seeder');
  const getter = lab.spawn(b, process.execPath, [
    BIN,
    'get',
    join(dir, 'os.torrent'),
    '-o',
    join(dir, 'got'),
    '--host',
    '10.78.0.2',
    '--port',
    '6882',
    '--lsd',
    '10.78.0.2',
  ]);
  await waitForOutput(getter, /downloaded os\.img/, 60_000, 'get over LSD');
  assert.equal(
    createHash('sha256')
      .update(readFileSync(join(dir, 'got', 'os.img')))
      .digest('hex'),
    createHash('sha256').update(data).digest('hex'),
  );
  assert.match(seeder.output(), /10\.78\.0\.2/, 'the seeder heard the client on the LAN');
});
