/**
 * OSs a server fetches instead of hashing a folder: a satellite's from its
 * upstream's swarm (upstream.ts), an OS config's `torrent:` from its web
 * seeds (fetched-os.ts). Each is downloaded by the OS library's seeder
 * into <root>/<infohash>/<id>/ (every piece checked against the torrent),
 * then every file's SHA-256 is taken (and compared with what the source
 * promised, if it did) and written with a fingerprint of the folder beside
 * it (<infohash>.ok). Only then is the OS offered to clients; a later start
 * offers it at once while the folder is unchanged.
 */
import { mkdir, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { writeAtomic } from '../util/atomic-file.js';
import type { BootFile } from '../boot-config.js';
import { errorText } from '../errors.js';
import type { TorrentSession } from '../swarm/session.js';
import { sha256File } from '../swarm/storage.js';
import type { Logger } from '../util/logger.js';
import { fingerprintFolder, type CatalogEntry } from './catalog.js';

/** An OS whose files did not match what its source promised is not fetched again for this long. */
export const RETRY_BAD_MS = 10 * 60_000;
/** How often a long fetch logs its progress. */
const PROGRESS_LOG_MS = 30_000;

/** What the fetcher changes in the OS library (OsLibrary is one). */
export interface FetchLibrary {
  get(id: string): CatalogEntry | undefined;
  entries(): CatalogEntry[];
  adopt(entries: readonly CatalogEntry[]): void;
  /** Offers and seeds an entry whose data is here and checked (after the seeder listens). */
  add(e: CatalogEntry): Promise<void>;
  fetch(e: CatalogEntry, peers: readonly string[], webSeeds?: readonly string[]): Promise<TorrentSession>;
  attach(e: CatalogEntry, session: TorrentSession): Promise<void>;
  drop(id: string): Promise<void>;
  /** Stops a download that was not attached. */
  cancel(infoHashHex: string): Promise<void>;
}

interface Marker {
  readonly fingerprint: string;
  readonly files: readonly BootFile[];
}

/** The same files (path, length, SHA-256), in any order. */
function sameFiles(a: readonly BootFile[], b: readonly BootFile[]): boolean {
  if (a.length !== b.length) return false;
  const byPath = new Map(b.map((f) => [f.path, f]));
  return a.every((f) => {
    const o = byPath.get(f.path);
    return o !== undefined && o.length === f.length && o.sha256 === f.sha256;
  });
}

export class OsFetcher {
  private readonly pending = new Map<
    string,
    { entry: CatalogEntry; session: TorrentSession; timer: NodeJS.Timeout }
  >();
  /** Infohashes whose files did not match their source's promise, and when. */
  private readonly bad = new Map<string, number>();
  private closed = false;
  private readonly stopping = new AbortController();

  constructor(
    /** <state>/upstream/data or <state>/fetched. */
    private readonly root: string,
    private readonly library: FetchLibrary,
    private readonly log: Logger,
    /** How log lines name the source ("from the upstream", "from its web seeds"). */
    private readonly label: string,
  ) {}

  async init(): Promise<void> {
    await mkdir(this.root, { recursive: true, mode: 0o700 });
  }

  /** Where an OS's files go: its folder (named as the torrent) under its infohash. */
  dirFor(infoHash: string, id: string): string {
    return join(this.root, infoHash, id);
  }

  /** Being fetched, or failed its check less than RETRY_BAD_MS ago. */
  busy(infoHash: string): boolean {
    const at = this.bad.get(infoHash);
    return this.pending.has(infoHash) || (at !== undefined && Date.now() - at < RETRY_BAD_MS);
  }

  /** OSs being fetched, with how much is here (0-1). */
  fetching(): { id: string; progress: number }[] {
    return [...this.pending.values()].map((p) => {
      const st = p.session.stats();
      return { id: p.entry.os.id, progress: st.length > 0 ? (st.length - st.left) / st.length : 1 };
    });
  }

  /**
   * `e` (its folder from dirFor) with the files its marker holds, if its
   * data was fetched and checked before and the folder is unchanged since
   * (and the files are `expected`, when given).
   */
  async kept(e: CatalogEntry, expected?: readonly BootFile[]): Promise<CatalogEntry | undefined> {
    try {
      const marker = JSON.parse(
        await readFile(`${join(this.root, e.meta.infoHashHex)}.ok`, 'utf8'),
      ) as Marker;
      if (typeof marker.fingerprint !== 'string' || !this.filesOf(e, marker.files)) return undefined;
      if (expected && !sameFiles(marker.files, expected)) return undefined;
      const now = await fingerprintFolder(e.os.dir, '');
      return marker.fingerprint === now ? { ...e, files: marker.files, fingerprint: now } : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * Downloads `e` (peers and web seeds as given); when complete, checks
   * and offers it (replacing the entry of its id). `expected`: the SHA-256s
   * its source promised.
   */
  async fetch(
    e: CatalogEntry,
    opts: { peers: readonly string[]; webSeeds?: readonly string[]; expected?: readonly BootFile[] },
  ): Promise<void> {
    const hash = e.meta.infoHashHex;
    await rm(`${join(this.root, hash)}.ok`, { force: true });
    const session = await this.library.fetch(e, opts.peers, opts.webSeeds);
    const timer = setInterval(() => {
      const st = session.stats();
      this.log.info(`fetching ${e.os.id} ${this.label}`, {
        progress: `${(((st.length - st.left) / st.length) * 100).toFixed(1)} %`,
        peers: st.peers.length,
      });
    }, PROGRESS_LOG_MS);
    timer.unref();
    this.pending.set(hash, { entry: e, session, timer });
    this.log.info(`fetching OS ${this.label}`, { os: e.os.id, infoHash: hash, bytes: e.meta.length });
    session.whenComplete().then(
      () => this.finished(e, session, opts.expected),
      async (err: unknown) => {
        if (!this.forget(hash, session)) return;
        this.log.warn('fetching OS failed; trying again later', { os: e.os.id, error: errorText(err) });
        // The failed session leaves the seeder, or the next try could not add the torrent again.
        await this.library.cancel(hash).catch(() => undefined);
      },
    );
  }

  /** Stops fetches whose infohash is not in `wanted`, and removes their data. */
  async cancelExcept(wanted: ReadonlySet<string>): Promise<void> {
    for (const [hash, p] of [...this.pending]) {
      if (wanted.has(hash)) continue;
      this.forget(hash, p.session);
      await this.library.cancel(hash);
      await this.removeData(hash);
    }
  }

  /** Offers `entry` (its session seeding on, or a new seed of kept data); the one it replaces goes with its data. */
  async replace(entry: CatalogEntry, session?: TorrentSession): Promise<void> {
    const old = this.library.get(entry.os.id);
    if (session) await this.library.attach(entry, session);
    else {
      if (old) await this.library.drop(entry.os.id);
      await this.library.add(entry);
    }
    if (old && old.meta.infoHashHex !== entry.meta.infoHashHex && old.os.dir.startsWith(this.root))
      await this.removeData(old.meta.infoHashHex);
    this.log.info(`OS ${this.label} checked and served`, {
      os: entry.os.id,
      infoHash: entry.meta.infoHashHex,
      files: entry.files.length,
    });
  }

  async removeData(infoHash: string): Promise<void> {
    await rm(`${join(this.root, infoHash)}.ok`, { force: true });
    await rm(join(this.root, infoHash), { recursive: true, force: true });
  }

  /** Data folders whose infohash is not in `keep` (left by a run that stopped): removed. */
  async prune(keep: ReadonlySet<string>): Promise<void> {
    for (const name of await readdir(this.root).catch(() => [] as string[])) {
      const hash = name.replace(/\.ok$/, '');
      const stale = /^[0-9a-f]{40}$/.test(hash) && !keep.has(hash) && !this.pending.has(hash);
      // A marker half-written when a run stopped (writeAtomic's temporary name).
      if (stale || /^[0-9a-f]{40}\.ok\.\d+\.tmp$/.test(name))
        await rm(join(this.root, name), { recursive: true, force: true });
    }
  }

  close(): void {
    this.closed = true;
    this.stopping.abort();
    for (const p of this.pending.values()) clearInterval(p.timer);
  }

  /** True when `files` (a marker's) are the torrent's files, in its order, each with a SHA-256. */
  private filesOf(e: CatalogEntry, files: unknown): files is readonly BootFile[] {
    if (!Array.isArray(files) || files.length !== e.meta.files.length) return false;
    return e.meta.files.every((f, i) => {
      const m = files[i] as Partial<BootFile> | undefined;
      return (
        m?.path === f.path.join('/') &&
        m.length === f.length &&
        typeof m.sha256 === 'string' &&
        /^[0-9a-f]{64}$/.test(m.sha256)
      );
    });
  }

  /** Drops the pending record of `hash` if it is still `session`'s; false if it was not. */
  private forget(hash: string, session: TorrentSession): boolean {
    const p = this.pending.get(hash);
    if (p?.session !== session) return false;
    clearInterval(p.timer);
    this.pending.delete(hash);
    return true;
  }

  /** Every file's SHA-256 (compared with `expected`), the marker, then offered; otherwise dropped and kept away. */
  private async finished(
    e: CatalogEntry,
    session: TorrentSession,
    expected: readonly BootFile[] | undefined,
  ): Promise<void> {
    const hash = e.meta.infoHashHex;
    if (this.closed || this.pending.get(hash)?.session !== session) return;
    try {
      const files: BootFile[] = [];
      for (const f of e.meta.files) {
        const path = f.path.join('/');
        const sha256 = await sha256File(join(e.os.dir, ...f.path), this.stopping.signal);
        files.push({ path, length: f.length, sha256 });
      }
      if (expected && !sameFiles(files, expected)) {
        const want = new Map(expected.map((f) => [f.path, f.sha256]));
        const wrong = files.find((f) => want.get(f.path) !== f.sha256);
        throw new Error(
          wrong
            ? `SHA-256 of ${wrong.path} is ${wrong.sha256}, the catalog says ${want.get(wrong.path) ?? '(not listed)'}`
            : 'its files are not the ones listed',
        );
      }
      const fingerprint = await fingerprintFolder(e.os.dir, '');
      await writeAtomic(`${join(this.root, hash)}.ok`, JSON.stringify({ fingerprint, files }));
      if (this.pending.get(hash)?.session !== session) return;
      // Still pending while it is offered: a look at the source meanwhile does not offer it twice.
      await this.replace({ ...e, files, fingerprint }, session);
      this.forget(hash, session);
    } catch (err) {
      if (this.closed || !this.forget(hash, session)) return;
      this.bad.set(hash, Date.now());
      this.log.error(`an OS ${this.label} does not match its catalog; not served`, {
        os: e.os.id,
        error: errorText(err),
        retryInMinutes: RETRY_BAD_MS / 60_000,
      });
      await this.library.cancel(hash).catch(() => undefined);
      await this.removeData(hash);
    }
  }
}
