import type { LogFields, Logger } from './logger.js';

/**
 * Logs dropped input without letting the input choose how much we log: a
 * hostile client can send a million bad packets, and a line per packet would
 * fill the disk and stall the event loop. The first drop from a source logs
 * one line; further drops from that source within the window are counted and
 * the count is reported with the next line after the window (issue #14:
 * "dropped and logged once per source per minute, a counter").
 */
export interface DropLogOptions {
  /** How long one source stays quiet after a line (ms, default 60 s). */
  readonly windowMs?: number;
  /** Sources remembered at once; the least recently logged one is forgotten first (default 1024). */
  readonly maxSources?: number;
  /** Clock, for tests. */
  readonly now?: () => number;
}

interface SourceState {
  loggedAt: number;
  /** Drops since the last line. */
  count: number;
}

export class DropLog {
  readonly #log: Logger;
  readonly #windowMs: number;
  readonly #maxSources: number;
  readonly #now: () => number;
  readonly #sources = new Map<string, SourceState>();
  /** Drops ever counted, for status and tests. */
  total = 0;

  constructor(log: Logger, options: DropLogOptions = {}) {
    this.#log = log;
    this.#windowMs = options.windowMs ?? 60_000;
    this.#maxSources = options.maxSources ?? 1024;
    this.#now = options.now ?? Date.now;
  }

  /**
   * Counts one drop from `source` (an address, a MAC) and logs `msg` at warn
   * level if this source has not been logged within the window; the line
   * carries `dropped`, the number of drops it stands for.
   */
  drop(source: string, msg: string, fields: LogFields = {}): void {
    this.total++;
    const now = this.#now();
    const s = this.#sources.get(source);
    if (s && now - s.loggedAt < this.#windowMs) {
      s.count++;
      return;
    }
    const dropped = (s?.count ?? 0) + 1;
    // Re-insert so Map order is least-recently-logged first.
    this.#sources.delete(source);
    this.#sources.set(source, { loggedAt: now, count: 0 });
    if (this.#sources.size > this.#maxSources) {
      const oldest = this.#sources.keys().next().value;
      if (oldest !== undefined) this.#sources.delete(oldest);
    }
    this.#log.warn(msg, { source, ...fields, dropped });
  }
}

/**
 * At most `perWindow` lines a window, then a count: for events that are
 * normal one at a time but that anyone can make by the thousand (a DHCP
 * DISCOVER from a made-up MAC). A lab powering on logs every machine; a
 * flood logs a line a window saying how many it did not.
 */
export class LineBudget {
  readonly #log: Logger;
  readonly #perWindow: number;
  readonly #windowMs: number;
  readonly #now: () => number;
  #windowStart = -Infinity;
  #used = 0;
  #suppressed = 0;

  constructor(log: Logger, options: { perWindow?: number; windowMs?: number; now?: () => number } = {}) {
    this.#log = log;
    this.#perWindow = options.perWindow ?? 100;
    this.#windowMs = options.windowMs ?? 60_000;
    this.#now = options.now ?? Date.now;
  }

  info(msg: string, fields?: LogFields): void {
    this.#line('info', msg, fields);
  }

  warn(msg: string, fields?: LogFields): void {
    this.#line('warn', msg, fields);
  }

  #line(level: 'info' | 'warn', msg: string, fields?: LogFields): void {
    const now = this.#now();
    if (now - this.#windowStart >= this.#windowMs) {
      if (this.#suppressed > 0) {
        this.#log.warn('more such lines were not logged (a flood of made-up clients?)', {
          suppressed: this.#suppressed,
          windowSeconds: this.#windowMs / 1000,
        });
      }
      this.#windowStart = now;
      this.#used = 0;
      this.#suppressed = 0;
    }
    if (this.#used < this.#perWindow) {
      this.#used++;
      this.#log[level](msg, fields);
    } else {
      this.#suppressed++;
    }
  }
}
