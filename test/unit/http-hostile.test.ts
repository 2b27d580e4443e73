// Issue #14 items 7 and 8 against a real BootServer on loopback: who gets a
// report token, that the dashboard token never reaches a client, request
// deadlines a trickle cannot extend, per-source connection caps, and a
// listener that fails after start stopping the server cleanly. Loopback
// aliases (127.0.0.2, 127.0.0.3) are distinct sources on Linux.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect, createServer, type Server as NetServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { parseBootConfig } from '../../src/boot-config.js';
import { BootServer, SERVER_INFO, STATE_DIR, type StartOptions } from '../../src/server/app.js';
import { dashboardListener } from '../../src/dashboard/listener.js';
import { loadEnvironment } from '../../src/env/load.js';
import type { ServerSnapshot } from '../../src/server/state.js';
import type { LogFields, Logger } from '../../src/util/logger.js';
import { createServer as createHttpServer } from 'node:http';
import { parseProcNetArp } from '../../src/server/requester.js';
import { tempDir } from '../helpers/tmp.js';
import type { TorrentSession } from '../../src/swarm/session.js';

const MAC_A = '52:54:00:14:00:0a';
const MAC_B = '52:54:00:14:00:0b';

/** `n` distinct free ports: all held open at once, then let go (one at a time, two could be the same). */
async function freePorts(n: number): Promise<number[]> {
  const servers = Array.from({ length: n }, () => createServer());
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.listen(0, '127.0.0.1', r))));
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  return ports;
}

/** A BootServer on 127.0.0.1 with one OS and no DHCP; closed after the test. */
async function startServer(
  t: TestContext,
  options: Partial<StartOptions> = {},
  arp = '',
  logger?: Logger,
): Promise<{ server: BootServer; envDir: string; httpPort: number; dashPort: number }> {
  const dir = tempDir(t, 'bt-http-hostile-');
  const envDir = join(dir, 'env');
  mkdirSync(join(envDir, 'oss', 'alpha'), { recursive: true });
  const ipxe = join(dir, 'ipxe');
  mkdirSync(ipxe);
  for (const f of ['undionly.kpxe', 'ipxe.efi']) writeFileSync(join(ipxe, f), 'ipxe');
  const [httpPort, trackerPort] = (await freePorts(2)) as [number, number];
  writeFileSync(
    join(envDir, 'Boottorrent.yaml'),
    [
      'version: 1',
      'server:',
      '  interface: lo',
      '  address: 127.0.0.1',
      `  http_port: ${httpPort}`,
      '  tftp: true',
      `  ipxe_dir: ${ipxe}`,
      'dhcp:',
      '  mode: off',
      'tracker:',
      '  enabled: true',
      `  port: ${trackerPort}`,
      'boot:',
      '  default_os: alpha',
      '  timeout: 5',
      '',
    ].join('\n'),
  );
  writeFileSync(
    join(envDir, 'oss', 'alpha', 'config.yaml'),
    'name: Alpha\nmethod: kexec\nkernel: vmlinuz\ninitrd: [initrd.img]\ncmdline: quiet\n',
  );
  writeFileSync(join(envDir, 'oss', 'alpha', 'vmlinuz'), 'kernel');
  writeFileSync(join(envDir, 'oss', 'alpha', 'initrd.img'), 'initrd');
  const phase1 = join(dir, 'phase1');
  mkdirSync(phase1);
  writeFileSync(join(phase1, 'vmlinuz'), 'k');
  writeFileSync(join(phase1, 'initrd.img'), 'i');
  const server = new BootServer(
    {
      environment: await loadEnvironment(envDir),
      phase1: { dir: phase1, kernel: 'vmlinuz', initrds: ['initrd.img'], cmdline: '' },
      dashboardPort: 0,
      seedPort: 0,
      tftpPort: 0,
      reloadIntervalMs: 60_000,
      ...options,
    },
    { readArp: () => Promise.resolve(arp), ...(logger ? { logger } : {}) },
  );
  t.after(() => server.close());
  await server.start();
  const dashPort = Number(new URL(server.dashboardUrl).port);
  return { server, envDir, httpPort, dashPort };
}

interface Reply {
  status: number;
  body: string;
}

/** One request from `from` (a loopback alias), on a fresh connection. */
function call(
  port: number,
  path: string,
  opts: { from?: string; method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: opts.method ?? 'GET',
        localAddress: opts.from ?? '127.0.0.1',
        headers: opts.headers ?? {},
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString() }));
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** Resolves when `socket` closes; rejects after `ms` (the socket is then destroyed). */
function closedWithin(socket: Socket, ms: number, what: string): Promise<string> {
  let got = '';
  socket.on('data', (d: Buffer) => (got += d.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`${what}: still open after ${ms} ms`));
    }, ms);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve(got);
    });
  });
}

function open(port: number, from: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, localAddress: from }, () => resolve(s));
    s.once('error', reject);
  });
}

test('neighbour table: only resolved entries name a MAC', () => {
  const text = [
    'IP address       HW type     Flags       HW address            Mask     Device',
    '10.0.0.5         0x1         0x2         52:54:00:AA:BB:CC     *        br0',
    '10.0.0.6         0x1         0x0         00:00:00:00:00:00     *        br0',
    '10.0.0.7         0x1         0x6         52:54:00:aa:bb:cd     *        br0',
    'garbage',
  ].join('\n');
  assert.deepEqual(
    [...parseProcNetArp(text)],
    [
      ['10.0.0.5', '52:54:00:aa:bb:cc'],
      ['10.0.0.7', '52:54:00:aa:bb:cd'],
    ],
  );
});

test('report token handed to anyone who asks: a requester not tied to the MAC gets none, and no client API answer carries the dashboard token', async (t) => {
  const arp = [
    'IP address       HW type     Flags       HW address            Mask     Device',
    `127.0.0.2        0x1         0x2         ${MAC_A}     *        lo`,
  ].join('\n');
  const { server, envDir, httpPort } = await startServer(t, { trustLoopback: false }, arp);
  const info = JSON.parse(readFileSync(join(envDir, STATE_DIR, SERVER_INFO), 'utf8')) as { token: string };
  assert.ok(info.token.length >= 16, 'server.json has the dashboard token for the sysadmin');

  const answers: string[] = [];
  const config = async (mac: string, from: string) => {
    const r = await call(httpPort, `/api/v1/boot/${mac}`, { from });
    assert.equal(r.status, 200, `${from} asking for ${mac} still gets a boot config`);
    answers.push(r.body);
    return parseBootConfig(r.body);
  };
  const tied = await config(MAC_A, '127.0.0.2');
  assert.equal(tied.reportToken, server.reportToken(MAC_A), 'the MAC at that address gets its token');
  assert.equal((await config(MAC_A, '127.0.0.3')).reportToken, '', 'another address: no token');
  assert.equal((await config(MAC_B, '127.0.0.2')).reportToken, '', "A's address asking for B: no token");
  answers.push((await call(httpPort, '/api/v1/torrent/alpha.torrent')).body);
  answers.push((await call(httpPort, `/boot.ipxe?mac=${MAC_A}`)).body);
  for (const a of answers) assert.ok(!a.includes(info.token), 'the dashboard token never leaves the server');
  assert.notEqual(tied.reportToken, info.token);

  // A's token reports as A only.
  const report = (mac: string, token: string) =>
    call(httpPort, `/api/v1/report/${mac}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-boottorrent-token': token },
      body: JSON.stringify({ stage: 'menu' }),
    });
  assert.equal((await report(MAC_B, tied.reportToken)).status, 403, "A's token for B is refused");
  assert.equal((await report(MAC_A, tied.reportToken)).status, 204);
  assert.equal(
    server.store.list().find((c) => c.mac === MAC_B),
    undefined,
    'no row forged for B',
  );
});

test('loopback requesters are trusted (local tools and tests) unless told otherwise', async (t) => {
  const { server, httpPort } = await startServer(t);
  const cfg = parseBootConfig((await call(httpPort, `/api/v1/boot/${MAC_B}`, { from: '127.0.0.3' })).body);
  assert.equal(cfg.reportToken, server.reportToken(MAC_B));
});

test('request body never timed out: a trickled report body and trickled dashboard headers are cut at the deadline', async (t) => {
  const limits = { requestTimeoutMs: 400, headersTimeoutMs: 300 };
  const { server, httpPort, dashPort } = await startServer(t, { httpLimits: limits });
  const token = server.reportToken(MAC_A);
  const post = await open(httpPort, '127.0.0.1');
  const dash = await open(dashPort, '127.0.0.1');
  const postClosed = closedWithin(post, 20_000, 'trickled POST');
  const dashClosed = closedWithin(dash, 20_000, 'trickled dashboard headers');
  post.write(
    `POST /api/v1/report/${MAC_A} HTTP/1.1\r\nhost: x\r\nx-boottorrent-token: ${token}\r\n` +
      'content-type: application/json\r\ncontent-length: 1000\r\n\r\n',
  );
  dash.write('GET /api/v1/status HTTP/1.1\r\n');
  // A byte every 50 ms: each arrives well inside any idle timeout, so only
  // a deadline from the request's start can end them.
  let n = 0;
  const trickle = setInterval(() => {
    if (!post.destroyed) post.write(' ');
    if (!dash.destroyed) dash.write(`x-${n++}: y\r\n`);
  }, 50);
  t.after(() => clearInterval(trickle));
  const got = await postClosed;
  await dashClosed;
  clearInterval(trickle);
  assert.match(got, /^HTTP\/1\.1 408/, 'the POST gets 408 Request Timeout');
  // The server still serves.
  assert.equal((await call(httpPort, `/api/v1/boot/${MAC_A}`)).status, 200);
});

test('no connection limit: a source over its cap is refused while another source is served', async (t) => {
  const { httpPort, dashPort } = await startServer(t, { httpLimits: { connectionsPerIp: 3 } });
  for (const port of [httpPort, dashPort]) {
    const held: Socket[] = [];
    t.after(() => held.forEach((s) => s.destroy()));
    for (let i = 0; i < 3; i++) held.push(await open(port, '127.0.0.2'));
    // The server counts a connection when it accepts it, which can trail the
    // client's connect: wait until a 4th from the same source is refused.
    const deadline = Date.now() + 20_000;
    let refused = false;
    while (!refused && Date.now() < deadline) {
      const extra = await open(port, '127.0.0.2');
      const closed = closedWithin(extra, 2000, 'over-cap connection').then(
        () => true,
        () => false,
      );
      extra.on('error', () => undefined);
      extra.write('GET /api/v1/status HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n');
      refused = await closed;
      if (!refused) held.push(extra);
    }
    assert.ok(refused, `port ${port}: the 4th connection from 127.0.0.2 is refused`);
    const other = await call(port, port === httpPort ? `/api/v1/boot/${MAC_A}` : '/api/v1/status', {
      from: '127.0.0.3',
    });
    assert.equal(other.status, 200, `port ${port}: another source is served`);
    held.forEach((s) => s.destroy());
  }
});

test('listener error after start was only logged: it stops the BootServer, closes everything and removes server.json', async (t) => {
  const { server, envDir, httpPort, dashPort } = await startServer(t);
  const info = join(envDir, STATE_DIR, SERVER_INFO);
  assert.ok(existsSync(info));
  const http = (server as unknown as { netboot: { http: { server: NetServer } } }).netboot.http.server;
  // Out of file descriptors for one accept (a connection flood can cause it):
  // libuv drops that connection and the listener goes on; it must not stop
  // the server, or the flood would be a way to stop it.
  http.emit('error', Object.assign(new Error('accept EMFILE'), { code: 'EMFILE', syscall: 'accept' }));
  await new Promise((r) => setTimeout(r, 200));
  assert.ok(existsSync(info), 'a failed accept keeps serving');
  assert.equal((await call(httpPort, '/boot.ipxe')).status < 500, true, 'still answers');
  // The HTTP listener's socket fails as a bound server's does.
  const err = Object.assign(new Error('accept EBADF'), { code: 'EBADF', syscall: 'accept' });
  http.emit('error', err);
  const failed = await Promise.race([
    server.failed,
    new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error('server did not stop')), 20_000).unref(),
    ),
  ]);
  assert.equal(failed.code, 'BT_ERR_LISTEN');
  assert.match(failed.message, /boot HTTP server stopped working: EBADF/);
  assert.ok(!existsSync(info), 'server.json removed');
  for (const port of [httpPort, dashPort])
    await assert.rejects(call(port, '/api/v1/status'), /ECONNREFUSED/, `port ${port} closed`);
});

interface Internals {
  netboot: { tftp: { socket: NetServer } };
  tracker: { udp: NetServer; http: NetServer };
  library: { seeder: { server: NetServer } };
}

test('TFTP, tracker and seeder listener errors after start were only logged: each stops the BootServer; a failed UDP send does not', async (t) => {
  const cases: [string, (i: Internals) => NetServer, RegExp][] = [
    ['TFTP socket', (i) => i.netboot.tftp.socket, /TFTP server stopped working/],
    ['tracker UDP socket', (i) => i.tracker.udp, /tracker stopped working/],
    ['tracker HTTP server', (i) => i.tracker.http, /tracker stopped working/],
    ['seeder listener', (i) => i.library.seeder.server, /seeder \(peer listener\) stopped working/],
  ];
  for (const [what, target, message] of cases) {
    const { server, envDir } = await startServer(t);
    const sock = target(server as unknown as Internals);
    // One reply that could not be sent is not a listener failure.
    if (what.includes('UDP') || what.includes('TFTP')) {
      sock.emit(
        'error',
        Object.assign(new Error('send EHOSTUNREACH'), { code: 'EHOSTUNREACH', syscall: 'send' }),
      );
      assert.ok(existsSync(join(envDir, STATE_DIR, SERVER_INFO)), `${what}: a failed send keeps serving`);
    }
    sock.emit('error', Object.assign(new Error('recvmsg EBADF'), { code: 'EBADF', syscall: 'recvmsg' }));
    const failed = await Promise.race([
      server.failed,
      new Promise<never>((_, reject) =>
        setTimeout(() => reject(new Error(`${what}: server did not stop`)), 20_000).unref(),
      ),
    ]);
    assert.match(failed.message, message, what);
    assert.ok(!existsSync(join(envDir, STATE_DIR, SERVER_INFO)), `${what}: server.json removed`);
  }
});

// A fault inside a torrent session ends that session only (#14 containment);
// before, `start`'s seeder then stayed stopped for good and the room could
// no longer get the OS from the server.
test('a seeding session that fails is seeded again, the server keeps running', async (t) => {
  const { server } = await startServer(t);
  const sessions = (server as unknown as { library: { sessions: Map<string, TorrentSession> } }).library
    .sessions;
  const first = sessions.get('alpha');
  assert.ok(first, 'alpha is seeded');
  (first as unknown as { fail(where: string, err: unknown): void }).fail('test', new Error('injected fault'));
  const deadline = Date.now() + 30_000;
  while (sessions.get('alpha') === first || sessions.get('alpha') === undefined) {
    assert.ok(Date.now() < deadline, 'alpha was not seeded again within 30 s');
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.equal(sessions.get('alpha')?.meta.infoHashHex, first.meta.infoHashHex);
  assert.equal((first as unknown as { stopped: boolean }).stopped, true);
});

test(
  'a throw in the dashboard handler ended the process: it ends that request with 500 and the port keeps serving',
  { timeout: 30_000 },
  async (t) => {
    let calls = 0;
    const listener = dashboardListener(
      {
        handle: () => {
          if (calls++ === 0) throw new Error('bug in one request');
          return false;
        },
        close: () => undefined,
      },
      () => ({ clients: [] }) as unknown as ServerSnapshot,
    );
    const srv = createHttpServer(listener);
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    t.after(() => {
      srv.closeAllConnections();
      srv.close();
    });
    const port = (srv.address() as { port: number }).port;
    assert.equal((await call(port, '/')).status, 500);
    assert.equal((await call(port, '/api/v1/status')).status, 200, 'still serving');
  },
);

test('report text concatenated into log messages: the OS id and error a client reports are fields only', async (t) => {
  const lines: { msg: string; fields: LogFields }[] = [];
  const logger: Logger = {
    debug: (msg, fields = {}) => lines.push({ msg, fields }),
    info: (msg, fields = {}) => lines.push({ msg, fields }),
    warn: (msg, fields = {}) => lines.push({ msg, fields }),
    error: (msg, fields = {}) => lines.push({ msg, fields }),
    child: () => logger,
  };
  const { server, httpPort } = await startServer(t, {}, '', logger);
  const report = (body: object) =>
    call(httpPort, `/api/v1/report/${MAC_A}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-boottorrent-token': server.reportToken(MAC_A) },
      body: JSON.stringify(body),
    });
  assert.equal((await report({ stage: 'downloading', os: 'EVIL-OS client 1 boots' })).status, 204);
  assert.equal(
    (await report({ stage: 'failed', os: 'EVIL-OS', error: 'EVIL-ERR\nforged line' })).status,
    204,
  );
  const mine = lines.filter((l) => JSON.stringify(l.fields).includes('EVIL'));
  assert.ok(mine.length >= 2, 'the client text is logged, as fields');
  for (const l of lines) assert.doesNotMatch(l.msg, /EVIL/, `message carries no client text: ${l.msg}`);
});

test('dashboard port: failed accepts under a flood wrote a warning each; one line a minute now (#14 review)', async (t) => {
  const lines: { msg: string; fields: LogFields }[] = [];
  const logger: Logger = {
    debug: () => {},
    info: () => {},
    warn: (msg, fields = {}) => lines.push({ msg, fields }),
    error: (msg, fields = {}) => lines.push({ msg, fields }),
    child: () => logger,
  };
  const { server } = await startServer(t, {}, '', logger);
  const dash = (server as unknown as { dashboard: { server: NetServer } }).dashboard.server;
  const before = lines.length;
  for (let n = 0; n < 50; n++)
    dash.emit('error', Object.assign(new Error('accept EMFILE'), { code: 'EMFILE', syscall: 'accept' }));
  const wrote = lines.slice(before).filter((l) => l.msg.includes('not accepted')).length;
  assert.ok(wrote <= 1, `50 failed accepts wrote ${wrote} lines`);
  assert.ok(wrote >= 1, 'the first is logged');
});
