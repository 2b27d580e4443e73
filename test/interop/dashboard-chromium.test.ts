// The dashboard in a real browser (Debian's chromium, driven by
// playwright-core) showing a real download: our engine seeds a 32 MiB image
// on loopback with a capped upload, two of our leechers fetch it, and their
// session stats are fed into the ClientStore as agent reports. The page must
// follow it live over SSE (no reload), draw the charts once the clients
// boot, and show a hostile error string as text.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium, type ConsoleMessage, type Page } from 'playwright-core';
import { Dashboard } from '../../src/dashboard/dashboard.js';
import { ClientStore, type ServerSnapshot } from '../../src/server/state.js';
import { NOTHING_SENT } from '../../src/server/traffic.js';
import { BitTorrentClient } from '../../src/swarm/client.js';
import type { TorrentSession } from '../../src/swarm/session.js';
import { createTorrent } from '../../src/torrent/create.js';
import { requireProgram } from '../helpers/programs.js';
import { pseudoRandomBytes, tempDir } from '../helpers/tmp.js';

const MiB = 1 << 20;
const MACS = ['52:54:00:12:34:01', '52:54:00:12:34:02'] as const;
const BAD_MAC = '52:54:00:12:34:ff';
const EVIL = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> disk & "full"';

/** A browser-side expression: the percent a client's row shows, or -1 before the row exists. */
const percentOf = (mac: string) =>
  `(() => { const el = document.querySelector('tr[data-mac="${mac}"] td.progress .pct'); ` +
  `return el ? parseInt(el.textContent, 10) : -1; })()`;
const textOf = (selector: string) =>
  `(() => { const el = document.querySelector(${JSON.stringify(selector)}); return el ? el.textContent : null; })()`;

/**
 * Polls a browser-side expression until it is truthy. Not page.waitForFunction:
 * its string predicates run through eval, which the page's own
 * Content-Security-Policy forbids (page.evaluate goes through the
 * DevTools protocol, which the policy does not cover).
 */
async function until(page: Page, expression: string, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await page.evaluate(expression))) {
    if (Date.now() > deadline) throw new Error(`the page never showed ${what} (${expression})`);
    await sleep(50);
  }
}

test('the dashboard in Chromium follows a real download live', { timeout: 120_000 }, async (t) => {
  const chromiumPath = requireProgram('chromium', 'chromium');
  const dir = tempDir(t);
  const seedDir = join(dir, 'seed');
  mkdirSync(seedDir);
  const image = join(seedDir, 'os.img');
  writeFileSync(image, pseudoRandomBytes(32 * MiB, 2026));
  const { meta } = await createTorrent(image, { pieceLength: 256 * 1024, hashWorkers: 0 });

  // The server's seeder, capped so the download lasts a few seconds.
  const seeder = new BitTorrentClient({ host: '127.0.0.1', port: 0 });
  t.after(() => seeder.close());
  const seedPort = await seeder.listen();
  const seed = await seeder.add({ meta, dir: seedDir, mode: 'seed', uploadLimit: 6 * MiB });

  const store = new ClientStore((os) => (os === 'debian' ? meta.length : undefined));
  const startedAt = Date.now();
  /** Set half-way: the server is a satellite whose upstream stopped answering (its error is network text). */
  let upstream: ServerSnapshot['server']['upstream'] = undefined;
  const snapshot = (): ServerSnapshot => {
    const clients = store.list();
    const serverUploaded = seed.stats().uploaded;
    const done = clients.filter((c) => c.stage === 'booting' || c.stage === 'running');
    return {
      startedAt,
      now: Date.now(),
      server: {
        address: '127.0.0.1',
        interface: 'lo',
        httpPort: 8080,
        dhcp: 'proxy',
        environment: 'chromium-lab',
        phase1Size: 0,
        ...(upstream ? { upstream } : {}),
      },
      clients,
      swarms: [
        {
          os: 'debian',
          name: 'Debian (test image)',
          infoHash: meta.infoHashHex,
          size: meta.length,
          seeders: 1 + done.length,
          leechers: clients.filter((c) => c.stage === 'downloading').length,
          completed: done.length,
          serverUploaded,
        },
      ],
      totals: {
        serverUploaded,
        // Phase 1 counts too (#16): 40 MB of it sent for 2 boots of 30 MB, the OS from the seeder.
        delivered: 2 * 30e6 + clients.reduce((n, c) => n + c.downloaded, 0),
        deliveredPhase1: 2 * 30e6,
        deliveredOs: clients.reduce((n, c) => n + c.downloaded, 0),
        sent: {
          ...NOTHING_SENT,
          phase1: 40e6,
          os: serverUploaded,
          total: 40e6 + serverUploaded + 1000,
          other: 1000,
        },
        booted: done.length,
        failed: clients.filter((c) => c.stage === 'failed').length,
      },
    };
  };
  const dashboard = new Dashboard({ snapshot, changes: store });
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
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;

  const browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox'] });
  t.after(() => browser.close());
  const page = await browser.newPage();
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg: ConsoleMessage) => {
    if (msg.type() === 'error') problems.push(`console: ${msg.text()}`);
  });
  let navigations = 0;
  page.on('framenavigated', (f) => {
    if (f === page.mainFrame()) navigations++;
  });
  await page.goto(url);
  await until(page, `document.getElementById('conn').getAttribute('data-state') === 'live'`, 'a live stream');
  assert.equal(await page.evaluate(textOf('#h-env')), 'chromium-lab');
  // A marker a reload would wipe: the updates below must arrive without one.
  await page.evaluate('window.__sameDocument = true');

  // A client that failed, with an error string built to run script if inserted as HTML.
  store.dhcp(BAD_MAC, { ip: '127.0.0.9', firmware: 'bios' });
  store.report(BAD_MAC, '127.0.0.9', { stage: 'failed', os: 'debian', error: EVIL });

  // Two agents: they appear by DHCP, then download for real.
  for (const mac of MACS) store.dhcp(mac, { ip: '127.0.0.1', firmware: 'uefi-x64' });
  // Each knows the seeder and the agents before it, as a tracker would tell them.
  const leechers: TorrentSession[] = [];
  const peers = [`127.0.0.1:${seedPort}`];
  for (const [i] of MACS.entries()) {
    const client = new BitTorrentClient({ host: '127.0.0.1', port: 0 });
    t.after(() => client.close());
    const port = await client.listen();
    leechers.push(
      await client.add({ meta, dir: join(dir, `leech${i}`), mode: 'download', peers: [...peers] }),
    );
    peers.push(`127.0.0.1:${port}`);
  }
  // What an agent does: report its session's stats every 200 ms, then 'booting' when complete.
  const reporter = setInterval(() => {
    leechers.forEach((session, i) => {
      const mac = MACS[i]!;
      const s = session.stats();
      if (store.get(mac)?.stage === 'booting') return;
      store.report(mac, '127.0.0.1', {
        stage: s.complete ? 'booting' : 'downloading',
        os: 'debian',
        progress: 1 - s.left / s.length,
        downloaded: s.downloaded,
        uploaded: s.uploaded,
        downloadRate: s.downloadRate,
        uploadRate: s.uploadRate,
        peers: s.peers.length,
      });
    });
  }, 200);
  t.after(() => clearInterval(reporter));

  // Rows for both, and a first client part way through...
  const first = MACS[0];
  await until(page, `${percentOf(MACS[0])} >= 0 && ${percentOf(MACS[1])} >= 0`, 'both rows');
  await until(page, `${percentOf(first)} > 0 && ${percentOf(first)} < 100`, 'a partial download');
  const partial = await page.evaluate<number>(percentOf(first));
  assert.ok(partial > 0 && partial < 100, `first reading ${partial}%`);
  // ...then at 100 % and booting, in the same document.
  await until(page, `${percentOf(first)} === 100`, 'the download complete', 60_000);
  for (const mac of MACS)
    await until(page, `${textOf(`tr[data-mac="${mac}"] td.stage`)} === 'booting'`, `${mac} booting`, 60_000);
  assert.equal(await page.evaluate('window.__sameDocument'), true);
  assert.equal(navigations, 1, 'the page was never reloaded');
  const progressBar = await page.evaluate(
    `document.querySelector('tr[data-mac="${first}"] td.progress progress').value`,
  );
  assert.equal(progressBar, 1);

  // Header totals and the swarm row.
  await until(page, `${textOf('#h-booted')} === '2' && ${textOf('#h-failed')} === '1'`, 'the totals');
  assert.match(
    String(await page.evaluate(textOf('#h-traffic'))),
    /^server sent [\d.]+ MB \(phase 1 40\.0 MB, OS [\d.]+ MB\) for [\d.]+ MB delivered$/,
  );
  assert.equal(await page.evaluate(textOf('#swarms tr[data-os="debian"] td')), 'Debian (test image)');

  // The charts: one point per booted client, server vs mean client, one ratio bar per agent.
  await until(page, `document.querySelectorAll('#chart-boot circle.point').length === 2`, 'two boot points');
  const pointMacs = await page.evaluate(
    `[...document.querySelectorAll('#chart-boot circle.point')].map((c) => c.getAttribute('data-mac')).sort()`,
  );
  assert.deepEqual(pointMacs, [...MACS].sort());
  assert.equal(await page.evaluate(`document.querySelectorAll('#chart-sent rect.bar').length`), 2);
  const serverBarHeight = Number(
    await page.evaluate(`document.querySelector('#chart-sent rect.bar.server').getAttribute('height')`),
  );
  assert.ok(serverBarHeight > 0, 'the server sent something');
  assert.equal(await page.evaluate(`document.querySelectorAll('#chart-ratio rect.bar').length`), 3);

  // A server that is not a satellite shows no upstream; a satellite shows whether it answers.
  assert.equal(await page.evaluate(`document.getElementById('h-upstream-row').hidden`), true);
  upstream = {
    url: 'http://10.0.0.1',
    reachable: false,
    lastContact: Date.now() - 60_000,
    error: EVIL,
    fetching: [{ id: 'debian', progress: 0.5 }],
  };
  store.emit('change', store.list()[0]!);
  await until(page, `document.getElementById('h-upstream-row').hidden === false`, 'the upstream row');
  assert.equal(
    await page.evaluate(textOf('#h-upstream')),
    `http://10.0.0.1: does not answer (${EVIL}); booting with what this server has; fetching debian 50 %`,
  );
  assert.equal(await page.evaluate(`document.querySelectorAll('#h-upstream *').length`), 0);

  // The hostile error is text: shown verbatim, nothing parsed, nothing run.
  assert.equal(await page.evaluate(textOf(`tr[data-mac="${BAD_MAC}"] td.error`)), EVIL);
  assert.equal(await page.evaluate(`document.querySelectorAll('td.error *').length`), 0);
  assert.equal(await page.evaluate('typeof window.__pwned'), 'undefined');
  assert.equal(await page.evaluate(textOf(`tr[data-mac="${BAD_MAC}"] td.stage`)), 'failed');

  // The stream drops (every socket cut): the page reconnects by itself and
  // shows what changed meanwhile, still without a reload.
  assert.deepEqual(problems, [], 'no script error, no policy violation');
  assert.equal(dashboard.streamCount, 1);
  server.closeAllConnections();
  store.report(BAD_MAC, '127.0.0.9', { stage: 'failed', os: 'debian', error: 'checksum mismatch' });
  await until(
    page,
    `${textOf(`tr[data-mac="${BAD_MAC}"] td.error`)} === 'checksum mismatch'`,
    'the change after a drop',
  );
  await until(
    page,
    `document.getElementById('conn').getAttribute('data-state') === 'live'`,
    'a live stream again',
  );
  assert.equal(dashboard.streamCount, 1);
  assert.equal(navigations, 1, 'reconnected without a reload');

  // To look at the page: DASHBOARD_SCREENSHOT=/tmp/dashboard.png
  if (process.env.DASHBOARD_SCREENSHOT)
    await page.screenshot({ path: process.env.DASHBOARD_SCREENSHOT, fullPage: true });
  // The cut itself is logged by the browser as a failed load; nothing else may be.
  assert.deepEqual(
    problems.filter((p) => !/Failed to load resource: net::ERR_/.test(p)),
    [],
  );
});

test(
  'a page refused for too many viewers keeps retrying and goes live when a seat frees',
  { timeout: 60_000 },
  async (t) => {
    const chromiumPath = requireProgram('chromium', 'chromium');
    const store = new ClientStore();
    const snapshot = (): ServerSnapshot => ({
      startedAt: 0,
      now: Date.now(),
      server: {
        address: '127.0.0.1',
        interface: null,
        httpPort: 80,
        dhcp: 'off',
        environment: 'one-seat',
        phase1Size: 0,
      },
      clients: store.list(),
      swarms: [],
      totals: {
        serverUploaded: 0,
        delivered: 0,
        deliveredPhase1: 0,
        deliveredOs: 0,
        sent: NOTHING_SENT,
        booted: 0,
        failed: 0,
      },
    });
    const dashboard = new Dashboard({ snapshot, changes: store }, { maxStreams: 1 });
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
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    const browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox'] });
    t.after(() => browser.close());
    const live = `document.getElementById('conn').getAttribute('data-state') === 'live'`;

    const first = await browser.newPage();
    await first.goto(url);
    await until(first, live, 'the first viewer live');
    const second = await browser.newPage();
    await second.goto(url);
    // EventSource gives up for good on a 503; the page's own retry must take over.
    await until(
      second,
      `document.getElementById('conn').textContent === 'disconnected, retrying'`,
      'the refusal',
    );
    await first.close();
    store.dhcp('52:54:00:ab:cd:ef', { firmware: 'bios' });
    await until(second, live, 'the second viewer live');
    await until(
      second,
      `document.querySelector('tr[data-mac="52:54:00:ab:cd:ef"]') !== null`,
      'the client row',
    );
    assert.equal(dashboard.streamCount, 1);
  },
);
