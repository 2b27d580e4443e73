/**
 * Magnet URIs in the BEP 9 format: `magnet:?xt=urn:btih:<infohash>` with
 * optional `dn` (name), `tr` (trackers), `ws` (web seeds, BEP 19) and
 * `x.pe` (peer addresses). Pure.
 */
import { BootTorrentError } from '../errors.js';
import type { Metainfo } from './metainfo.js';

export interface Magnet {
  readonly infoHash: Buffer;
  readonly infoHashHex: string;
  readonly name?: string;
  readonly trackers: readonly string[];
  readonly webSeeds: readonly string[];
  /** `host:port` strings from x.pe. */
  readonly peers: readonly string[];
}

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

function base32Decode(s: string): Buffer | undefined {
  let bits = 0;
  let value = 0;
  const out: number[] = [];
  for (const ch of s.toUpperCase()) {
    const v = BASE32.indexOf(ch);
    if (v < 0) return undefined;
    value = (value << 5) | v;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

function bad(uri: string, problem: string): never {
  const shown = uri.length > 80 ? `${uri.slice(0, 77)}...` : uri;
  throw new BootTorrentError('BT_ERR_MAGNET', `invalid magnet link ${JSON.stringify(shown)}: ${problem}`);
}

/** Parses a magnet URI; the infohash may be 40 hex digits or 32 base32 characters. */
export function parseMagnet(uri: string): Magnet {
  if (!uri.startsWith('magnet:?')) bad(uri, 'it must start with "magnet:?"');
  let params: URLSearchParams;
  try {
    params = new URLSearchParams(uri.slice('magnet:?'.length));
  } catch {
    bad(uri, 'the query string is malformed');
  }
  let infoHash: Buffer | undefined;
  for (const xt of params.getAll('xt')) {
    const m = /^urn:btih:(.+)$/i.exec(xt);
    if (!m) continue;
    const h = m[1]!;
    if (/^[0-9a-f]{40}$/i.test(h)) infoHash = Buffer.from(h, 'hex');
    else if (h.length === 32) infoHash = base32Decode(h);
    if (infoHash?.length !== 20)
      bad(uri, `btih ${JSON.stringify(h)} is neither 40 hex nor 32 base32 characters`);
  }
  if (!infoHash) bad(uri, 'it has no xt=urn:btih:<infohash>');
  const dn = params.get('dn');
  return {
    infoHash,
    infoHashHex: infoHash.toString('hex'),
    ...(dn !== null ? { name: dn } : {}),
    trackers: params.getAll('tr'),
    webSeeds: params.getAll('ws'),
    peers: params.getAll('x.pe'),
  };
}

/** The magnet link for a torrent: infohash, name, every tracker and web seed. */
export function toMagnet(meta: Metainfo): string {
  const parts = [`xt=urn:btih:${meta.infoHashHex}`, `dn=${encodeURIComponent(meta.name)}`];
  for (const tr of meta.announce.flat()) parts.push(`tr=${encodeURIComponent(tr)}`);
  for (const ws of meta.urlList) parts.push(`ws=${encodeURIComponent(ws)}`);
  return `magnet:?${parts.join('&')}`;
}
