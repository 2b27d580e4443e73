/**
 * What a machine or a group boots next (issue #17 item 3), set through the
 * dashboard's actions (`boottorrent next-boot`, the dashboard's buttons)
 * and kept in the state folder (next-boot.json, mode 0600) so that it
 * survives a restart.
 *
 * An entry for a machine wins over one for its group. `once` means "the
 * next boot only": a machine's entry is removed when that machine reports
 * it is booting; a group's entry stays and remembers which machines used
 * it, so each machine of the group boots it once (clear it with
 * `next-boot GROUP --clear`). Without `once` it stays until cleared.
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import { BootTorrentError } from '../errors.js';
import { silentLogger, type Logger } from '../util/logger.js';

export interface NextBoot {
  readonly os: string;
  readonly once: boolean;
  /** Epoch ms it was set. */
  readonly setAt: number;
}

interface GroupEntry extends NextBoot {
  /** MACs that booted a `once` group entry already. */
  readonly done: readonly string[];
}

interface FileFormat {
  readonly version: 1;
  readonly macs: Record<string, NextBoot>;
  readonly groups: Record<string, GroupEntry>;
}

/** What a machine boots next and why: its own entry or its group's. */
export interface NextBootFor extends NextBoot {
  readonly via: { readonly kind: 'mac' | 'group'; readonly key: string };
}

export type NextBootTarget =
  { readonly kind: 'mac'; readonly key: string } | { readonly kind: 'group'; readonly key: string };

const MAX_ENTRIES = 10_000;

export class NextBootStore {
  private macs = new Map<string, NextBoot>();
  private groups = new Map<string, GroupEntry>();
  private readonly log: Logger;
  /** Writes one after another, the last state always last. */
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly file: string,
    logger?: Logger,
  ) {
    this.log = (logger ?? silentLogger).child('next-boot');
  }

  /** Reads the file; a missing one is empty, a damaged one is logged and replaced at the next change. */
  async load(): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        this.log.warn(`cannot read ${this.file}: starting with no next-boot entries`, {
          error: (err as Error).message,
        });
      return;
    }
    try {
      const f = JSON.parse(text) as FileFormat;
      if (f.version !== 1) throw new Error(`version ${String(f.version)}`);
      const ok = (e: unknown): e is NextBoot =>
        typeof e === 'object' &&
        e !== null &&
        typeof (e as NextBoot).os === 'string' &&
        typeof (e as NextBoot).once === 'boolean';
      for (const [k, e] of Object.entries(f.macs ?? {}))
        if (ok(e)) this.macs.set(k, { os: e.os, once: e.once, setAt: Number(e.setAt) || 0 });
      for (const [k, e] of Object.entries(f.groups ?? {}))
        if (ok(e))
          this.groups.set(k, {
            os: e.os,
            once: e.once,
            setAt: Number(e.setAt) || 0,
            done: Array.isArray(e.done) ? e.done.filter((m) => typeof m === 'string') : [],
          });
    } catch (err) {
      this.log.warn(`${this.file} is damaged: starting with no next-boot entries`, {
        error: (err as Error).message,
      });
    }
  }

  /** The entry that applies to a machine (its own, else its first group's it has not used up). */
  forMachine(mac: string, groups: readonly string[]): NextBootFor | undefined {
    const own = this.macs.get(mac);
    if (own) return { ...own, via: { kind: 'mac', key: mac } };
    for (const g of groups) {
      const e = this.groups.get(g);
      if (e && !(e.once && e.done.includes(mac)))
        return { os: e.os, once: e.once, setAt: e.setAt, via: { kind: 'group', key: g } };
    }
    return undefined;
  }

  /** Sets (os) or clears (null) the entries of targets; resolves once they are on disk (one write). */
  async set(
    targets: NextBootTarget | readonly NextBootTarget[],
    os: string | null,
    once = false,
  ): Promise<void> {
    const list: readonly NextBootTarget[] = isList(targets) ? targets : [targets];
    const added = list.filter((x) => !(x.kind === 'mac' ? this.macs : this.groups).has(x.key)).length;
    if (os !== null && this.macs.size + this.groups.size + added > MAX_ENTRIES)
      throw new BootTorrentError(
        'BT_ERR_USAGE',
        `more than ${MAX_ENTRIES} next-boot entries: clear some first`,
      );
    for (const target of list) {
      const map = target.kind === 'mac' ? this.macs : this.groups;
      if (os === null) map.delete(target.key);
      else {
        const e = { os, once, setAt: Date.now() };
        if (target.kind === 'mac') this.macs.set(target.key, e);
        else this.groups.set(target.key, { ...e, done: [] });
      }
    }
    await this.save();
  }

  /**
   * A machine reported it is booting `os`: a `once` entry for that OS that
   * applied to it is used up (a machine whose user chose another OS at the
   * menu keeps it for its next boot). Returns the entry it used, if any.
   */
  async booted(mac: string, groups: readonly string[], os: string): Promise<NextBootFor | undefined> {
    const e = this.forMachine(mac, groups);
    if (!e?.once || e.os !== os) return undefined;
    if (e.via.kind === 'mac') this.macs.delete(mac);
    else {
      const g = this.groups.get(e.via.key)!;
      this.groups.set(e.via.key, { ...g, done: [...g.done, mac].slice(-MAX_ENTRIES) });
    }
    await this.save();
    return e;
  }

  /** True when a group has an entry (also a group no longer in the environment: it can still be cleared). */
  hasGroup(name: string): boolean {
    return this.groups.has(name);
  }

  /** Every entry, for the status API. */
  list(): { macs: Record<string, NextBoot>; groups: Record<string, NextBoot & { done: number }> } {
    return {
      macs: Object.fromEntries(this.macs),
      groups: Object.fromEntries(
        [...this.groups].map(([k, e]) => [
          k,
          { os: e.os, once: e.once, setAt: e.setAt, done: e.done.length },
        ]),
      ),
    };
  }

  private save(): Promise<void> {
    const data: FileFormat = {
      version: 1,
      macs: Object.fromEntries(this.macs),
      groups: Object.fromEntries(this.groups),
    };
    const text = `${JSON.stringify(data, null, 1)}\n`;
    const tmp = `${this.file}.${process.pid}.tmp`;
    this.writing = this.writing
      .catch(() => undefined)
      .then(async () => {
        await writeFile(tmp, text, { mode: 0o600 });
        await rename(tmp, this.file);
      });
    return this.writing;
  }
}

function isList(t: NextBootTarget | readonly NextBootTarget[]): t is readonly NextBootTarget[] {
  return Array.isArray(t);
}
