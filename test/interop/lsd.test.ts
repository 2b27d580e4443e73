/**
 * Local Service Discovery (BEP 14) on a real multicast path, never on the
 * host's network: each test builds two network namespaces joined by a veth
 * pair (hostA 10.77.N.1/24, hostB 10.77.N.2/24), runs LocalServiceDiscovery
 * in child processes there with `ip netns exec` (test/interop/fixtures/
 * lsd-peer.ts), and removes everything in t.after, also on failure.
 * Requires root, iproute2 and aria2c; a missing one fails the test.
 */

import { test } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

import { encode as bencode } from '../../src/bencode/index.js';
import { isBootTorrentError } from '../../src/errors.js';
import { LocalServiceDiscovery } from '../../src/tracker/lsd.js';
import { NetnsLab } from '../../src/util/netns.js';
import { removedWithTest } from '../helpers/netns.js';
import type { LsdLogger } from '../../src/tracker/lsd.js';
import { encode as encodeAnnounce } from '../../src/tracker/lsd-codec.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/lsd-peer.js', import.meta.url));
/** Hang guard for one wait; a pass never depends on it. */
const WAIT_MS = 20_000;
/** Announce interval inside the isolated namespaces (see lsd.ts on the 60 s rule). */
const TEST_INTERVAL_MS = 1_000;

type Event = Record<string, unknown>;

interface Host {
  ns: string;
  dev: string;
  addr: string;
}

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

const randomInfoHash = (): string => randomBytes(20).toString('hex');
const randomPort = (): number => randomInt(20_000, 60_000);

/** Output of one child process, with waits on what it printed. */
class Child {
  readonly events: Event[] = [];
  text = '';
  exited = false;
  #notify = new Set<() => void>();

  constructor(
    readonly name: string,
    readonly proc: ChildProcess,
    json: boolean,
  ) {
    const onLine = (line: string): void => {
      this.text += `${line}\n`;
      if (json) {
        try {
          this.events.push(JSON.parse(line) as Event);
        } catch {
          this.events.push({ type: 'raw', line });
        }
      }
      this.#wake();
    };
    if (proc.stdout) createInterface({ input: proc.stdout }).on('line', onLine);
    if (proc.stderr) createInterface({ input: proc.stderr }).on('line', (l) => onLine(`[stderr] ${l}`));
    proc.on('exit', () => {
      this.exited = true;
      this.#wake();
    });
  }

  #wake(): void {
    for (const f of this.#notify) f();
  }

  /** Resolves once `check` returns a value; rejects on exit or hang. */
  async until<T>(what: string, check: () => T | undefined): Promise<T> {
    const signal = AbortSignal.timeout(WAIT_MS);
    for (;;) {
      const found = check();
      if (found !== undefined) return found;
      if (this.exited) throw new Error(`${this.name} exited before ${what}; output:\n${this.text}`);
      if (signal.aborted)
        throw new Error(`${this.name}: no ${what} within ${WAIT_MS} ms; output:\n${this.text}`);
      await new Promise<void>((resolve) => {
        const done = (): void => {
          this.#notify.delete(done);
          signal.removeEventListener('abort', done);
          resolve();
        };
        this.#notify.add(done);
        signal.addEventListener('abort', done);
      });
    }
  }

  event(what: string, pred: (e: Event) => boolean): Promise<Event> {
    return this.until(what, () => this.events.find(pred));
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    this.proc.stdin?.end();
    this.proc.kill('SIGTERM');
    const killer = setTimeout(() => this.proc.kill('SIGKILL'), 3_000);
    await this.until('exit', () => (this.exited ? true : undefined)).catch(() => undefined);
    clearTimeout(killer);
  }
}

/**
 * Two namespaces on one veth link, plus cleanup registered before anything
 * is created: children are killed by PID first, then namespaces deleted.
 */
async function createLab(t: TestContext): Promise<{ a: Host; b: Host; spawnIn: typeof spawnIn }> {
  // The one namespace lab: removed with the test, also when the runner kills this file.
  const lab = removedWithTest(t, new NetnsLab({ name: (role, id) => `bt-lsd-${id}-${role}` }));
  const net = randomInt(1, 255);
  const children: Child[] = [];
  t.after(() => Promise.all(children.map((c) => c.stop())));
  const a: Host = { ns: lab.ns('a'), dev: `vla${lab.id}`, addr: `10.77.${net}.1` };
  const b: Host = { ns: lab.ns('b'), dev: `vlb${lab.id}`, addr: `10.77.${net}.2` };
  // Both ends are created directly inside their namespaces, so no interface
  // ever appears in the host's namespace.
  run('ip', ['link', 'add', a.dev, 'netns', a.ns, 'type', 'veth', 'peer', 'name', b.dev, 'netns', b.ns]);
  for (const h of [a, b]) {
    run('ip', ['-n', h.ns, 'addr', 'add', `${h.addr}/24`, 'dev', h.dev]);
    run('ip', ['-n', h.ns, 'link', 'set', 'lo', 'up']);
    run('ip', ['-n', h.ns, 'link', 'set', h.dev, 'up']);
    // Reverse-path filtering would drop the off-subnet datagram one test sends.
    run('ip', ['netns', 'exec', h.ns, 'sysctl', '-qw', 'net.ipv4.conf.all.rp_filter=0']);
    run('ip', ['netns', 'exec', h.ns, 'sysctl', '-qw', `net.ipv4.conf.${h.dev}.rp_filter=0`]);
  }
  // The kernel marks a veth running (IFF_RUNNING, which Node's
  // os.networkInterfaces() requires) shortly after both ends are up.
  for (const h of [a, b]) {
    for (let i = 0; !/state UP/.test(run('ip', ['-n', h.ns, '-o', 'link', 'show', 'dev', h.dev])); i++) {
      if (i > 200) throw new Error(`${h.dev} in ${h.ns} did not come up`);
      await sleep(25);
    }
  }

  function spawnIn(h: Host, name: string, cmd: string, args: string[], json: boolean): Child {
    const child = new Child(name, lab.spawn(h.ns, cmd, args, { stdin: true }).child, json);
    children.push(child);
    return child;
  }
  return { a, b, spawnIn };
}

type SpawnIn = Awaited<ReturnType<typeof createLab>>['spawnIn'];

async function startLsd(
  spawnIn: SpawnIn,
  h: Host,
  name: string,
  port: number,
  infoHashes: string[],
  interfaceAddress = h.addr,
): Promise<Child> {
  const child = spawnIn(
    h,
    name,
    process.execPath,
    [FIXTURE, 'listen', interfaceAddress, String(port), String(TEST_INTERVAL_MS), ...infoHashes],
    true,
  );
  await child.event('ready', (e) => e.type === 'ready');
  return child;
}

async function sendRaw(spawnIn: SpawnIn, h: Host, from: string, datagram: Buffer): Promise<void> {
  const child = spawnIn(
    h,
    'sender',
    process.execPath,
    [FIXTURE, 'send', from, datagram.toString('hex')],
    true,
  );
  await child.event('sent', (e) => e.type === 'sent');
}

const isPeer = (infoHash: string, ip: string, port: number) => (e: Event) =>
  e.type === 'peer' && e.infoHash === infoHash && e.ip === ip && e.port === port;
const isLog = (msg: string) => (e: Event) => e.type === 'log' && e.msg === msg;
const peers = (c: Child) => c.events.filter((e) => e.type === 'peer');

test('two hosts on a veth link discover each other and ignore their own announces', async (t) => {
  const { a, b, spawnIn } = await createLab(t);
  const shared = randomInfoHash();
  const onlyA = randomInfoHash();
  const onlyB = randomInfoHash();
  const portA = randomPort();
  const portB = portA + 1;
  const lsdA = await startLsd(spawnIn, a, 'lsd@A', portA, [shared, onlyA]);
  const lsdB = await startLsd(spawnIn, b, 'lsd@B', portB, [onlyB, shared]);

  await lsdA.event('peer B', isPeer(shared, b.addr, portB));
  await lsdB.event('peer A', isPeer(shared, a.addr, portA));
  // Multicast loopback hands each its own datagrams; the cookie drops them.
  await lsdA.event('own announce dropped', isLog('LSD own announce ignored'));
  await lsdB.event('own announce dropped', isLog('LSD own announce ignored'));
  await lsdA.stop();
  await lsdB.stop();

  // Every peer reported is the other host, for the shared torrent only.
  for (const e of peers(lsdA))
    assert.deepEqual(e, { type: 'peer', infoHash: shared, ip: b.addr, port: portB });
  for (const e of peers(lsdB))
    assert.deepEqual(e, { type: 'peer', infoHash: shared, ip: a.addr, port: portA });
  // The abort path ran: stdin closed -> AbortSignal -> stop().
  assert.ok(
    lsdA.events.some((e) => e.type === 'stopped'),
    lsdA.text,
  );
});

test('two instances on one host share port 6771 (SO_REUSEADDR) and find each other', async (t) => {
  const { a, spawnIn } = await createLab(t);
  const ih = randomInfoHash();
  const port1 = randomPort();
  const port2 = port1 + 1;
  const first = await startLsd(spawnIn, a, 'lsd1@A', port1, [ih]);
  const second = await startLsd(spawnIn, a, 'lsd2@A', port2, [ih]);

  await first.event('peer 2', isPeer(ih, a.addr, port2));
  await second.event('peer 1', isPeer(ih, a.addr, port1));
  await first.stop();
  await second.stop();
  assert.ok(
    peers(first).every((e) => e.port === port2),
    first.text,
  );
  assert.ok(
    peers(second).every((e) => e.port === port1),
    second.text,
  );
});

test('addInfoHash announces a new torrent; removeInfoHash stops announcing it', async (t) => {
  const { a, b, spawnIn } = await createLab(t);
  const ihA = randomInfoHash();
  const ihB = randomInfoHash();
  const portA = randomPort();
  const portB = portA + 1;
  const lsdA = await startLsd(spawnIn, a, 'lsd@A', portA, [ihA]);
  const lsdB = await startLsd(spawnIn, b, 'lsd@B', portB, [ihB]);

  lsdB.proc.stdin?.write(`add ${ihA}\n`);
  await lsdA.event('peer B for the added torrent', isPeer(ihA, b.addr, portB));

  lsdB.proc.stdin?.write(`remove ${ihA}\n`);
  await lsdB.event('remove ack', (e) => e.type === 'removed');
  const from = lsdB.events.findIndex((e) => e.type === 'removed');
  const sentAfter = () =>
    lsdB.events.slice(from).filter((e) => e.type === 'log' && e.msg === 'LSD announce sent') as Array<{
      fields: { infoHashes: string[] };
    }>;
  // Two announce rounds after the removal: neither may name the torrent.
  await lsdB.until('two announces after remove', () => (sentAfter().length >= 2 ? true : undefined));
  await lsdA.stop();
  await lsdB.stop();
  for (const e of sentAfter()) assert.deepEqual(e.fields.infoHashes, [ihB]);
});

test('malformed and off-subnet datagrams are dropped; lenient announces still get through', async (t) => {
  const { a, b, spawnIn } = await createLab(t);
  const ih = randomInfoHash();
  const lsdA = await startLsd(spawnIn, a, 'lsd@A', randomPort(), [ih]);

  // Truncated announce: no terminating empty line.
  await sendRaw(
    spawnIn,
    b,
    b.addr,
    Buffer.from(`BT-SEARCH * HTTP/1.1\r\nPort: 1234\r\nInfohash: ${ih.slice(0, 20)}`),
  );
  await lsdA.event('malformed warning', isLog('LSD malformed datagram dropped'));

  // A second address on hostB outside hostA's /24: the announce is valid but
  // does not come from hostA's segment.
  const offNet = b.addr.replace(/^10\.77\./, '10.78.');
  run('ip', ['-n', b.ns, 'addr', 'add', `${offNet}/24`, 'dev', b.dev]);
  await sendRaw(spawnIn, b, offNet, encodeAnnounce({ port: 4321, infoHashes: [ih], cookie: 'other' }));
  await lsdA.event('off-subnet drop', isLog('LSD datagram from outside the interface subnet ignored'));

  // Lower-case headers, bare LF, upper-case hex, an extra header.
  const port = randomPort();
  const lenient = `bt-search * HTTP/1.1\nhost: 239.192.152.143:6771\nport: ${port}\nx-client: test\ninfohash: ${ih.toUpperCase()}\n\n`;
  await sendRaw(spawnIn, b, b.addr, Buffer.from(lenient, 'latin1'));
  await lsdA.event('peer from lenient announce', isPeer(ih, b.addr, port));
  await lsdA.stop();

  assert.ok(
    peers(lsdA).every((e) => e.port === port),
    `only the lenient announce may yield a peer:\n${lsdA.text}`,
  );
});

test('aria2c and LocalServiceDiscovery hear each other (aria2 --bt-enable-lpd)', async (t) => {
  // Fails, not skips, when aria2c is missing.
  run('aria2c', ['--version']);
  const { a, b, spawnIn } = await createLab(t);
  const dir = mkdtempSync(join(tmpdir(), 'bt-lsd-aria2-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));

  // A public (no `private` key: aria2 disables LPD for private torrents),
  // trackerless single-file torrent built with our bencode.
  const data = randomBytes(40_000);
  const pieceLength = 16_384;
  const pieces: Buffer[] = [];
  for (let off = 0; off < data.length; off += pieceLength) {
    pieces.push(
      createHash('sha1')
        .update(data.subarray(off, off + pieceLength))
        .digest(),
    );
  }
  const info = {
    length: data.length,
    name: 'lsd-interop.bin',
    'piece length': pieceLength,
    pieces: Buffer.concat(pieces),
  };
  const infoHash = createHash('sha1').update(bencode(info)).digest('hex');
  writeFileSync(join(dir, 'lsd-interop.bin'), data);
  writeFileSync(join(dir, 'lsd-interop.torrent'), bencode({ info }));

  // aria2 announces once at start, so we listen first.
  const ourPort = randomPort();
  const ariaPort = ourPort + 1;
  const lsdA = await startLsd(spawnIn, a, 'lsd@A', ourPort, [infoHash]);
  const aria = spawnIn(
    b,
    'aria2c@B',
    'aria2c',
    [
      '--no-conf',
      '--bt-enable-lpd=true',
      `--bt-lpd-interface=${b.dev}`,
      `--listen-port=${ariaPort}`,
      '--enable-dht=false',
      '--enable-dht6=false',
      '--enable-peer-exchange=false',
      '--bt-seed-unverified=true',
      '--seed-ratio=0.0',
      `--stop-with-process=${process.pid}`,
      '--summary-interval=0',
      '--console-log-level=error',
      '--log=-',
      '--log-level=info',
      '-d',
      dir,
      join(dir, 'lsd-interop.torrent'),
    ],
    false,
  );

  // aria2 -> us: its announce arrives from hostB's address with its port.
  await lsdA.event('peer from aria2', isPeer(infoHash, b.addr, ariaPort));
  // us -> aria2: aria2 logs each LPD announce it accepts.
  const received = new RegExp(
    `LPD message received infohash=${infoHash}, port=${ourPort} from ${a.addr.replace(/\./g, '\\.')}`,
  );
  await aria.until('our announce in the aria2 log', () => (received.test(aria.text) ? true : undefined));
  await lsdA.stop();
  await aria.stop();
});

test('start() rejects with BT_ERR_LISTEN naming an address that is not on this host', async () => {
  const logger: LsdLogger = { debug() {}, info() {}, warn() {}, error() {} };
  // 192.0.2.0/24 is TEST-NET-1; the check fails before any socket exists.
  const lsd = new LocalServiceDiscovery({ port: 6881, interfaceAddress: '192.0.2.77' }, { logger });
  await assert.rejects(
    lsd.start(),
    (err: unknown) => isBootTorrentError(err, 'BT_ERR_LISTEN') && err.message.includes('192.0.2.77'),
  );
});

test('start() with an aborted signal rejects with BT_ERR_ABORTED', async () => {
  const logger: LsdLogger = { debug() {}, info() {}, warn() {}, error() {} };
  const lsd = new LocalServiceDiscovery({ port: 6881, interfaceAddress: '127.0.0.1' }, { logger });
  await assert.rejects(lsd.start({ signal: AbortSignal.abort() }), (err: unknown) =>
    isBootTorrentError(err, 'BT_ERR_ABORTED'),
  );
});

test('aborting while start() binds closes the socket and rejects with BT_ERR_ABORTED', async () => {
  const logger: LsdLogger = { debug() {}, info() {}, warn() {}, error() {} };
  // The abort runs before the event loop can complete the bind, so the group
  // is never joined and nothing is sent, even on loopback.
  const lsd = new LocalServiceDiscovery({ port: 6881, interfaceAddress: '127.0.0.1' }, { logger });
  const controller = new AbortController();
  const started = lsd.start({ signal: controller.signal });
  controller.abort();
  await assert.rejects(started, (err: unknown) => isBootTorrentError(err, 'BT_ERR_ABORTED'));
  await lsd.stop(); // idempotent
});

test('the constructor refuses a missing interface address and a bad interval', () => {
  const logger: LsdLogger = { debug() {}, info() {}, warn() {}, error() {} };
  const usage = (err: unknown) => isBootTorrentError(err, 'BT_ERR_USAGE');
  assert.throws(() => new LocalServiceDiscovery({ port: 6881, interfaceAddress: '' }, { logger }), usage);
  assert.throws(() => new LocalServiceDiscovery({ port: 6881, interfaceAddress: 'eth0' }, { logger }), usage);
  assert.throws(
    () =>
      new LocalServiceDiscovery(
        { port: 6881, interfaceAddress: '127.0.0.1', announceIntervalMs: 10 },
        { logger },
      ),
    usage,
  );
  assert.throws(
    () =>
      new LocalServiceDiscovery(
        { port: 6881, interfaceAddress: '127.0.0.1', infoHashes: ['xyz'] },
        { logger },
      ),
    usage,
  );
});
