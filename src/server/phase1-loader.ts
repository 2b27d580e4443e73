/**
 * Phase 1's kernel and stage 0 served by peers too (issue #16), through a
 * GRUB that checks every file it loads (src/boot/grub-verify.ts).
 *
 * Debian's iPXE cannot check a file, so on the plain iPXE path the kernel
 * and stage 0 always come from this server. With `peers.phase1_loader:
 * grub`, boot.ipxe on a UEFI client first chains this server's GRUB build:
 *
 *   1. GRUB (built at start with this server's OpenPGP key, RSA, in the
 *      state folder) runs with check_signatures=enforce, takes DHCP and
 *      fetches /boottorrent/grub/<its MAC>.cfg and .cfg.sig;
 *   2. that config, written and signed per request, names where to load the
 *      kernel and stage 0 from: a peer (another client's agent that holds
 *      them) first and this server second, or this server alone, or "wait
 *      a few seconds and ask again" while the server's slots are taken;
 *   3. GRUB loads each file with its `.sig` from the same place and refuses
 *      any that this key did not sign, so a lying peer's file never runs:
 *      GRUB falls back to the server's copy;
 *   4. when GRUB gets no good config, it exits and iPXE loads phase 1 the
 *      old way (its script goes on after `chain`).
 *
 * Holders: an agent whose kernel line has `boottorrent.hold=` asks
 * /api/v1/phase1-loader/<MAC> where to fetch the kernel and stage 0 (a
 * holder, this server, "wait", or "none" when enough clients hold them),
 * checks their SHA-256 (on its kernel line, from this server), fetches the
 * `.sig` files from this server and serves all four; its reports then say
 * so (`phase1Loader`). Sources are chosen by the same rules as stage 0's
 * payload (phase1-sources.ts): a holder's address is the source address of
 * its reports, a holder serves one client at a time, the server a few.
 *
 * Signing costs CPU, and any machine can ask for a config: a config is
 * signed at most once per MAC every CONFIG_REUSE_MS (the same answer
 * again) and at most SIGNS_PER_SECOND in all; past that the answer is 503.
 */
import { createHash, createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { buildVerifyingGrub, grubLoadFirstOf, grubLoadFromFirst } from '../boot/grub-verify.js';
import { pgpKey, pgpPublicKeyFile, pgpSign, pgpSignFile, type PgpKey } from '../boot/openpgp.js';
import type { AgentReport } from '../boot-config.js';
import type { PayloadFailure } from '../boot/policy.js';
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
/** The agent asks here where to fetch the kernel and stage 0 it will serve. */
export const LOADER_API = '/api/v1/phase1-loader/';
/** The key file in the state folder (PEM, PKCS#8, mode 0600). */
export const LOADER_KEY_FILE = 'phase1-grub-key.pem';
/**
 * The key packet's creation time: part of its fingerprint, so fixed (the
 * GRUB build carries the key; the same key must give the same packet).
 */
const KEY_CREATED = 1_704_067_200;
const CONFIG_REUSE_MS = 2_000;
const SIGNS_PER_SECOND = 100;

export const LOADER_SOURCE_LIMITS: Partial<PhaseOneSourceLimits> = {
  // A GRUB waiting for a slot loops on its config: after this long it takes the server.
  maxWaitMs: 60_000,
  serverSlots: 4,
  // Kernel + stage 0 (10 MB) take seconds on a client's link; GRUB then starts stage 0, which says so.
  holdMs: 60_000,
};
/** Clients that hold the kernel and stage 0 at once, at most (each fetched them once more). */
export const MAX_HOLDERS = 8;

/** One file of phase 1 that peers may serve: its name in the phase-1 folder, and what a holder checks. */
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
  /** The kernel and stage 0 (their files), which peers serve. */
  readonly kernel: { readonly name: string; readonly path: string };
  readonly stage0: { readonly name: string; readonly path: string };
  /** URL paths (below publicUrl) and files of everything else GRUB loads from this server only. */
  readonly serverOnly: readonly { readonly urlPath: string; readonly path: string }[];
  readonly log: Logger;
  readonly now?: () => number;
}

/** What GRUB loads for one allowed MAC: paths below the server (or a peer) and the command line. */
export interface LoaderLayout {
  readonly kernel: string;
  readonly initrds: readonly string[];
  readonly cmdline: string;
}

export class PhaseOneLoader {
  private readonly sources: PhaseOneSources;
  private readonly lines: LineBudget;
  private readonly now: () => number;
  /** URL path -> detached signature, for every file GRUB may load. */
  private readonly sigs = new Map<string, Buffer>();
  /** MAC -> the config last written for it and its signature. */
  private readonly configs = new Map<string, { body: Buffer; sig: Buffer; at: number }>();
  private bucket = { tokens: SIGNS_PER_SECOND, at: 0 };
  /** Clients whose agent serves the kernel and stage 0 now (MAC -> last report). */
  private readonly holders = new Map<string, number>();

  private constructor(
    private readonly o: PhaseOneLoaderOptions,
    private readonly key: PgpKey,
    readonly files: readonly LoaderFile[],
    readonly grubEfi: string,
  ) {
    this.now = o.now ?? Date.now;
    this.sources = new PhaseOneSources(`${o.publicUrl}/phase1/`, LOADER_SOURCE_LIMITS, '/phase1/');
    this.lines = new LineBudget(o.log);
  }

  /**
   * Loads (or makes, the first time) the key, signs the phase-1 files and
   * builds the GRUB program into the state folder. Throws BT_ERR_PHASE1 when
   * grub-mkimage or its modules are missing (the caller falls back).
   */
  static async prepare(o: PhaseOneLoaderOptions): Promise<PhaseOneLoader> {
    const dir = join(o.stateDir, 'grub');
    await mkdir(dir, { recursive: true });
    const key = pgpKey(await loadOrMakeKey(join(o.stateDir, LOADER_KEY_FILE)), KEY_CREATED);
    const grubEfi = join(dir, GRUB_EFI_FILE);
    const server = new URL(o.publicUrl).host;
    await buildVerifyingGrub({
      publicKey: pgpPublicKeyFile(key, 'BootTorrent phase-1 key'),
      out: grubEfi,
      script: grubEmbeddedScript(server),
    });
    const files: LoaderFile[] = [];
    for (const f of [o.kernel, o.stage0]) files.push({ ...f, ...(await digest(f.path)) });
    const loader = new PhaseOneLoader(o, key, files, grubEfi);
    for (const f of [o.kernel, o.stage0])
      loader.sigs.set(`/phase1/${f.name}`, await pgpSignFile(key, f.path));
    for (const f of o.serverOnly) loader.sigs.set(f.urlPath, await pgpSignFile(key, f.path));
    return loader;
  }

  /** The public key GRUB trusts, as an OpenPGP key file (for gpg, tests). */
  publicKeyFile(): Buffer {
    return pgpPublicKeyFile(this.key, 'BootTorrent phase-1 key');
  }

  /** The kernel-line word that makes an agent a possible holder: `boottorrent.hold=<name>:<sha256>,...`. */
  holdArg(): string {
    return `boottorrent.hold=${this.files.map((f) => `${f.name}:${f.sha256}`).join(',')}`;
  }

  /**
   * Answers GRUB (its program, configs, signatures) and holders' questions;
   * false for any other path. `layout` is what an allowed MAC loads
   * (undefined: that MAC may not boot here).
   */
  route(
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    client: string,
    layout: (mac: string) => LoaderLayout | undefined,
    onConfig?: (mac: string) => void,
  ): boolean {
    const sig = this.sigs.get(path.endsWith('.sig') ? path.slice(0, -4) : '');
    const isGrub = path.startsWith(GRUB_URL_DIR);
    const isApi = path.startsWith(LOADER_API);
    if (!sig && !isGrub && !isApi) return false;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
      return true;
    }
    if (sig) return (send(res, sig), true);
    if (path === `${GRUB_URL_DIR}${GRUB_EFI_FILE}`) {
      void sendFile(req, res, this.grubEfi).then((r) => {
        if (!r) res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      });
      return true;
    }
    if (isApi) {
      this.holderQuestion(path.slice(LOADER_API.length), new URL(req.url ?? '/', 'http://x'), client, res);
      return true;
    }
    const m = /^([0-9a-fA-F:-]{12,17})\.cfg(\.sig)?$/.exec(path.slice(GRUB_URL_DIR.length));
    const mac = m ? normalizeMac(m[1]!) : undefined;
    const l = mac ? layout(mac) : undefined;
    if (!mac || !l) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return true;
    }
    if (m![2]) {
      const c = this.configs.get(mac);
      if (c) send(res, c.sig);
      else res.writeHead(404, { 'content-type': 'text/plain' }).end('no config was written for this MAC\n');
      return true;
    }
    const c = this.config(mac, client, l);
    if (!c) {
      res.writeHead(503, { 'retry-after': '1', 'content-type': 'text/plain' }).end('busy\n');
      return true;
    }
    onConfig?.(mac);
    send(res, c.body);
    return true;
  }

  /** The config for `mac` now, signed; the same one again within CONFIG_REUSE_MS; undefined when over the signing budget. */
  private config(mac: string, client: string, l: LoaderLayout): { body: Buffer; sig: Buffer } | undefined {
    const now = this.now();
    const last = this.configs.get(mac);
    if (last && now - last.at < CONFIG_REUSE_MS) return last;
    if (!this.takeToken(now)) return undefined;
    const body = Buffer.from(this.configText(mac, client, l, now));
    const c = { body, sig: pgpSign(this.key, body), at: now };
    this.configs.delete(mac);
    if (this.configs.size >= 4096) {
      const oldest = this.configs.keys().next().value;
      if (oldest !== undefined) this.configs.delete(oldest);
    }
    this.configs.set(mac, c);
    return c;
  }

  private takeToken(now: number): boolean {
    const b = this.bucket;
    b.tokens = Math.min(SIGNS_PER_SECOND, b.tokens + ((now - b.at) / 1000) * SIGNS_PER_SECOND);
    b.at = now;
    if (b.tokens < 1) return false;
    b.tokens--;
    return true;
  }

  private configText(mac: string, client: string, l: LoaderLayout, now: number): string {
    const server = new URL(this.o.publicUrl).host;
    const self = `${GRUB_URL_DIR}${mac}.cfg`;
    const a = this.sources.pick(mac, now);
    if (a.kind === 'wait')
      return [
        `echo "BootTorrent: ${mac}: waiting for a peer to load phase 1 from"`,
        `sleep ${a.seconds}`,
        `configfile (http,${server})${self}`,
        '',
      ].join('\n');
    const from = a.kind === 'peer' ? [new URL(a.url).host, server] : [server];
    if (a.kind === 'peer') this.lines.info(`client ${mac} (${client}) loads its kernel from peer ${a.peer}`);
    else this.lines.info(`client ${mac} (${client}) loads its kernel from this server`);
    const [first, ...rest] = l.initrds;
    return [
      `echo "BootTorrent: loading phase 1 for ${mac}"`,
      grubLoadFromFirst('linux', from, l.kernel, l.cmdline).trimEnd(),
      // Stage 0 from where the kernel came (a holder has it), the key archive from here.
      grubLoadFirstOf(
        'initrd',
        from.map((s) => [{ source: s, file: first! }, ...rest.map((file) => ({ source: server, file }))]),
      ).trimEnd(),
      'boot',
      // Not reached when the kernel runs: back to iPXE, which loads phase 1 from here.
      'echo "BootTorrent: phase 1 did not load; back to iPXE"',
      'exit',
      '',
    ].join('\n');
  }

  /**
   * An agent that may hold the kernel and stage 0 asks where to fetch them:
   * `get <folder URL>`, `wait <s>`, or `none` (enough clients hold them).
   */
  private holderQuestion(rawMac: string, url: URL, client: string, res: ServerResponse): void {
    const text = (status: number, body: string) =>
      res.writeHead(status, { 'content-type': 'text/plain', 'cache-control': 'no-store' }).end(`${body}\n`);
    const mac = normalizeMac(rawMac);
    if (!mac) return void text(400, `not a MAC address: ${rawMac}`);
    const now = this.now();
    this.expireHolders(now);
    if (this.holders.size >= MAX_HOLDERS && !this.holders.has(mac)) return void text(200, 'none');
    const failedUrl = url.searchParams.get('failed');
    const why = url.searchParams.get('why');
    const failed: PayloadFailure | undefined =
      failedUrl && failedUrl.length <= 512 && (why === 'gone' || why === 'bad' || why === 'slow')
        ? { url: failedUrl, why }
        : undefined;
    const a = this.sources.pick(mac, now, failed);
    if (a.kind === 'wait') return void text(200, `wait ${a.seconds}`);
    // Another copy from the server only while nobody holds one: holders are a help, not a need.
    if (a.kind === 'server' && [...this.holders.keys()].some((m) => m !== mac)) {
      this.sources.arrived(mac);
      return void text(200, 'wait 3');
    }
    this.lines.info(
      `client ${mac} (${client}) fetches the kernel and stage 0 to serve them, from ${a.kind === 'peer' ? `peer ${a.peer}` : 'this server'}`,
    );
    text(200, `get ${a.url}`);
  }

  private expireHolders(now: number): void {
    for (const [m, at] of this.holders) if (now - at > 30_000) this.holders.delete(m);
  }

  /** An accepted agent report (token checked) from `client`. */
  report(mac: string, client: string, r: AgentReport): void {
    this.sources.arrived(mac);
    if (r.stage === 'booting' || r.stage === 'running' || r.stage === 'failed' || !r.phase1Loader) {
      this.sources.withdraw(mac);
      this.holders.delete(mac);
    } else if (r.phase1Port !== undefined) {
      this.sources.offer(mac, client, r.phase1Port, this.now());
      this.holders.set(mac, this.now());
    }
  }

  /** The client's GRUB is done (its stage 0 asks for the payload): its kernel fetch no longer holds a slot. */
  arrived(mac: string): void {
    this.sources.arrived(mac);
  }

  /** Holders offered now, for status. */
  peers(): { mac: string; url: string; serving: number }[] {
    return this.sources.list(this.now());
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

async function loadOrMakeKey(file: string): Promise<KeyObject> {
  let pem: Buffer | undefined;
  try {
    pem = await readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (pem)
    try {
      return createPrivateKey(pem);
    } catch (err) {
      throw new BootTorrentError(
        'BT_ERR_PHASE1',
        `${file} is not a private key (${(err as Error).message}): delete it and start again (a new key and GRUB build are made; clients need nothing)`,
      );
    }
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  await writeAtomic(file, privateKey.export({ type: 'pkcs8', format: 'pem' }), 0o600);
  return privateKey;
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
