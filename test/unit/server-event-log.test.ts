// start's client log (src/server/event-log.ts) on a real ClientStore: one
// line per stage, 25/50/75 % once each, and a flood of made-up DHCP
// clients bounded to a budget of lines.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { logClientEvents } from '../../src/server/event-log.js';
import { ClientStore } from '../../src/server/state.js';
import type { LogFields, Logger } from '../../src/util/logger.js';

function recorder(): { logger: Logger; lines: { level: string; msg: string; fields: LogFields }[] } {
  const lines: { level: string; msg: string; fields: LogFields }[] = [];
  const logger: Logger = {
    debug: (msg, fields = {}) => lines.push({ level: 'debug', msg, fields }),
    info: (msg, fields = {}) => lines.push({ level: 'info', msg, fields }),
    warn: (msg, fields = {}) => lines.push({ level: 'warn', msg, fields }),
    error: (msg, fields = {}) => lines.push({ level: 'error', msg, fields }),
    child: () => logger,
  };
  return { logger, lines };
}

const MAC = '52:54:00:00:00:01';

test('event log: one line per stage, each quarter of the download once, the OS as a field', () => {
  const store = new ClientStore(() => 1000);
  const { logger, lines } = recorder();
  logClientEvents(store, logger);
  store.dhcp(MAC, { ip: '10.0.0.100', firmware: 'bios' });
  store.ipxe(MAC, '10.0.0.100');
  store.phase1(MAC);
  store.report(MAC, '10.0.0.100', { stage: 'menu' });
  for (const progress of [0, 0.1, 0.3, 0.3, 0.55, 0.8, 0.9, 1])
    store.report(MAC, '10.0.0.100', { stage: 'downloading', os: 'deb', progress, peers: 2 });
  store.report(MAC, '10.0.0.100', { stage: 'seeding', os: 'deb', progress: 1 });
  store.report(MAC, '10.0.0.100', { stage: 'booting', os: 'deb', progress: 1 });
  const who = `client ${MAC} (10.0.0.100)`;
  assert.deepEqual(
    lines.map((l) => l.msg),
    [
      `client ${MAC} asked DHCP (bios)`.replace(`client ${MAC}`, who),
      `${who} runs iPXE: sending phase 1`,
      `${who} loads phase 1`,
      `${who} shows the menu`,
      `${who} chose an OS: downloading`,
      `client ${MAC} 25 % (2 peers)`,
      `client ${MAC} 50 % (2 peers)`,
      `client ${MAC} 75 % (2 peers)`,
      `${who} verified its OS; seeding before it boots`,
      lines.at(-1)!.msg,
    ],
  );
  assert.match(
    lines.at(-1)!.msg,
    new RegExp(`^client ${MAC} \\(10\\.0\\.0\\.100\\) boots after \\d+\\.\\d s$`),
  );
  assert.deepEqual(lines[5]!.fields, { os: 'deb' });
});

test('event log: a failure is a warning with the reported error as a field', () => {
  const store = new ClientStore();
  const { logger, lines } = recorder();
  logClientEvents(store, logger);
  store.report(MAC, '10.0.0.100', { stage: 'failed', error: 'disk full\nforged line' });
  const last = lines.at(-1)!;
  assert.equal(last.level, 'warn');
  assert.equal(last.msg, `client ${MAC} (10.0.0.100) failed`);
  assert.deepEqual(last.fields, { error: 'disk full\nforged line' });
});

test('event log: DHCP from made-up MACs by the thousand logs at most a budget of lines', () => {
  const store = new ClientStore();
  const { logger, lines } = recorder();
  logClientEvents(store, logger);
  for (let i = 0; i < 1000; i++)
    store.dhcp(
      `02:00:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`,
      {},
    );
  const asked = lines.filter((l) => l.msg.includes('asked DHCP')).length;
  assert.ok(asked >= 1 && asked <= 100, `${asked} lines for 1000 made-up clients`);
});

test('event log: an architecture not served is one warning per client, and a flood of them stays within the budget', () => {
  const store = new ClientStore();
  const { logger, lines } = recorder();
  logClientEvents(store, logger);
  const why = 'architecture not served: 32-bit UEFI (client architecture 6)';
  // The firmware retries its DHCP: one row, one line.
  for (let i = 0; i < 5; i++) store.unserved(MAC, 'uefi-ia32', why);
  const mine = lines.filter((l) => l.msg === `client ${MAC} failed`);
  assert.equal(mine.length, 1);
  assert.equal(mine[0]!.level, 'warn');
  assert.deepEqual(mine[0]!.fields, { error: why });
  const row = store.list().find((c) => c.mac === MAC)!;
  assert.equal(row.stage, 'failed');
  assert.equal(row.firmware, 'uefi-ia32');
  assert.equal(row.error, why);
  // Made-up MACs claiming an architecture we do not serve: bounded like DHCP lines.
  for (let i = 0; i < 1000; i++)
    store.unserved(
      `02:00:00:01:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`,
      'uefi-ia32',
      why,
    );
  const failed = lines.filter((l) => l.msg.endsWith(' failed')).length;
  assert.ok(failed <= 100, `${failed} failure lines for 1000 made-up clients`);
});

test('a spoofed firmware DISCOVER with a working client\'s MAC does not mark it "architecture not served"', () => {
  const store = new ClientStore();
  const { logger, lines } = recorder();
  logClientEvents(store, logger);
  store.report(MAC, '10.0.0.100', { stage: 'downloading', os: 'linux', progress: 0.3 });
  const before = lines.length;
  store.unserved(MAC, 'uefi-ia32', 'architecture not served: 32-bit UEFI (client architecture 6)');
  const row = store.list().find((c) => c.mac === MAC)!;
  assert.equal(row.stage, 'downloading');
  assert.equal(row.error, null);
  assert.equal(lines.length, before, 'nothing logged');
});
