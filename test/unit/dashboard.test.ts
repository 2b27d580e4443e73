// The dashboard's HTTP side over real loopback sockets: the status JSON,
// the page and its policy, SSE framing and coalescing, the viewer limit,
// close() with viewers connected, and refusal of actions without the token.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { EventEmitter, once } from 'node:events';
import { createServer, request, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  Dashboard,
  hostAllowed,
  type DashboardOptions,
  type DashboardServices,
} from '../../src/dashboard/dashboard.js';
import { DASHBOARD_SCRIPT } from '../../src/dashboard/page.js';
import { dashboardListener } from '../../src/dashboard/listener.js';
import { BootTorrentError } from '../../src/errors.js';
import { ClientStore, type ServerSnapshot } from '../../src/server/state.js';
import { NOTHING_SENT } from '../../src/server/traffic.js';

const MiB = 1 << 20;

function snapshotOf(store: ClientStore, startedAt = Date.now()): ServerSnapshot {
  const clients = store.list();
  return {
    startedAt,
    now: Date.now(),
    server: {
      address: '127.0.0.1',
      interface: 'lo',
      httpPort: 8080,
      dhcp: 'proxy',
      environment: 'lab',
      phase1Size: 0,
    },
    clients,
    swarms: [],
    totals: {
      serverUploaded: 0,
      delivered: clients.reduce((n, c) => n + c.downloaded, 0),
      deliveredPhase1: 0,
      deliveredOs: clients.reduce((n, c) => n + c.downloaded, 0),
      sent: NOTHING_SENT,
      booted: clients.filter((c) => c.stage === 'booting' || c.stage === 'running').length,
      failed: clients.filter((c) => c.stage === 'failed').length,
    },
  };
}

async function serve(
  t: TestContext,
  services: Partial<DashboardServices> & { store?: ClientStore } = {},
  options: DashboardOptions = {},
) {
  const store = services.store ?? new ClientStore(() => 32 * MiB);
  const dashboard = new Dashboard(
    { snapshot: () => snapshotOf(store), changes: store, ...services },
    options,
  );
  const server = createServer((req, res) => {
    if (!dashboard.handle(req, res)) res.writeHead(404).end();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    dashboard.close();
    server.closeAllConnections();
    server.close();
  });
  const port = (server.address() as AddressInfo).port;
  return { store, dashboard, server, port };
}

interface Reply {
  status: number;
  headers: IncomingMessage['headers'];
  body: string;
}

function fetchText(
  port: number,
  path: string,
  init: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path, method: init.method ?? 'GET', headers: init.headers },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on('error', reject);
    req.end(init.body);
  });
}

interface SseEvent {
  event: string;
  data: string;
  comments: string[];
}

/** A raw SSE reader: splits the stream into events by the blank line (WHATWG HTML 9.2.6). */
class SseReader {
  readonly events: SseEvent[] = [];
  private buffer = '';
  private comments: string[] = [];
  private waiters: (() => void)[] = [];
  ended = false;
  readonly done: Promise<void>;

  constructor(readonly res: IncomingMessage) {
    res.setEncoding('utf8');
    res.on('data', (d: string) => this.feed(d));
    this.done = new Promise((resolve) =>
      res.once('close', () => {
        this.ended = true;
        this.wake();
        resolve();
      }),
    );
  }

  private feed(chunk: string) {
    this.buffer += chunk;
    let i;
    while ((i = this.buffer.indexOf('\n\n')) >= 0) {
      const block = this.buffer.slice(0, i);
      this.buffer = this.buffer.slice(i + 2);
      let event = 'message';
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) this.comments.push(line.slice(1).trim());
        else if (line.startsWith('event: ')) event = line.slice(7);
        else if (line.startsWith('data: ')) data.push(line.slice(6));
      }
      if (data.length > 0) {
        this.events.push({ event, data: data.join('\n'), comments: this.comments });
        this.comments = [];
      }
    }
    this.wake();
  }

  private wake() {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Waits until `pred` holds for the state read so far. */
  async until(pred: () => boolean, what: string): Promise<void> {
    while (!pred()) {
      if (this.ended) throw new Error(`stream ended before ${what}`);
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  async next(index: number): Promise<SseEvent> {
    await this.until(() => this.events.length > index, `event ${index}`);
    return this.events[index]!;
  }

  pendingComments(): string[] {
    return this.comments;
  }

  snapshot(index: number): ServerSnapshot {
    const e = this.events[index]!;
    assert.equal(e.event, 'snapshot');
    return JSON.parse(e.data) as ServerSnapshot;
  }
}

async function openEvents(t: TestContext, port: number): Promise<SseReader> {
  const req = request({
    host: '127.0.0.1',
    port,
    path: '/api/v1/events',
    headers: { accept: 'text/event-stream' },
  });
  req.end();
  const [res] = (await once(req, 'response')) as [IncomingMessage];
  t.after(() => req.destroy());
  assert.equal(res.statusCode, 200);
  assert.match(res.headers['content-type'] ?? '', /^text\/event-stream/);
  return new SseReader(res);
}

async function waitFor(pred: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (pred()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

test('GET /api/v1/status is the snapshot as JSON', async (t) => {
  const { store, port } = await serve(t);
  store.dhcp('52:54:00:00:00:01', { ip: '10.0.0.21', firmware: 'uefi-x64' });
  store.report('52:54:00:00:00:01', '10.0.0.21', {
    stage: 'downloading',
    os: 'debian',
    progress: 0.25,
    uploaded: 8 * MiB,
  });
  const r = await fetchText(port, '/api/v1/status');
  assert.equal(r.status, 200);
  assert.match(r.headers['content-type'] ?? '', /^application\/json/);
  const snap = JSON.parse(r.body) as ServerSnapshot;
  assert.equal(snap.server.environment, 'lab');
  assert.equal(snap.clients.length, 1);
  const c = snap.clients[0]!;
  assert.equal(c.mac, '52:54:00:00:00:01');
  assert.equal(c.firmware, 'uefi-x64');
  assert.equal(c.stage, 'downloading');
  assert.equal(c.progress, 0.25);
  assert.equal(c.seedRatio, 0.25);

  const head = await fetchText(port, '/api/v1/status', { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.body, '');
  assert.equal((await fetchText(port, '/api/v1/status', { method: 'PUT' })).status, 405);
  assert.equal((await fetchText(port, '/api/v1/nothing')).status, 404);
});

test('paths outside the dashboard are left to the caller', async (t) => {
  const { dashboard, port } = await serve(t);
  assert.equal((await fetchText(port, '/ipxe/boot.ipxe')).status, 404);
  assert.equal(dashboard.streamCount, 0);
});

test('/metrics: the Prometheus text, read like the status (GET and HEAD, 405 otherwise, the same Host check)', async (t) => {
  let body = '# HELP boottorrent_up Up.\n# TYPE boottorrent_up gauge\nboottorrent_up 1\n';
  let fail = false;
  const metrics = () => {
    if (fail) throw new Error('renderer bug');
    return body;
  };
  const { port } = await serve(t, { metrics }, { hostname: 'labserver' });
  const r = await fetchText(port, '/metrics');
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
  assert.equal(r.headers['cache-control'], 'no-store');
  assert.equal(r.body, body);
  body = `${body}# HELP boottorrent_x X \u00e9.\n# TYPE boottorrent_x gauge\nboottorrent_x{os="\u00e9"} 2\n`;
  const head = await fetchText(port, '/metrics', { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.body, '');
  assert.equal(
    Number(head.headers['content-length']),
    Buffer.byteLength(body, 'utf8'),
    'bytes, not characters',
  );
  const put = await fetchText(port, '/metrics', { method: 'PUT' });
  assert.equal(put.status, 405);
  assert.equal(put.headers.allow, 'GET, HEAD');
  const rebound = await fetchText(port, '/metrics', { headers: { host: 'rebind.evil.example:8480' } });
  assert.equal(rebound.status, 421);
  assert.doesNotMatch(rebound.body, /boottorrent_up/);
  assert.equal((await fetchText(port, '/metrics', { headers: { host: 'labserver:8480' } })).status, 200);
  fail = true;
  assert.equal((await fetchText(port, '/metrics')).status, 500);
});

test('/metrics without a metrics source is left to the caller', async (t) => {
  const { port } = await serve(t);
  assert.equal((await fetchText(port, '/metrics')).status, 404);
});

test('the bare dashboard port (no dashboard) serves /metrics like its /api/v1/status', async (t) => {
  const store = new ClientStore();
  const text = '# HELP boottorrent_up Up.\n# TYPE boottorrent_up gauge\nboottorrent_up 1\n';
  const server = createServer(
    dashboardListener(
      undefined,
      () => snapshotOf(store),
      undefined,
      () => text,
    ),
  );
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  const port = (server.address() as AddressInfo).port;
  const r = await fetchText(port, '/metrics');
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
  assert.equal(r.body, text);
  assert.equal((await fetchText(port, '/metrics', { method: 'HEAD' })).body, '');
  assert.equal((await fetchText(port, '/metrics', { method: 'POST' })).status, 404, 'as its status: 404');
  assert.equal((await fetchText(port, '/api/v1/status', { method: 'POST' })).status, 404);
  const without = createServer(dashboardListener(undefined, () => snapshotOf(store)));
  without.listen(0, '127.0.0.1');
  await once(without, 'listening');
  t.after(() => without.close());
  assert.equal((await fetchText((without.address() as AddressInfo).port, '/metrics')).status, 404);
});

test('the page is self-contained and its policy allows only its own inline script and style', async (t) => {
  const { port } = await serve(t);
  const r = await fetchText(port, '/');
  assert.equal(r.status, 200);
  assert.match(r.headers['content-type'] ?? '', /^text\/html/);
  // The only absolute URL is the SVG namespace, which is a name, never fetched.
  const urls = r.body.match(/\b(?:https?:)?\/\/[\w.-]+/g) ?? [];
  assert.deepEqual([...new Set(urls)], ['http://www.w3.org']);
  assert.ok(!/<(?:link|img|iframe)\b/i.test(r.body));
  assert.ok(!/\bsrc=/i.test(r.body), 'no element loads anything');
  assert.ok(!DASHBOARD_SCRIPT.includes('</'), 'the script cannot close its own element');
  assert.ok(!/innerHTML|outerHTML|insertAdjacentHTML|document\.write/.test(DASHBOARD_SCRIPT));

  const scripts = [...r.body.matchAll(/<script>([\s\S]*?)<\/script>/g)].map((m) => m[1]!);
  assert.equal(scripts.length, 1);
  const hash = createHash('sha256').update(scripts[0]!, 'utf8').digest('base64');
  const csp = String(r.headers['content-security-policy']);
  assert.match(csp, /default-src 'none'/);
  assert.ok(csp.includes(`script-src 'sha256-${hash}'`), csp);
  assert.match(csp, /connect-src 'self'/);
});

test('SSE: a snapshot on connect, then a new one after a store change', async (t) => {
  const { store, port } = await serve(t);
  store.dhcp('52:54:00:00:00:01', { firmware: 'bios' });
  const sse = await openEvents(t, port);
  const first = await sse.next(0);
  assert.equal(first.event, 'snapshot');
  assert.equal(sse.snapshot(0).clients[0]!.stage, 'dhcp');

  store.report('52:54:00:00:00:01', '10.0.0.5', { stage: 'downloading', os: 'debian', progress: 0.5 });
  await sse.next(1);
  const c = sse.snapshot(1).clients[0]!;
  assert.equal(c.stage, 'downloading');
  assert.equal(c.ip, '10.0.0.5');
  assert.equal(c.progress, 0.5);
});

test('SSE: a burst of changes is coalesced into one trailing snapshot with the final state', async (t) => {
  const { store, port } = await serve(t);
  const sse = await openEvents(t, port);
  await sse.next(0);
  for (let i = 1; i <= 100; i++)
    store.report('52:54:00:00:00:01', '10.0.0.5', { stage: 'downloading', os: 'debian', progress: i / 100 });
  // The first change goes out at once, the other 99 as one snapshot after the interval.
  await sse.until(
    () => sse.events.length > 1 && sse.snapshot(sse.events.length - 1).clients[0]?.progress === 1,
    'the final progress',
  );
  assert.ok(sse.events.length <= 3, `${sse.events.length - 1} snapshots for a burst of 100 changes`);
});

test('SSE: a viewer that stops reading holds at most one snapshot; it gets the newest when it reads again', async (t) => {
  const emitter = new EventEmitter();
  let counter = 0;
  let built = 0;
  const big = 'x'.repeat(1 << 20);
  const { port } = await serve(
    t,
    {
      changes: emitter,
      snapshot: () => {
        built++;
        return {
          ...snapshotOf(new ClientStore()),
          now: counter,
          server: { ...snapshotOf(new ClientStore()).server, environment: big },
        };
      },
    },
    { minIntervalMs: 0 },
  );
  const sse = await openEvents(t, port);
  await sse.next(0);
  sse.res.pause();
  // 64 changes of 1 MiB each, one per turn of the event loop: 64 MiB if they
  // were queued. The paused socket fills after a few; the rest are skipped.
  const CHANGES = 64;
  for (let i = 1; i <= CHANGES; i++) {
    counter = i;
    emitter.emit('change');
    await new Promise((r) => setImmediate(r));
  }
  assert.ok(built < CHANGES, `built ${built} snapshots for ${CHANGES} changes to a stalled viewer`);
  sse.res.resume();
  await sse.until(
    () => sse.events.length > 1 && sse.snapshot(sse.events.length - 1).now === CHANGES,
    'the newest snapshot',
  );
  t.diagnostic(`${built} snapshots built, ${sse.events.length - 1} sent for ${CHANGES} changes`);
  assert.ok(
    sse.events.length - 1 < CHANGES / 2,
    `${sse.events.length - 1} snapshots sent for ${CHANGES} changes`,
  );
});

test('SSE: keep-alive comments on an idle stream', async (t) => {
  const { port } = await serve(t, {}, { keepAliveMs: 20 });
  const sse = await openEvents(t, port);
  await sse.next(0);
  await sse.until(() => sse.pendingComments().includes('keep-alive'), 'a keep-alive comment');
  assert.equal(sse.events.length, 1, 'a comment is no event');
});

test('SSE: a viewer that disconnects is forgotten and the store is no longer watched', async (t) => {
  const { store, dashboard, port } = await serve(t);
  assert.equal(store.listenerCount('change'), 0);
  const sse = await openEvents(t, port);
  await sse.next(0);
  assert.equal(dashboard.streamCount, 1);
  assert.equal(store.listenerCount('change'), 1);
  sse.res.destroy();
  await waitFor(() => dashboard.streamCount === 0, 'the stream to be dropped');
  assert.equal(store.listenerCount('change'), 0);
});

test('SSE: viewers past the limit get 503 until one leaves', async (t) => {
  const { dashboard, port } = await serve(t, {}, { maxStreams: 2 });
  const a = await openEvents(t, port);
  const b = await openEvents(t, port);
  await Promise.all([a.next(0), b.next(0)]);
  const refused = await fetchText(port, '/api/v1/events');
  assert.equal(refused.status, 503);
  assert.ok(refused.headers['retry-after']);
  assert.equal(dashboard.streamCount, 2);
  a.res.destroy();
  await waitFor(() => dashboard.streamCount === 1, 'the stream to be dropped');
  const c = await openEvents(t, port);
  await c.next(0);
  assert.equal(dashboard.streamCount, 2);
});

test('close() ends open streams so the HTTP server can close with viewers connected', async (t) => {
  const emitter = new EventEmitter();
  let n = 0;
  const { dashboard, server, port } = await serve(t, {
    changes: emitter,
    snapshot: () => ({ ...snapshotOf(new ClientStore()), now: ++n }),
  });
  const a = await openEvents(t, port);
  const b = await openEvents(t, port);
  await Promise.all([a.next(0), b.next(0)]);
  assert.equal(emitter.listenerCount('change'), 1);
  dashboard.close();
  await Promise.all([a.done, b.done]);
  assert.equal(dashboard.streamCount, 0);
  assert.equal(emitter.listenerCount('change'), 0);
  // No closeAllConnections here: close() alone must let the server finish.
  await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
});

test('close() refuses new streams', async (t) => {
  const { dashboard, port } = await serve(t);
  dashboard.close();
  assert.equal((await fetchText(port, '/api/v1/events')).status, 503);
});

test('actions: refused without the token, with a wrong one, or when no token is set', async (t) => {
  const calls: unknown[] = [];
  const actions = {
    forget: (body: unknown) => {
      calls.push(body);
      return { forgotten: 1 };
    },
    fail: () => {
      throw new BootTorrentError('BT_ERR_SERVER', 'no such client');
    },
  };
  const { port } = await serve(t, { token: 's3cret-token', actions });
  const json = { 'content-type': 'application/json' };
  const body = JSON.stringify({ mac: '52:54:00:00:00:01' });

  const none = await fetchText(port, '/api/v1/actions/forget', { method: 'POST', headers: json, body });
  assert.equal(none.status, 401);
  assert.match(String(none.headers['www-authenticate']), /^Bearer/);
  const wrong = await fetchText(port, '/api/v1/actions/forget', {
    method: 'POST',
    headers: { ...json, authorization: 'Bearer s3cret-tokeN' },
    body,
  });
  assert.equal(wrong.status, 401);
  assert.match(String(wrong.headers['www-authenticate']), /invalid_token/);
  const basic = await fetchText(port, '/api/v1/actions/forget', {
    method: 'POST',
    headers: { ...json, authorization: 'Basic czNjcmV0LXRva2Vu' },
    body,
  });
  assert.equal(basic.status, 401);
  // Any POST under the API needs the token, even to a read-only path.
  assert.equal((await fetchText(port, '/api/v1/status', { method: 'POST' })).status, 401);
  assert.equal(calls.length, 0, 'no refused request ran the action');

  const auth = { ...json, authorization: 'Bearer s3cret-token' };
  const ok = await fetchText(port, '/api/v1/actions/forget', { method: 'POST', headers: auth, body });
  assert.equal(ok.status, 200, ok.body);
  assert.deepEqual(JSON.parse(ok.body), { forgotten: 1 });
  assert.deepEqual(calls, [{ mac: '52:54:00:00:00:01' }]);
  const failed = await fetchText(port, '/api/v1/actions/fail', { method: 'POST', headers: auth });
  assert.equal(failed.status, 400);
  assert.equal((JSON.parse(failed.body) as { code: string }).code, 'BT_ERR_SERVER');
  const unknown = await fetchText(port, '/api/v1/actions/reboot-all', { method: 'POST', headers: auth });
  assert.equal(unknown.status, 404);
  const proto = await fetchText(port, '/api/v1/actions/constructor', { method: 'POST', headers: auth });
  assert.equal(proto.status, 404, 'only own actions, nothing inherited');
  const text = await fetchText(port, '/api/v1/actions/forget', {
    method: 'POST',
    headers: { authorization: 'Bearer s3cret-token', 'content-type': 'text/plain' },
    body,
  });
  assert.equal(text.status, 415);
  assert.equal((await fetchText(port, '/api/v1/actions/forget')).status, 405);
  assert.equal(calls.length, 1);

  const { port: open } = await serve(t, { actions });
  const disabled = await fetchText(open, '/api/v1/actions/forget', { method: 'POST', headers: auth, body });
  assert.equal(disabled.status, 403);
  assert.equal(calls.length, 1);
});

test('hostAllowed: IP addresses, localhost and the hostname pass; other names do not', () => {
  const ok = (h: string | undefined, names: string[] = []) => hostAllowed(h, 'labserver', names);
  for (const h of [
    '127.0.0.1:8480',
    '10.0.0.1',
    '[::1]:8480',
    '[fe80::1]',
    'localhost:8480',
    'LOCALHOST',
    'app.localhost',
    'labserver:8480',
    'LabServer.',
    'labserver.:8480',
    'localhost.',
    '[::ffff:127.0.0.1]:8480',
  ])
    assert.equal(ok(h), true, h);
  for (const h of [
    undefined,
    '',
    ':8480',
    'evil.example',
    'evil.example:8480',
    'labserver.evil.example',
    'labserver.cs.example.edu',
    'notlabserver',
    'localhost.evil.example',
    '[not-an-ip]',
    '[127.0.0.1]',
    '127.0.0.1.evil.example',
    '2130706433',
    '127.1',
    'labserver.:8480:8480',
  ])
    assert.equal(ok(h), false, String(h));
  assert.equal(ok('boot.lab.example:8480', ['boot.lab.example']), true);
  assert.equal(ok('Boot.Lab.Example.', ['boot.lab.example']), true);
  assert.equal(ok('other.lab.example', ['boot.lab.example']), false);
});

test('a request whose Host names another site is refused (421) before any data; a configured name is served', async (t) => {
  const { port, store } = await serve(t, {}, { hostname: 'labserver', names: ['boot.lab.example'] });
  store.report('52:54:00:12:34:56', '10.0.0.50', { stage: 'downloading', os: 'debian', progress: 0.5 });
  for (const path of ['/', '/api/v1/status', '/api/v1/events', '/favicon.ico']) {
    const r = await fetchText(port, path, { headers: { host: 'rebind.evil.example:8480' } });
    assert.equal(r.status, 421, path);
    assert.doesNotMatch(r.body, /52:54:00/);
    assert.match((JSON.parse(r.body) as { error: string }).error, /--dashboard-name rebind\.evil\.example/);
  }
  const posted = await fetchText(port, '/api/v1/actions/x', {
    method: 'POST',
    headers: { host: 'rebind.evil.example' },
  });
  assert.equal(posted.status, 421);
  const named = await fetchText(port, '/api/v1/status', { headers: { host: 'boot.lab.example:8480' } });
  assert.equal(named.status, 200);
  assert.match(named.body, /52:54:00:12:34:56/);
  const byIp = await fetchText(port, '/api/v1/status');
  assert.equal(byIp.status, 200);
  for (const target of ['//', '/\\']) assert.equal((await fetchText(port, target)).status, 400, target);
});
