// Review of issue #14 (HTTP): requests a hostile client can repeat as fast as
// it likes must not each write a log line. Real sockets on loopback.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { connect, type Server as NetServer } from 'node:net';
import { truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/tmp.js';
import { BootHttpServer } from '../../src/http/server.js';
import type { LogFields, Logger } from '../../src/util/logger.js';

function get(port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end();
  });
}

test('boot script flood without a MAC or for a refused MAC: one log line per source, not one per request', async (t) => {
  const lines: { level: string; msg: string; fields: LogFields }[] = [];
  const logger: Logger = {
    debug: () => {},
    info: (msg, fields = {}) => lines.push({ level: 'info', msg, fields }),
    warn: (msg, fields = {}) => lines.push({ level: 'warn', msg, fields }),
    error: (msg, fields = {}) => lines.push({ level: 'error', msg, fields }),
    child: () => logger,
  };
  const server = new BootHttpServer(
    { host: '127.0.0.1', port: 0 },
    {
      logger,
      policy: {
        phaseOneFor: () => ({ refused: 'not in the allow list' }),
        bootConfigFor: () => undefined,
      },
    },
  );
  const port = await server.listen();
  t.after(() => server.close());
  lines.length = 0;
  const n = 40;
  for (let i = 0; i < n; i++) {
    assert.equal(await get(port, `/boot.ipxe?mac=junk${i}`), 200);
    assert.equal(
      await get(port, `/boot.ipxe?mac=52:54:00:00:00:${(i % 100).toString().padStart(2, '0')}`),
      200,
    );
  }
  assert.ok(lines.length <= 4, `${2 * n} bad requests wrote ${lines.length} lines`);
  assert.ok(lines.length >= 1, 'the first one is logged');
});

test('client that asks for a large file and stops reading held its connection forever: closed once nothing moves', async (t) => {
  const dir = tempDir(t, 'bt-http-review-');
  const big = join(dir, 'big.bin');
  // Sparse, and larger than loopback's socket buffers can hold (tcp_rmem may allow 32 MiB).
  writeFileSync(big, '');
  truncateSync(big, 256 * 1024 * 1024);
  const server = new BootHttpServer(
    { host: '127.0.0.1', port: 0, files: { '/big': big }, limits: { stalledConnectionMs: 1_000 } },
    { policy: { phaseOneFor: () => ({ refused: 'no' }), bootConfigFor: () => undefined } },
  );
  const port = await server.listen();
  t.after(() => server.close());
  const c = connect({ host: '127.0.0.1', port }, () => {
    c.write('GET /big HTTP/1.1\r\nHost: x\r\n\r\n');
    c.pause(); // never read: the server's writes stop once the socket buffers are full
  });
  t.after(() => c.destroy());
  c.on('error', () => {});
  // The client, not reading, would not see the close behind the queued data:
  // watch the server's side, where the socket and its descriptor are held.
  const http = (server as unknown as { server: NetServer }).server;
  const count = () => new Promise<number>((r) => http.getConnections((_, n) => r(n)));
  const started = Date.now();
  while ((await count()) === 0 && Date.now() - started < 20_000) await new Promise((r) => setTimeout(r, 20));
  assert.equal(await count(), 1, 'the request was accepted');
  let open = 1;
  while (open > 0 && Date.now() - started < 30_000) {
    await new Promise((r) => setTimeout(r, 100));
    open = await count();
  }
  assert.equal(open, 0, 'the stalled connection is closed');
});
