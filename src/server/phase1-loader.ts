/**
 * Phase 1's kernel and stage 0 served by peers too (issue #16), through a
 * GRUB that checks every file it loads (src/boot/grub-verify.ts).
 *
 * Debian's iPXE cannot check a file, so on the plain iPXE path the kernel
 * and stage 0 always come from this server. With `peers.phase1_loader:
 * grub`, boot.ipxe on a UEFI client first chains this server's GRUB build:
 *
 *   1. GRUB (built at start with two OpenPGP keys made for this run) runs
 *      with check_signatures=enforce, takes DHCP and fetches
 *      /boottorrent/grub/<its MAC>.cfg and its .sig;
 *   2. that config, written and signed per request, says where to load the
 *      kernel and the initramfs from: a holder (another client's agent) first
 *      and this server second, or this server alone, or "wait a few seconds
 *      and ask again" while the server's slots are taken;
 *   3. GRUB loads each file with its `.sig` from the same place and refuses
 *      any file the trusted keys did not sign, then tries the next source;
 *   4. when GRUB gets no good config, it exits and iPXE loads phase 1 the
 *      old way (its script goes on after `chain`).
 *
 * Why two keys, made at every start. The kernel key signs the kernel and the
 * configs; the initrd key signs the initramfs GRUB loads (stage 0 and the
 * server's key archive as one file, STAGE0_GRUB). The config drops the
 * kernel key (`distrust`) after `linux` and before `initrd`, so a holder
 * cannot pass off the kernel or a config as the initramfs; the kernel loader
 * refuses an initramfs as a kernel. New keys at every start mean a file
 * signed for an older phase 1 (an old holder, a replay) never checks out.
 * No key is kept on disk.
 *
 * Holders: the kernel line carries `boottorrent.hold=` (names and
 * SHA-256s). An agent asks /api/v1/phase1-loader/<MAC> (with its report
 * token) where to fetch the two files (a holder, this server only while
 * nobody holds them, "wait", or "none" once MAX_HOLDERS do), checks their
 * SHA-256, fetches their `.sig` from this server and serves all four; its
 * reports then say `phase1Loader`. Sources are picked by phase1-sources.ts
 * (a holder's address is where its reports come from; one client at a time
 * per holder; a few at once from the server). A client sent to a holder
 * that then loads the kernel or initramfs from this server has fallen back:
 * that holder is not offered again for a while. So is one whose client asks
 * for a config again before its stage 0 reported (a boot that went wrong
 * after GRUB; `panic=10` on the kernel line restarts a kernel that finds no
 * way on).
 *
 * Bounds, since any machine can ask: a config is signed at most once per MAC
 * and address every CONFIG_REUSE_MS (the same answer again), and
 * SIGNS_PER_SECOND in all; one address gets configs for at most
 * MACS_PER_ADDRESS MACs at a time.
 * Past these the answer is 503, and GRUB returns to iPXE, which loads
 * phase 1 from this server.
 */
import { createHash, generateKeyPairSync, timingSafeEqual } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import {
  buildVerifyingGrub,
  checkGrubArgs,
  grubLoadFirstOf,
  grubLoadFromFirst,
} from '../boot/grub-verify.js';
import { pgpKey, pgpPublicKeyFile, pgpSign, pgpSignFile, type PgpKey } from '../boot/openpgp.js';
import type { AgentReport } from '../boot-config.js';
import { payloadFailure } from '../boot/policy.js';
import { BootTorrentError } from '../errors.js';
import { sendFile } from '../http/static.js';
import { writeAtomic } from '../util/atomic-file.js';
import { normalizeMac } from '../util/address.js';
import { LineBudget } from '../util/drop-log.js';
import type { Logger } from '../util/logger.js';
import { PhaseOneSources, type PhaseOneSourceLimits } from './phase1-sources.js';

/** Where the GRUB build and the per-MAC configs are served. */
export const GRUB_URL_DIR = '/boottorrent/grub/';
export const GRUB_EFI_FILE = 'grubx64.efi';
/** The initramfs GRUB loads: stage 0 and the server's key archive in one file (see above). */
export const STAGE0_GRUB = 'stage0-grub.img';
/** The agent asks here where to fetch the kernel and initramfs it will serve. */
export const LOADER_API = '/api/v1/phase1-loader/';
const CONFIG_REUSE_MS = 2_000;
const SIGNS_PER_SECOND = 100;
const MACS_PER_ADDRESS = 2;

export const LOADER_SOURCE_LIMITS: Partial<PhaseOneSourceLimits> = {
  // A GRUB waiting for a slot loops on its config: after this long it takes the server.
  maxWaitMs: 90_000,
  // Few: a room that powers on over a minute or two is then served mostly by holders.
  serverSlots: 2,
  // Kernel + stage 0 (10 MB) take seconds on a client's link; GRUB then starts stage 0, which says so.
  holdMs: 60_000,
};
/** Clients that hold the kernel and initramfs at once, at most (each fetched them once more). */
export const MAX_HOLDERS = 16;

/** A file of phase 1 that holders serve: its name below /phase1/, its file here, what a holder checks. */
export interface LoaderFile {
  readonly name: string;
  readonly path: string;
  readonly sha256: string;
  readonly size: number;
}

export interface PhaseOneLoaderOptions {
  readonly stateDir: string;
  /** This server's boot URL, http://ip[:port]. */
  readonly publicUrl: string;
  /** The kernel (its name in the phase-1 folder) and stage 0. */
  readonly kernel: { readonly name: string; readonly path: string };
  readonly stage0: string;
  /** The server's key archive (signing.ts), loaded after stage 0. */
  readonly keyArchive?: string;
  /** The kernel command line every client gets (checked here: GRUB must keep it as given). */
  readonly cmdline: string;
  /** A MAC's report token: the holders' question must carry it. */
  readonly tokenFor: (mac: string) => string;
  readonly log: Logger;
  readonly now?: () => number;
}

export class PhaseOneLoader {
  private readonly sources: PhaseOneSources;
  private readonly lines: LineBudget;
  private readonly now: () => number;
  private readonly server: string;
  /** URL path -> detached signature, for the two files GRUB loads. */
  private readonly sigs = new Map<string, Buffer>();
  /** "MAC address" -> the config last written for that MAC asked from that address, and its signature. */
  private readonly configs = new Map<string, { body: Buffer; sig: Buffer; at: number }>();
  private readonly bucket = { tokens: SIGNS_PER_SECOND, at: 0 };
  /** Address -> the MACs it was given configs for lately, and when. */
  private readonly perAddress = new Map<string, Map<string, number>>();
  /** Address -> the client sent there to a holder (its MAC and the holder's URL), until it reports. */
  private readonly sentToHolder = new Map<string, { mac: string; url: string; until: number }>();
  /** MACs whose agent says it holds the files (its last report), and agents fetching them now. */
  private readonly holderMacs = new Set<string>();
  private readonly fetching = new Map<string, number>();
  /** MAC -> the holder its last config named, until it reaches stage 0: a new config before that means it failed there. */
  private readonly pendingBoot = new Map<string, { url: string; at: number }>();

  private constructor(
    private readonly o: PhaseOneLoaderOptions,
    private readonly kernelKey: PgpKey,
    private readonly initrdKey: PgpKey,
    readonly files: readonly LoaderFile[],
    readonly grubEfi: string,
  ) {
    this.now = o.now ?? Date.now;
    this.server = new URL(o.publicUrl).host;
    this.sources = new PhaseOneSources(`${o.publicUrl}/phase1/`, LOADER_SOURCE_LIMITS, '/phase1/');
    this.lines = new LineBudget(o.log);
  }

  /**
   * Makes this run's two keys, writes STAGE0_GRUB, signs both files and
   * builds GRUB into the state folder. Throws BT_ERR_PHASE1 when something
   * GRUB needs is missing or unusable (the caller falls back to iPXE).
   */
  static async prepare(o: PhaseOneLoaderOptions): Promise<PhaseOneLoader> {
    for (const name of [o.kernel.name, STAGE0_GRUB])
      if (!/^[A-Za-z0-9._-]{1,64}$/.test(name))
        throw new BootTorrentError(
          'BT_ERR_PHASE1',
          `the phase-1 file name ${JSON.stringify(name)} is not one GRUB and the agents take as given (letters, digits, . _ -)`,
        );
    try {
      checkGrubArgs(o.cmdline);
    } catch (err) {
      throw new BootTorrentError(
        'BT_ERR_PHASE1',
        `${(err as Error).message}: GRUB would change phase 1's kernel command line; remove quotes, $, ;, #, braces and the like from it`,
      );
    }
    const dir = join(o.stateDir, 'grub');
    await mkdir(dir, { recursive: true });
    const created = Math.floor((o.now?.() ?? Date.now()) / 1000);
    const kernelKey = pgpKey(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey, created);
    const initrdKey = pgpKey(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey, created);
    // Stage 0 then the key archive, as GRUB would load them one after the
    // other (each padded to 4 bytes; the kernel skips the zeros between).
    const initrd = join(dir, STAGE0_GRUB);
    const stage0 = await readFile(o.stage0);
    const pad = Buffer.alloc((4 - (stage0.length % 4)) % 4);
    await writeAtomic(
      initrd,
      Buffer.concat([stage0, pad, ...(o.keyArchive ? [await readFile(o.keyArchive)] : [])]),
      0o644,
    );
    const grubEfi = join(dir, GRUB_EFI_FILE);
    await buildVerifyingGrub({
      publicKey: [
        pgpPublicKeyFile(kernelKey, 'BootTorrent phase-1 kernel'),
        pgpPublicKeyFile(initrdKey, 'BootTorrent phase-1 initrd'),
      ],
      out: grubEfi,
      script: grubEmbeddedScript(new URL(o.publicUrl).host),
    });
    const files: LoaderFile[] = [];
    for (const f of [o.kernel, { name: STAGE0_GRUB, path: initrd }])
      files.push({ ...f, ...(await digest(f.path)) });
    const loader = new PhaseOneLoader(o, kernelKey, initrdKey, files, grubEfi);
    loader.sigs.set(`/phase1/${o.kernel.name}`, await pgpSignFile(kernelKey, o.kernel.path));
    loader.sigs.set(`/phase1/${STAGE0_GRUB}`, await pgpSignFile(initrdKey, initrd));
    return loader;
  }

  /** The two public keys GRUB trusts, as OpenPGP key files (for gpg, tests). */
  publicKeyFiles(): { kernel: Buffer; initrd: Buffer } {
    return {
      kernel: pgpPublicKeyFile(this.kernelKey, 'BootTorrent phase-1 kernel'),
      initrd: pgpPublicKeyFile(this.initrdKey, 'BootTorrent phase-1 initrd'),
    };
  }

  /** The kernel-line word that makes an agent a possible holder: `boottorrent.hold=<name>:<sha256>,...`. */
  holdArg(): string {
    return `boottorrent.hold=${this.files.map((f) => `${f.name}:${f.sha256}`).join(',')}`;
  }

  /**
   * Answers GRUB (its program, the initramfs, configs, signatures) and
   * holders' questions; false for any other path. `cmdline` is the kernel
   * command line of an allowed MAC (undefined: that MAC may not boot here).
   */
  route(
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    client: string,
    cmdline: (mac: string) => string | undefined,
    onConfig?: (mac: string) => void,
  ): boolean {
    this.sawServerFetch(path, client);
    const sig = this.sigs.get(path.endsWith('.sig') ? path.slice(0, -4) : '');
    const isGrub = path.startsWith(GRUB_URL_DIR);
    const isApi = path.startsWith(LOADER_API);
    const isInitrd = path === `/phase1/${STAGE0_GRUB}`;
    if (!sig && !isGrub && !isApi && !isInitrd) return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
      return true;
    }
    if (sig) return (send(res, sig), true);
    if (isInitrd || path === `${GRUB_URL_DIR}${GRUB_EFI_FILE}`) {
      const file = isInitrd ? this.files[1]!.path : this.grubEfi;
      void sendFile(req, res, file).then((r) => {
        if (!r) res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      });
      return true;
    }
    if (isApi) {
      this.holderQuestion(path.slice(LOADER_API.length), req, client, res);
      return true;
    }
    const m = /^([0-9a-fA-F:-]{12,17})\.cfg(\.sig)?$/.exec(path.slice(GRUB_URL_DIR.length));
    const mac = m ? normalizeMac(m[1]!) : undefined;
    const line = mac ? cmdline(mac) : undefined;
    if (!mac || line === undefined) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return true;
    }
    if (m![2]) {
      const c = this.configs.get(`${mac} ${client}`);
      if (c) send(res, c.sig);
      else res.writeHead(404, { 'content-type': 'text/plain' }).end('no config was written for this MAC\n');
      return true;
    }
    const c = this.config(mac, client, line);
    if (!c) {
      res.writeHead(503, { 'retry-after': '1', 'content-type': 'text/plain' }).end('busy\n');
      return true;
    }
    onConfig?.(mac);
    send(res, c.body);
    return true;
  }

  /**
   * A client loads the kernel or initramfs from this server: if its config
   * named a holder, that holder failed it (gone, or a file that did not
   * check out), and is not offered for a while.
   */
  private sawServerFetch(path: string, client: string): void {
    if (!this.files.some((f) => path === `/phase1/${f.name}`)) return;
    const sent = this.sentToHolder.get(client);
    if (!sent) return;
    this.sentToHolder.delete(client);
    if (sent.until < this.now()) return;
    this.sources.fault(sent.mac, sent.url, 'gone', this.now());
    this.lines.info(
      `client ${sent.mac} (${client}) fell back to this server: its holder ${sent.url} is not offered for a while`,
    );
  }

  /** The config for `mac` now, signed; the same one again within CONFIG_REUSE_MS; undefined when over a bound. */
  private config(mac: string, client: string, cmdline: string): { body: Buffer; sig: Buffer } | undefined {
    const now = this.now();
    // Per MAC and asking address: GRUB asks for the .sig right after the
    // config, and nobody else can make it change in between.
    const key = `${mac} ${client}`;
    const last = this.configs.get(key);
    if (last && now - last.at < CONFIG_REUSE_MS) return last;
    if (!this.takeToken(now, client, mac)) return undefined;
    // Booted from a holder's files yet back here without reaching stage 0: that holder failed it.
    const pending = this.pendingBoot.get(mac);
    if (pending) {
      this.pendingBoot.delete(mac);
      this.sources.fault(mac, pending.url, 'bad', now);
      this.lines.info(
        `client ${mac} (${client}) asks again without having started stage 0: its holder ${pending.url} is not offered`,
      );
    }
    const body = Buffer.from(this.configText(mac, client, cmdline, now));
    const c = { body, sig: pgpSign(this.kernelKey, body), at: now };
    remember(this.configs, key, c);
    return c;
  }

  /**
   * One signature from the budgets: SIGNS_PER_SECOND in all, and configs
   * for at most MACS_PER_ADDRESS MACs (within a slot's hold) for one
   * address; with CONFIG_REUSE_MS that is at most one signature a second
   * for one machine, so it cannot take the others' share.
   */
  private takeToken(now: number, client: string, mac: string): boolean {
    const macs = this.perAddress.get(client) ?? remember(this.perAddress, client, new Map<string, number>());
    const hold = LOADER_SOURCE_LIMITS.holdMs ?? 60_000;
    for (const [m, at] of macs) if (now - at > hold) macs.delete(m);
    if (!macs.has(mac) && macs.size >= MACS_PER_ADDRESS) return false;
    const b = this.bucket;
    b.tokens = Math.min(SIGNS_PER_SECOND, b.tokens + ((now - b.at) / 1000) * SIGNS_PER_SECOND);
    b.at = now;
    if (b.tokens < 1) return false;
    b.tokens--;
    macs.set(mac, now);
    return true;
  }

  private configText(mac: string, client: string, cmdline: string, now: number): string {
    const server = this.server;
    const a = this.sources.pick(mac, now);
    if (a.kind === 'wait')
      return [
        `echo "BootTorrent: ${mac}: waiting for a peer to load phase 1 from"`,
        `sleep ${a.seconds}`,
        `configfile (http,${server})${GRUB_URL_DIR}${mac}.cfg`,
        '',
      ].join('\n');
    const kernel = `/phase1/${this.files[0]!.name}`;
    const initrd = `/phase1/${STAGE0_GRUB}`;
    const initrdFrom = (source: string) => [{ source, file: initrd }];
    const fromServer = grubLoadFirstOf('initrd', [initrdFrom(server)]).trimEnd();
    // A kernel that does not come up (a holder's signed file in the wrong place) restarts the machine.
    const line = /(^| )panic=/.test(cmdline) ? cmdline : `${cmdline} panic=10`;
    let body: string[];
    if (a.kind === 'peer') {
      const peer = new URL(a.url).host;
      remember(this.sentToHolder, client, {
        mac,
        url: a.url,
        until: now + (LOADER_SOURCE_LIMITS.holdMs ?? 60_000),
      });
      this.pendingBoot.set(mac, { url: a.url, at: now });
      this.lines.info(`client ${mac} (${client}) loads its kernel from peer ${a.peer}`);
      body = [
        'set bt_from=none',
        grubLoadFirstOf(
          'linux',
          [peer, server].map((source) => [{ source, file: kernel }]),
          line,
          ['peer', 'server'],
        ).trimEnd(),
        // Only the initramfs key from here on: nothing else it signed passes as one.
        `distrust ${this.kernelKeyId()}`,
        // The initramfs from where the kernel came; from here alone once the peer failed.
        'if [ "$bt_from" = peer ]; then',
        grubLoadFirstOf('initrd', [initrdFrom(peer), initrdFrom(server)]).trimEnd(),
        'else',
        fromServer,
        'fi',
      ];
    } else {
      this.sentToHolder.delete(client);
      this.lines.info(`client ${mac} (${client}) loads its kernel from this server`);
      body = [
        grubLoadFromFirst('linux', [server], kernel, line).trimEnd(),
        `distrust ${this.kernelKeyId()}`,
        fromServer,
      ];
    }
    return [
      `echo "BootTorrent: loading phase 1 for ${mac}"`,
      ...body,
      'boot',
      // Not reached when the kernel runs: back to iPXE, which loads phase 1 from here.
      'echo "BootTorrent: phase 1 did not load; back to iPXE"',
      'exit',
      '',
    ].join('\n');
  }

  /** What GRUB's `distrust` takes: the fingerprint's last four bytes in hex. */
  private kernelKeyId(): string {
    return this.kernelKey.fingerprint.subarray(16).toString('hex');
  }

  /**
   * An agent that may hold the kernel and initramfs asks where to fetch
   * them: `get <folder URL>`, `wait <s>`, or `none` (enough clients hold
   * them). Only with its MAC's report token.
   */
  private holderQuestion(rawMac: string, req: IncomingMessage, client: string, res: ServerResponse): void {
    const text = (status: number, body: string) =>
      res.writeHead(status, { 'content-type': 'text/plain', 'cache-control': 'no-store' }).end(`${body}\n`);
    const mac = normalizeMac(rawMac);
    if (!mac) return void text(400, `not a MAC address: ${rawMac}`);
    const token = Buffer.from(String(req.headers['x-boottorrent-token'] ?? ''));
    const want = Buffer.from(this.o.tokenFor(mac));
    if (want.length === 0 || token.length !== want.length || !timingSafeEqual(token, want))
      return void text(403, 'this question needs the MAC’s report token');
    const now = this.now();
    if (this.holderCount(now, mac) >= MAX_HOLDERS) return void text(200, 'none');
    const url = new URL(req.url ?? '/', 'http://x');
    const failed = payloadFailure(url.searchParams);
    const a = this.sources.pick(mac, now, failed);
    if (a.kind === 'wait') return void text(200, `wait ${a.seconds}`);
    // Another copy from the server only while nobody holds one: holders are a help, not a need.
    if (a.kind === 'server' && this.holderCount(now, mac) > 0) {
      this.sources.arrived(mac);
      return void text(200, 'wait 3');
    }
    this.fetching.set(mac, now + (LOADER_SOURCE_LIMITS.holdMs ?? 60_000));
    this.lines.info(
      `client ${mac} (${client}) fetches the kernel and initramfs to serve them, from ${a.kind === 'peer' ? `peer ${a.peer}` : 'this server'}`,
    );
    text(200, `get ${a.url}`);
  }

  /** Holders offered now (fresh, not banned) and agents fetching to become one, other than `except`. */
  private holderCount(now: number, except: string): number {
    for (const [m, until] of this.fetching) if (until <= now) this.fetching.delete(m);
    const offered = this.sources.list(now).filter((p) => this.holderMacs.has(p.mac) && p.mac !== except);
    const coming = new Set(this.fetching.keys());
    coming.delete(except);
    for (const p of offered) coming.delete(p.mac);
    return offered.length + coming.size;
  }

  /** An accepted agent report (token checked) from `client`. */
  report(mac: string, client: string, r: AgentReport): void {
    this.sentToHolder.delete(client);
    this.pendingBoot.delete(mac);
    const leaving = r.stage === 'booting' || r.stage === 'running' || r.stage === 'failed';
    if (!leaving && r.phase1Loader && r.phase1Port !== undefined) {
      this.fetching.delete(mac);
      this.holderMacs.add(mac);
      this.sources.offer(mac, client, r.phase1Port, this.now());
      return;
    }
    this.holderMacs.delete(mac);
    this.sources.withdraw(mac);
    // A holder still fetching keeps its source (its failure report needs it).
    if (leaving) this.fetching.delete(mac);
    if (!this.fetching.has(mac)) this.sources.arrived(mac);
  }

  /** The client's GRUB is done (its stage 0 asks for the payload): its kernel fetch no longer holds a slot. */
  arrived(mac: string): void {
    this.pendingBoot.delete(mac);
    if (!this.fetching.has(mac)) this.sources.arrived(mac);
  }

  /** Holders offered now, for status. */
  peers(): { mac: string; url: string; serving: number }[] {
    return this.sources.list(this.now()).filter((p) => this.holderMacs.has(p.mac));
  }
}

/**
 * The script built into GRUB (rescue parser: one command a line): DHCP,
 * then the signed per-MAC config from the server; if that returns, back to
 * iPXE.
 */
export function grubEmbeddedScript(server: string): string {
  if (!/^[A-Za-z0-9.:[\]-]+$/.test(server)) throw new Error(`not a host:port for GRUB: ${server}`);
  return [
    'echo "BootTorrent: GRUB checks the signature of every file of phase 1"',
    'net_bootp',
    `configfile (http,${server})${GRUB_URL_DIR}$net_default_mac.cfg`,
    'echo "BootTorrent: no signed config from the server; back to iPXE"',
    'exit',
    '',
  ].join('\n');
}

/**
 * Sets `key` to `value` as the newest entry of `map`; past 4096 entries the
 * oldest goes (any machine can make these maps grow). Returns `value`.
 */
function remember<K, V>(map: Map<K, V>, key: K, value: V): V {
  map.delete(key);
  if (map.size >= 4096) {
    const oldest = map.keys().next().value;
    if (oldest !== undefined) map.delete(oldest);
  }
  map.set(key, value);
  return value;
}

function send(res: ServerResponse, body: Buffer): void {
  res
    .writeHead(200, {
      'content-type': 'application/octet-stream',
      'cache-control': 'no-store',
      // Spelt so: GRUB's http module reads no other case.
      'Content-Length': body.length,
    })
    .end(body);
}

async function digest(path: string): Promise<{ sha256: string; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  for await (const c of createReadStream(path)) {
    h.update(c as Buffer);
    size += (c as Buffer).length;
  }
  return { sha256: h.digest('hex'), size };
}
