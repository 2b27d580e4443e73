// The command-line contract: exit codes 0/1/2, one clear message for user
// errors (never a stack trace), --json shapes, clean stop on SIGTERM/SIGINT.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { BIN, exited, runCli, startCli } from '../helpers/cli.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';
import { parseTorrent } from '../../src/torrent/metainfo.js';
import { announce } from '../../src/tracker/client.js';

const noStack = (s: string) => assert.doesNotMatch(s, /\n\s+at /, 'no stack trace for a user error');

test('torrent create writes a valid torrent and torrent info --json describes it', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'img.bin'), pseudoRandomBytes(200_000, 9));
  const out = join(dir, 'img.torrent');
  const r = await runCli([
    'torrent',
    'create',
    join(dir, 'img.bin'),
    '-o',
    out,
    '--piece-length',
    '64K',
    '--announce',
    'http://127.0.0.1:6969/announce',
    '--announce',
    'udp://127.0.0.1:6969',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const meta = parseTorrent(readFileSync(out));
  assert.match(r.stdout, new RegExp(`infohash\\s+${meta.infoHashHex}`));
  assert.deepEqual(meta.announce, [['http://127.0.0.1:6969/announce'], ['udp://127.0.0.1:6969']]);
  assert.deepEqual(readdirSync(dir).sort(), ['img.bin', 'img.torrent'], 'no temporary file left');

  const info = await runCli(['torrent', 'info', out, '--json']);
  assert.equal(info.code, 0);
  const json = JSON.parse(info.stdout) as Record<string, unknown>;
  assert.deepEqual(
    {
      infoHash: json.infoHash,
      name: json.name,
      pieceLength: json.pieceLength,
      length: json.length,
      files: json.files,
    },
    {
      infoHash: meta.infoHashHex,
      name: 'img.bin',
      pieceLength: 65536,
      length: 200_000,
      files: [{ path: 'img.bin', length: 200_000 }],
    },
  );

  const again = await runCli(['torrent', 'create', join(dir, 'img.bin'), '-o', out]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /img.torrent already exists: pass --force/);
  noStack(again.stderr);
});

test('user errors exit 1 with one clear message; usage errors exit 2', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'not.torrent'), 'd4:infoi1ee');
  const cases: [string[], number, RegExp][] = [
    [['torrent', 'info', join(dir, 'missing.torrent')], 1, /cannot read .*missing.torrent: no such file/],
    [['torrent', 'info', join(dir, 'not.torrent')], 1, /not.torrent: info is missing or not a dictionary/],
    [['torrent', 'create', join(dir, 'nothing-here')], 1, /no such file or folder/],
    [['torrent', 'create', dir, '--piece-length', '1000'], 1, /not a power of two/],
    [['torrent', 'create', dir, '--piece-length', 'lots'], 2, /--piece-length: "lots" is not a size/],
    [['torrent', 'create', dir, '--announce', 'ftp://x'], 2, /not an http:\/\/, https:\/\/ or udp:\/\/ URL/],
    [['torrent', 'create'], 2, /exactly one <path>/],
    [['torrent', 'frob'], 2, /unknown subcommand 'frob'/],
    [
      ['torrent', 'info', 'x', '--bogus'],
      2,
      /^boottorrent torrent: unknown option --bogus \(`boottorrent torrent --help` lists the options\)\n$/,
    ],
    [['tracker', '--port', '99999'], 2, /not a port/],
    [['frobnicate'], 2, /unknown command 'frobnicate'/],
    [['start', '--env', join(dir, 'no-env')], 1, /Boottorrent\.yaml/],
    [['start', '--console', 'tv'], 2, /--console tv: expected screen or serial/],
    [['start', '--dashboard-name', 'bad/name'], 2, /--dashboard-name bad\/name: expected a DNS name/],
    [['status', '--env', join(dir, 'no-env')], 1, /no server is running for .*no-env/],
  ];
  for (const [args, code, re] of cases) {
    const r = await runCli(args);
    assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re, args.join(' '));
    noStack(r.stderr);
  }
  const help = await runCli(['torrent', 'create', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /--piece-length BYTES/);
});

const COMMANDS = [
  'torrent',
  'tracker',
  'seed',
  'get',
  'demo',
  'build-phase1',
  'init',
  'validate',
  'start',
  'status',
  'wake',
];

test('every subcommand: an unknown option is one line with a suggestion, not the parser message (exit 2)', async () => {
  const cases: [string[], RegExp][] = [
    [['validate', '--jsno'], /^boottorrent validate: unknown option --jsno; did you mean --json\? /],
    [['start', '--dashbord', 'x'], /did you mean --dashboard\?/],
    [['status', '--env'], /^boottorrent status: option --env needs a value/],
    [['status', '--json=yes'], /^boottorrent status: option --json takes no value\n$/],
  ];
  for (const c of COMMANDS)
    cases.push([
      // torrent takes its subcommand first.
      c === 'torrent' ? [c, 'info', '--no-such-option-at-all'] : [c, '--no-such-option-at-all'],
      new RegExp(`^boottorrent ${c}: unknown option --no-such-option-at-all \\(`),
    ]);
  for (const [args, re] of cases) {
    const r = await runCli(args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re, args.join(' '));
    assert.equal(r.stderr.trimEnd().split('\n').length, 1, `one line: ${r.stderr}`);
    assert.equal(r.stdout, '');
  }
});

test('every subcommand exits 0 with nothing on stderr when its output pipe closes (--help | true)', async () => {
  for (const args of [['--help'], ...COMMANDS.map((c) => [c, '--help'])]) {
    // The reader is gone before the command writes: its first write fails with EPIPE.
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.destroy();
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
    assert.equal(err, '', `${args.join(' ')}: ${err}`);
    assert.equal(code, 0, args.join(' '));
  }
});

test('validate --json: problems with file, field and fix, or a summary; the exit code as without it', async (t) => {
  const dir = tempDir(t);
  const bad = await runCli(['validate', '--env', join(dir, 'none'), '--json']);
  assert.equal(bad.code, 1);
  const b = JSON.parse(bad.stdout) as {
    ok: boolean;
    problems: { file: string; field: string; fix: string }[];
  };
  assert.equal(b.ok, false);
  assert.match(b.problems[0]!.file, /none\/Boottorrent\.yaml$/);
  assert.ok(b.problems[0]!.fix.length > 0);
  assert.equal(bad.stderr, '');
  const made = await runCli(['init', join(dir, 'env')]);
  assert.equal(made.code, 0, made.stderr);
  const good = await runCli(['validate', '--env', join(dir, 'env'), '--json', '--no-machine-checks']);
  assert.equal(good.code, 0, good.stdout);
  const g = JSON.parse(good.stdout) as {
    ok: boolean;
    problems: unknown[];
    summary: { oss: { id: string }[] };
  };
  assert.equal(g.ok, true);
  assert.deepEqual(g.problems, []);
  assert.ok(g.summary.oss.length > 0);
});

test('tracker command serves announces and stops cleanly on SIGTERM', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'f'), 'data');
  const created = await runCli(['torrent', 'create', join(dir, 'f'), '-o', join(dir, 'f.torrent')]);
  assert.equal(created.code, 0, created.stderr);
  const meta = parseTorrent(readFileSync(join(dir, 'f.torrent')));
  const { child, match, output } = await startCli(
    ['tracker', '--host', '127.0.0.1', '--port', '0', '--torrent', join(dir, 'f.torrent')],
    /tracker on http:\/\/127\.0\.0\.1:(\d+)\/announce/,
  );
  t.after(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  const port = Number(match[1]);
  const base = {
    infoHash: meta.infoHash,
    port: 7001,
    uploaded: 0,
    downloaded: 0,
    left: 4,
    event: 'started' as const,
  };
  await announce(`http://127.0.0.1:${port}/announce`, { ...base, peerId: Buffer.alloc(20, 1) });
  const r = await announce(`udp://127.0.0.1:${port}`, { ...base, peerId: Buffer.alloc(20, 2), port: 7002 });
  assert.deepEqual(
    r.peers.map((p) => p.port),
    [7001],
  );
  child.kill('SIGTERM');
  assert.equal(await exited(child), 0);
  assert.match(output(), /started 127\.0\.0\.1:7001/);
  assert.match(output(), /stopping/);
});

test('torrent create interrupted by SIGINT leaves no output file', async (t) => {
  const dir = tempDir(t);
  // Large enough that hashing is still running when the signal lands.
  const big = join(dir, 'big.bin');
  const block = pseudoRandomBytes(1 << 20, 3);
  const chunks = Array.from({ length: 256 }, () => block);
  writeFileSync(big, Buffer.concat(chunks));
  const { child, output } = await startCli(
    ['torrent', 'create', big, '-o', join(dir, 'big.torrent')],
    /hashing/,
  );
  child.kill('SIGINT');
  assert.equal(await exited(child), 130, output());
  assert.match(output(), /stopped \(interrupted by SIGINT\)/);
  assert.equal(existsSync(join(dir, 'big.torrent')), false);
  assert.deepEqual(readdirSync(dir), ['big.bin']);
});

test('version and --version print the version from package.json', async () => {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  for (const args of [['version'], ['--version']]) {
    const r = await runCli(args);
    assert.equal(r.code, 0, args.join(' '));
    assert.equal(r.stdout, `boottorrent ${pkg.version}\n`);
    assert.equal(r.stderr, '');
  }
});

test('demo: an unknown --firmware is a usage error naming the three it takes, before anything starts', async () => {
  const r = await runCli(['demo', '--firmware', 'coreboot']);
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /--firmware coreboot: expected bios, uefi or uefi-secureboot/);
});
