/**
 * Wake-on-LAN (#17 item 2): magic packets (six 0xFF bytes, then the MAC 16
 * times: 102 bytes, AMD's "Magic Packet" format as every NIC implements it)
 * sent as UDP broadcasts from the served interface's address, paced so that
 * a room does not draw power all at once.
 */
import { createSocket } from 'node:dgram';
import { normalizeMac } from '../util/address.js';

export const WOL_PORT = 9;
/** Packets per machine: a single UDP broadcast can be lost; NICs ignore repeats. */
export const WOL_REPEATS = 3;
export const WOL_REPEAT_GAP_MS = 100;

/** The 102-byte magic packet for `mac` (any MAC form normalizeMac reads). */
export function magicPacket(mac: string): Buffer {
  const norm = normalizeMac(mac);
  if (!norm) throw new Error(`not a MAC address: ${JSON.stringify(mac)}`);
  const bytes = Buffer.from(norm.replace(/:/g, ''), 'hex');
  const out = Buffer.alloc(6 + 16 * 6, 0xff);
  for (let i = 0; i < 16; i++) bytes.copy(out, 6 + i * 6);
  return out;
}

export interface WakeTarget {
  /** Lower-case colon MAC. */
  readonly mac: string;
  /** The host's name in the environment, when it has one. */
  readonly name?: string;
}

/** When each target's packets start, in ms from the first: `spreadMs` over all of them, evenly. */
export function wakeSchedule(count: number, spreadMs: number): number[] {
  if (count <= 1) return count === 1 ? [0] : [];
  return Array.from({ length: count }, (_, i) => Math.round((spreadMs * i) / (count - 1)));
}

export interface WakeOptions {
  /** Source address: the served interface's (Linux sends a broadcast out of the device that owns it). */
  readonly source: string;
  /** Broadcast addresses to send to (255.255.255.255 for the served link; a relayed subnet's directed broadcast). */
  readonly broadcasts: readonly string[];
  readonly port?: number;
  readonly spreadMs: number;
  readonly signal?: AbortSignal;
  /** Called after a target's first packet went out. */
  readonly onSent?: (target: WakeTarget, index: number) => void;
}

/** Sends every target's magic packets; resolves with how many targets were sent to (fewer if aborted). */
export async function wake(targets: readonly WakeTarget[], o: WakeOptions): Promise<number> {
  const sock = createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind({ address: o.source, port: 0 }, () => {
      sock.off('error', reject);
      resolve();
    });
  });
  sock.setBroadcast(true);
  const send = (buf: Buffer, to: string) =>
    new Promise<void>((resolve, reject) =>
      sock.send(buf, o.port ?? WOL_PORT, to, (err) => (err ? reject(err) : resolve())),
    );
  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      if (ms <= 0 || o.signal?.aborted) return resolve();
      const onAbort = () => {
        clearTimeout(t);
        resolve();
      };
      // The listener goes with the timer: a long-lived signal (the server's) must not collect one per packet.
      const t = setTimeout(() => {
        o.signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      o.signal?.addEventListener('abort', onAbort, { once: true });
    });
  // Every packet at its time: a target's repeats follow its first by
  // WOL_REPEAT_GAP_MS, interleaved with the next targets' packets.
  const at = wakeSchedule(targets.length, o.spreadMs);
  const events = targets
    .flatMap((target, i) =>
      Array.from({ length: WOL_REPEATS }, (_, r) => ({ target, i, r, ms: at[i]! + r * WOL_REPEAT_GAP_MS })),
    )
    .sort((a, b) => a.ms - b.ms || a.i - b.i);
  const start = Date.now();
  let sent = 0;
  try {
    for (const e of events) {
      await sleep(start + e.ms - Date.now());
      if (o.signal?.aborted) break;
      const packet = magicPacket(e.target.mac);
      for (const b of o.broadcasts) await send(packet, b);
      if (e.r === 0) {
        sent++;
        o.onSent?.(e.target, e.i);
      }
    }
  } finally {
    await new Promise<void>((r) => sock.close(() => r()));
  }
  return sent;
}
