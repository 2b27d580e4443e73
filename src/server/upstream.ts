/**
 * A satellite's upstream (#21 item 2, `server.upstream`): another `start`
 * whose OS catalog this server serves on its own subnet. The catalog
 * (GET <upstream>/api/v1/catalog) is signed with the upstream's key
 * (pinned by server.upstream_key, or the first one seen, kept in the state
 * folder); each OS's .torrent comes from the upstream and must have the
 * catalog's infohash, name and files; the data comes from the swarm (the
 * upstream's seeder, its clients, other satellites) on the seeder's port,
 * piece by piece checked, then every file's SHA-256 is checked against the
 * catalog before the OS is offered to a client. Catalog, torrents and data
 * are kept in <env>/.boottorrent/upstream/, so a satellite whose upstream
 * is gone (or that starts while it is) boots its clients with what it has.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { mkdir, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import {
  BOOT_CONFIG_SIGNATURE_HEADER,
  CATALOG_MAX_BYTES,
  bootConfigSignatureValid,
  parseCatalog,
  type BootOs,
  type Catalog,
} from '../boot-config.js';
import { BootTorrentError, errorText } from '../errors.js';
import type { OsEntry } from '../env/types.js';
import { parseTorrent, type Metainfo } from '../torrent/metainfo.js';
import { readBodyCapped } from '../util/http-body.js';
import { silentLogger, type Logger } from '../util/logger.js';
import type { CatalogEntry } from './catalog.js';
import { writeAtomic } from '../util/atomic-file.js';
import { OsFetcher, type FetchLibrary } from './os-fetcher.js';

/** Largest .torrent a satellite reads from its upstream. */
const MAX_TORRENT_BYTES = 16 * 1024 * 1024;
/** The public key's route on every server (a satellite without upstream_key keeps the first it sees). */
export const SERVER_KEY_ROUTE = '/api/v1/server-key.pem';
export const CATALOG_ROUTE = '/api/v1/catalog';
/** The kept catalog: its signature header's value on the first line, then the body as received. */
const CATALOG_FILE = 'catalog.signed';

export interface UpstreamOptions {
  /** The upstream's boot URL, no trailing slash. */
  readonly url: string;
  /** The upstream's public key file (server.upstream_key); null: keep the first key seen. */
  readonly keyFile: string | null;
  /** The state folder (<env>/.boottorrent); this keeps upstream-key.pem and upstream/ there. */
  readonly stateDir: string;
  /** How often the catalog is asked for again (default 30 s). */
  readonly pollMs?: number;
  /** Deadline of one request to the upstream (default 10 s). */
  readonly timeoutMs?: number;
}

/** What the satellite changes in its OS library (OsLibrary is one). */
export type UpstreamLibrary = FetchLibrary;

export interface UpstreamServices {
  readonly library: UpstreamLibrary;
  /** After each look at the upstream (its state, the OSs served may have changed): the dashboard updates. */
  readonly onChange?: () => void;
  readonly logger?: Logger;
}

/** What `status` and the dashboard show of the upstream. */
export interface UpstreamStatus {
  readonly url: string;
  /** null until the first answer or failure. */
  readonly reachable: boolean | null;
  /** When the upstream last answered with a good catalog (ms), if ever. */
  readonly lastContact: number | null;
  /** Why the last sync failed, if it did. */
  readonly error: string | null;
  /** OSs of the catalog being fetched, with how much is here (0-1). */
  readonly fetching: readonly { readonly id: string; readonly progress: number }[];
}

/** The OsEntry a satellite serves for an OS of its upstream's catalog, kept in `dir`. */
export function upstreamOsEntry(os: BootOs, dir: string, source: string): OsEntry {
  const base = { id: os.id, dir, name: os.name, configFile: source, sourceVersion: 1 as const, webSeeds: [] };
  if (os.method === 'kexec')
    return { ...base, method: 'kexec', kernel: os.kernel, initrd: os.initrd, cmdline: os.cmdline };
  if (os.method === 'qemu') return { ...base, method: 'qemu', args: os.args };
  return { ...base, method: 'bin', bin: os.bin, args: os.args };
}

/**
 * Why `meta` is not the torrent the catalog names for `os` (infohash, a
 * folder named after the OS, exactly its files and lengths), or undefined.
 */
export function torrentMismatch(meta: Metainfo, os: BootOs): string | undefined {
  if (meta.infoHashHex !== os.infoHash)
    return `its infohash is ${meta.infoHashHex}, the catalog says ${os.infoHash}`;
  if (meta.singleFile || meta.name !== os.id)
    return `it holds ${meta.singleFile ? 'one file' : `folder ${meta.name}`}, not folder ${os.id}`;
  const want = new Map(os.files.map((f) => [f.path, f.length]));
  if (meta.files.length !== want.size)
    return `it has ${meta.files.length} files, the catalog lists ${want.size}`;
  for (const f of meta.files) {
    const path = f.path.join('/');
    if (want.get(path) !== f.length)
      return `its file ${path} (${f.length} bytes) is not in the catalog as such`;
  }
  return undefined;
}

export class Upstream {
  private readonly log: Logger;
  private readonly dir: string;
  private key: KeyObject | undefined;
  /** The newest catalog accepted (signed, parsed). */
  private catalog: Catalog | undefined;
  private readonly fetcher: OsFetcher;
  private reachable: boolean | null = null;
  private lastContact: number | null = null;
  private lastError: string | null = null;
  private timer: NodeJS.Timeout | undefined;
  private run: Promise<void> | undefined;
  private closed = false;
  private readonly stopping = new AbortController();

  constructor(
    private readonly options: UpstreamOptions,
    private readonly services: UpstreamServices,
  ) {
    this.log = (services.logger ?? silentLogger).child('upstream');
    this.dir = join(options.stateDir, 'upstream');
    this.fetcher = new OsFetcher(join(this.dir, 'data'), services.library, this.log, 'from the upstream');
  }

  /** The upstream's trackers (from its catalog), for the seeder's sessions and the clients' boot configs. */
  trackers(): readonly string[] {
    return this.catalog?.trackers ?? [];
  }

  /** True once a catalog (kept or fetched) is known. */
  hasCatalog(): boolean {
    return this.catalog !== undefined;
  }

  /** The OS ids of the upstream's catalog. */
  osIds(): string[] {
    return this.catalog?.oss.map((o) => o.id) ?? [];
  }

  /** The upstream's boot.default_os. */
  defaultOs(): string | null {
    return this.catalog?.defaultOs ?? null;
  }

  status(): UpstreamStatus {
    return {
      url: this.options.url,
      reachable: this.reachable,
      lastContact: this.lastContact,
      error: this.lastError,
      fetching: this.fetcher.fetching(),
    };
  }

  /**
   * At start, before the seeder listens: the pinned or kept key, the kept
   * catalog (its signature checked again) and every OS of it whose data is
   * here unchanged since it was checked, given to the library.
   */
  async load(): Promise<void> {
    await this.fetcher.init();
    await mkdir(join(this.dir, 'torrents'), { recursive: true, mode: 0o700 });
    this.key = await this.readKey();
    let kept: Catalog | undefined;
    try {
      // One file, one rename: the signature's line, then the body as received.
      const file = await readFile(join(this.dir, CATALOG_FILE));
      const nl = file.indexOf(0x0a);
      const sig = file.subarray(0, Math.max(0, nl)).toString('utf8');
      const body = file.subarray(nl + 1);
      if (!this.key || !bootConfigSignatureValid(body, sig, this.key))
        throw new Error("its signature does not verify with the upstream's key");
      kept = parseCatalog(body.toString('utf8'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        this.log.warn('the kept catalog cannot be used; waiting for the upstream', { error: errorText(err) });
    }
    if (!kept) return;
    this.catalog = kept;
    const ready: CatalogEntry[] = [];
    for (const os of kept.oss) {
      const e = await this.keptEntry(os);
      if (e) ready.push(e);
    }
    this.services.library.adopt(ready);
    this.log.info('serving the kept catalog until the upstream answers', {
      upstream: this.options.url,
      ready: ready.map((e) => e.os.id).join(',') || '(none)',
      missing:
        kept.oss
          .filter((o) => !ready.some((e) => e.os.id === o.id))
          .map((o) => o.id)
          .join(',') || '-',
    });
  }

  /** Asks the upstream now, then every pollMs; one sync at a time. */
  start(): void {
    const tick = () => {
      this.run ??= this.sync().finally(() => (this.run = undefined));
    };
    tick();
    this.timer = setInterval(tick, this.options.pollMs ?? 30_000);
    this.timer.unref();
  }

  /** One look at the upstream's catalog; never throws (the state says how it went). */
  async sync(): Promise<void> {
    if (this.closed) return;
    try {
      await this.look();
    } finally {
      this.services.onChange?.();
    }
  }

  private async look(): Promise<void> {
    let catalog: Catalog;
    try {
      catalog = await this.fetchCatalog();
    } catch (err) {
      const why = errorText(err);
      if (this.reachable !== false || this.lastError !== why)
        this.log.warn('cannot take the catalog from the upstream; serving what this server has', {
          upstream: this.options.url,
          error: why,
        });
      this.reachable = false;
      this.lastError = why;
      return;
    }
    if (this.reachable !== true)
      this.log.info('upstream answers', { upstream: this.options.url, oss: catalog.oss.length });
    this.reachable = true;
    this.lastError = null;
    this.lastContact = Date.now();
    this.catalog = catalog;
    await this.apply(catalog).catch((err: unknown) =>
      this.log.warn('applying the upstream catalog failed; trying again at the next look', {
        error: errorText(err),
      }),
    );
  }

  /** Stops looking, and stops downloads in progress. */
  async close(): Promise<void> {
    this.closed = true;
    this.stopping.abort();
    if (this.timer) clearInterval(this.timer);
    await this.run;
    this.fetcher.close();
  }

  private async readKey(): Promise<KeyObject | undefined> {
    const file = this.options.keyFile ?? join(this.options.stateDir, 'upstream-key.pem');
    try {
      return createPublicKey(await readFile(file, 'utf8'));
    } catch (err) {
      if (this.options.keyFile !== null || (err as NodeJS.ErrnoException).code !== 'ENOENT')
        throw new BootTorrentError(
          'BT_ERR_SERVER',
          `cannot read the upstream's public key ${file}: ${errorText(err)}; fix: copy the upstream's <env>/.boottorrent/signing-key.pub.pem there` +
            (this.options.keyFile === null
              ? ' (or delete it: the satellite then keeps the key it first sees)'
              : ''),
          { cause: err },
        );
      return undefined;
    }
  }

  private signal(): AbortSignal {
    return AbortSignal.any([this.stopping.signal, AbortSignal.timeout(this.options.timeoutMs ?? 10_000)]);
  }

  /** GET url, no redirects, the body at most `max` bytes; throws on anything but 200. */
  private async get(path: string, max: number): Promise<{ body: Buffer; res: Response }> {
    const url = `${this.options.url}${path}`;
    const res = await fetch(url, { redirect: 'error', signal: this.signal() });
    if (res.status !== 200) {
      await res.body?.cancel().catch(() => undefined);
      throw new Error(`${url} answered HTTP ${res.status}`);
    }
    return { body: await readBodyCapped(res, max, url), res };
  }

  /** The upstream's catalog: signed by its key (kept on first sight if none is pinned), not older than ours. */
  private async fetchCatalog(): Promise<Catalog> {
    const { body, res } = await this.get(CATALOG_ROUTE, CATALOG_MAX_BYTES);
    const sig = res.headers.get(BOOT_CONFIG_SIGNATURE_HEADER) ?? '';
    if (!this.key) this.key = await this.firstKey();
    if (!bootConfigSignatureValid(body, sig, this.key))
      throw new Error(
        `the catalog from ${this.options.url} is not signed by the upstream's key` +
          (this.options.keyFile ? ` (${this.options.keyFile})` : ' (the one kept in upstream-key.pem)') +
          '; refusing it. If the upstream really has a new key, copy its signing-key.pub.pem to server.upstream_key' +
          (this.options.keyFile ? '' : ' or delete .boottorrent/upstream-key.pem'),
      );
    const catalog = parseCatalog(body.toString('utf8'));
    if (this.catalog && catalog.issued < this.catalog.issued)
      throw new Error(
        `the catalog from ${this.options.url} is older than the one this server has (issued ${new Date(catalog.issued).toISOString()}): a replay, or the upstream's clock went back; refusing it`,
      );
    await writeAtomic(join(this.dir, CATALOG_FILE), Buffer.concat([Buffer.from(`${sig}\n`), body]));
    return catalog;
  }

  /** Trust on first use: the upstream's key as it gives it now, kept for every later catalog. */
  private async firstKey(): Promise<KeyObject> {
    const { body } = await this.get(SERVER_KEY_ROUTE, 16 * 1024);
    const key = createPublicKey(body.toString('utf8'));
    if (key.asymmetricKeyType !== 'ed25519')
      throw new Error(`the upstream's key is ${key.asymmetricKeyType}, not Ed25519`);
    const file = join(this.options.stateDir, 'upstream-key.pem');
    await writeAtomic(file, body);
    this.log.warn(
      "kept the upstream's key as first seen (nothing pinned it): pin it with server.upstream_key to be sure it is the upstream's",
      { file },
    );
    return key;
  }

  private entryFor(os: BootOs, torrent: Buffer, meta: Metainfo): CatalogEntry {
    const dir = this.fetcher.dirFor(os.infoHash, os.id);
    return {
      os: upstreamOsEntry(os, dir, `${this.options.url}${CATALOG_ROUTE}`),
      torrent,
      meta,
      files: os.files,
      fingerprint: '',
    };
  }

  /** An OS whose torrent and data are here, checked against the catalog and unchanged since. */
  private async keptEntry(os: BootOs): Promise<CatalogEntry | undefined> {
    try {
      const torrent = await readFile(join(this.dir, 'torrents', `${os.infoHash}.torrent`));
      const meta = parseTorrent(torrent, `${os.id}.torrent`);
      if (torrentMismatch(meta, os)) return undefined;
      return await this.fetcher.kept(this.entryFor(os, torrent, meta), os.files);
    } catch {
      return undefined;
    }
  }

  /** Brings the library in line with `catalog`: fetches what is new or changed, drops what is gone. */
  private async apply(catalog: Catalog): Promise<void> {
    const lib = this.services.library;
    await this.fetcher.cancelExcept(new Set(catalog.oss.map((o) => o.infoHash)));
    for (const e of lib.entries()) {
      if (catalog.oss.some((o) => o.id === e.os.id)) continue;
      this.log.info('OS left the upstream catalog; no longer served', { os: e.os.id });
      await lib.drop(e.os.id);
      await this.fetcher.removeData(e.meta.infoHashHex);
    }
    for (const os of catalog.oss) {
      if (lib.get(os.id)?.meta.infoHashHex === os.infoHash || this.fetcher.busy(os.infoHash)) continue;
      // Data kept from an earlier run (checked, unchanged): offered at once.
      const kept = await this.keptEntry(os);
      if (kept) {
        await this.fetcher.replace(kept);
        continue;
      }
      await this.startFetch(os, catalog.seeds).catch((err: unknown) =>
        this.log.warn('cannot fetch an OS of the upstream catalog; trying again at the next look', {
          os: os.id,
          error: errorText(err),
        }),
      );
    }
    // Keep what is served (an older version until its replacement is here).
    const served = lib.entries().map((e) => e.meta.infoHashHex);
    const keep = new Set([...catalog.oss.map((o) => o.infoHash), ...served]);
    await this.fetcher.prune(keep);
    // Torrents of versions gone, and what a crash left half-written.
    for (const name of await readdir(join(this.dir, 'torrents')).catch(() => [] as string[])) {
      const hash = /^([0-9a-f]{40})\.torrent$/.exec(name)?.[1];
      if ((hash && !keep.has(hash)) || name.endsWith('.tmp'))
        await rm(join(this.dir, 'torrents', name), { force: true });
    }
  }

  /** The torrent from the upstream (checked against the catalog), then the data from the swarm. */
  private async startFetch(os: BootOs, seeds: readonly string[]): Promise<void> {
    const { body: torrent } = await this.get(
      `/api/v1/torrent/${encodeURIComponent(os.id)}.torrent`,
      MAX_TORRENT_BYTES,
    );
    const meta = parseTorrent(torrent, `${os.id}.torrent from ${this.options.url}`);
    const wrong = torrentMismatch(meta, os);
    if (wrong) throw new Error(`the upstream's torrent for ${os.id} does not match its catalog: ${wrong}`);
    await writeAtomic(join(this.dir, 'torrents', `${os.infoHash}.torrent`), torrent);
    await this.fetcher.fetch(this.entryFor(os, torrent, meta), { peers: seeds, expected: os.files });
  }
}
