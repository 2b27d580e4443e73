/**
 * TFTP option negotiation for a read request, as a pure function: the
 * client's options and our limits in, the accepted set (what goes in the
 * OACK) and the transfer parameters out. RFC 2347 §"Negotiation": the server
 * acknowledges only the options it accepts; no accepted option means no OACK.
 */
import { DEFAULT_BLKSIZE, MAX_BLKSIZE, MIN_BLKSIZE } from './codec.js';
import type { TftpMode, TftpOptions } from './codec.js';

export interface NegotiationLimits {
  /** The largest block size we grant (a request above it is lowered to it, RFC 2348). */
  maxBlockSize: number;
  /** The largest window we grant (RFC 7440 lets the server answer a smaller value). */
  maxWindowSize: number;
  /**
   * The largest timeout (seconds) we accept; a larger request is left out of
   * the OACK (default 255, all RFC 2349 allows; the server passes TFTP_LIMITS.maxTimeoutS).
   */
  maxTimeoutS?: number;
}

export interface Negotiated {
  /** Options for the OACK, names as the client spelled them in lowercase; empty: send no OACK. */
  accepted: TftpOptions;
  blockSize: number;
  windowSize: number;
  /** Retransmission timeout the client asked for (RFC 2349), in ms; undefined: ours. */
  timeoutMs: number | undefined;
}

/** A decimal integer option value, or undefined when it is not one. */
function intValue(v: string): number | undefined {
  return /^\d{1,10}$/.test(v) ? Number(v) : undefined;
}

/**
 * Decides which of a read request's options we accept. `size` is the file's
 * size in bytes for tsize, or undefined when unknown (netascii changes the
 * length, so like tftpd-hpa we then leave tsize out).
 */
export function negotiateRead(
  requested: TftpOptions,
  mode: TftpMode,
  size: number | undefined,
  limits: NegotiationLimits,
): Negotiated {
  const accepted: TftpOptions = new Map();
  let blockSize = DEFAULT_BLKSIZE;
  let windowSize = 1;
  let timeoutMs: number | undefined;
  for (const [name, value] of requested) {
    const n = intValue(value);
    switch (name) {
      case 'blksize':
        // RFC 2348: valid values are 8..65464; a larger request is answered
        // with what we allow, which the client must accept if it is smaller.
        if (n !== undefined && n >= MIN_BLKSIZE) {
          blockSize = Math.min(n, MAX_BLKSIZE, Math.max(MIN_BLKSIZE, limits.maxBlockSize));
          accepted.set(name, String(blockSize));
        }
        break;
      case 'timeout':
        // RFC 2349 §"Timeout Interval Option": 1..255 seconds; the server
        // either takes it as is or leaves it out of the OACK. We take only up
        // to our ceiling: a long timeout times our retries holds a transfer
        // slot for minutes after the client has gone (issue #14).
        if (n !== undefined && n >= 1 && n <= Math.min(255, limits.maxTimeoutS ?? 255)) {
          timeoutMs = n * 1000;
          accepted.set(name, String(n));
        }
        break;
      case 'tsize':
        // RFC 2349 §"Transfer Size Option": in a read request the value is 0
        // and the OACK carries the real size. Any value is taken as "tell me":
        // atftp's `--option "tsize enable"` sends the word "enable".
        if (size !== undefined && mode === 'octet') accepted.set(name, String(size));
        break;
      case 'windowsize':
        // RFC 7440 §3: 1..65535 blocks; the server may answer a smaller value.
        if (n !== undefined && n >= 1 && n <= 65535) {
          windowSize = Math.min(n, Math.max(1, limits.maxWindowSize));
          accepted.set(name, String(windowSize));
        }
        break;
      default:
        // Unknown options are ignored (RFC 2347): they simply do not appear in the OACK.
        break;
    }
  }
  return { accepted, blockSize, windowSize, timeoutMs };
}
