/**
 * A holder (issue #16, src/server/phase1-loader.ts): this client fetches the
 * phase-1 kernel and stage 0 once more, from where the server says (another
 * holder or the server), checks each against the SHA-256 its kernel line
 * names, fetches their `.sig` files from the server, and hands them to
 * PhaseOneShare to serve to later clients' GRUB (which checks the
 * signatures itself). Anything that goes wrong ends it quietly: holding is
 * a help to others, never a reason for this client not to boot.
 */
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { HoldFile } from './cmdline.js';
import type { Logger } from '../util/logger.js';

/** A file bigger than this is no phase-1 kernel or stage 0. */
const MAX_FILE = 64 << 20;
const MAX_SIG = 4096;
/** Questions asked at most (with the server's waits between, a few minutes). */
const MAX_QUESTIONS = 40;

export interface HoldOptions {
  readonly server: string;
  readonly mac: string;
  /** Its report token: the server answers the holders' question only with it. */
  readonly token: string;
  readonly files: readonly HoldFile[];
  /** Where the files go (removed first). */
  readonly dir: string;
  readonly signal: AbortSignal;
  readonly log: Logger;
}

/**
 * URL path (`/phase1/<name>` and `.sig`) -> local file, once every file is
 * in and checked; undefined when the server wants no more holders, or it
 * could not be done.
 */
export async function fetchHeldFiles(o: HoldOptions): Promise<Map<string, string> | undefined> {
  await rm(o.dir, { recursive: true, force: true });
  await mkdir(o.dir, { recursive: true });
  let failed = '';
  for (let i = 0; i < MAX_QUESTIONS && !o.signal.aborted; i++) {
    let answer: string;
    try {
      const res = await fetch(`${o.server}/api/v1/phase1-loader/${o.mac}${failed}`, {
        headers: { 'x-boottorrent-token': o.token },
        signal: AbortSignal.any([o.signal, AbortSignal.timeout(10_000)]),
      });
      if (!res.ok) return undefined;
      answer = (await res.text()).trim();
    } catch {
      if (o.signal.aborted) return undefined;
      await sleep(5, o.signal);
      continue;
    }
    if (answer === 'none') return undefined;
    const wait = /^wait (\d{1,3})$/.exec(answer);
    if (wait) {
      await sleep(Math.min(30, Math.max(1, Number(wait[1]))), o.signal);
      continue;
    }
    const get = /^get (http:\/\/\S+\/)$/.exec(answer);
    if (!get) return undefined;
    const base = get[1]!;
    const got = await fetchAll(o, base);
    if (got instanceof Map) return got;
    o.log.info('could not fetch the phase-1 files to hold', { from: base, why: got });
    failed = `?failed=${encodeURIComponent(base)}&why=${got}`;
  }
  return undefined;
}

async function fetchAll(o: HoldOptions, base: string): Promise<Map<string, string> | 'bad' | 'gone'> {
  const out = new Map<string, string>();
  for (const f of o.files) {
    const file = join(o.dir, f.name);
    const r = await download(`${base}${encodeURIComponent(f.name)}`, `${file}.part`, MAX_FILE, o.signal);
    if (r === undefined) return 'gone';
    // Too big, or not the bytes the server named: that source lies.
    if (r !== f.sha256) return 'bad';
    await rename(`${file}.part`, file);
    // The signature from the server: GRUB checks it; a holder only passes it on.
    const sig = await download(
      `${o.server}/phase1/${encodeURIComponent(f.name)}.sig`,
      `${file}.sig`,
      MAX_SIG,
      o.signal,
    );
    if (sig === undefined || sig === 'too big') return 'gone';
    out.set(`/phase1/${f.name}`, file);
    out.set(`/phase1/${f.name}.sig`, `${file}.sig`);
  }
  return out;
}

/** GETs `url` into `file` (at most `max` bytes): its SHA-256 ('too big' past that), or undefined on any other failure. */
async function download(
  url: string,
  file: string,
  max: number,
  signal: AbortSignal,
): Promise<string | undefined> {
  let n = 0;
  try {
    const res = await fetch(url, { signal: AbortSignal.any([signal, AbortSignal.timeout(120_000)]) });
    if (!res.ok || !res.body) return undefined;
    const h = createHash('sha256');
    const body = Readable.fromWeb(res.body as WebReadableStream<Uint8Array>);
    body.on('data', (d: Buffer) => {
      n += d.length;
      if (n > max) body.destroy(new Error('too big'));
      h.update(d);
    });
    await pipeline(body, createWriteStream(file));
    return h.digest('hex');
  } catch {
    return n > max ? 'too big' : undefined;
  }
}

function sleep(seconds: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, seconds * 1000);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
