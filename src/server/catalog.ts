/**
 * The OSs the server offers: one torrent per OS folder, plus the SHA-256 of
 * every file (the agent checks those before it loads anything). Hashing is
 * the slow part of `start`, so each folder's result is cached on disk under
 * a fingerprint of its files (path, size, mtime, inode) and the torrent's
 * fields: an unchanged folder is never re-read, a changed one is re-hashed
 * alone.
 */
import { readFile, readdir, rename, stat, writeFile, mkdir } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join, relative, sep } from 'node:path';
import { createTorrent } from '../torrent/create.js';
import { parseTorrent, type Metainfo } from '../torrent/metainfo.js';
import { sha256File } from '../swarm/storage.js';
import { BootTorrentError } from '../errors.js';
import { silentLogger, type Logger } from '../util/logger.js';
import type { OsEntry } from '../env/types.js';
import type { BootFile } from '../boot-config.js';

export interface CatalogEntry {
  readonly os: OsEntry;
  readonly torrent: Buffer;
  readonly meta: Metainfo;
  readonly files: readonly BootFile[];
  /** Fingerprint of the folder this entry was hashed from. */
  readonly fingerprint: string;
}

export interface CatalogOptions {
  /** Where hashed torrents are cached (created if missing). */
  readonly cacheDir: string;
  /** Announce URL put in each torrent (agents use the boot config's trackers anyway). */
  readonly announce?: string;
}

export interface CatalogServices {
  readonly logger?: Logger;
  readonly signal?: AbortSignal;
  readonly onProgress?: (os: string, hashed: number, total: number) => void;
}

interface CacheRecord {
  readonly fingerprint: string;
  readonly files: readonly BootFile[];
}

const CACHE_FORMAT = 1;

/** Every regular file below `dir` (symlinks followed), as '/'-separated relative paths with size, mtime and inode. */
/** The torrent's fields from outside the folder (tracker, web seeds), as one string for the fingerprint. */
function outside(announce: string, os: OsEntry): string {
  return os.webSeeds.length > 0 ? `${announce}\nurl-list:${os.webSeeds.join('\n')}` : announce;
}

export async function fingerprintFolder(dir: string, announce: string): Promise<string> {
  const names = (await readdir(dir, { recursive: true })).sort();
  const h = createHash('sha256').update(`format ${CACHE_FORMAT}\nannounce ${announce}\n`);
  for (const name of names) {
    const st = await stat(join(dir, name));
    if (!st.isFile()) continue;
    h.update(`${name.split(sep).join('/')}\0${st.size}\0${st.mtimeMs}\0${st.ino}\n`);
  }
  return h.digest('hex');
}

export class OsCatalog {
  private readonly byId = new Map<string, CatalogEntry>();
  private readonly log: Logger;

  constructor(
    private readonly options: CatalogOptions,
    private readonly services: CatalogServices = {},
  ) {
    this.log = (services.logger ?? silentLogger).child('catalog');
  }

  get(id: string): CatalogEntry | undefined {
    return this.byId.get(id);
  }

  entries(): CatalogEntry[] {
    return [...this.byId.values()];
  }

  /** Sets one entry made elsewhere (a satellite's OS from its upstream: the upstream's torrent). */
  put(entry: CatalogEntry): void {
    this.byId.set(entry.os.id, entry);
  }

  delete(id: string): void {
    this.byId.delete(id);
  }

  /**
   * Brings the catalog in line with `oss`: unchanged folders keep their
   * entry, changed or new ones are hashed (or read back from the cache),
   * missing ones are dropped. Returns what changed. A folder that cannot be
   * hashed throws, naming it; the catalog keeps its earlier state then.
   */
  async update(oss: readonly OsEntry[]): Promise<{ added: CatalogEntry[]; removed: CatalogEntry[] }> {
    const next = new Map<string, CatalogEntry>();
    const added: CatalogEntry[] = [];
    const announce = this.options.announce ?? '';
    for (const os of oss) {
      // An OS fetched from its torrent's web seeds (src/server/fetched-os.ts) is
      // added there once checked; it keeps the entry it has until replaced.
      if (os.torrent !== undefined) {
        const kept = this.byId.get(os.id);
        if (kept) next.set(os.id, kept);
        continue;
      }
      // What goes into the .torrent besides the folder: a change makes a new one.
      const fingerprint = await fingerprintFolder(os.dir, outside(announce, os)).catch((err: unknown) => {
        throw new BootTorrentError(
          'BT_ERR_FILE',
          `cannot read OS folder ${os.dir}: ${(err as Error).message}`,
          {
            cause: err,
          },
        );
      });
      const old = this.byId.get(os.id);
      if (old && old.fingerprint === fingerprint) {
        next.set(os.id, { ...old, os });
        continue;
      }
      const entry = (await this.fromCache(os, fingerprint)) ?? (await this.hash(os, fingerprint));
      next.set(os.id, entry);
      // Touched but identical (same infohash): the same torrent, nothing to add.
      if (old?.meta.infoHashHex === entry.meta.infoHashHex) continue;
      added.push(entry);
      if (old) this.log.info('OS changed', { os: os.id, infoHash: entry.meta.infoHashHex });
    }
    const removed = [...this.byId.values()].filter(
      (e) => next.get(e.os.id)?.meta.infoHashHex !== e.meta.infoHashHex,
    );
    this.byId.clear();
    for (const [k, v] of next) this.byId.set(k, v);
    return { added, removed };
  }

  private paths(os: OsEntry) {
    const base = join(this.options.cacheDir, os.id);
    return { torrent: `${base}.torrent`, record: `${base}.json` };
  }

  private async fromCache(os: OsEntry, fingerprint: string): Promise<CatalogEntry | undefined> {
    const p = this.paths(os);
    try {
      const record = JSON.parse(await readFile(p.record, 'utf8')) as CacheRecord;
      if (record.fingerprint !== fingerprint) return undefined;
      const torrent = await readFile(p.torrent);
      const meta = parseTorrent(torrent, p.torrent);
      this.log.debug('cached torrent reused', { os: os.id, infoHash: meta.infoHashHex });
      return { os, torrent, meta, files: record.files, fingerprint };
    } catch {
      return undefined; // absent or damaged: hash again
    }
  }

  private async hash(os: OsEntry, fingerprint: string): Promise<CatalogEntry> {
    this.log.info('hashing OS folder', { os: os.id, dir: os.dir });
    const { torrent, meta } = await createTorrent(
      os.dir,
      {
        name: os.id,
        creationDate: null,
        createdBy: 'BootTorrent',
        ...(this.options.announce ? { announce: [[this.options.announce]] } : {}),
        ...(os.webSeeds.length > 0 ? { urlList: os.webSeeds } : {}),
      },
      {
        ...(this.services.signal ? { signal: this.services.signal } : {}),
        onProgress: (p) => this.services.onProgress?.(os.id, p.hashedBytes, p.totalBytes),
      },
    );
    const files: BootFile[] = [];
    for (const f of meta.files) {
      files.push({
        path: f.path.join('/'),
        length: f.length,
        sha256: await sha256File(join(os.dir, ...f.path)),
      });
    }
    // The folder may have changed while it was read: only cache what still matches.
    const after = await fingerprintFolder(os.dir, outside(this.options.announce ?? '', os));
    if (after !== fingerprint)
      throw new BootTorrentError(
        'BT_ERR_FILE',
        `OS folder ${os.dir} changed while it was hashed: it will be hashed again once it is quiet`,
      );
    const p = this.paths(os);
    await mkdir(this.options.cacheDir, { recursive: true });
    const tmp = (f: string) => `${f}.${process.pid}.tmp`;
    await writeFile(tmp(p.torrent), torrent);
    await rename(tmp(p.torrent), p.torrent);
    const record: CacheRecord = { fingerprint, files };
    await writeFile(tmp(p.record), JSON.stringify(record));
    await rename(tmp(p.record), p.record);
    this.log.info('OS hashed', {
      os: os.id,
      infoHash: meta.infoHashHex,
      files: files.length,
      bytes: meta.length,
      folder: relative(process.cwd(), os.dir) || '.',
    });
    return { os, torrent, meta, files, fingerprint };
  }
}
