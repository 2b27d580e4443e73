/**
 * A web seed (BEP 19, "GetRight style"): an HTTP(S) URL that holds the
 * torrent's files, used when peers are short. Any web server or object
 * store with Range requests will do (nginx, S3, our boot HTTP server).
 *
 * It takes blocks from the picker like a peer that has every piece,
 * coalesces them into byte runs, fetches each run with one Range request
 * per file it crosses, and hands the blocks to the Downloader, where they
 * are hash-checked like any peer's. What it never does: trust the server.
 * A response must be 206 with the exact Content-Range asked for (or 200 for
 * a whole file asked for whole), and never longer than asked: a longer
 * body is cut off. A piece that fails its hash with this seed's blocks in
 * it drops the seed for the session (a web seed holds the file itself, so
 * one wrong piece means the wrong file); so do 4xx answers and a server that
 * ignores Range. Timeouts, 5xx and network errors back off (5 s doubling to
 * 5 min, or the server's Retry-After within that) and the blocks go back to
 * the picker for peers or a later try.
 *
 * URL per BEP 19: a single-file torrent's URL names the file, or a folder
 * (ending in "/") that holds it under the torrent's name; a multi-file
 * torrent's URL is a folder holding the torrent's folder, each path
 * component percent-encoded.
 */
import { BootTorrentError, errorText } from '../errors.js';
import type { Metainfo } from '../torrent/metainfo.js';
import type { Logger } from '../util/logger.js';
import type { BlockRequest } from './picker.js';

/** What a web seed needs of the session's Downloader. */
export interface WebSeedDownloader {
  webJoin(pid: string, label: string): void;
  webGone(pid: string): void;
  webPick(pid: string, max: number): BlockRequest[];
  webDropped(pid: string, reqs: readonly BlockRequest[]): void;
  webBlock(pid: string, r: BlockRequest, block: Buffer): void;
  unchokingPeers(): number;
}

export interface WebSeedOptions {
  readonly url: string;
  readonly meta: Metainfo;
  /** Fetch only while fewer peers than this unchoke us (default 2; 0 never fetches, Infinity always). */
  readonly minPeers?: number;
  /** Blocks per round, one round in flight (default 256: 4 MiB). */
  readonly blocksPerRound?: number;
  /** Deadline of one HTTP request (default 30 s). */
  readonly timeoutMs?: number;
  /** First back-off after a failure (default 5 s; doubles up to 5 min). */
  readonly retryMs?: number;
}

export type WebSeedState = 'idle' | 'fetching' | 'waiting' | 'dropped';

export interface WebSeedStats {
  readonly url: string;
  readonly state: WebSeedState;
  readonly downloaded: number;
  readonly requests: number;
  /** Why it was dropped, if it was. */
  readonly reason?: string;
}

const MAX_BACKOFF_MS = 5 * 60_000;

/** The file part of a torrent byte run: which file, where in it, how long. */
interface Segment {
  url: string;
  start: number;
  length: number;
  fileLength: number;
}

let nextId = 0;

export class WebSeed {
  readonly pid = `web#${++nextId}`;
  readonly url: string;
  #state: WebSeedState = 'idle';
  #reason: string | undefined;
  #downloaded = 0;
  #requests = 0;
  #failures = 0;
  #retryAt = 0;
  readonly #meta: Metainfo;
  readonly #dl: WebSeedDownloader;
  readonly #log: Logger;
  readonly #minPeers: number;
  readonly #perRound: number;
  readonly #timeoutMs: number;
  readonly #retryMs: number;
  readonly #abort = new AbortController();

  constructor(options: WebSeedOptions, deps: { downloader: WebSeedDownloader; logger: Logger }) {
    const u = new URL(options.url);
    if (u.protocol !== 'http:' && u.protocol !== 'https:')
      throw new BootTorrentError('BT_ERR_METAINFO', `web seed ${options.url} is not an http or https URL`);
    this.url = options.url;
    this.#meta = options.meta;
    this.#dl = deps.downloader;
    this.#log = deps.logger;
    this.#minPeers = options.minPeers ?? 2;
    this.#perRound = Math.max(1, options.blocksPerRound ?? 256);
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    this.#retryMs = options.retryMs ?? 5_000;
    this.#dl.webJoin(this.pid, this.url);
  }

  stats(): WebSeedStats {
    return {
      url: this.url,
      state: this.#state,
      downloaded: this.#downloaded,
      requests: this.#requests,
      ...(this.#reason !== undefined ? { reason: this.#reason } : {}),
    };
  }

  /** Called every session tick (and when peers change): starts a round if it should. */
  tick(now = Date.now()): void {
    if (this.#state === 'fetching' || this.#state === 'dropped') return;
    if (now < this.#retryAt) return;
    if (this.#dl.unchokingPeers() >= this.#minPeers) {
      this.#state = 'idle';
      return;
    }
    this.#state = 'fetching';
    void this.#rounds().finally(() => {
      if (this.#state === 'fetching') this.#state = 'idle';
    });
  }

  /** The piece check failed with this seed's blocks in it (Downloader hook). */
  hashFailed(index: number): void {
    this.drop(
      `sent data that failed the hash check of piece ${index}: it does not hold this torrent's files`,
    );
  }

  /** Leaves the session for good, with the reason logged once. */
  drop(reason: string): void {
    if (this.#state === 'dropped') return;
    this.#state = 'dropped';
    this.#reason = reason;
    this.#abort.abort();
    this.#dl.webGone(this.pid);
    this.#log.warn('web seed dropped', { url: this.url, reason });
  }

  stop(): void {
    this.#abort.abort();
    if (this.#state !== 'dropped') this.#dl.webGone(this.pid);
    this.#state = 'dropped';
    this.#reason ??= 'session stopped';
  }

  async #rounds(): Promise<void> {
    while (this.#state === 'fetching' && this.#dl.unchokingPeers() < this.#minPeers) {
      const reqs = this.#dl.webPick(this.pid, this.#perRound);
      if (reqs.length === 0) return;
      for (const run of coalesce(reqs, this.#meta.pieceLength)) {
        if (this.#state !== 'fetching') {
          this.#dl.webDropped(this.pid, run);
          continue;
        }
        try {
          await this.#fetchRun(run);
          this.#failures = 0;
        } catch (err) {
          this.#dl.webDropped(this.pid, run);
          if ((this.#state as WebSeedState) === 'dropped') continue;
          this.#failed(err);
        }
      }
    }
  }

  #failed(err: unknown): void {
    if (err instanceof Fatal) return this.drop(err.message);
    this.#failures++;
    const retryAfter = err instanceof Busy ? err.retryAfterMs : undefined;
    const wait = Math.min(
      MAX_BACKOFF_MS,
      retryAfter ?? this.#retryMs * 2 ** Math.min(this.#failures - 1, 10),
    );
    this.#retryAt = Date.now() + wait;
    this.#state = 'waiting';
    this.#log.warn('web seed request failed; trying it again later', {
      url: this.url,
      error: errorText(err),
      retryInMs: wait,
    });
  }

  /** One run of consecutive blocks: a Range request per file it crosses, then the blocks. */
  async #fetchRun(run: BlockRequest[]): Promise<void> {
    const first = run[0]!;
    const start = first.index * this.#meta.pieceLength + first.begin;
    const length = run.reduce((n, r) => n + r.length, 0);
    const data = Buffer.allocUnsafe(length);
    let at = 0;
    for (const seg of this.#segments(start, length)) {
      await this.#fetchSegment(seg, data.subarray(at, at + seg.length));
      at += seg.length;
    }
    this.#downloaded += length;
    let off = 0;
    for (const r of run) {
      this.#dl.webBlock(this.pid, r, data.subarray(off, off + r.length));
      off += r.length;
    }
  }

  /** The files a torrent byte range [start, start + length) lies in. */
  #segments(start: number, length: number): Segment[] {
    const out: Segment[] = [];
    const end = start + length;
    for (const f of this.#meta.files) {
      const fEnd = f.offset + f.length;
      if (fEnd <= start || f.offset >= end || f.length === 0) continue;
      const a = Math.max(start, f.offset);
      const b = Math.min(end, fEnd);
      out.push({ url: this.#fileUrl(f.path), start: a - f.offset, length: b - a, fileLength: f.length });
    }
    return out;
  }

  #fileUrl(path: readonly string[]): string {
    const enc = (parts: readonly string[]): string => parts.map((c) => encodeURIComponent(c)).join('/');
    if (this.#meta.singleFile) return this.url.endsWith('/') ? this.url + enc([this.#meta.name]) : this.url;
    const base = this.url.endsWith('/') ? this.url : `${this.url}/`;
    return base + enc([this.#meta.name, ...path]);
  }

  /** GET with Range into `into` (exactly its length), or an error saying what was wrong. */
  async #fetchSegment(seg: Segment, into: Buffer): Promise<void> {
    const last = seg.start + seg.length - 1;
    const whole = seg.start === 0 && seg.length === seg.fileLength;
    const signal = AbortSignal.any([this.#abort.signal, AbortSignal.timeout(this.#timeoutMs)]);
    this.#requests++;
    const res = await fetch(seg.url, {
      headers: { range: `bytes=${seg.start}-${last}`, 'accept-encoding': 'identity' },
      signal,
      redirect: 'follow',
    });
    try {
      if (res.status === 503 || res.status === 429) {
        const after = Number(res.headers.get('retry-after'));
        throw new Busy(
          `${seg.url} answered ${res.status}`,
          Number.isFinite(after) ? after * 1000 : undefined,
        );
      }
      if (res.status >= 500) throw new Error(`${seg.url} answered ${res.status}`);
      if (res.status === 206) {
        const want = `bytes ${seg.start}-${last}/${seg.fileLength}`;
        const got = res.headers.get('content-range') ?? '';
        // The total may be "*" (unknown to the server): the range itself must match.
        if (got !== want && got !== `bytes ${seg.start}-${last}/*`)
          throw new Fatal(`${seg.url} answered Content-Range "${got.slice(0, 80)}" to a request for ${want}`);
      } else if (res.status === 200) {
        if (!whole)
          throw new Fatal(
            `${seg.url} ignores Range requests (200 to bytes=${seg.start}-${last}); it cannot be a web seed`,
          );
      } else {
        throw new Fatal(`${seg.url} answered ${res.status} ${res.statusText}`.trim());
      }
      if (!res.body) throw new Error(`${seg.url} sent no body`);
      let at = 0;
      for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
        if (at + chunk.length > into.length)
          throw new Fatal(`${seg.url} sent more than the ${into.length} bytes asked for`);
        into.set(chunk, at);
        at += chunk.length;
      }
      if (at !== into.length) throw new Error(`${seg.url} sent ${at} of ${into.length} bytes`);
    } finally {
      // An unread body would keep the connection: cancel what is left.
      await res.body?.cancel().catch(() => undefined);
    }
  }
}

/** Blocks sorted and cut into runs of consecutive torrent bytes. */
export function coalesce(reqs: readonly BlockRequest[], pieceLength: number): BlockRequest[][] {
  const sorted = [...reqs].sort((a, b) => a.index - b.index || a.begin - b.begin);
  const runs: BlockRequest[][] = [];
  let end = -1;
  for (const r of sorted) {
    const start = r.index * pieceLength + r.begin;
    const cur = runs.at(-1);
    if (cur && start === end) cur.push(r);
    else runs.push([r]);
    end = start + r.length;
  }
  return runs;
}

/** An answer that shows the URL cannot serve this torrent: the seed is dropped. */
class Fatal extends Error {}

/** 503 or 429: back off, for Retry-After if given. */
class Busy extends Error {
  constructor(
    message: string,
    readonly retryAfterMs: number | undefined,
  ) {
    super(message);
  }
}
