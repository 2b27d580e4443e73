/** The agent's boot-config fetch and its reporter, against a loopback HTTP server. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { isBootTorrentError } from '../../src/errors.js';
import { MAX_BOOT_CONFIG_BYTES, StepFailure, fetchBootConfig } from '../../src/agent/steps.js';
import { Reporter, peakRssBytes } from '../../src/agent/report.js';
import { memoryLogger } from '../../src/util/logger.js';
import type { TestContext } from 'node:test';

async function serve(
  t: TestContext,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<string> {
  const srv = createServer(handler);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  t.after(() => {
    srv.closeAllConnections();
    return new Promise<void>((r) => srv.close(() => r()));
  });
  const a = srv.address();
  return `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
}

const MAC = '52:54:00:00:00:01';

test('boot config: HTTP errors, broken JSON and bad fields become failures that say what to check', async (t) => {
  const replies: Record<string, [number, string]> = {
    '/a/api/v1/boot/52:54:00:00:00:01': [403, 'not allowed'],
    '/b/api/v1/boot/52:54:00:00:00:01': [200, '{not json'],
    '/c/api/v1/boot/52:54:00:00:00:01': [200, JSON.stringify({ version: 2 })],
  };
  const base = await serve(t, (req, res) => {
    const [status, body] = replies[req.url ?? ''] ?? [404, 'no'];
    res.writeHead(status).end(body);
  });
  const cases: [string, RegExp, RegExp][] = [
    [
      `${base}/a`,
      /HTTP 403, saying \(unverified\): not allowed/,
      /this MAC \(52:54:00:00:00:01\) is allowed/,
    ],
    [`${base}/b`, /is not JSON/, /same BootTorrent version/],
    [`${base}/c`, /version is 2; this agent reads version 1/, /same BootTorrent version/],
    ['http://127.0.0.1:9', /cannot reach http:\/\/127\.0\.0\.1:9\/api\/v1\/boot\//, /server runs/],
  ];
  for (const [server, error, hint] of cases) {
    await assert.rejects(
      fetchBootConfig(server, MAC),
      (err) =>
        err instanceof StepFailure &&
        isBootTorrentError(err, 'BT_ERR_AGENT') &&
        error.test(err.message) &&
        hint.test(err.hint),
      server,
    );
  }
});

test('boot config from whoever answers: a huge body is cut off at the cap, an error text cannot write escape sequences to the console', async (t) => {
  let sent = 0;
  const base = await serve(t, (req, res) => {
    if (req.url?.startsWith('/huge/')) {
      // Chunked, no Content-Length: the cap must hold while reading.
      res.writeHead(200, { 'content-type': 'application/json' });
      const chunk = Buffer.alloc(64 * 1024, 0x20);
      const more = () => {
        while (sent < 64 * 1024 * 1024 && res.write(chunk)) sent += chunk.length;
        if (sent >= 64 * 1024 * 1024) res.end();
      };
      res.on('drain', more);
      res.on('close', () => res.off('drain', more));
      more();
    } else if (req.url?.startsWith('/declared/')) {
      res.writeHead(200, { 'content-length': String(10 * MAX_BOOT_CONFIG_BYTES) });
      res.write('{');
    } else {
      res.writeHead(500).end('\x1b[2J\x1b]0;owned\x07\x9bHlooks fine\r\nboottorrent-agent: verified');
    }
  });
  const huge = await fetchBootConfig(`${base}/huge`, MAC).then(
    () => assert.fail('accepted'),
    (e: unknown) => e as StepFailure,
  );
  assert.match(huge.message, /more than the 1048576 bytes we read/);
  assert.ok(sent < 16 * 1024 * 1024, `the agent stopped reading: the server got ${sent} bytes out`);
  const declared = await fetchBootConfig(`${base}/declared`, MAC).then(
    () => assert.fail('accepted'),
    (e: unknown) => e as StepFailure,
  );
  assert.match(declared.message, /10485760 bytes, more than the 1048576/);
  const rude = await fetchBootConfig(`${base}/rude`, MAC).then(
    () => assert.fail('accepted'),
    (e: unknown) => e as StepFailure,
  );
  assert.match(rude.message, /HTTP 500, saying \(unverified\): /);
  // eslint-disable-next-line no-control-regex
  assert.doesNotMatch(rude.message, /[\x00-\x1f\x7f-\x9f]/, 'no control character reaches the console');
  assert.match(rude.message, /\\u001b\[2J/);
});

test('reporter: never throws or blocks, sends the token, coalesces progress to the newest', async (t) => {
  const got: { token: string | undefined; body: Record<string, unknown> }[] = [];
  let release: (() => void) | undefined;
  const base = await serve(t, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      got.push({
        token: req.headers['x-boottorrent-token'] as string | undefined,
        body: JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown>,
      });
      if (req.url === '/slow') release = () => res.writeHead(204).end();
      else res.writeHead(204).end();
    });
  });
  const r = new Reporter({ url: `${base}/r`, token: 'tok', minIntervalMs: 50 });
  r.send({ stage: 'downloading', os: 'x', progress: 0 });
  for (let i = 1; i <= 100; i++) r.send({ stage: 'downloading', os: 'x', progress: i / 100 });
  r.send({ stage: 'verifying', os: 'x' });
  await r.flush(5000);
  assert.ok(got.length >= 3 && got.length < 100, `coalesced: ${got.length} POSTs for 102 reports`);
  assert.equal(got[0]!.body.progress, 0, 'a new stage goes out at once');
  assert.equal(got.at(-2)!.body.progress, 1, "a stage's newest report is sent before the next stage");
  assert.equal(got.at(-1)!.body.stage, 'verifying');
  for (const g of got) assert.equal(g.token, 'tok');
  if (peakRssBytes() !== undefined) assert.equal(typeof got[0]!.body.peakRss, 'number');
  r.close();

  // A server that never answers, and one that is not there: send() returns, flush() gives up.
  const log = memoryLogger();
  const slow = new Reporter({ url: `${base}/slow`, token: 'tok', timeoutMs: 200 }, log);
  slow.send({ stage: 'booting', os: 'x' });
  await slow.flush(2000);
  release?.();
  const dead = new Reporter({ url: 'http://127.0.0.1:9/r', token: 'tok', timeoutMs: 500 }, log);
  dead.send({ stage: 'failed', error: 'x' });
  await dead.flush(2000);
  assert.ok(
    log.lines.filter((l) => l.level === 'debug' && l.msg === 'report not sent').length >= 2,
    JSON.stringify(log.lines),
  );
  slow.close();
  dead.close();
});
