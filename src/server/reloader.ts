/**
 * Hot reload for `start`: every few seconds it compares a cheap
 * fingerprint of the environment (size and mtime of Boottorrent.yaml and
 * every file under oss/), and when it changed, reads the environment
 * again and applies what a running server can take without a restart: OS
 * folders added, changed or removed, boot settings and host overrides.
 * Addresses, ports, DHCP and the allow-list need a restart.
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { inspectEnvironment } from '../env/load.js';
import type { Environment, OsEntry } from '../env/types.js';
import { silentLogger, type Logger } from '../util/logger.js';
import type { CatalogEntry } from './catalog.js';

/** Size and mtime of every file under the environment: changes mean "look again". */
export async function envFingerprint(dir: string): Promise<string> {
  const parts: string[] = [];
  const add = async (p: string) => {
    try {
      const st = await stat(p);
      parts.push(`${p}\0${st.size}\0${st.mtimeMs}`);
    } catch {
      parts.push(`${p}\0-`);
    }
  };
  await add(join(dir, 'Boottorrent.yaml'));
  let names: string[] = [];
  try {
    names = (await readdir(join(dir, 'oss'), { recursive: true })).sort();
  } catch {
    // no oss/ folder: the loader says so
  }
  for (const n of names) await add(join(dir, 'oss', n));
  return parts.join('\n');
}

/** What a reload changes in the OS library (OsLibrary is one). */
export interface ReloadTarget {
  update(oss: readonly OsEntry[]): Promise<{ added: CatalogEntry[]; removed: CatalogEntry[] }>;
  offer(e: CatalogEntry): Promise<void>;
}

export interface ReloaderOptions {
  /** The environment `start` loaded; its folder is the one watched. */
  readonly environment: Environment;
  /** How often the fingerprint is compared (default 2000 ms). */
  readonly intervalMs?: number;
}

export interface ReloaderServices {
  readonly library: ReloadTarget;
  readonly logger?: Logger;
}

export class Reloader {
  private env: Environment;
  private readonly log: Logger;
  private lastFingerprint = '';
  private timer: NodeJS.Timeout | undefined;
  /** The look in progress, if any (close() waits for it). */
  private run: Promise<void> | undefined;
  private closed = false;

  constructor(
    private readonly options: ReloaderOptions,
    private readonly services: ReloaderServices,
  ) {
    this.env = options.environment;
    this.log = services.logger ?? silentLogger;
  }

  /** The environment served now: the loaded one with what reloads changed. */
  get environment(): Environment {
    return this.env;
  }

  /** Takes the environment's fingerprint as it is now: the state `load` saw. */
  async mark(): Promise<void> {
    this.lastFingerprint = await envFingerprint(this.env.dir);
  }

  /** Starts looking every `intervalMs`; one look at a time. */
  start(): void {
    this.timer = setInterval(() => {
      this.run ??= this.check().finally(() => (this.run = undefined));
    }, this.options.intervalMs ?? 2000);
    this.timer.unref();
  }

  /** One look: picks up OS folders added, changed or removed (and boot settings). Never throws. */
  async check(): Promise<void> {
    if (this.closed) return;
    try {
      const fp = await envFingerprint(this.env.dir);
      if (fp === this.lastFingerprint) return;
      const { env, problems } = await inspectEnvironment(this.env.dir, { machineChecks: false });
      if (!env) {
        this.log.warn('environment changed but has problems; still serving the previous one', {
          problems: problems.length,
        });
        for (const p of problems)
          this.log.warn(`${p.file}${p.line ? `:${p.line}` : ''}: ${p.field}: ${p.message}`);
        this.lastFingerprint = fp;
        return;
      }
      const { added, removed } = await this.services.library.update(env.oss);
      this.env = Object.freeze({
        ...this.env,
        boot: env.boot,
        hosts: env.hosts,
        oss: env.oss,
        allowMacs: this.env.allowMacs,
      });
      let failed = false;
      for (const e of added) {
        // One OS that cannot be seeded must not keep the others from it.
        await this.services.library.offer(e).catch((err: unknown) => {
          failed = true;
          this.log.warn(`cannot seed ${e.os.id}; will try again`, { error: (err as Error).message });
        });
      }
      // A failure leaves the fingerprint stale, so the next tick tries again.
      if (!failed) this.lastFingerprint = fp;
      if (added.length || removed.length)
        this.log.info('environment reloaded', {
          added: added.map((e) => e.os.id).join(',') || '-',
          removed: removed.map((e) => e.os.id).join(',') || '-',
        });
    } catch (err) {
      this.log.warn('reload failed; will try again', { error: (err as Error).message });
    }
  }

  /** Stops looking; waits for a look in progress. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await this.run;
  }
}
