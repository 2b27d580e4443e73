// Our tracker client against a real opentracker (Debian package), over HTTP
// and UDP. Debian builds opentracker with a whitelist (README.Debian), so the
// test writes one with its infohash; opentracker refuses to run as root and
// chroots to -d, so the folder must be readable by `nobody`.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { chmodSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { isBootTorrentError } from '../../src/errors.js';
import { TrackerClient } from '../../src/tracker/client.js';
import type { AnnounceRequest } from '../../src/tracker/types.js';
import { requireProgram } from '../helpers/programs.js';
import { tempDir } from '../helpers/tmp.js';

/** A port number free for both TCP and UDP on 127.0.0.1 right now. */
async function freeTcpUdpPort(): Promise<number> {
  for (;;) {
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const addr = srv.address();
    const port = typeof addr === 'object' && addr ? addr.port : 0;
    const udp = createSocket('udp4');
    const ok = await new Promise<boolean>((resolve) => {
      udp.once('error', () => resolve(false));
      udp.bind(port, '127.0.0.1', () => resolve(true));
    });
    udp.close();
    await new Promise<void>((r) => srv.close(() => r()));
    if (ok) return port;
  }
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  const done = once(child, 'exit').then(() => undefined);
  child.kill('SIGTERM');
  const hard = setTimeout(() => child.kill('SIGKILL'), 3000);
  return done.finally(() => clearTimeout(hard));
}

const INFO_HASH = createHash('sha1').update('opentracker interop').digest();
const NOT_LISTED = createHash('sha1').update('not whitelisted').digest();

function req(peer: string, port: number, left: number, infoHash = INFO_HASH): AnnounceRequest {
  return {
    infoHash,
    peerId: Buffer.from(peer.padEnd(20, 'x').slice(0, 20), 'latin1'),
    port,
    uploaded: 0,
    downloaded: 0,
    left,
    event: 'started',
  };
}

test('our client announces and scrapes against a real opentracker over HTTP and UDP', async (t) => {
  const bin = requireProgram('opentracker', 'opentracker');
  const dir = tempDir(t, 'bt-opentracker-');
  chmodSync(dir, 0o755);
  writeFileSync(join(dir, 'whitelist.txt'), `${INFO_HASH.toString('hex')}\n`, { mode: 0o644 });
  const port = await freeTcpUdpPort();
  const child = spawn(
    bin,
    [
      '-i',
      '127.0.0.1',
      '-p',
      String(port),
      '-P',
      String(port),
      '-d',
      dir,
      '-w',
      'whitelist.txt',
      '-u',
      'nobody',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  t.after(() => stopChild(child));

  const client = new TrackerClient({ udpRetransmitBaseMs: 250 });
  t.after(() => client.close());
  const http = `http://127.0.0.1:${port}/announce`;
  const udp = `udp://127.0.0.1:${port}/announce`;

  // Wait until opentracker answers HTTP (it binds right after start).
  for (let i = 0; ; i++) {
    try {
      await client.scrape(http, { infoHashes: [INFO_HASH] }, { timeoutMs: 2000 });
      break;
    } catch (err) {
      if (child.exitCode !== null || i > 50)
        throw new Error(`opentracker did not come up: ${output}`, { cause: err });
      await sleep(100);
    }
  }

  for (const [url, a, b] of [
    [http, 7101, 7102],
    [udp, 7201, 7202],
  ] as const) {
    const first = await client.announce(url, req(`-BT0001-${a}`, a, 1000), { timeoutMs: 10_000 });
    assert.ok(first.interval > 0);
    const second = await client.announce(url, req(`-BT0001-${b}`, b, 0), { timeoutMs: 10_000 });
    // opentracker may include the asking peer itself; the other one must be there.
    assert.ok(
      second.peers.some((p) => p.ip === '127.0.0.1' && p.port === a),
      `${url}: expected 127.0.0.1:${a} in ${JSON.stringify(second.peers)}`,
    );
    const again = await client.announce(url, req(`-BT0001-${a}`, a, 1000), { timeoutMs: 10_000 });
    assert.ok(
      again.peers.some((p) => p.ip === '127.0.0.1' && p.port === b),
      `${url}: expected 127.0.0.1:${b}`,
    );
  }

  // Four peers announced (two per transport); two of them seeders.
  for (const url of [http, udp]) {
    const s = await client.scrape(url, { infoHashes: [INFO_HASH] }, { timeoutMs: 10_000 });
    assert.deepEqual(
      s.files.get(INFO_HASH.toString('hex')),
      { complete: 2, downloaded: 0, incomplete: 2 },
      url,
    );
  }

  // An infohash missing from the whitelist is refused: over HTTP with
  // opentracker's failure reason; over UDP opentracker sends no reply at all.
  await assert.rejects(
    client.announce(http, req('-BT0001-zz', 7301, 1, NOT_LISTED), { timeoutMs: 10_000 }),
    (err: unknown) =>
      isBootTorrentError(err, 'BT_ERR_TRACKER_FAILURE') && /not authorized/i.test(err.message),
  );
  await assert.rejects(
    client.announce(udp, req('-BT0001-zz', 7301, 1, NOT_LISTED), { timeoutMs: 1500 }),
    (err: unknown) =>
      isBootTorrentError(err, 'BT_ERR_TRACKER_FAILURE') || isBootTorrentError(err, 'BT_ERR_TRACKER_TIMEOUT'),
  );
});
