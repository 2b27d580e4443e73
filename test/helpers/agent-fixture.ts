/**
 * A loopback BootTorrent "server" for agent tests: a tiny HTTP server with
 * the boot config, the .torrent files and the report endpoint, plus our
 * engine seeding the OS folders; and the agent run as a child process in
 * host mode, driven through its stdin.
 */
import { childEnded } from './wait.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, type KeyObject } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { signatureFor } from '../../src/server/signing.js';
import { createServer } from 'node:http';
import { createSocket } from 'node:dgram';
import { createServer as createNetServer } from 'node:net';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import type { BootConfig, BootOs } from '../../src/boot-config.js';
import { BitTorrentClient } from '../../src/swarm/client.js';
import { createTorrent } from '../../src/torrent/create.js';
import { tempDir } from './tmp.js';

/** The agent to run: dist's, or (BOOTTORRENT_AGENT_MAIN) e.g. the esbuild bundle phase 1 carries. */
export const AGENT_MAIN =
  process.env.BOOTTORRENT_AGENT_MAIN ?? new URL('../../src/agent/main.js', import.meta.url).pathname;
export const TOKEN = 'test-token-1234';
export const MAC = '52:54:00:12:34:56';

export type OsSpec = {
  id: string;
  name: string;
  files: Record<string, Buffer | string>;
  /** Serve 404 for its torrent. */
  missingTorrent?: boolean;
  /** Put a wrong SHA-256 for this file in the config. */
  badSha?: string;
} & (
  | { method: 'bin'; bin: string; args: string[] }
  | { method: 'qemu'; args: string[] }
  | { method: 'kexec'; kernel: string; initrd: string[]; cmdline: string }
);

export interface ReceivedReport {
  token: string | undefined;
  body: Record<string, unknown>;
}

export interface Fixture {
  server: string;
  reports: ReceivedReport[];
  config: BootConfig;
}

/** A UDP port nothing listens on (bound, then released). */
async function closedUdpPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** What the fixture needs of a test context: somewhere to register clean-up. */
export interface Cleanup {
  after(fn: () => unknown): void;
}

/** A TCP port nothing listens on (bound, then released). */
async function closedTcpPort(host: string): Promise<number> {
  const srv = createNetServer();
  await new Promise<void>((r) => srv.listen(0, host, () => r()));
  const addr = srv.address();
  await new Promise<void>((r) => srv.close(() => r()));
  return typeof addr === 'object' && addr ? addr.port : 9;
}

export async function startFixture(
  t: Cleanup,
  opts: {
    /** Address for the HTTP server and the seeder (default 127.0.0.1). */
    host?: string;
    lsd?: boolean;
    /** List a peer address where nothing listens instead of the seeder (a swarm with no one in it). */
    deadSeeder?: boolean;
    /** Folder for the OS folders (default: a temporary one removed at the end). */
    root?: string;
    oss: OsSpec[];
    default: string | null;
    timeout: number;
    seedTime?: number;
    /** Seeder upload cap in bytes/s, so a download lasts a few report intervals. */
    uploadLimit?: number;
    /** Hand out an empty report token, as the server does to a requester it cannot tie to the MAC. */
    noToken?: boolean;
    /**
     * Sign the boot config as the server does (src/server/signing.ts) with
     * this private key; `nonce` 'echo' (the server's way), 'stale' (a nonce
     * from an earlier request: a replay) or 'none'.
     */
    sign?: { key: KeyObject; nonce: 'echo' | 'stale' | 'none' };
  },
): Promise<Fixture> {
  const host = opts.host ?? '127.0.0.1';
  const root = opts.root ?? mkdtempSync(join(tmpdir(), 'bt-agent-srv-'));
  if (opts.root === undefined) t.after(() => rmSync(root, { recursive: true, force: true }));
  const torrents = new Map<string, Buffer>();
  const seeder = new BitTorrentClient({ host, port: 0 });
  await seeder.listen();
  t.after(() => seeder.close());
  const oss: BootOs[] = [];
  const reports: ReceivedReport[] = [];
  const http = createServer((req, res) => {
    const url = req.url ?? '';
    if (req.method === 'POST' && url === '/api/v1/report') {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const tok = req.headers['x-boottorrent-token'];
        reports.push({
          token: typeof tok === 'string' ? tok : undefined,
          body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>,
        });
        res.writeHead(204).end();
      });
      return;
    }
    const asked = new URL(url, 'http://x');
    if (asked.pathname === `/api/v1/boot/${MAC}`) {
      const nonce = asked.searchParams.get('nonce');
      const sign = opts.sign;
      const body = Buffer.from(
        JSON.stringify(
          !sign || sign.nonce === 'none' || nonce === null
            ? config
            : { ...config, nonce: sign.nonce === 'echo' ? nonce : 'ab'.repeat(16) },
        ),
      );
      res
        .writeHead(200, {
          'content-type': 'application/json',
          ...(sign ? { 'x-boottorrent-signature': signatureFor(sign.key, body) } : {}),
        })
        .end(body);
      return;
    }
    const m = /^\/torrents\/([\w.-]+)\.torrent$/.exec(url);
    const tor = m ? torrents.get(m[1]!) : undefined;
    if (tor) {
      res.writeHead(200, { 'content-type': 'application/x-bittorrent' }).end(tor);
      return;
    }
    res.writeHead(404).end('not found');
  });
  await new Promise<void>((r) => http.listen(0, host, () => r()));
  t.after(() => new Promise<void>((r) => http.close(() => r())));
  http.unref();
  const addr = http.address();
  const server = `http://${host}:${typeof addr === 'object' && addr ? addr.port : 0}`;

  for (const spec of opts.oss) {
    const dir = join(root, spec.id);
    for (const [p, data] of Object.entries(spec.files)) {
      mkdirSync(join(dir, p, '..'), { recursive: true });
      writeFileSync(join(dir, p), data);
    }
    const { torrent, meta } = await createTorrent(dir, { name: spec.id, creationDate: null });
    if (!spec.missingTorrent) torrents.set(spec.id, torrent);
    await seeder.add({
      meta,
      dir: root,
      mode: 'seed',
      ...(opts.uploadLimit ? { uploadLimit: opts.uploadLimit } : {}),
    });
    const files = meta.files.map((f) => {
      const path = f.path.join('/');
      const data = spec.files[path]!;
      const sha = createHash('sha256').update(data).digest('hex');
      return {
        path,
        length: f.length,
        sha256: spec.badSha === path ? sha.replace(/^./, sha[0] === '0' ? '1' : '0') : sha,
      };
    });
    const base = {
      id: spec.id,
      name: spec.name,
      torrentUrl: `${server}/torrents/${spec.id}.torrent`,
      infoHash: meta.infoHashHex,
      files,
    };
    if (spec.method === 'bin') oss.push({ ...base, method: 'bin', bin: spec.bin, args: spec.args });
    else if (spec.method === 'qemu') oss.push({ ...base, method: 'qemu', args: spec.args });
    else
      oss.push({ ...base, method: 'kexec', kernel: spec.kernel, initrd: spec.initrd, cmdline: spec.cmdline });
  }
  const config: BootConfig = {
    version: 1,
    mac: MAC,
    server,
    menu: { timeout: opts.timeout, default: opts.default },
    seedTime: opts.seedTime ?? 0,
    peers: {
      // A tracker nobody answers: the download must still work through `seeds`.
      trackers: [`udp://127.0.0.1:${await closedUdpPort()}/announce`],
      seeds: [`${host}:${opts.deadSeeder ? await closedTcpPort(host) : seeder.listenPort}`],
      lsd: opts.lsd ?? false,
      pex: true,
    },
    reportUrl: `${server}/api/v1/report`,
    reportToken: opts.noToken ? '' : TOKEN,
    oss,
  };
  return { server, reports, config };
}

export interface AgentRun {
  child: ChildProcess;
  dir: string;
  output(): string;
  /** Resolves when the output matches; rejects (with the output) after `timeoutMs` or if the agent exits first. */
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  send(text: string): void;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Runs the agent in host mode (`--no-network`, a fresh download folder,
 * any free peer port) in its own process group, killed (group) when the
 * test ends so a qemu or program it started goes too.
 */
export function runAgent(
  t: TestContext,
  server: string,
  extra: string[] = [],
  opts: {
    /** Run the agent through this command, e.g. ['ip', 'netns', 'exec', ns] (it must exec, keeping the PID). */
    prefix?: string[];
    /** Bring up NICs with DHCP (default false: --no-network). */
    network?: boolean;
    env?: NodeJS.ProcessEnv;
    /** Download folder (default: a fresh temporary one). */
    dir?: string;
  } = {},
): AgentRun {
  const dir = opts.dir ?? tempDir(t, 'bt-agent-dl-');
  const [cmd, ...pre] = [...(opts.prefix ?? []), process.execPath];
  const child = spawn(
    cmd,
    [
      ...pre,
      '--enable-source-maps',
      AGENT_MAIN,
      '--server',
      server,
      '--mac',
      MAC,
      '--dir',
      dir,
      ...(opts.network ? [] : ['--no-network']),
      '--port',
      '0',
      ...extra,
    ],
    { stdio: ['pipe', 'pipe', 'pipe'], detached: true, ...(opts.env ? { env: opts.env } : {}) },
  );
  let out = '';
  const listeners = new Set<() => void>();
  const onData = (d: Buffer) => {
    out += d.toString('utf8');
    for (const l of listeners) l();
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const exited = childEnded(child).then((r) => {
    for (const l of listeners) l();
    return r;
  });
  let done = false;
  void exited.then(() => (done = true));
  t.after(() => {
    if (!done && child.pid !== undefined) {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  });
  const waitFor = (re: RegExp, timeoutMs = 30_000) =>
    new Promise<RegExpMatchArray>((resolve, reject) => {
      const check = () => {
        const m = re.exec(out);
        if (m) {
          cleanup();
          resolve(m);
        } else if (child.exitCode !== null || child.signalCode !== null) {
          cleanup();
          reject(new Error(`agent exited before printing ${re}; output:\n${out}`));
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`agent never printed ${re} within ${timeoutMs} ms; output:\n${out}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        listeners.delete(check);
      };
      listeners.add(check);
      check();
    });
  return {
    child,
    dir,
    output: () => out,
    waitFor,
    send: (text) => child.stdin.write(text),
    exited,
  };
}
