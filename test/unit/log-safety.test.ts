import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fstatSync } from 'node:fs';
import { escapeLogText, memoryLogger, streamLogger, underJournal } from '../../src/util/logger.js';
import { DropLog, LineBudget } from '../../src/util/drop-log.js';

function capture(): { out: { write(s: string): void }; text: () => string } {
  let buf = '';
  return { out: { write: (s: string) => void (buf += s) }, text: () => buf };
}

// Issue #14 item 7: a TFTP file name or report body with a newline forged a
// whole log line, and escape sequences reached the sysadmin's terminal.
test('log injection: newlines, escapes and bidi marks in a message or field stay on one escaped line', () => {
  const c = capture();
  const log = streamLogger(c.out, { timestamps: false }).child('tftp');
  log.warn('read of missing file\n2026-01-01T00:00:00Z [dhcp] forged', {
    file: 'a\r\nb',
    raw: 'x\u001b[31mred',
    bare: 'pxelinux.0',
    mark: '\u202eexe.txt',
    sep: 'one\u2028two',
    obj: { k: 'v\n' },
  });
  const text = c.text();
  assert.equal(text.split('\n').length, 2, `one line: ${JSON.stringify(text)}`);
  // eslint-disable-next-line no-control-regex
  assert.ok(!/[\u0000-\u0009\u000b-\u001f\u007f\u2028\u202e]/.test(text), JSON.stringify(text));
  assert.match(text, /bare=pxelinux\.0 /);
  assert.match(text, /raw="x\\u001b\[31mred"/);
  assert.match(text, /file="a\\r\\nb"/);
  assert.equal(escapeLogText('ok'), 'ok');
});

test('DropLog: one line per source per window, carrying the count of drops it stands for', () => {
  let now = 0;
  const log = memoryLogger();
  const drops = new DropLog(log, { windowMs: 60_000, now: () => now, maxSources: 2 });
  for (let i = 0; i < 1000; i++) drops.drop('10.0.0.9', 'bad packet dropped');
  drops.drop('10.0.0.8', 'bad packet dropped');
  assert.equal(log.lines.length, 2);
  assert.equal(log.lines[0]?.fields?.dropped, 1);
  now = 61_000;
  drops.drop('10.0.0.9', 'bad packet dropped');
  assert.equal(log.lines.length, 3);
  assert.equal(log.lines[2]?.fields?.dropped, 1000, 'the 999 silent drops are counted on the next line');
  assert.equal(drops.total, 1002);
  // Bounded: a flood of made-up sources forgets the oldest.
  for (let i = 0; i < 100; i++) drops.drop(`src-${i}`, 'x');
  assert.equal(log.lines.length, 103);
});

test('LineBudget: every line up to the budget, then one line a window with the count of the rest', () => {
  let now = 0;
  const log = memoryLogger();
  const lines = new LineBudget(log, { perWindow: 3, windowMs: 60_000, now: () => now });
  for (let i = 0; i < 1000; i++) lines.info(`client ${i} asked DHCP`);
  assert.deepEqual(
    log.lines.map((l) => l.msg),
    ['client 0 asked DHCP', 'client 1 asked DHCP', 'client 2 asked DHCP'],
  );
  now = 60_000;
  lines.info('client 1000 asked DHCP');
  assert.equal(log.lines[3]?.fields?.suppressed, 997);
  assert.equal(log.lines[4]?.msg, 'client 1000 asked DHCP');
});

// Issue #19 item 3: one JSON object per line for log collectors, as safe as the text lines.
test('--log-format json: one JSON object per line with time, level, scope, msg and fields, every field escaped', () => {
  const c = capture();
  const log = streamLogger(c.out, { format: 'json', level: 'info' }).child('tftp');
  log.debug('not at this level');
  log.warn('read of missing file\nforged', {
    file: 'a\r\nb',
    mark: '\u202eexe.txt',
    sep: 'x\u2028y',
    n: 3,
    big: 10n,
  });
  log.info('plain');
  const lines = c.text().split('\n').filter(Boolean);
  assert.equal(lines.length, 2, c.text());
  // eslint-disable-next-line no-control-regex -- the characters a line must not hold
  const raw = new RegExp('[\\u0000-\\u001f\\u202e\\u2028]');
  for (const l of lines) assert.doesNotMatch(l, raw, 'no raw control, separator or bidi mark');
  const first = JSON.parse(lines[0]!) as Record<string, unknown>;
  assert.match(String(first.time), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.deepEqual(
    { ...first, time: undefined },
    {
      time: undefined,
      level: 'warn',
      scope: 'tftp',
      msg: 'read of missing file\nforged',
      fields: { file: 'a\r\nb', mark: '\u202eexe.txt', sep: 'x\u2028y', n: 3, big: '10' },
    },
  );
  assert.deepEqual(JSON.parse(lines[1]!), {
    time: (JSON.parse(lines[1]!) as { time: string }).time,
    level: 'info',
    scope: 'tftp',
    msg: 'plain',
  });
  // Without timestamps (systemd's journal adds its own): no time key.
  const d = capture();
  streamLogger(d.out, { format: 'json', timestamps: false }).error('x');
  assert.deepEqual(JSON.parse(d.text()), { level: 'error', msg: 'x' });
});

test("underJournal: true only when JOURNAL_STREAM names this very stream's device and inode", () => {
  const st = fstatSync(2);
  assert.equal(underJournal({ JOURNAL_STREAM: `${st.dev}:${st.ino}` }, 2), true);
  assert.equal(underJournal({ JOURNAL_STREAM: `${st.dev}:${st.ino + 1}` }, 2), false);
  assert.equal(underJournal({ JOURNAL_STREAM: 'garbage' }, 2), false);
  assert.equal(underJournal({}, 2), false);
});
