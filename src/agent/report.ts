/**
 * Progress reports to the server (AgentReport, src/boot-config.ts). A
 * report must never block or crash the agent: one POST at a time with a
 * timeout, the newest report replaces an unsent one, progress at most about
 * once a second, and every error is logged at debug and forgotten.
 */
import { readFileSync } from 'node:fs';
import type { AgentReport } from '../boot-config.js';
import { silentLogger, type Logger } from '../util/logger.js';

/** The process's peak resident set (VmHWM of /proc/self/status) in bytes; undefined off Linux. */
export function peakRssBytes(): number | undefined {
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

export interface ReporterOptions {
  url: string;
  token: string;
  /** Least time between two progress reports (default 1000 ms). */
  minIntervalMs?: number;
  /** Per-POST timeout (default 3000 ms). */
  timeoutMs?: number;
  /** Fields every report carries (the port this client serves phase 1 on). */
  always?: Partial<AgentReport>;
}

export class Reporter {
  /** Unsent reports in order; consecutive reports of one stage collapse to the newest. */
  private readonly queue: AgentReport[] = [];
  private inFlight: Promise<void> | undefined;
  private lastSent = 0;
  private lastSentStage: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly minInterval: number;
  private readonly timeoutMs: number;
  private readonly log: Logger;
  private always: Partial<AgentReport>;

  constructor(
    private readonly opts: ReporterOptions,
    logger: Logger = silentLogger,
  ) {
    this.minInterval = opts.minIntervalMs ?? 1000;
    this.timeoutMs = opts.timeoutMs ?? 3000;
    this.log = logger.child('report');
    this.always = { ...opts.always };
  }

  /** Replaces the fields every later report carries (e.g. none once this client stops serving phase 1). */
  setAlways(fields: Partial<AgentReport>): void {
    this.always = { ...fields };
  }

  /**
   * Queues a report. A new stage goes out as soon as the one before it has;
   * more reports of the same stage within the interval collapse into the
   * newest, so the last progress of a stage (e.g. 100 %) is never lost.
   */
  send(report: Omit<AgentReport, 'peakRss'>): void {
    const peakRss = peakRssBytes();
    // The stage first: a report reads as "stage, then details".
    const full: AgentReport = {
      ...report,
      ...this.always,
      ...(peakRss !== undefined ? { peakRss } : {}),
    };
    const last = this.queue.at(-1);
    if (last !== undefined && last.stage === full.stage) this.queue[this.queue.length - 1] = full;
    else {
      this.queue.push(full);
      // A server that is away: keep the newest stages only.
      if (this.queue.length > 16) this.queue.shift();
    }
    this.pump(false);
  }

  private schedule(): void {
    if (this.timer) return;
    const wait = Math.max(0, this.lastSent + this.minInterval - Date.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.pump(false);
    }, wait);
    this.timer.unref();
  }

  private pump(force: boolean): void {
    const next = this.queue[0];
    if (this.inFlight || next === undefined) return;
    const limited = next.stage === this.lastSentStage && Date.now() - this.lastSent < this.minInterval;
    if (limited && !force) {
      this.schedule();
      return;
    }
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.queue.shift();
    this.lastSent = Date.now();
    this.lastSentStage = next.stage;
    this.inFlight = this.post(next).finally(() => {
      this.inFlight = undefined;
      this.pump(false);
    });
  }

  private async post(report: AgentReport): Promise<void> {
    try {
      const res = await fetch(this.opts.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-boottorrent-token': this.opts.token },
        body: JSON.stringify(report),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      await res.body?.cancel().catch(() => undefined);
      if (!res.ok) this.log.debug('report refused', { status: res.status, stage: report.stage });
    } catch (err) {
      this.log.debug('report not sent', { error: (err as Error).message, stage: report.stage });
    }
  }

  /** Sends everything queued now, waiting at most `maxMs`; for the last report before kexec. */
  async flush(maxMs = 2000): Promise<void> {
    const deadline = Date.now() + maxMs;
    while (Date.now() < deadline && (this.inFlight || this.queue.length > 0)) {
      if (!this.inFlight) this.pump(true);
      const p = this.inFlight ?? Promise.resolve();
      await Promise.race([p, new Promise((r) => setTimeout(r, Math.max(1, deadline - Date.now())).unref())]);
    }
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.queue.length = 0;
  }
}
