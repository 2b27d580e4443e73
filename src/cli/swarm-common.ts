/** What `seed` and `get` share: loading a torrent, peer options, the progress line. */
import { readFile } from 'node:fs/promises';
import { BootTorrentError } from '../errors.js';
import { parseTorrent, type Metainfo } from '../torrent/metainfo.js';
import { isIPv4 } from 'node:net';
import type { ChokerMode } from '../swarm/choker.js';
import { UsageError, parsePort } from './common.js';
export { formatRate, progressLine } from '../util/format.js';

export async function loadTorrentFile(file: string): Promise<Metainfo> {
  if (file.startsWith('magnet:')) {
    throw new BootTorrentError(
      'BT_ERR_USAGE',
      'a magnet link has no data to check a seed against: pass the .torrent file (`boottorrent get <magnet>` accepts magnets)',
    );
  }
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message;
    throw new BootTorrentError('BT_ERR_FILE', `cannot read ${file}: ${why}`, { cause: err });
  }
  return parseTorrent(bytes, file);
}

export function checkPeers(peers: readonly string[], help: string): void {
  for (const p of peers) {
    if (!/^[^\s:]+:\d{1,5}$/.test(p) && !/^\[[0-9a-fA-F:]+\]:\d{1,5}$/.test(p)) {
      throw new UsageError(`--peer ${p}: expected host:port`, help);
    }
  }
}

/** The peer-side options `seed` and `get` share (node:util parseArgs form). */
export const PEER_OPTIONS = {
  port: { type: 'string' },
  host: { type: 'string' },
  tracker: { type: 'string', multiple: true },
  peer: { type: 'string', multiple: true },
  choker: { type: 'string' },
  lsd: { type: 'string' },
  verbose: { type: 'boolean', short: 'v' },
} as const;

export interface PeerSettings {
  host: string;
  port: number;
  choker: ChokerMode;
  trackers: string[] | undefined;
  peers: string[];
  lsdInterface: string | undefined;
  verbose: boolean;
}

/** Checks the shared options once, with usage errors naming the option. */
export function peerSettings(
  values: {
    port?: string;
    host?: string;
    tracker?: string[];
    peer?: string[];
    choker?: string;
    lsd?: string;
    verbose?: boolean;
  },
  help: string,
): PeerSettings {
  const choker = values.choker ?? 'lan';
  if (choker !== 'lan' && choker !== 'standard')
    throw new UsageError(`--choker ${choker}: use lan or standard`, help);
  checkPeers(values.peer ?? [], help);
  if (values.lsd !== undefined && !isIPv4(values.lsd)) {
    throw new UsageError(`--lsd ${values.lsd}: give the IPv4 address of the LAN interface`, help);
  }
  return {
    host: values.host ?? '0.0.0.0',
    port: values.port === undefined ? 6881 : parsePort(values.port, '--port', help),
    choker,
    trackers: values.tracker,
    peers: values.peer ?? [],
    lsdInterface: values.lsd,
    verbose: values.verbose ?? false,
  };
}
