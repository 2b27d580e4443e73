/**
 * The agent's flow on one machine: network -> boot config -> menu ->
 * download -> verify -> seed -> load, with a failure screen (retry, menu,
 * shell) wherever a step fails. Every stage prints one greppable line,
 * `boottorrent-agent: stage=<stage> [os=<id>]`, and is reported to the
 * server when the config named where.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import { connect, createServer } from 'node:net';
import { readFile, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { promisify } from 'node:util';
import type { AgentReport, AgentStage, BootConfig, BootOs } from '../boot-config.js';
import { isBootTorrentError, errorText } from '../errors.js';
import { BitTorrentClient } from '../swarm/client.js';
import type { SessionStats, TorrentSession } from '../swarm/session.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { formatBytes, progressLine } from '../util/format.js';
import type { AgentArgs } from './cmdline.js';
import { AgentConsole } from './console.js';
import {
  choiceForKey,
  initMenu,
  menuKey,
  menuTick,
  renderFailure,
  renderCountdown,
  renderMenu,
  resumeMenu,
  type Choice,
  type FailureInfo,
  type MenuAction,
  type MenuState,
} from './menu.js';
import { bringUpNetwork, type Lease } from './network.js';
import { Reporter, peakRssBytes } from './report.js';
import { PhaseOneShare } from './phase1-share.js';
import { fetchHeldFiles } from './phase1-hold.js';
import {
  StepFailure,
  binCommand,
  download,
  fetchBootConfig,
  fetchOverlay,
  fetchTorrent,
  unpackOverlay,
  unverifiedText,
  withOverlay,
  kexecCommands,
  secureBootEnforced,
  signatureRefused,
  kvmUsable,
  qemuCommand,
  qemuScreenHere,
  showCommand,
  singleInitrd,
  verifyFiles,
  type Command,
} from './steps.js';

const execFileP = promisify(execFile);

export interface AgentServices {
  stdin: Readable & { isTTY?: boolean; setRawMode?(mode: boolean): unknown };
  stdout: Writable & { isTTY?: boolean };
  logger?: Logger;
}

/** Backoff between boot-config attempts before the failure screen, in seconds. */
const CONFIG_BACKOFF = [1, 2, 4, 8];
/** Seconds before the failure screen retries by itself, when the network or the server is not there (yet). */
const NETWORK_AUTO_RETRY = 15;
const CONFIG_AUTO_RETRY = 30;
/** While serving phase 1, the last stage is reported again this often (the server forgets a silent peer after 30 s). */
const SHARE_HEARTBEAT_MS = 10_000;
/** How long a phase-1 transfer to another client may go on once this machine loads its OS. */
const SHARE_GRACE_MS = 30_000;

type BootResult = 'menu' | 'quit' | 'done';

/** How a boot attempt ended: the agent's work is done (kexec, dry run), or the OS program exited. */
type RunOutcome = { readonly kind: 'done' } | { readonly kind: 'exited'; readonly status: string };

export class Agent {
  private readonly con: AgentConsole;
  private readonly log: Logger;
  private client: BitTorrentClient | undefined;
  private reporter: Reporter | undefined;
  private lease: Lease | undefined;
  private config: BootConfig | undefined;
  private menuState: MenuState | undefined;
  private readonly seeded = new Set<string>();
  private crash: ((err: unknown) => void) | undefined;
  private readonly quitLabel: string;
  /** Serves this client's phase-1 payload to later clients (#16), once the network is up. */
  private share: PhaseOneShare | undefined;
  private sharePort: number | undefined;
  /** UEFI Secure Boot as the firmware told phase 1's kernel (undefined: not known, e.g. BIOS or host mode). */
  private secureBoot: boolean | undefined;
  /** The last stage reported, repeated while sharing so the server keeps offering this client. */
  private lastReport: { stage: AgentStage; os?: string } | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  /** It serves the kernel and stage 0 too (a holder, phase1-hold.ts); the fetch stops with sharing. */
  private holding = false;
  private holdAbort: AbortController | undefined;

  constructor(
    private readonly args: AgentArgs,
    services: AgentServices,
  ) {
    this.con = new AgentConsole(services.stdin, services.stdout);
    this.log = (services.logger ?? silentLogger).child('agent');
    this.quitLabel = args.hostMode ? 'quit' : 'power off';
  }

  private say(line: string): void {
    this.con.write(`${line}\n`);
  }

  private stage(stage: AgentStage, os?: BootOs, extra = ''): void {
    this.say(`boottorrent-agent: stage=${stage}${os ? ` os=${os.id}` : ''}${extra}`);
    this.log.debug('stage', { stage, peakRssMB: Math.round((peakRssBytes() ?? 0) / 1e6) });
    this.lastReport = { stage, ...(os ? { os: os.id } : {}) };
    this.reporter?.send(this.lastReport);
  }

  /** Starts serving the phase-1 payload if this client has one (it came through stage 0). */
  private async startSharing(): Promise<void> {
    if (!this.args.shareFile || this.share) return;
    // Stage 0 relayed what it fetched with busybox httpd on this port: it stops, the agent serves on.
    await stopStage0Relay(join(dirname(this.args.shareFile), 'stage0-httpd.pid'));
    this.share = new PhaseOneShare({ file: this.args.shareFile, port: this.args.sharePort }, this.log);
    this.sharePort = await this.share.start();
    if (this.sharePort === undefined) {
      this.share = undefined;
      return;
    }
    this.say(`boottorrent-agent: serving phase 1 to later clients on port ${this.sharePort}`);
    // Reports come with progress; in a long menu wait there are none, so say where we are now and then.
    this.heartbeat = setInterval(() => {
      if (this.lastReport) this.reporter?.send(this.lastReport);
    }, SHARE_HEARTBEAT_MS);
    this.heartbeat.unref();
  }

  /** When the server wants it, fetches the kernel and stage 0 to serve them too; never in the way of booting. */
  private async hold(files: NonNullable<AgentArgs['hold']>, token: string): Promise<void> {
    const abort = new AbortController();
    this.holdAbort = abort;
    try {
      const o = {
        server: this.args.server,
        mac: this.args.mac,
        token,
        files,
        dir: join(this.args.dir, 'phase1-held'),
        signal: abort.signal,
        log: this.log,
      };
      const held = await fetchHeldFiles(o);
      if (!held || !this.share || abort.signal.aborted) return;
      await this.share.addFiles(held);
    } catch (err) {
      this.log.info('not holding the phase-1 kernel', { error: errorText(err) });
      return;
    }
    // Sharing may have stopped while the files came in.
    if (abort.signal.aborted || !this.share) return;
    this.holding = true;
    this.say('boottorrent-agent: serving the phase-1 kernel and stage 0 to later clients too');
    this.reporter?.setAlways(this.alwaysFields());
    if (this.lastReport) this.reporter?.send(this.lastReport);
  }

  /** What every report says: where this client serves phase 1, and Secure Boot. */
  private alwaysFields(): Partial<AgentReport> {
    return {
      ...(this.sharePort !== undefined ? { phase1Port: this.sharePort } : {}),
      ...(this.sharePort !== undefined && this.holding ? { phase1Loader: true } : {}),
      ...(this.secureBoot !== undefined ? { secureBoot: this.secureBoot } : {}),
    };
  }

  /** Stops serving phase 1, letting transfers in progress finish for up to `graceMs`. */
  private async stopSharing(graceMs: number): Promise<void> {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.heartbeat = undefined;
    this.holdAbort?.abort();
    this.holding = false;
    const share = this.share;
    this.share = undefined;
    if (!share) return;
    // A report without the port tells the server to send no one here any more.
    this.sharePort = undefined;
    this.reporter?.setAlways(this.secureBoot !== undefined ? { secureBoot: this.secureBoot } : {});
    if (this.lastReport && graceMs > 0) {
      this.reporter?.send(this.lastReport);
      await this.reporter?.flush(2000);
    }
    await share.close(graceMs);
  }

  /**
   * An error nobody awaited (unhandledRejection, uncaughtException): shown,
   * and the step in progress fails to the failure screen instead of hanging.
   */
  unexpected(err: unknown): void {
    this.say(`boottorrent-agent: unexpected error: ${(err as Error)?.stack ?? String(err)}`);
    const crash = this.crash;
    this.crash = undefined;
    crash?.(err);
  }

  /** Programs the agent started and waits on (an OS, its viewer, a shell): ended with the agent. */
  private readonly children = new Set<ChildProcess>();
  /** Programs of `children` on the console in the foreground: Ctrl-C there is theirs. */
  private foreground = 0;
  private stopping = false;

  /** A signal is ending the agent (shutdown). */
  get isStopping(): boolean {
    return this.stopping;
  }

  private started(child: ChildProcess, foreground: boolean): void {
    this.children.add(child);
    if (foreground) this.foreground++;
    let gone = false;
    const end = () => {
      if (gone) return;
      gone = true;
      this.children.delete(child);
      if (foreground) this.foreground--;
    };
    child.once('exit', end);
    child.once('error', end);
  }

  /**
   * A signal reached the agent. SIGINT while a program runs in the
   * foreground is that program's (the terminal sent it to both; it decides)
   * and is ignored here. Otherwise the agent ends: the programs it started
   * get SIGTERM (SIGKILL after 3 s), stage 0's relay stops, the server gets
   * the last report and the swarm a goodbye, within `graceMs`. Resolves
   * false when the signal was left to the foreground program.
   */
  async shutdown(signal: NodeJS.Signals, graceMs = 5000): Promise<boolean> {
    if (signal === 'SIGINT' && this.foreground > 0) return false;
    if (this.stopping) return true;
    this.stopping = true;
    const programs = [...this.children];
    this.say(
      `boottorrent-agent: stopped by ${signal}` +
        (programs.length > 0 ? `; ending ${programs.map((c) => c.spawnfile).join(', ')}` : ''),
    );
    const tidy = async () => {
      await endChildren(programs, 3000);
      this.con.detach();
      await this.stopSharing(0);
      await this.reporter?.flush(1000);
      this.reporter?.close();
      await this.client?.close().catch(() => undefined);
    };
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([tidy().catch(() => undefined), new Promise((r) => (timer = setTimeout(r, graceMs)))]);
    clearTimeout(timer);
    // Past the grace, whatever still runs is killed rather than left behind.
    for (const c of programs) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    return true;
  }

  private guarded<T>(p: Promise<T>): Promise<T> {
    const crashed = new Promise<never>((_, reject) => (this.crash = reject));
    return Promise.race([p, crashed]).finally(() => (this.crash = undefined));
  }

  /** Runs the agent until it powers off (0) or loads an OS; resolves with the process exit code. */
  async run(): Promise<number> {
    this.say(`boottorrent-agent: starting; server ${this.args.server}, mac ${this.args.mac}`);
    try {
      return await this.flow();
    } finally {
      this.con.detach();
      await this.stopSharing(0);
      await this.reporter?.flush(2000);
      this.reporter?.close();
      await this.client?.close().catch(() => undefined);
      this.say(`boottorrent-agent: agent peak RSS ${Math.round((peakRssBytes() ?? 0) / 1e6)} MB`);
    }
  }

  private async flow(): Promise<number> {
    if (this.args.network && (await this.network()) === 'quit') return 0;
    await this.startSharing();
    for (;;) {
      if (!this.config) {
        const got = await this.fetchConfig();
        if (got === 'quit') return 0;
        continue;
      }
      const action = await this.menu(this.config);
      if (action.kind === 'quit') return 0;
      if (action.kind === 'shell') {
        await this.shell();
        continue;
      }
      if (action.kind === 'reload') {
        this.config = undefined;
        this.menuState = undefined;
        continue;
      }
      const os = this.config.oss.find((o) => o.id === action.id);
      if (!os) continue;
      const result = await this.boot(this.config, os);
      if (result === 'quit' || result === 'done') return 0;
    }
  }

  // -------------------------------------------------------------------------
  // network and config

  private async network(): Promise<'ok' | 'quit'> {
    for (;;) {
      this.stage('network');
      try {
        this.lease = await this.guarded(
          bringUpNetwork({
            logger: this.log,
            say: (l) => this.say(`boottorrent-agent: ${l}`),
            // The NIC the server booted (boottorrent.mac), not whichever NIC leases first.
            mac: this.args.mac,
          }),
        );
        this.say(`boottorrent-agent: network up: ${this.lease.nic} ${this.lease.address}`);
        return 'ok';
      } catch (err) {
        const choice = await this.failure(
          {
            what: 'network',
            error: (err as Error).message,
            hint: 'the network cable and that a DHCP server (the BootTorrent server) answers on this LAN',
          },
          undefined,
          NETWORK_AUTO_RETRY,
        );
        if (choice === 'quit') return 'quit';
      }
    }
  }

  /** The server's public key (AgentArgs.serverKey), read once. */
  private async serverKey(): Promise<KeyObject | undefined> {
    const file = this.args.serverKey;
    if (file === undefined) return undefined;
    let pem: string;
    try {
      pem = await readFile(file, 'utf8');
    } catch (err) {
      throw new StepFailure(
        'boot config',
        `phase 1 has no server key (${file}: ${(err as NodeJS.ErrnoException).code ?? errorText(err)}), so no boot config can be trusted`,
        "that phase 1 was started by the BootTorrent server's iPXE script, which loads the key after the initramfs (a server older than this phase 1 does not)",
      );
    }
    try {
      const key = createPublicKey(pem);
      if (key.asymmetricKeyType !== 'ed25519') throw new Error(`a ${key.asymmetricKeyType} key`);
      return key;
    } catch (err) {
      throw new StepFailure(
        'boot config',
        `${file} is not an Ed25519 public key (${errorText(err)})`,
        "the server's key archive (/phase1-key/server-key.cpio) and the iPXE script",
      );
    }
  }

  private async fetchConfig(): Promise<'ok' | 'quit'> {
    for (;;) {
      this.stage('config');
      let last: unknown;
      for (let attempt = 0; attempt <= CONFIG_BACKOFF.length; attempt++) {
        try {
          const key = await this.serverKey();
          if (this.args.network && this.secureBoot === undefined) {
            this.secureBoot = await secureBootEnforced();
            if (this.secureBoot)
              this.say('boottorrent-agent: UEFI Secure Boot is on: kernels load only when signed');
          }
          const config = await this.guarded(fetchBootConfig(this.args.server, this.args.mac, undefined, key));
          this.config = config;
          this.reporter?.close();
          // An empty token: the server could not tie this machine to its MAC
          // (docs/deployment.md §9); boot without reporting rather than send refused reports.
          this.reporter = config.reportToken
            ? new Reporter(
                {
                  url: config.reportUrl,
                  token: config.reportToken,
                  always: this.alwaysFields(),
                },
                this.log,
              )
            : undefined;
          this.say(
            `boottorrent-agent: boot config: ${config.oss.length} OS(s), default ${config.menu.default ?? '(none)'}`,
          );
          // A holder when the server wants one (src/server/phase1-loader.ts): once, with this MAC's token.
          if (this.share && this.args.hold && !this.holdAbort && config.reportToken)
            void this.hold(this.args.hold, config.reportToken);
          return 'ok';
        } catch (err) {
          last = err;
          const wait = CONFIG_BACKOFF[attempt];
          if (wait === undefined) break;
          this.say(
            `boottorrent-agent: cannot get the boot config (attempt ${attempt + 1}): ${(err as Error).message}; retrying in ${wait} s`,
          );
          await new Promise((r) => setTimeout(r, wait * 1000));
        }
      }
      const choice = await this.failure(this.toFailure(last, undefined), undefined, CONFIG_AUTO_RETRY);
      if (choice === 'quit') return 'quit';
    }
  }

  // -------------------------------------------------------------------------
  // menu, shell, failure screen

  private async menu(config: BootConfig): Promise<MenuAction> {
    this.stage('menu');
    let state =
      this.menuState === undefined
        ? initMenu(
            config.oss.map((o) => ({ id: o.id, name: o.name })),
            config.menu.default,
            config.menu.timeout,
          )
        : resumeMenu(this.menuState);
    const header = {
      mac: this.args.mac,
      server: this.args.server,
      quitLabel: this.quitLabel,
      ...(config.name ? { name: config.name } : {}),
    };
    this.con.write(renderMenu(state, header));
    let nextTick = Date.now() + 1000;
    while (state.action === undefined) {
      const wait = state.countdown !== null ? Math.max(0, nextTick - Date.now()) : undefined;
      const key = await this.con.nextKey(wait);
      if (key) {
        state = menuKey(state, key);
        this.con.write(renderMenu(state, header));
      } else {
        state = menuTick(state);
        nextTick += 1000;
        this.con.write(renderCountdown(state));
      }
    }
    this.con.write('\r\n');
    this.menuState = state;
    const action = state.action;
    if (action.kind === 'boot') this.say(`boottorrent-agent: chose ${action.id}`);
    return action;
  }

  /** `sh` on the console; the menu comes back when it exits. */
  private async shell(): Promise<void> {
    this.say('boottorrent-agent: starting a shell; type exit to come back');
    const code = await this.runInherit({ file: 'sh', args: [] });
    this.say(`boottorrent-agent: shell exited (${code})`);
  }

  private async runInherit(c: Command): Promise<string> {
    this.con.detach();
    try {
      return await new Promise<string>((resolve) => {
        const child = spawn(c.file, [...c.args], {
          stdio: 'inherit',
          ...(c.cwd ? { cwd: c.cwd } : {}),
          ...(c.env ? { env: { ...process.env, ...c.env } } : {}),
        });
        this.started(child, true);
        child.once('error', (err) => resolve(`could not start: ${err.message}`));
        child.once('exit', (code, signal) => resolve(signal ? `signal ${signal}` : `status ${code}`));
      });
    } finally {
      this.con.flush();
      this.con.attach();
    }
  }

  /**
   * Runs `c` (QEMU serving its screen over VNC on loopback) and, once that
   * port answers, `viewer` on the console (directvnc on the framebuffer, with
   * the keyboard and mouse); ends the viewer when `c` ends. A viewer that
   * cannot start or dies leaves the guest running unseen: that is said on the
   * console, and the guest's end still ends the step.
   */
  private async runWithViewer(c: Command, viewer: Command): Promise<string> {
    this.con.detach();
    let view: ChildProcess | undefined;
    try {
      const child = spawn(c.file, [...c.args], {
        stdio: 'inherit',
        ...(c.cwd ? { cwd: c.cwd } : {}),
        ...(c.env ? { env: { ...process.env, ...c.env } } : {}),
      });
      this.started(child, true);
      const ended = new Promise<string>((resolve) => {
        child.once('error', (err) => resolve(`could not start: ${err.message}`));
        child.once('exit', (code, signal) => resolve(signal ? `signal ${signal}` : `status ${code}`));
      });
      const port = vncPort(c.args);
      const ready =
        port !== undefined && (await Promise.race([portAnswers(port, 30_000), ended.then(() => false)]));
      if (ready) {
        this.say(`boottorrent-agent: showing the guest with ${showCommand(viewer)}`);
        view = spawn(viewer.file, [...viewer.args], {
          stdio: ['ignore', 'ignore', 'inherit'],
          env: { ...process.env, ...viewer.env },
        });
        this.started(view, true);
        view.once('error', (err) =>
          this.say(
            `boottorrent-agent: cannot show the guest (${viewer.file}: ${err.message}); it runs unseen`,
          ),
        );
        view.once('exit', (code, signal) => {
          if (child.exitCode === null && child.signalCode === null)
            this.say(
              `boottorrent-agent: ${viewer.file} ended (${signal ?? `status ${code}`}); the guest runs unseen`,
            );
        });
      }
      return await ended;
    } finally {
      if (view && view.exitCode === null && view.signalCode === null) {
        view.kill('SIGTERM');
        await new Promise((r) => {
          const t = setTimeout(r, 3000);
          view!.once('exit', () => {
            clearTimeout(t);
            r(undefined);
          });
        });
        if (view.exitCode === null && view.signalCode === null) view.kill('SIGKILL');
      }
      this.con.flush();
      this.con.attach();
    }
  }

  private toFailure(err: unknown, os: BootOs | undefined): FailureInfo {
    if (err instanceof StepFailure) return { what: err.what, error: err.message, hint: err.hint };
    const msg = errorText(err);
    return {
      what: os ? `boot of ${os.name}` : 'the agent',
      error: isBootTorrentError(err) ? `${err.code}: ${msg}` : msg,
      hint: 'the messages above; the server log',
    };
  }

  /** The failure screen: says what failed and what to check, reports it, waits for r, m or q (s runs a shell and comes back). */
  private async failure(
    f: FailureInfo,
    os?: BootOs,
    autoRetrySeconds?: number,
  ): Promise<Exclude<Choice, 'shell'>> {
    this.say(`boottorrent-agent: stage=failed${os ? ` os=${os.id}` : ''} what=${JSON.stringify(f.what)}`);
    this.reporter?.send({
      stage: 'failed',
      ...(os ? { os: os.id } : {}),
      error: `${f.what}: ${f.error}`.slice(0, 2000),
    });
    this.con.flush();
    for (;;) {
      this.con.write(renderFailure(f, this.quitLabel));
      // Unattended machines (the server came up after them) retry by themselves.
      const deadline = autoRetrySeconds !== undefined ? Date.now() + autoRetrySeconds * 1000 : undefined;
      if (autoRetrySeconds !== undefined)
        this.say(`boottorrent-agent: retrying by itself in ${autoRetrySeconds} s`);
      let choice: Choice | undefined;
      while (choice === undefined) {
        const left = deadline !== undefined ? deadline - Date.now() : undefined;
        if (left !== undefined && left <= 0) {
          choice = 'retry';
          break;
        }
        const key = await this.con.nextKey(left);
        if (key) choice = choiceForKey(key);
      }
      this.say(`boottorrent-agent: choice=${choice}`);
      if (choice !== 'shell') return choice;
      await this.shell();
    }
  }

  /** The screen after an OS program exited: run again, menu, shell, quit. */
  private async afterRun(os: BootOs, status: string): Promise<Exclude<Choice, 'shell'>> {
    for (;;) {
      this.con.write(
        `\r\n${os.name} exited with ${status}.\r\n` +
          `Press r to run it again, m for the menu, s for a shell, q to ${this.quitLabel}.\r\n`,
      );
      let choice: Choice | undefined;
      while (choice === undefined) {
        const key = await this.con.nextKey();
        if (key) choice = choiceForKey(key);
      }
      this.say(`boottorrent-agent: choice=${choice}`);
      if (choice !== 'shell') return choice;
      await this.shell();
    }
  }

  // -------------------------------------------------------------------------
  // boot

  private async ensureClient(): Promise<BitTorrentClient> {
    if (this.client) return this.client;
    const client = new BitTorrentClient({ port: this.args.port }, { logger: this.log });
    await client.listen();
    this.client = client;
    return client;
  }

  private async boot(config: BootConfig, os: BootOs): Promise<BootResult> {
    for (;;) {
      let choice: Exclude<Choice, 'shell'>;
      try {
        const outcome = await this.guarded(this.bootOnce(config, os));
        if (outcome.kind === 'done') return 'done';
        choice = await this.afterRun(os, outcome.status);
      } catch (err) {
        this.log.debug('boot failed', { os: os.id, error: (err as Error)?.message });
        choice = await this.failure(this.toFailure(err, os), os);
      }
      if (choice === 'menu') return 'menu';
      if (choice === 'quit') return 'quit';
    }
  }

  private progress(prefix: string, os: BootOs, stage: 'downloading' | 'seeding', s: SessionStats): void {
    const line = `${prefix} ${os.id}: ${progressLine(s)}`;
    this.con.write(this.con.isTTY ? `\r\x1b[K${line}` : `${line}\n`);
    this.reporter?.send({
      stage,
      os: os.id,
      progress: s.length > 0 ? (s.length - s.left) / s.length : 1,
      downloaded: s.downloaded,
      uploaded: s.uploaded,
      downloadRate: Math.round(s.downloadRate),
      uploadRate: Math.round(s.uploadRate),
      peers: s.peers.length,
    });
  }

  private endProgress(): void {
    if (this.con.isTTY) this.con.write('\n');
  }

  /** Download, verify, seed, load. Resolves 'done' when the agent's work ends, or how the OS program exited. */
  private async bootOnce(config: BootConfig, os: BootOs): Promise<RunOutcome> {
    this.stage('downloading', os);
    const client = await this.ensureClient();
    const meta = await fetchTorrent(os);
    this.say(
      `boottorrent-agent: torrent ${meta.infoHashHex} (${formatBytes(meta.length)}) matches the boot config`,
    );
    const started = Date.now();
    let session: TorrentSession;
    try {
      session = await download({
        client,
        config,
        os,
        meta,
        dir: this.args.dir,
        ...(this.lease ? { lsdInterface: this.lease.address } : {}),
        stallSeconds: this.args.stallSeconds,
        onStats: (s) => this.progress('downloading', os, 'downloading', s),
        say: (line) => this.say(`boottorrent-agent: ${line}`),
      });
    } finally {
      this.endProgress();
    }
    this.say(
      `boottorrent-agent: downloaded ${os.id} (${formatBytes(meta.length)}) in ${((Date.now() - started) / 1000).toFixed(1)} s`,
    );

    this.stage('verifying', os);
    const osDir = join(this.args.dir, os.id);
    const n = await verifyFiles(os, osDir);
    this.reporter?.send({ stage: 'verifying', os: os.id, progress: 1 });
    this.say(`boottorrent-agent: verified ${n} files of ${os.id}`);

    if (config.overlayWithheld)
      this.say(
        `boottorrent-agent: this machine's overlay was not sent: ${unverifiedText(config.overlayWithheld)}; booting without it`,
      );
    // The machine's overlay (its name, keys, ...), checked against the signed config.
    let overlayFile: string | undefined;
    let overlayDir: string | undefined;
    if (config.overlay) {
      overlayFile = join(this.args.dir, '.boottorrent-overlay.cpio');
      await fetchOverlay(config.overlay, overlayFile);
      this.say(`boottorrent-agent: overlay of this machine: ${formatBytes(config.overlay.length)}, checked`);
      if (os.method !== 'kexec') {
        overlayDir = join(this.args.dir, '.boottorrent-overlay');
        await unpackOverlay(overlayFile, overlayDir);
      }
    }

    // Prepare the load from verified files only, before seeding.
    let commands: Command[];
    if (os.method === 'kexec') {
      const initrd = await singleInitrd(
        this.args.dir,
        os.id,
        osDir,
        os.initrd,
        overlayFile ? [overlayFile] : [],
      );
      commands = kexecCommands(join(osDir, os.kernel), initrd, os.cmdline, this.secureBoot === true);
    } else if (os.method === 'qemu') {
      // In phase 1 (the agent owns the network) the console is the client's screen.
      const screen = await qemuScreenHere(this.args.network);
      const vnc =
        screen === 'framebuffer'
          ? { display: await freeVncDisplay(), password: randomBytes(6).toString('base64url') }
          : undefined;
      commands = [qemuCommand(withOverlay(os.args, overlayDir), osDir, await kvmUsable(), screen, vnc)];
    } else {
      commands = [await binCommand(osDir, os.bin, withOverlay(os.args, overlayDir))];
    }
    // A program finds the overlay folder in its environment too.
    if (overlayDir)
      commands = commands.map((c) => ({ ...c, env: { ...c.env, BOOTTORRENT_OVERLAY: overlayDir } }));

    if (config.seedTime > 0 && !this.seeded.has(os.id)) {
      this.stage('seeding', os, ` seconds=${config.seedTime}`);
      const end = Date.now() + config.seedTime * 1000;
      try {
        while (Date.now() < end) {
          await new Promise((r) => setTimeout(r, Math.min(1000, end - Date.now())));
          this.progress('seeding', os, 'seeding', session.stats());
        }
      } finally {
        this.endProgress();
      }
      this.seeded.add(os.id);
    }

    this.say(`boottorrent-agent: agent peak RSS ${Math.round((peakRssBytes() ?? 0) / 1e6)} MB`);
    this.say(`boottorrent-agent: loading ${os.id} via ${os.method}`);
    const hostKexec = os.method === 'kexec' && this.args.hostMode;
    if (this.args.dryRun || hostKexec) {
      if (hostKexec && !this.args.dryRun)
        this.say("boottorrent-agent: host mode never runs kexec (it would replace this machine's kernel)");
      for (const c of commands) this.say(`boottorrent-agent: dry-run: would run: ${showCommand(c)}`);
      // As before a kexec: clients fetching phase 1 from here may finish.
      await this.stopSharing(SHARE_GRACE_MS);
      return { kind: 'done' };
    }
    if (os.method === 'kexec') return this.kexec(os, commands);
    return { kind: 'exited', status: await this.runProgram(os, session, commands[0]!) };
  }

  private async kexec(os: BootOs, commands: Command[]): Promise<RunOutcome> {
    const [load, exec] = commands as [Command, Command];
    this.say(`boottorrent-agent: ${showCommand(load)}`);
    try {
      await execFileP(load.file, [...load.args]);
    } catch (err) {
      const e = err as Error & { stderr?: string };
      const said = (e.stderr ?? '').trim() || e.message;
      if (this.secureBoot === true && signatureRefused(said))
        throw new StepFailure(
          `load of ${os.name}`,
          `Secure Boot is on and the kernel of ${os.name} is not signed by a key this machine trusts; the kernel refused to load it (${said})`,
          `one of: boot this OS with the qemu method (it runs any kernel); sign its kernel with the lab's key (sbsign) and enroll that key on the machines (the firmware's db, or mokutil --import with shim); or turn Secure Boot off in this machine's firmware`,
        );
      throw new StepFailure(
        `load of ${os.name}`,
        `${showCommand({ file: load.file, args: load.args.filter((a) => a.startsWith('-') && !a.startsWith('--')) })} failed: ${said}`,
        'that the kernel is an x86-64 bzImage and that kexec is allowed',
      );
    }
    // Loaded into the kernel: the joined initramfs and the overlay (the machine's keys) go.
    await rm(join(this.args.dir, `.boottorrent-initrd-${os.id}`), { force: true });
    await rm(join(this.args.dir, '.boottorrent-overlay.cpio'), { force: true });
    this.stage('booting', os);
    await this.reporter?.flush(2000);
    // The server no longer sends clients here; those fetching from us may finish.
    await this.stopSharing(SHARE_GRACE_MS);
    // Stop seeding and close every socket before the kernel is replaced.
    await this.client?.close().catch(() => undefined);
    this.client = undefined;
    this.say(`boottorrent-agent: ${showCommand(exec)}`);
    try {
      await execFileP(exec.file, [...exec.args]);
    } catch (err) {
      const e = err as Error & { stderr?: string };
      throw new StepFailure(
        `load of ${os.name}`,
        `kexec -e failed: ${(e.stderr ?? '').trim() || e.message}`,
        'the kernel messages (dmesg) in a shell',
      );
    }
    // kexec -e returns only if it failed without an exit status.
    throw new StepFailure(
      `load of ${os.name}`,
      'kexec -e returned',
      'the kernel messages (dmesg) in a shell',
    );
  }

  /** qemu or a program: runs on the console while seeding goes on; resolves with how it exited. */
  private async runProgram(os: BootOs, session: TorrentSession, c: Command): Promise<string> {
    this.stage('running', os);
    this.say(`boottorrent-agent: running ${showCommand(c)}`);
    const timer = setInterval(() => {
      const s = session.stats();
      this.reporter?.send({
        stage: 'running',
        os: os.id,
        progress: 1,
        downloaded: s.downloaded,
        uploaded: s.uploaded,
        downloadRate: Math.round(s.downloadRate),
        uploadRate: Math.round(s.uploadRate),
        peers: s.peers.length,
      });
    }, 2000);
    try {
      const status = c.viewer ? await this.runWithViewer(c, c.viewer) : await this.runInherit(c);
      if (status.startsWith('could not start')) {
        throw new StepFailure(
          `load of ${os.name}`,
          `${c.file}: ${status}`,
          `that ${c.file} is installed in phase 1`,
        );
      }
      this.say(`boottorrent-agent: ${os.id} exited with ${status}`);
      return status;
    } finally {
      clearInterval(timer);
    }
  }
}

/** SIGTERM to each of `children` still running; SIGKILL to those not gone after `ms`. */
async function endChildren(children: readonly ChildProcess[], ms: number): Promise<void> {
  const running = (c: ChildProcess) => c.exitCode === null && c.signalCode === null;
  await Promise.all(
    children.filter(running).map(
      (c) =>
        new Promise<void>((resolve) => {
          const timer = setTimeout(() => {
            if (running(c)) c.kill('SIGKILL');
            resolve();
          }, ms);
          c.once('exit', () => {
            clearTimeout(timer);
            resolve();
          });
          c.kill('SIGTERM');
        }),
    ),
  );
}

/** Ends stage 0's httpd (its PID in `pidFile`), if it still runs, and waits until it has. */
async function stopStage0Relay(pidFile: string): Promise<void> {
  let pid: number;
  try {
    pid = Number((await readFile(pidFile, 'utf8')).trim());
  } catch {
    return;
  }
  if (!Number.isInteger(pid) || pid <= 1) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return; // gone already
  }
  for (let i = 0; i < 40; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The TCP port of `-vnc 127.0.0.1:N[,options]` in QEMU's args (5900 + N). */
function vncPort(args: readonly string[]): number | undefined {
  const i = args.indexOf('-vnc');
  const m = i >= 0 ? /^127\.0\.0\.1:(\d+)(,|$)/.exec(args[i + 1] ?? '') : null;
  return m ? 5900 + Number(m[1]) : undefined;
}

/** The first VNC display (0 to 99) whose port is free on 127.0.0.1: something else may hold 5900. */
async function freeVncDisplay(): Promise<number> {
  for (let n = 0; n < 100; n++) {
    const free = await new Promise<boolean>((resolve) => {
      const srv = createServer();
      srv.once('error', () => resolve(false));
      srv.listen({ host: '127.0.0.1', port: 5900 + n, exclusive: true }, () =>
        srv.close(() => resolve(true)),
      );
    });
    if (free) return n;
  }
  return 0; // QEMU then says why it cannot listen; the step fails with its status
}

/** Resolves true once 127.0.0.1:`port` accepts a connection, false after `ms`. */
async function portAnswers(port: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const sock = connect({ host: '127.0.0.1', port });
      sock.once('connect', () => {
        sock.destroy();
        resolve(true);
      });
      sock.once('error', () => resolve(false));
    });
    if (ok) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  return false;
}
