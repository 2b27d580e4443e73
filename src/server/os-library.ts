/**
 * The operating systems `start` serves: the catalog of their torrents
 * (hashed from each OS folder, cached), the server's seeder with one
 * session per OS, seeding again with a growing pause after a session
 * fails, and each infohash registered with the server's tracker, which
 * is closed and answers only what it was told to serve.
 */
import { dirname } from 'node:path';
import { errorText } from '../errors.js';
import type { OsEntry } from '../env/types.js';
import { BitTorrentClient } from '../swarm/client.js';
import type { SessionStats, TorrentSession } from '../swarm/session.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { OsCatalog, type CatalogEntry } from './catalog.js';

export interface OsLibraryOptions {
  /** Where hashed torrents are cached. */
  readonly cacheDir: string;
  /** Tracker URL written into each torrent, if the environment has a tracker. */
  readonly announce?: string;
  /** TCP port of the seeder (default 6881; 0 picks one). */
  readonly seedPort?: number;
  /** Upload cap of the seeder in bytes/s (default none). */
  readonly uploadLimit?: number;
  /** Trackers each seeding session announces to (the lab address, so clients get one they can reach). */
  readonly seedTrackers: readonly string[];
  readonly pex: boolean;
  /** The lab address to run Local Service Discovery on, if the environment turns it on. */
  readonly lsdInterface?: string;
}

export interface OsLibraryServices {
  /** The server's logger: the catalog logs as 'catalog', the seeder as 'seed'. */
  readonly logger?: Logger;
  readonly signal?: AbortSignal;
  /** Progress of hashing OS folders. */
  readonly onHashProgress?: (os: string, hashed: number, total: number) => void;
  /** The server's tracker, told of every OS the library adds or drops. */
  readonly tracker?: { add(infoHash: Buffer): void; remove(infoHash: Buffer): void };
  /** More trackers every seeding session announces to (a satellite's upstream trackers), asked at each start. */
  readonly moreTrackers?: () => readonly string[];
  /** The seeder's peer listener ended after listen(): the server stops. */
  readonly onListenerError: (err: Error) => void;
}

export class OsLibrary {
  private readonly catalog: OsCatalog;
  private readonly log: Logger;
  private seeder: BitTorrentClient | undefined;
  private readonly sessions = new Map<string, TorrentSession>();
  /** Times each OS's seeding session failed and was started again (for the back-off). */
  private readonly reseeds = new Map<string, number>();
  private closed = false;

  constructor(
    private readonly options: OsLibraryOptions,
    private readonly services: OsLibraryServices,
  ) {
    this.log = services.logger ?? silentLogger;
    this.catalog = new OsCatalog(
      {
        cacheDir: options.cacheDir,
        ...(options.announce !== undefined ? { announce: options.announce } : {}),
      },
      {
        logger: this.log,
        ...(services.signal ? { signal: services.signal } : {}),
        ...(services.onHashProgress ? { onProgress: services.onHashProgress } : {}),
      },
    );
  }

  get(id: string): CatalogEntry | undefined {
    return this.catalog.get(id);
  }

  entries(): CatalogEntry[] {
    return this.catalog.entries();
  }

  /** The seeder's TCP port once it listens. */
  get seedPort(): number | undefined {
    return this.seeder?.listenPort;
  }

  /** Every byte the seeder's peer connections sent (wire total, #16). */
  get seederBytesSent(): number {
    return this.seeder?.bytesSent ?? 0;
  }

  get seederPeerId(): string | undefined {
    return this.seeder?.peerId.toString('hex');
  }

  /** The seeder, e.g. for its upload totals. */
  get seedClient(): BitTorrentClient | undefined {
    return this.seeder;
  }

  /** The seeding session of an OS, if it is seeded. */
  stats(os: string): SessionStats | undefined {
    return this.sessions.get(os)?.stats();
  }

  /** First step of start-up: hashes every OS folder (or reads its cached torrent) and tells the tracker. */
  async load(oss: readonly OsEntry[]): Promise<void> {
    await this.catalog.update(oss);
    for (const e of this.catalog.entries()) this.services.tracker?.add(e.meta.infoHash);
  }

  /**
   * A satellite's first step instead of load(): entries made from its
   * upstream's catalog whose data is here and checked (src/server/upstream.ts).
   */
  adopt(entries: readonly CatalogEntry[]): void {
    for (const e of entries) {
      this.catalog.put(e);
      this.services.tracker?.add(e.meta.infoHash);
    }
  }

  /** Offers and seeds a satellite's OS whose data is here and checked. */
  async add(e: CatalogEntry): Promise<void> {
    this.catalog.put(e);
    this.services.tracker?.add(e.meta.infoHash);
    await this.seed(e);
  }

  /** Stops a satellite's download that was never attached. */
  async cancel(infoHashHex: string): Promise<void> {
    await this.seeder?.remove(infoHashHex);
  }

  /** Trackers a session announces to: the lab address's, then a satellite's upstream's. */
  trackers(): string[] {
    const more = this.services.moreTrackers?.() ?? [];
    return [...this.options.seedTrackers, ...more.filter((u) => !this.options.seedTrackers.includes(u))];
  }

  /**
   * A satellite's download of an OS from the swarm into `dir` (its parent
   * folder), on the seeder's port, so it serves the pieces it has at once.
   * The entry is not offered to clients until `attach` (after its files'
   * SHA-256s were checked).
   */
  async fetch(
    e: CatalogEntry,
    peers: readonly string[],
    webSeeds?: readonly string[],
  ): Promise<TorrentSession> {
    if (!this.seeder) throw new Error('the seeder is not listening');
    return this.seeder.add({
      meta: e.meta,
      dir: dirname(e.os.dir),
      mode: 'download',
      trackers: this.trackers(),
      peers: [...peers],
      ...(webSeeds && webSeeds.length > 0 ? { webSeeds } : {}),
      pex: this.options.pex,
      ...(this.options.lsdInterface !== undefined ? { lsdInterface: this.options.lsdInterface } : {}),
      ...(this.options.uploadLimit ? { uploadLimit: this.options.uploadLimit } : {}),
    });
  }

  /**
   * Offers an OS a satellite fetched and checked: its session (from fetch)
   * seeds on; the entry replaces the one of that id, whose session is removed.
   */
  async attach(e: CatalogEntry, session: TorrentSession): Promise<void> {
    const old = this.catalog.get(e.os.id);
    if (old && old.meta.infoHashHex !== e.meta.infoHashHex) await this.drop(e.os.id);
    this.catalog.put(e);
    this.services.tracker?.add(e.meta.infoHash);
    this.sessions.set(e.os.id, session);
    this.reseedOnFailure(e, session);
  }

  /** Stops offering, seeding and tracking an OS (a satellite's upstream dropped or replaced it). */
  async drop(id: string): Promise<void> {
    const e = this.catalog.get(id);
    if (!e) return;
    this.catalog.delete(id);
    this.sessions.delete(id);
    await this.seeder?.remove(e.meta.infoHashHex);
    this.services.tracker?.remove(e.meta.infoHash);
  }

  /** Binds the seeder and seeds every OS (trusted: the catalog just checked each folder's fingerprint). */
  async listen(): Promise<void> {
    this.seeder = new BitTorrentClient(
      { host: '0.0.0.0', port: this.options.seedPort ?? 6881 },
      {
        logger: this.log.child('seed'),
        ...(this.services.signal ? { signal: this.services.signal } : {}),
        onListenerError: this.services.onListenerError,
      },
    );
    await this.seeder.listen();
    for (const e of this.catalog.entries()) await this.seed(e);
  }

  /**
   * Brings the catalog in line with `oss` (a reload): what was removed is
   * no longer seeded nor tracked; what was added is returned for `offer`.
   */
  async update(oss: readonly OsEntry[]): Promise<{ added: CatalogEntry[]; removed: CatalogEntry[] }> {
    const change = await this.catalog.update(oss);
    for (const e of change.removed) {
      const s = [...this.sessions.entries()].find(([, v]) => v.meta.infoHashHex === e.meta.infoHashHex);
      if (s) {
        this.sessions.delete(s[0]);
        await this.seeder?.remove(e.meta.infoHashHex);
      }
      this.services.tracker?.remove(e.meta.infoHash);
    }
    return change;
  }

  /** Tracks and seeds an OS that `update` added; throws if it cannot be seeded. */
  async offer(e: CatalogEntry): Promise<void> {
    this.services.tracker?.add(e.meta.infoHash);
    await this.seed(e);
  }

  private async seed(e: CatalogEntry): Promise<void> {
    const seeder = this.seeder!;
    if (this.sessions.get(e.os.id)?.meta.infoHashHex === e.meta.infoHashHex) return;
    const session = await seeder.add({
      meta: e.meta,
      // The torrent's name is the folder's name, so its data root is the folder's parent.
      dir: dirname(e.os.dir),
      mode: 'seed',
      verify: false,
      trackers: this.trackers(),
      pex: this.options.pex,
      ...(this.options.lsdInterface !== undefined ? { lsdInterface: this.options.lsdInterface } : {}),
      ...(this.options.uploadLimit ? { uploadLimit: this.options.uploadLimit } : {}),
    });
    this.sessions.set(e.os.id, session);
    this.reseedOnFailure(e, session);
  }

  private reseedOnFailure(e: CatalogEntry, session: TorrentSession): void {
    const seeder = this.seeder!;
    // A fault inside a torrent session ends that session only (issue #14);
    // the room still needs the OS seeded, so seed it again after a pause
    // that grows while it keeps failing.
    session.once('failed', (err) => {
      const wait = Math.min(300_000, 5_000 * 2 ** (this.reseeds.get(e.os.id) ?? 0));
      this.reseeds.set(e.os.id, (this.reseeds.get(e.os.id) ?? 0) + 1);
      this.log.error('seeding stopped after a fault; seeding again soon', {
        os: e.os.id,
        error: err.message,
        retryInSeconds: wait / 1000,
      });
      const timer = setTimeout(() => {
        if (this.closed || this.sessions.get(e.os.id) !== session) return;
        this.sessions.delete(e.os.id);
        void seeder
          .remove(e.meta.infoHashHex)
          .then(() =>
            this.closed || this.catalog.get(e.os.id)?.meta.infoHashHex !== e.meta.infoHashHex
              ? undefined
              : this.seed(e),
          )
          .catch((error: unknown) =>
            this.log.error('seeding again failed', { os: e.os.id, error: errorText(error) }),
          );
      }, wait);
      timer.unref();
    });
  }

  /**
   * Stops seeding again (at once, so a pending retry cannot start a session
   * while the server stops) and closes the seeder.
   */
  async close(): Promise<void> {
    this.closed = true;
    await this.seeder?.close();
  }
}
