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
}

export class Reporter {
  private pending: AgentReport | undefined;
  private inFlight: Promise<void> | undefined;
  private lastSent = 0;
  private timer: NodeJS.Timeout | undefined;
  private lastStage: string | undefined;
  private readonly minInterval: number;
  private readonly timeoutMs: number;
  private readonly log: Logger;

  constructor(
    private readonly opts: ReporterOptions,
    logger: Logger = silentLogger,
  ) {
    this.minInterval = opts.minIntervalMs ?? 1000;
    this.timeoutMs = opts.timeoutMs ?? 3000;
    this.log = logger.child('report');
  }

  /** Queues a report: a new stage goes out at once, progress within the rate limit. */
  send(report: Omit<AgentReport, 'peakRss'>): void {
    const peakRss = peakRssBytes();
    const full: AgentReport = { ...report, ...(peakRss !== undefined ? { peakRss } : {}) };
    const urgent = report.stage !== this.lastStage;
    this.lastStage = report.stage;
    this.pending = full;
    if (urgent) this.pump(true);
    else this.schedule();
  }

  private schedule(): void {
    if (this.timer || this.inFlight) return;
    const wait = Math.max(0, this.lastSent + this.minInterval - Date.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.pump(false);
    }, wait);
    this.timer.unref();
  }

  private pump(urgent: boolean): void {
    if (this.inFlight || this.pending === undefined) return;
    if (!urgent && Date.now() - this.lastSent < this.minInterval) {
      this.schedule();
      return;
    }
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const body = this.pending;
    this.pending = undefined;
    this.lastSent = Date.now();
    this.inFlight = this.post(body).finally(() => {
      this.inFlight = undefined;
      if (this.pending !== undefined) this.schedule();
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
      await res.arrayBuffer().catch(() => undefined);
      if (!res.ok) this.log.debug('report refused', { status: res.status, stage: report.stage });
    } catch (err) {
      this.log.debug('report not sent', { error: (err as Error).message, stage: report.stage });
    }
  }

  /** Waits (at most `maxMs`) until what was queued has been sent or given up; for the last report before kexec. */
  async flush(maxMs = 2000): Promise<void> {
    const deadline = Date.now() + maxMs;
    while (Date.now() < deadline && (this.inFlight || this.pending !== undefined)) {
      if (!this.inFlight) this.pump(true);
      const p = this.inFlight ?? Promise.resolve();
      await Promise.race([p, new Promise((r) => setTimeout(r, Math.max(1, deadline - Date.now())).unref())]);
    }
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.pending = undefined;
  }
}
