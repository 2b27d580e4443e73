// GET /metrics's text (issue #19 item 4): the Prometheus text format writer
// (src/util/prometheus.ts) case by case, escaping included; the strict
// reader the tests use (test/helpers/prometheus-text.ts) refusing what the
// format refuses; and the server's families (src/server/metrics.ts) made
// from a ClientStore, a snapshot and the listeners' counters, read back.
import { test } from 'node:test';
import { readFileSync } from 'node:fs';
import assert from 'node:assert/strict';
import type { Environment } from '../../src/env/types.js';
import { ERROR_CODES, ErrorCounts, BootTorrentError } from '../../src/errors.js';
import { CLIENT_STAGES } from '../../src/http/snapshot.js';
import type { CatalogEntry } from '../../src/server/catalog.js';
import { serverMetrics, type MetricsSources } from '../../src/server/metrics.js';
import { buildSnapshot } from '../../src/server/snapshot.js';
import { ClientStore } from '../../src/server/state.js';
import { groupSent, SENT_STAGE_OF_PART } from '../../src/server/traffic.js';
import type { SwarmState } from '../../src/tracker/server.js';
import { TRANSFER_RESULTS } from '../../src/tftp/server.js';
import {
  escapeHelp,
  escapeLabelValue,
  formatValue,
  renderMetrics,
  type MetricFamily,
} from '../../src/util/prometheus.js';
import { parseExposition, sampleValue, ExpositionError } from '../helpers/prometheus-text.js';

test('label values: backslash, double quote and line feed escaped, nothing else', () => {
  const cases: [string, string][] = [
    ['alpha', 'alpha'],
    ['', ''],
    ['a\\b', 'a\\\\b'],
    ['say "hi"', 'say \\"hi\\"'],
    ['two\nlines', 'two\\nlines'],
    ['\\"\n', '\\\\\\"\\n'],
    ['x} 1\nboottorrent_fake 2', 'x} 1\\nboottorrent_fake 2'],
    ['tab\there, cr\rhere', 'tab\there, cr\rhere'],
    ['Débian ✓', 'Débian ✓'],
  ];
  for (const [input, want] of cases) assert.equal(escapeLabelValue(input), want, JSON.stringify(input));
});

test('HELP text: backslash and line feed escaped, a quote left alone', () => {
  const cases: [string, string][] = [
    ['Bytes sent.', 'Bytes sent.'],
    ['a\\b', 'a\\\\b'],
    ['one\ntwo', 'one\\ntwo'],
    ['say "x"', 'say "x"'],
  ];
  for (const [input, want] of cases) assert.equal(escapeHelp(input), want, JSON.stringify(input));
});

test('values: integers and floats as Go reads them, +Inf, -Inf, NaN', () => {
  const cases: [number, string][] = [
    [0, '0'],
    [42, '42'],
    [-3, '-3'],
    [1.5, '1.5'],
    [2 ** 53, '9007199254740992'],
    [1e21, '1e+21'],
    [1e-7, '1e-7'],
    [Infinity, '+Inf'],
    [-Infinity, '-Inf'],
    [NaN, 'NaN'],
  ];
  for (const [input, want] of cases) {
    assert.equal(formatValue(input), want, String(input));
    // What the reader makes of it is the number again.
    const back = sampleValue(parseExposition(`# TYPE x gauge\nx ${formatValue(input)}\n`), 'x');
    assert.ok(Object.is(back, input) || (Number.isNaN(back) && Number.isNaN(input)), String(input));
  }
});

test('renderMetrics: HELP, TYPE and samples, in order, exactly', () => {
  const text = renderMetrics([
    {
      name: 'boottorrent_things_total',
      type: 'counter',
      help: 'Things\\seen\nso far.',
      samples: [
        { labels: { os: 'deb' }, value: 3 },
        { labels: { os: 'we"ird\\os\n' }, value: 1 },
      ],
    },
    { name: 'boottorrent_up', type: 'gauge', help: 'Up.', samples: [{ value: 1 }] },
    { name: 'boottorrent_empty', type: 'gauge', help: 'No series.', samples: [] },
  ]);
  assert.equal(
    text,
    [
      '# HELP boottorrent_things_total Things\\\\seen\\nso far.',
      '# TYPE boottorrent_things_total counter',
      'boottorrent_things_total{os="deb"} 3',
      'boottorrent_things_total{os="we\\"ird\\\\os\\n"} 1',
      '# HELP boottorrent_up Up.',
      '# TYPE boottorrent_up gauge',
      'boottorrent_up 1',
      '# HELP boottorrent_empty No series.',
      '# TYPE boottorrent_empty gauge',
      '',
    ].join('\n'),
  );
  const back = parseExposition(text);
  assert.equal(back.get('boottorrent_things_total')?.help, 'Things\\seen\nso far.');
  assert.equal(sampleValue(back, 'boottorrent_things_total', { os: 'we"ird\\os\n' }), 1);
  assert.equal(renderMetrics([]), '');
});

test('hostile label values read back unchanged and cannot add a series', () => {
  const hostile = [
    'x"} 1\nboottorrent_pwned 1\n#',
    '\\',
    '\\n',
    '"',
    '}{',
    'a,b="c"',
    '\u2028\u0000\u001b[31m',
  ];
  const text = renderMetrics([
    {
      name: 'boottorrent_t',
      type: 'gauge',
      help: 'T.',
      samples: hostile.map((v, i) => ({ labels: { v }, value: i })),
    },
  ]);
  const back = parseExposition(text);
  assert.deepEqual([...back.keys()], ['boottorrent_t']);
  const samples = back.get('boottorrent_t')!.samples;
  assert.deepEqual(
    samples.map((s) => s.labels.v),
    hostile,
  );
  assert.deepEqual(
    samples.map((s) => s.value),
    hostile.map((_, i) => i),
  );
  // One line per series plus HELP and TYPE: no label value made a line of its own.
  assert.equal(text.split('\n').length - 1, hostile.length + 2);
});

test('renderMetrics refuses what the format does not allow (our bug, never a broken scrape)', () => {
  const fam = (over: Partial<MetricFamily>): MetricFamily => ({
    name: 'boottorrent_x',
    type: 'gauge',
    help: 'x',
    samples: [{ value: 1 }],
    ...over,
  });
  const cases: [string, MetricFamily[], RegExp][] = [
    ['name starts with a digit', [fam({ name: '1abc' })], /metric name/],
    ['name with a dash', [fam({ name: 'boottorrent-x' })], /metric name/],
    ['name with a brace', [fam({ name: 'boottorrent_x{os="a"}' })], /metric name/],
    ['empty name', [fam({ name: '' })], /metric name/],
    ['counter without _total', [fam({ type: 'counter', name: 'boottorrent_bytes' })], /_total/],
    ['label name with a dash', [fam({ samples: [{ labels: { 'o-s': 'a' }, value: 1 }] })], /label name/],
    ['reserved label name', [fam({ samples: [{ labels: { __name__: 'a' }, value: 1 }] })], /label name/],
    [
      'series twice',
      [
        fam({
          samples: [
            { labels: { os: 'a' }, value: 1 },
            { labels: { os: 'a' }, value: 2 },
          ],
        }),
      ],
      /twice/,
    ],
    ['family twice', [fam({}), fam({})], /twice/],
  ];
  for (const [what, families, why] of cases) assert.throws(() => renderMetrics(families), why, what);
});

test('the test reader is strict: it refuses what Prometheus refuses', () => {
  const bad: [string, string][] = [
    ['no TYPE', 'x 1\n'],
    ['TYPE after the sample', '# TYPE x gauge\nx 1\n# TYPE y gauge\ny 1\nx 2\n'],
    ['second TYPE', '# TYPE x gauge\n# TYPE x counter\nx 1\n'],
    ['second HELP', '# HELP x a\n# HELP x b\n# TYPE x gauge\nx 1\n'],
    ['unknown type', '# TYPE x meter\nx 1\n'],
    ['duplicate series', '# TYPE x gauge\nx{a="1"} 1\nx{a="1"} 2\n'],
    ['duplicate series, labels reordered', '# TYPE x gauge\nx{a="1",b="2"} 1\nx{b="2",a="1"} 2\n'],
    ['label twice', '# TYPE x gauge\nx{a="1",a="2"} 1\n'],
    ['unclosed label value', '# TYPE x gauge\nx{a="1} 1\n'],
    ['bad escape', '# TYPE x gauge\nx{a="\\t"} 1\n'],
    ['unquoted value', '# TYPE x gauge\nx{a=1} 1\n'],
    ['bad label name', '# TYPE x gauge\nx{1a="1"} 1\n'],
    ['reserved label name', '# TYPE x gauge\nx{__a="1"} 1\n'],
    ['bad value', '# TYPE x gauge\nx one\n'],
    ['no value', '# TYPE x gauge\nx\n'],
    ['bad timestamp', '# TYPE x gauge\nx 1 1.5\n'],
    ['bad metric name', '# TYPE 1x gauge\n1x 1\n'],
    ['no final line feed', '# TYPE x gauge\nx 1'],
  ];
  for (const [what, text] of bad) assert.throws(() => parseExposition(text), ExpositionError, what);
  const ok = parseExposition(
    '# a comment\n\n# HELP x Help \\\\ and \\n.\n# TYPE x counter\nx 1\nx{a="\\"",b="\\\\"} +Inf 1700000000000\n',
  );
  const x = ok.get('x')!;
  assert.equal(x.type, 'counter');
  assert.equal(x.help, 'Help \\ and \n.');
  assert.deepEqual(x.samples, [
    { name: 'x', labels: {}, value: 1 },
    { name: 'x', labels: { a: '"', b: '\\' }, value: Infinity, timestamp: 1700000000000 },
  ]);
});

const env = {
  dir: '/srv/lab',
  server: { address: '10.0.0.1', interface: 'eth1', httpPort: 80 },
  dhcp: { mode: 'full' },
} as unknown as Environment;
const entry = (id: string, hash: string, length: number) =>
  ({ os: { id, name: id.toUpperCase() }, meta: { infoHashHex: hash, length } }) as unknown as CatalogEntry;
const SEEDER = 'aa'.repeat(20);
const mac = (n: number) => `52:54:00:19:04:${n.toString(16).padStart(2, '0')}`;

test('serverMetrics: clients by stage, boots and failures by OS, bytes, swarms, DHCP, TFTP, errors', () => {
  const sizes = new Map([
    ['deb', 5000],
    ['alp', 700],
  ]);
  const store = new ClientStore((os) => sizes.get(os));
  store.dhcp(mac(1), { ip: '10.0.0.21' });
  store.ipxe(mac(2), '10.0.0.22');
  store.report(mac(3), '10.0.0.23', { stage: 'downloading', os: 'deb', progress: 0.5 });
  store.report(mac(4), '10.0.0.24', { stage: 'booting', os: 'deb' });
  store.report(mac(4), '10.0.0.24', { stage: 'running', os: 'deb' }); // the same boot: counted once
  store.report(mac(5), '10.0.0.25', { stage: 'running', os: 'alp' });
  // An OS id the server does not serve, made to break the format: counted under ''.
  const evil = 'evil"} 1\nboottorrent_pwned{os="x';
  store.report(mac(6), '10.0.0.26', { stage: 'failed', os: evil, error: 'no' });
  store.report(mac(7), '10.0.0.27', { stage: 'failed', os: 'alp', error: 'bad hash' });
  store.report(mac(7), '10.0.0.27', { stage: 'failed', os: 'alp', error: 'bad hash' }); // still the same failure
  store.unserved(mac(8), 'uefi-ia32', 'architecture not served');
  // Made-up MACs in DISCOVERs for an unserved architecture: not failed boots, counted apart.
  for (let i = 20; i < 30; i++) store.unserved(mac(i), 'uefi-arm64', 'architecture not served');
  // mac(4) boots again (DHCP after running is a new boot) and gets to booting again.
  store.dhcp(mac(4), {});
  store.report(mac(4), '10.0.0.24', { stage: 'booting', os: 'deb' });

  const swarm = {
    infoHash: '11'.repeat(20),
    seeders: 2,
    leechers: 3,
    completed: 1,
    uploaded: 1000,
    downloaded: 0,
    peers: [
      { peerId: SEEDER, uploaded: 600 },
      { peerId: 'bb'.repeat(20), uploaded: 400 },
    ],
  } as unknown as SwarmState;
  const sent = groupSent({
    dhcp: 1,
    tftp: 2,
    http: { ipxe: 3, script: 4, phase1: 5, config: 6, api: 7, tracker: 8, files: 9, other: 10, total: 52 },
    tracker: 11,
    seeder: 12,
  });
  const snapshot = buildSnapshot({
    startedAt: 1_700_000_000_000,
    environment: env,
    store,
    library: {
      entries: () => [entry('deb', '11'.repeat(20), 5000), entry('alp', '22'.repeat(20), 700)],
      stats: (os) => (os === 'deb' ? { uploaded: 650 } : { uploaded: 50 }),
      seederPeerId: SEEDER,
    },
    tracker: { swarms: () => [swarm] },
    sent: () => sent,
  });
  const errors = new ErrorCounts();
  errors.count(new BootTorrentError('BT_ERR_TFTP_CODEC', 'x'));
  errors.count(new BootTorrentError('BT_ERR_TFTP_CODEC', 'y'));
  errors.count(new BootTorrentError('BT_ERR_BOOT_CONFIG', 'z'));
  errors.count(new Error('not ours: no code, not counted'));
  const sources: MetricsSources = {
    snapshot,
    version: '1.2.3-"test"',
    processStartSeconds: 1_699_999_999.5,
    boots: store.boots,
    failures: store.failures,
    unserved: store.unservedFirmware,
    dhcp: { leases: 4, replies: { offer: 6, ack: 5 } },
    tftp: { active: 1, results: { ok: 3, refused: 2 } },
    errors: (code) => errors.get(code),
  };
  const text = renderMetrics(serverMetrics(sources));
  assert.doesNotMatch(text, /evil|pwned/, 'a client-written OS id is never a label');
  const m = parseExposition(text);

  assert.equal(sampleValue(m, 'boottorrent_build_info', { version: '1.2.3-"test"' }), 1);
  assert.equal(sampleValue(m, 'process_start_time_seconds'), 1_699_999_999.5);

  // Every stage is a series, 0 or not; the counts are the rows the store holds.
  const want: Record<string, number> = {
    dhcp: 1,
    ipxe: 1,
    downloading: 1,
    booting: 1,
    running: 1,
    failed: 13, // two failed boots, eleven machines of an unserved architecture
  };
  for (const stage of CLIENT_STAGES)
    assert.equal(sampleValue(m, 'boottorrent_clients', { stage }), want[stage] ?? 0, stage);
  assert.equal(m.get('boottorrent_clients')!.samples.length, CLIENT_STAGES.length);
  assert.equal(m.get('boottorrent_clients')!.type, 'gauge');

  assert.equal(sampleValue(m, 'boottorrent_boots_total', { os: 'deb' }), 2);
  assert.equal(sampleValue(m, 'boottorrent_boots_total', { os: 'alp' }), 1);
  assert.equal(m.get('boottorrent_boots_total')!.samples.length, 2, 'no boot without an OS served');
  assert.equal(sampleValue(m, 'boottorrent_boot_failures_total', { os: 'deb' }), 0);
  assert.equal(sampleValue(m, 'boottorrent_boot_failures_total', { os: 'alp' }), 1);
  assert.equal(sampleValue(m, 'boottorrent_boot_failures_total', { os: '' }), 1, 'the made-up OS id only');
  assert.equal(sampleValue(m, 'boottorrent_unserved_firmware_total', { arch: 'uefi-ia32' }), 1);
  assert.equal(sampleValue(m, 'boottorrent_unserved_firmware_total', { arch: 'uefi-arm64' }), 10);

  // Bytes by stage and part: the parts status shows, each under its stage; the stage sums are status's.
  const sentFamily = m.get('boottorrent_server_sent_bytes_total')!;
  assert.equal(sentFamily.type, 'counter');
  assert.deepEqual(
    Object.fromEntries(sentFamily.samples.map((s) => [s.labels.part, s.value])),
    snapshot.totals.sent.parts,
  );
  for (const s of sentFamily.samples)
    assert.equal(s.labels.stage, SENT_STAGE_OF_PART[s.labels.part as keyof typeof SENT_STAGE_OF_PART]);
  for (const stage of ['phase1', 'os', 'other'] as const)
    assert.equal(
      sentFamily.samples.filter((s) => s.labels.stage === stage).reduce((n, s) => n + s.value, 0),
      snapshot.totals.sent[stage],
      stage,
    );

  assert.equal(sampleValue(m, 'boottorrent_seeder_payload_bytes_total', { os: 'deb' }), 650);
  assert.equal(sampleValue(m, 'boottorrent_peer_sent_bytes_total', { os: 'deb' }), 400);
  assert.equal(sampleValue(m, 'boottorrent_peer_sent_bytes_total', { os: 'alp' }), 0);
  assert.equal(sampleValue(m, 'boottorrent_swarm_peers', { os: 'deb' }), 5);
  assert.equal(sampleValue(m, 'boottorrent_swarm_seeders', { os: 'deb' }), 2);
  assert.equal(sampleValue(m, 'boottorrent_swarm_peers', { os: 'alp' }), 0);

  assert.equal(sampleValue(m, 'boottorrent_dhcp_leases'), 4);
  assert.equal(sampleValue(m, 'boottorrent_dhcp_replies_total', { type: 'offer' }), 6);
  assert.equal(sampleValue(m, 'boottorrent_dhcp_replies_total', { type: 'ack' }), 5);
  assert.equal(sampleValue(m, 'boottorrent_dhcp_replies_total', { type: 'nak' }), 0);
  for (const result of TRANSFER_RESULTS)
    assert.equal(
      sampleValue(m, 'boottorrent_tftp_transfers_total', { result }),
      result === 'ok' ? 3 : result === 'refused' ? 2 : 0,
      result,
    );
  assert.equal(sampleValue(m, 'boottorrent_tftp_transfers_active'), 1);

  for (const code of ERROR_CODES)
    assert.equal(
      sampleValue(m, 'boottorrent_errors_total', { code }),
      code === 'BT_ERR_TFTP_CODEC' ? 2 : code === 'BT_ERR_BOOT_CONFIG' ? 1 : 0,
      code,
    );

  // Names: ours are boottorrent_, counters end in _total, byte counts in _bytes_total.
  for (const f of m.values()) {
    assert.ok(f.help && f.help.length > 0, `${f.name} has HELP`);
    if (f.name !== 'process_start_time_seconds') assert.match(f.name, /^boottorrent_/);
    if (f.type === 'counter') assert.match(f.name, /_total$/);
    if (/bytes/.test(f.name)) assert.match(f.name, /_bytes(_total)?$/);
  }
});

test('serverMetrics before anything happened: every fixed series at 0, no OS series', () => {
  const snapshot = buildSnapshot({
    startedAt: 0,
    environment: env,
    store: new ClientStore(),
    library: { entries: () => [], stats: () => undefined, seederPeerId: undefined },
  });
  const m = parseExposition(
    renderMetrics(
      serverMetrics({
        snapshot,
        version: 'v',
        processStartSeconds: 1,
        boots: new Map(),
        failures: new Map(),
        unserved: new Map(),
        dhcp: { leases: 0, replies: {} },
        tftp: { active: 0, results: {} },
        errors: () => 0,
      }),
    ),
  );
  for (const stage of CLIENT_STAGES) assert.equal(sampleValue(m, 'boottorrent_clients', { stage }), 0);
  assert.equal(m.get('boottorrent_boots_total')!.samples.length, 0);
  assert.equal(
    m.get('boottorrent_server_sent_bytes_total')!.samples.length,
    Object.keys(SENT_STAGE_OF_PART).length,
  );
  assert.equal(m.get('boottorrent_errors_total')!.samples.length, ERROR_CODES.length);
  for (const f of m.values())
    for (const s of f.samples)
      if (f.name !== 'boottorrent_build_info' && f.name !== 'process_start_time_seconds')
        assert.equal(s.value, 0, f.name);
});

test('docs/deployment.md lists every metric the server serves, with its type and labels, and no other', () => {
  const doc = readFileSync(new URL('../../../docs/deployment.md', import.meta.url), 'utf8');
  const section = /### Monitoring with Prometheus\n([\s\S]*?)\n## /.exec(doc)?.[1];
  assert.ok(section, 'the section is there');
  const documented = [...section.matchAll(/^\| `([a-z_]+)` +\| (counter|gauge) +\| ([^|]*)\|/gm)].map(
    (m) => ({
      name: m[1]!,
      type: m[2]!,
      labels: [...m[3]!.matchAll(/`([a-z_]+)`/g)].map((l) => l[1]!),
    }),
  );
  const served = serverMetrics({
    snapshot: buildSnapshot({
      startedAt: 0,
      environment: env,
      store: new ClientStore(),
      library: {
        entries: () => [entry('deb', '11'.repeat(20), 1)],
        stats: () => undefined,
        seederPeerId: undefined,
      },
      // A satellite's: its upstream metrics are listed too.
      upstream: { url: 'http://10.0.0.1', reachable: true, lastContact: 1, error: null, fetching: [] },
    }),
    version: 'v',
    processStartSeconds: 1,
    boots: new Map([['deb', 1]]),
    failures: new Map([['deb', 1]]),
    unserved: new Map([['uefi-ia32', 1]]),
    dhcp: { leases: 0, replies: {} },
    tftp: { active: 0, results: {} },
    errors: () => 0,
  }).map((f) => ({ name: f.name, type: f.type, labels: Object.keys(f.samples[0]?.labels ?? {}) }));
  assert.deepEqual(documented, served);
});

test("serverMetrics: a satellite's upstream (up, last contact, fetching); none on a server that is not one", () => {
  const metricsOf = (upstream?: Parameters<typeof buildSnapshot>[0]['upstream']) =>
    parseExposition(
      renderMetrics(
        serverMetrics({
          snapshot: buildSnapshot({
            startedAt: 0,
            environment: env,
            store: new ClientStore(),
            library: { entries: () => [], stats: () => undefined, seederPeerId: undefined },
            ...(upstream ? { upstream } : {}),
          }),
          version: 'v',
          processStartSeconds: 1,
          boots: new Map(),
          failures: new Map(),
          unserved: new Map(),
          dhcp: { leases: 0, replies: {} },
          tftp: { active: 0, results: {} },
          errors: () => 0,
        }),
      ),
    );
  assert.equal(metricsOf().has('boottorrent_upstream_up'), false);
  const url = { url: 'http://10.0.0.1:8080' };
  const down = metricsOf({
    ...url,
    reachable: false,
    lastContact: 1_700_000_000_500,
    error: 'ECONNREFUSED',
    fetching: [{ id: 'deb', progress: 0.5 }],
  });
  assert.equal(sampleValue(down, 'boottorrent_upstream_up', url), 0);
  assert.equal(
    sampleValue(down, 'boottorrent_upstream_last_contact_timestamp_seconds', url),
    1_700_000_000.5,
  );
  assert.equal(sampleValue(down, 'boottorrent_upstream_fetching', url), 1);
  const up = metricsOf({ ...url, reachable: true, lastContact: null, error: null, fetching: [] });
  assert.equal(sampleValue(up, 'boottorrent_upstream_up', url), 1);
  assert.equal(sampleValue(up, 'boottorrent_upstream_last_contact_timestamp_seconds', url), 0);
});
