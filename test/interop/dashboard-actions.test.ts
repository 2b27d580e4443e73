/**
 * The dashboard's room actions (#17 items 1, 5) in a real browser (Debian's
 * chromium, driven by playwright-core), against the real Dashboard, the
 * real room actions and a real NextBootStore writing next-boot.json.
 *
 * Wake-on-LAN is real too, so everything runs inside a network namespace
 * the test creates: the server's address (10.77.0.1) is on the namespace's
 * bridge br0, the magic packets go to 255.255.255.255 from there, and
 * tcpdump captures them on br0. Node cannot move one socket into a
 * namespace, so the dashboard runs in a child process inside it (this same
 * file, started with SERVE_ARG: see serve() below), and Chromium is started
 * inside it too (a two-line wrapper around `ip netns exec`), reaching the
 * dashboard on the namespace's loopback. Nothing reaches the host's network.
 *
 * The child writes the action token to server.json (mode 0600) as `start`
 * does; the test reads it from there, like the sysadmin (docs/operations.md,
 * "Dashboard actions").
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { chromium, type ConsoleMessage, type Page } from 'playwright-core';
import { Dashboard } from '../../src/dashboard/dashboard.js';
import { NetLab, labEnvYaml } from '../../src/demo/lab.js';
import { loadEnvironment } from '../../src/env/load.js';
import { machineOf } from '../../src/env/room.js';
import { NextBootStore } from '../../src/server/next-boot.js';
import { roomActions } from '../../src/server/room-actions.js';
import { ClientStore, type ServerSnapshot } from '../../src/server/state.js';
import { NOTHING_SENT } from '../../src/server/traffic.js';
import { magicPacket } from '../../src/wol/wake.js';
import { removedWithTest, waitForOutput } from '../helpers/netns.js';
import { requireProgram } from '../helpers/programs.js';
import { onProcessEnd, stopSync } from '../helpers/reaper.js';
import { tempDir } from '../helpers/tmp.js';
import { childEnded } from '../helpers/wait.js';

const SERVE_ARG = '--serve-dashboard-in-namespace';
const LAN = '10.77.0';
const PC1 = '52:54:00:77:00:01';
const PC2 = '52:54:00:77:00:02';
/** In group room-b, never seen and without a name: woken by its MAC. */
const PC3 = '52:54:00:77:00:03';
const CLIENTS = [PC1, PC2] as const;

// ---- the dashboard server, run inside the namespace -------------------------

/**
 * `node dashboard-actions.test.js SERVE_ARG ENV STATE`: the dashboard of the
 * environment in ENV with two clients (pc-01, pc-02) that booted `tool`,
 * real room actions and next-boot.json in STATE. Writes STATE/server.json
 * (dashboard URL and token, mode 0600), prints `READY <url>`, then one
 * `ACTION <name> <answer> STORE <next-boot entries>` line per action that
 * succeeded, until SIGTERM.
 */
async function serve(envDir: string, stateDir: string): Promise<void> {
  const env = await loadEnvironment(envDir, { machineChecks: false });
  const nextBoot = new NextBootStore(join(stateDir, 'next-boot.json'));
  await nextBoot.load();
  const store = new ClientStore(() => 100e6);
  for (const [i, mac] of CLIENTS.entries()) {
    const ip = `${LAN}.${101 + i}`;
    store.dhcp(mac, { ip, firmware: 'uefi-x64' });
    store.report(mac, ip, {
      stage: 'booting',
      os: 'tool',
      progress: 1,
      downloaded: 100e6,
      uploaded: (i + 1) * 50e6,
      peers: 1,
    });
  }
  const actions = roomActions({
    environment: () => env,
    nextBoot,
    osIds: () => env.oss.map((o) => o.id),
    knownMacs: () => store.list().map((c) => c.mac),
  });
  const logged = Object.fromEntries(
    Object.entries(actions).map(([name, run]) => [
      name,
      async (body: unknown) => {
        const answer = await run(body);
        process.stdout.write(
          `ACTION ${name} ${JSON.stringify(answer)} STORE ${JSON.stringify(nextBoot.list())}\n`,
        );
        return answer;
      },
    ]),
  );
  // What app.ts's snapshot() adds for the room: names, groups, next boots.
  const startedAt = Date.now();
  const snapshot = (): ServerSnapshot => {
    const clients = store.list().map((c) => {
      const m = machineOf(env, c.mac);
      const nb = nextBoot.forMachine(c.mac, m.groups);
      return {
        ...c,
        name: m.name,
        groups: m.groups,
        nextBoot: nb
          ? { os: nb.os, once: nb.once, via: nb.via.kind === 'group' ? nb.via.key : 'machine' }
          : null,
      };
    });
    const entries = nextBoot.list();
    return {
      startedAt,
      now: Date.now(),
      room: {
        groups: env.groups.map((g) => {
          const e = entries.groups[g.name];
          return { name: g.name, nextBoot: e ? { os: e.os, once: e.once } : null };
        }),
        hosts: [...env.hosts].flatMap(([mac, h]) => (h.name ? [{ mac, name: h.name }] : [])),
      },
      server: {
        address: env.server.address,
        interface: env.server.interface,
        httpPort: env.server.httpPort,
        dhcp: env.dhcp.mode,
        environment: env.dir,
        phase1Size: 0,
      },
      clients,
      swarms: env.oss.map((o) => ({
        os: o.id,
        name: o.name,
        infoHash: '00'.repeat(20),
        size: 100e6,
        seeders: 1,
        leechers: 0,
        completed: clients.length,
        serverUploaded: 0,
      })),
      totals: {
        serverUploaded: 0,
        delivered: 0,
        deliveredPhase1: 0,
        deliveredOs: 0,
        sent: NOTHING_SENT,
        booted: clients.length,
        failed: 0,
      },
    };
  };
  const token = randomBytes(24).toString('base64url');
  const dashboard = new Dashboard({ snapshot, changes: store, token, actions: logged });
  const server = createServer((req, res) => {
    if (!dashboard.handle(req, res)) res.writeHead(404).end();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  await writeFile(
    join(stateDir, 'server.json'),
    JSON.stringify({ pid: process.pid, startedAt, dashboardUrl: url, bootUrl: url, token }),
    { mode: 0o600 },
  );
  process.once('SIGTERM', () => {
    dashboard.close();
    server.closeAllConnections();
    // Nothing else holds the event loop: the process ends once the listener is closed.
    server.close();
  });
  process.stdout.write(`READY ${url}\n`);
}

// ---- the test -------------------------------------------------------------------

interface Frame {
  ms: number;
  data: Buffer;
}

/** The whole frames of a classic little-endian pcap file (Ethernet); a record still being written is left out. */
function readPcap(buf: Buffer): Frame[] {
  if (buf.length < 24) return [];
  const magic = buf.readUInt32LE(0);
  const nano = magic === 0xa1b23c4d;
  if (magic !== 0xa1b2c3d4 && !nano) throw new Error(`not a pcap file (magic ${magic.toString(16)})`);
  assert.equal(buf.readUInt32LE(20), 1, 'Ethernet link type');
  const frames: Frame[] = [];
  for (let off = 24; off + 16 <= buf.length;) {
    const len = buf.readUInt32LE(off + 8);
    if (off + 16 + len > buf.length) break;
    const frac = buf.readUInt32LE(off + 4);
    frames.push({
      ms: buf.readUInt32LE(off) * 1000 + (nano ? frac / 1e6 : frac / 1e3),
      data: buf.subarray(off + 16, off + 16 + len),
    });
    off += 16 + len;
  }
  return frames;
}

/** A browser-side expression: the text of the first element `selector` matches, or null. */
const textOf = (selector: string) =>
  `(() => { const el = document.querySelector(${JSON.stringify(selector)}); return el ? el.textContent : null; })()`;
/** A browser-side expression: one property of every element `selector` matches. */
const listOf = (selector: string, property: string) =>
  `[...document.querySelectorAll(${JSON.stringify(selector)})].map((el) => el[${JSON.stringify(property)}])`;
const cell = (mac: string, cls: string) => textOf(`tr[data-mac="${mac}"] td.${cls}`);

/**
 * Polls a browser-side expression until it is truthy. Not page.waitForFunction:
 * its string predicates run through eval, which the page's own
 * Content-Security-Policy forbids (page.evaluate goes through the
 * DevTools protocol, which the policy does not cover).
 */
async function until(page: Page, expression: string, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await page.evaluate(expression))) {
    if (Date.now() > deadline) throw new Error(`the page never showed ${what} (${expression})`);
    await sleep(50);
  }
}

/** The action's answer line as the page shows it, once it is not "sending..." any more. */
async function result(page: Page): Promise<{ state: string | null; text: string }> {
  await until(
    page,
    `['ok', 'error'].includes(document.getElementById('act-result').getAttribute('data-state'))`,
    'the action answered',
  );
  return page.evaluate<{ state: string | null; text: string }>(
    `(() => { const p = document.getElementById('act-result'); ` +
      `return { state: p.getAttribute('data-state'), text: p.textContent }; })()`,
  );
}

/** Clicks an action button after clearing the last answer, so the next one read is this click's. */
async function act(page: Page, button: string): Promise<{ state: string | null; text: string }> {
  await page.evaluate(`document.getElementById('act-result').removeAttribute('data-state')`);
  await page.click(button);
  return result(page);
}

if (process.argv[2] === SERVE_ARG) {
  await serve(process.argv[3]!, process.argv[4]!);
} else {
  test(
    'dashboard actions in Chromium: names in rows, next boot per machine and group, wake on a namespace LAN, refused without the token',
    { timeout: 180_000 },
    async (t) => {
      const chromiumPath = requireProgram('chromium', 'chromium');
      const tcpdump = requireProgram('tcpdump', 'tcpdump');
      const dir = tempDir(t, 'bt-dash-actions-');
      const envDir = join(dir, 'env');
      const stateDir = join(envDir, '.boottorrent');
      mkdirSync(stateDir, { recursive: true, mode: 0o700 });
      for (const [id, name] of [
        ['exam', 'Exam'],
        ['tool', 'Tool'],
      ]) {
        mkdirSync(join(envDir, 'oss', id!), { recursive: true });
        writeFileSync(join(envDir, 'oss', id!, 'run.sh'), '#!/bin/sh\necho hi\n');
        chmodSync(join(envDir, 'oss', id!, 'run.sh'), 0o755);
        writeFileSync(join(envDir, 'oss', id!, 'config.yaml'), `name: ${name}\nmethod: bin\nbin: run.sh\n`);
      }
      writeFileSync(
        join(envDir, 'Boottorrent.yaml'),
        labEnvYaml({
          lan: LAN,
          range: [100, 200],
          defaultOs: 'tool',
          timeout: 0,
          seedTime: 0,
          hosts: { [PC1]: '{ name: pc-01 }', [PC2]: '{ name: pc-02 }' },
        }) + `groups:\n  room-b:\n    macs: ['${PC1}', '${PC2}', '${PC3}']\n`,
      );
      const nextBootFile = join(stateDir, 'next-boot.json');
      const onDisk = () =>
        JSON.parse(readFileSync(nextBootFile, 'utf8')) as {
          macs: Record<string, { os: string; once: boolean }>;
          groups: Record<string, { os: string; once: boolean; done: string[] }>;
        };

      // The namespace LAN: the server's address on br0, nothing linked to the host.
      const lab = removedWithTest(t, new NetLab('dact', `${LAN}.1/24`));

      // tcpdump on br0 from the start: every magic packet the wake sends.
      const pcap = join(dir, 'br0.pcap');
      const capture = spawn(
        'ip',
        [
          'netns',
          'exec',
          lab.ns,
          tcpdump,
          '-i',
          'br0',
          '--immediate-mode',
          '-U',
          '-n',
          '-w',
          pcap,
          'udp port 9',
        ],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      const forgetCapture = onProcessEnd(() => stopSync(capture.pid, 'SIGKILL', 0));
      t.after(() => {
        if (capture.exitCode === null && capture.signalCode === null) capture.kill('SIGKILL');
        forgetCapture();
      });
      let captureErr = '';
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`tcpdump did not start: ${captureErr}`)), 20_000);
        capture.stderr.on('data', (d: Buffer) => {
          captureErr += d.toString();
          if (/listening on/.test(captureErr)) {
            clearTimeout(timer);
            resolve();
          }
        });
      });

      // The dashboard in the namespace (killed by PID with the lab), without the test runner's context.
      const server = lab.spawn('env', [
        '-u',
        'NODE_TEST_CONTEXT',
        process.execPath,
        '--enable-source-maps',
        fileURLToPath(import.meta.url),
        SERVE_ARG,
        envDir,
        stateDir,
      ]);
      t.after(() => lab.stop(server));
      const url = (await waitForOutput(server, /^READY (\S+)$/m, 30_000, 'the dashboard'))[1]!;
      const info = JSON.parse(readFileSync(join(stateDir, 'server.json'), 'utf8')) as { token: string };
      const actionLines = () => server.output().match(/^ACTION .*$/gm) ?? [];

      // Chromium inside the namespace too: it reaches the dashboard on the namespace's loopback.
      const wrapper = join(dir, 'chromium-in-namespace');
      writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec '${lab.ns}' '${chromiumPath}' "$@"\n`, {
        mode: 0o755,
      });
      const browser = await chromium.launch({ executablePath: wrapper, args: ['--no-sandbox'] });
      t.after(() => browser.close());
      const problems: string[] = [];
      const requests: { path: string; authorization: string | undefined; status: number }[] = [];
      const watch = (page: Page) => {
        page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
        page.on('console', (msg: ConsoleMessage) => {
          // Chromium logs every 4xx answer as "Failed to load resource": the refusals below are meant.
          if (msg.type() === 'error' && !/Failed to load resource: .*40[13]/.test(msg.text()))
            problems.push(`console: ${msg.text()}`);
        });
        page.on('response', (res) => {
          const path = new URL(res.url()).pathname;
          if (path.startsWith('/api/v1/actions/'))
            requests.push({
              path,
              authorization: res.request().headers().authorization,
              status: res.status(),
            });
        });
        return page;
      };
      const live = `document.getElementById('conn').getAttribute('data-state') === 'live'`;

      let page = watch(await browser.newPage());
      await page.goto(url);
      await until(page, live, 'a live stream');

      await t.test('rows and charts name each machine, its MAC beside it', async () => {
        await until(
          page,
          `${cell(PC1, 'name')} === 'pc-01' && ${cell(PC2, 'name')} === 'pc-02'`,
          'the names',
        );
        assert.equal(await page.evaluate(cell(PC1, 'mac')), PC1);
        assert.equal(
          await page.evaluate(`document.querySelector('tr[data-mac="${PC1}"] td.name').title`),
          PC1,
        );
        assert.equal(await page.evaluate(cell(PC1, 'next')), '-');
        const headers = await page.evaluate<string[]>(listOf('#clients thead th', 'textContent'));
        assert.deepEqual(headers.slice(1, 3), ['Name', 'MAC']);
        assert.ok(headers.includes('Next boot'), headers.join(','));
        await until(
          page,
          `document.querySelectorAll('#chart-boot circle.point').length === 2`,
          'boot points',
        );
        assert.match(
          String(await page.evaluate(textOf(`#chart-boot circle.point[data-mac="${PC1}"] title`))),
          /^pc-01 \(52:54:00:77:00:01\): /,
        );
        assert.equal(
          await page.evaluate(
            `document.querySelectorAll('#chart-ratio rect.bar[data-label="pc-02 (${PC2})"]').length`,
          ),
          1,
        );
        const ratioLabels = await page.evaluate<string[]>(listOf('#chart-ratio text', 'textContent'));
        assert.ok(ratioLabels.includes('pc-01') && ratioLabels.includes('pc-02'), ratioLabels.join(','));
        // The choices: the OS ids of the swarms, the environment's group.
        assert.deepEqual(await page.evaluate(listOf('#act-os option', 'value')), ['exam', 'tool']);
        assert.deepEqual(await page.evaluate(listOf('#act-group option', 'value')), ['', 'room-b']);
        // Select-all ticks every row; unticking it clears them.
        await page.check('#select-all');
        assert.equal(await page.evaluate(textOf('#act-targets')), 'targets: 2 machines');
        assert.equal(await page.isChecked(`tr[data-mac="${PC2}"] td.select input`), true);
        await page.uncheck('#select-all');
        assert.equal(await page.isChecked(`tr[data-mac="${PC1}"] td.select input`), false);
      });

      await t.test(
        'without the token the server refuses (401), the page says so, nothing is written',
        async () => {
          assert.equal(await page.evaluate(textOf('#token-state')), 'no token: actions will be refused');
          await page.check(`tr[data-mac="${PC1}"] td.select input`);
          await page.selectOption('#act-os', 'exam');
          const r = await act(page, '#act-next');
          assert.equal(r.state, 'error');
          assert.equal(
            r.text,
            'the server refused (401): this needs Authorization: Bearer <token> \u2014 open the dashboard with ' +
              '#token=... (the token in server.json, in the state folder), or paste it in the Token field',
          );
          // Shown as text: the server's "<token>" made no element.
          assert.equal(await page.evaluate(`document.querySelectorAll('#act-result *').length`), 0);
          assert.deepEqual(requests.at(-1), {
            path: '/api/v1/actions/next-boot',
            authorization: undefined,
            status: 401,
          });

          // A wrong token pasted into the field: refused the same way, with the server's reason.
          await page.fill('#token-input', 'not-the-token');
          await page.click('#token-use');
          assert.equal(await page.evaluate(textOf('#token-state')), 'token set (this tab only)');
          const wrong = await act(page, '#act-wake');
          assert.equal(wrong.state, 'error');
          assert.match(
            wrong.text,
            /^the server refused \(401\): wrong token \u2014 open the dashboard with #token=/,
          );
          assert.deepEqual(requests.at(-1), {
            path: '/api/v1/actions/wake',
            authorization: 'Bearer not-the-token',
            status: 401,
          });
          await page.click('#token-forget');
          assert.equal(await page.evaluate(`sessionStorage.getItem('boottorrent.token')`), null);

          assert.equal(existsSync(nextBootFile), false, 'no next-boot.json');
          assert.deepEqual(actionLines(), [], 'no action ran');
          assert.equal(await page.evaluate(cell(PC1, 'next')), '-');
        },
      );

      await t.test('#token= in the address is kept for the tab and taken out of the address', async () => {
        // A new tab, as the sysadmin opens it: the token arrives with the page's first load.
        await page.close();
        page = watch(await browser.newPage());
        await page.goto(`${url}#token=${encodeURIComponent(info.token)}`);
        await until(page, live, 'a live stream');
        assert.equal(await page.evaluate('location.href'), url);
        assert.equal(page.url(), url);
        assert.equal(await page.evaluate(`sessionStorage.getItem('boottorrent.token')`), info.token);
        assert.equal(await page.evaluate(textOf('#token-state')), 'token set (this tab only)');
        assert.equal(await page.evaluate(textOf('#act-result')), '');
      });

      await t.test(
        'a ticked machine gets a next boot (once): next-boot.json has it, the row shows it',
        async () => {
          await until(page, `${cell(PC1, 'name')} === 'pc-01'`, 'the rows');
          await page.check(`tr[data-mac="${PC1}"] td.select input`);
          await page.selectOption('#act-os', 'exam');
          assert.equal(await page.isChecked('#act-once'), true, '"once" is ticked by default');
          const r = await act(page, '#act-next');
          assert.deepEqual(r, { state: 'ok', text: 'next boot of pc-01: exam (once)' });
          assert.deepEqual(requests.at(-1), {
            path: '/api/v1/actions/next-boot',
            authorization: `Bearer ${info.token}`,
            status: 200,
          });
          // The server's store, its file, and a store loaded from that file again.
          const line = actionLines().at(-1)!;
          assert.match(line, /^ACTION next-boot /);
          const inStore = JSON.parse(line.slice(line.indexOf(' STORE ') + 7)) as ReturnType<
            NextBootStore['list']
          >;
          assert.deepEqual({ ...inStore.macs[PC1], setAt: 0 }, { os: 'exam', once: true, setAt: 0 });
          const file = onDisk();
          assert.deepEqual(Object.keys(file.macs), [PC1]);
          assert.equal(file.macs[PC1]!.os, 'exam');
          assert.equal(file.macs[PC1]!.once, true);
          const again = new NextBootStore(nextBootFile);
          await again.load();
          const e = again.forMachine(PC1, ['room-b'])!;
          assert.deepEqual([e.os, e.once, e.via], ['exam', true, { kind: 'mac', key: PC1 }]);
          assert.equal(again.forMachine(PC2, ['room-b']), undefined);
          // The row follows (the page fetches the status after an action).
          await until(page, `${cell(PC1, 'next')} === 'exam (once)'`, "pc-01's next boot");
          assert.equal(await page.evaluate(cell(PC2, 'next')), '-');
        },
      );

      await t.test("a group as target: its members' next boot, then cleared", async () => {
        await page.uncheck(`tr[data-mac="${PC1}"] td.select input`);
        await page.selectOption('#act-group', 'room-b');
        assert.equal(await page.evaluate(textOf('#act-targets')), 'targets: group room-b');
        await page.selectOption('#act-os', 'tool');
        await page.uncheck('#act-once');
        const r = await act(page, '#act-next');
        assert.deepEqual(r, { state: 'ok', text: 'next boot of group room-b: tool' });
        const file = onDisk();
        assert.deepEqual(file.groups['room-b'] && { ...file.groups['room-b'], setAt: 0 }, {
          os: 'tool',
          once: false,
          setAt: 0,
          done: [],
        });
        assert.deepEqual(Object.keys(file.macs), [PC1], "pc-01's own entry stays");
        // pc-02 boots the group's; pc-01's own entry wins over its group's.
        await until(page, `${cell(PC2, 'next')} === 'tool via room-b'`, "pc-02's next boot from its group");
        assert.equal(await page.evaluate(cell(PC1, 'next')), 'exam (once)');
        assert.equal(await page.evaluate(textOf('#groups')), 'Groups: room-b (next boot tool)');
        assert.equal(
          await page.evaluate(textOf('#act-group option[value="room-b"]')),
          'room-b \u2014 next: tool',
        );

        const cleared = await act(page, '#act-clear');
        assert.deepEqual(cleared, { state: 'ok', text: 'next boot cleared: group room-b' });
        assert.deepEqual(onDisk().groups, {});
        await until(page, `${cell(PC2, 'next')} === '-'`, "pc-02's next boot cleared");
        assert.equal(await page.evaluate(cell(PC1, 'next')), 'exam (once)');
      });

      await t.test(
        "wake: the group's machines get their magic packets on br0, paced over the spread",
        async () => {
          assert.equal(await page.evaluate(`document.getElementById('act-group').value`), 'room-b');
          await page.fill('#act-spread', '1');
          const r = await act(page, '#act-wake');
          assert.deepEqual(r, { state: 'ok', text: `waking pc-01, pc-02, ${PC3} over 1 s` });
          const line = actionLines().at(-1)!;
          assert.match(line, /^ACTION wake /);
          const answer = JSON.parse(line.slice('ACTION wake '.length, line.indexOf(' STORE '))) as unknown;
          assert.deepEqual(answer, {
            waking: [
              { mac: PC1, name: 'pc-01' },
              { mac: PC2, name: 'pc-02' },
              { mac: PC3, name: null },
            ],
            spreadSeconds: 1,
            unlisted: [],
          });

          // Three packets per machine; the last machine's first one a spread (1 s) after the first's.
          const magic = (f: Frame, mac: string) =>
            f.data.length >= 42 + 102 && f.data.subarray(42, 42 + 102).equals(magicPacket(mac));
          const deadline = Date.now() + 15_000;
          let frames: Frame[] = [];
          while ((frames = existsSync(pcap) ? readPcap(readFileSync(pcap)) : []).length < 9) {
            if (Date.now() > deadline) throw new Error(`${frames.length} of 9 magic packets captured`);
            await sleep(100);
          }
          await sleep(300);
          capture.kill('SIGINT');
          await childEnded(capture);
          frames = readPcap(readFileSync(pcap));
          assert.equal(frames.length, 9, 'no other packet');
          const firstAt: number[] = [];
          for (const mac of [PC1, PC2, PC3]) {
            const mine = frames.filter((f) => magic(f, mac));
            assert.equal(mine.length, 3, `three packets for ${mac}`);
            for (const f of mine) {
              assert.equal(f.data.subarray(0, 6).toString('hex'), 'ffffffffffff', 'Ethernet broadcast');
              assert.equal([...f.data.subarray(26, 30)].join('.'), `${LAN}.1`, 'from the served address');
              assert.equal([...f.data.subarray(30, 34)].join('.'), '255.255.255.255');
              assert.equal(f.data.readUInt16BE(36), 9, 'UDP port 9');
            }
            firstAt.push(mine[0]!.ms);
          }
          // Spread 1 s over three machines: 0, 0.5 and 1 s. Timers never fire early.
          for (let i = 1; i < firstAt.length; i++)
            assert.ok(
              firstAt[i]! - firstAt[i - 1]! >= 450,
              `machine ${i + 1} woke ${firstAt[i]! - firstAt[i - 1]!} ms after the one before`,
            );
        },
      );

      // To look at the page: DASHBOARD_ACTIONS_SCREENSHOT=/tmp/actions.png
      if (process.env.DASHBOARD_ACTIONS_SCREENSHOT)
        await page.screenshot({ path: process.env.DASHBOARD_ACTIONS_SCREENSHOT, fullPage: true });
      assert.deepEqual(problems, [], 'no script error, no policy violation');
    },
  );
}
