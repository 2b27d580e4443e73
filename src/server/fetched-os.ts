/**
 * OSs whose config names a `torrent:` instead of holding the files (#21
 * item 3): `start` fetches each from the torrent's web seeds (its url-list
 * and the config's `web_seeds`, BEP 19) and any peers, every piece checked
 * against the .torrent the sysadmin put in the OS folder, into
 * <env>/.boottorrent/fetched/<infohash>/<id>/, takes every file's SHA-256
 * and only then offers the OS to clients. A later start offers it at once
 * while that folder is unchanged; a changed .torrent is fetched anew and
 * replaces the old one once it is here.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { errorText } from '../errors.js';
import type { OsEntry } from '../env/types.js';
import { parseTorrent, type Metainfo } from '../torrent/metainfo.js';
import { silentLogger, type Logger } from '../util/logger.js';
import type { CatalogEntry } from './catalog.js';
import { OsFetcher, type FetchLibrary } from './os-fetcher.js';

export class FetchedOss {
  private readonly log: Logger;
  private readonly fetcher: OsFetcher;

  constructor(
    stateDir: string,
    private readonly library: FetchLibrary,
    logger: Logger = silentLogger,
  ) {
    this.log = logger.child('fetch');
    this.fetcher = new OsFetcher(join(stateDir, 'fetched'), library, this.log, 'from its web seeds');
  }

  /** OSs being fetched, with how much is here (0-1). */
  fetching(): { id: string; progress: number }[] {
    return this.fetcher.fetching();
  }

  /** At start, before the seeder listens: every `torrent:` OS already fetched and unchanged, given to the library. */
  async load(oss: readonly OsEntry[]): Promise<void> {
    await this.fetcher.init();
    const ready: CatalogEntry[] = [];
    for (const os of oss) {
      if (os.torrent === undefined) continue;
      const e = await this.entryOf(os).catch(() => undefined);
      const kept = e && (await this.fetcher.kept(e));
      if (kept) ready.push(kept);
    }
    this.library.adopt(ready);
  }

  /**
   * Fetches every `torrent:` OS the library does not serve in that version
   * (after the seeder listens, and after each reload); stops fetches of
   * OSs no longer configured. Never throws.
   */
  async apply(oss: readonly OsEntry[]): Promise<void> {
    const remote = oss.filter((o) => o.torrent !== undefined);
    const entries: CatalogEntry[] = [];
    for (const os of remote) {
      try {
        entries.push(await this.entryOf(os));
      } catch (err) {
        this.log.warn(`cannot read the torrent of ${os.id}`, { file: os.torrent, error: errorText(err) });
      }
    }
    const wanted = new Set(entries.map((e) => e.meta.infoHashHex));
    await this.fetcher.cancelExcept(wanted);
    for (const e of entries) {
      const hash = e.meta.infoHashHex;
      if (this.library.get(e.os.id)?.meta.infoHashHex === hash || this.fetcher.busy(hash)) continue;
      const kept = await this.fetcher.kept(e);
      try {
        if (kept) await this.fetcher.replace(kept);
        else await this.fetcher.fetch(e, { peers: [], webSeeds: webSeedsOf(e.os, e.meta) });
      } catch (err) {
        this.log.warn(`cannot fetch ${e.os.id}; trying again at the next reload`, { error: errorText(err) });
      }
    }
    // Keep what the library still serves (an older version until its replacement is here).
    const served = this.library.entries().map((e) => e.meta.infoHashHex);
    await this.fetcher.prune(new Set([...wanted, ...served]));
  }

  close(): void {
    this.fetcher.close();
  }

  /** The catalog entry of a `torrent:` OS: its .torrent as given, its files in the fetch folder. */
  private async entryOf(os: OsEntry): Promise<CatalogEntry> {
    const torrent = await readFile(os.torrent!);
    const meta = parseTorrent(torrent, os.torrent);
    if (meta.singleFile || meta.name !== os.id)
      throw new Error(`${os.torrent} is not of a folder named ${os.id}`);
    return {
      os: { ...os, dir: this.fetcher.dirFor(meta.infoHashHex, os.id) },
      torrent,
      meta,
      files: [],
      fingerprint: '',
    };
  }
}

/** The torrent's url-list and the config's web_seeds, each once. */
function webSeedsOf(os: OsEntry, meta: Metainfo): string[] {
  return [...new Set([...meta.urlList, ...os.webSeeds])];
}
