// Review of issue #14 (HTTP): requests a hostile client can repeat as fast as
// it likes must not each write a log line. Real sockets on loopback.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
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
