/**
 * The typed error catalogue. Every error BootTorrent raises on purpose is a
 * BootTorrentError with a stable `code`, so callers (the CLI, the dashboard,
 * tests) branch on codes, never on message text. Messages are written for the
 * person who must fix the problem: name the file, the field and the fix.
 */

/** Every code in the catalogue (the metrics list each one, also at 0). */
export const ERROR_CODES = [
  'BT_ERR_BENCODE',
  'BT_ERR_METAINFO',
  'BT_ERR_MAGNET',
  'BT_ERR_TORRENT_CREATE',
  'BT_ERR_TRACKER_CODEC',
  'BT_ERR_TRACKER_FAILURE',
  'BT_ERR_TRACKER_TIMEOUT',
  'BT_ERR_TRACKER_PROTOCOL',
  'BT_ERR_TRACKER_UNREACHABLE',
  'BT_ERR_LSD_CODEC',
  'BT_ERR_LISTEN',
  'BT_ERR_DHCP_CODEC',
  'BT_ERR_DHCP_CONFIG',
  'BT_ERR_DHCP_LEASES',
  'BT_ERR_TFTP_CODEC',
  'BT_ERR_TFTP_ACCESS',
  'BT_ERR_USAGE',
  'BT_ERR_DEMO',
  'BT_ERR_CONFIG_FIELD',
  'BT_ERR_ENV',
  'BT_ERR_STORAGE',
  'BT_ERR_SWARM',
  'BT_ERR_FILE',
  'BT_ERR_ABORTED',
  'BT_ERR_WIRE_PROTOCOL',
  'BT_ERR_WIRE_TIMEOUT',
  'BT_ERR_WIRE_CLOSED',
  'BT_ERR_WIRE_UNKNOWN_TORRENT',
  'BT_ERR_WIRE_STATE',
  'BT_ERR_PHASE1',
  'BT_ERR_BOOT_CONFIG',
  'BT_ERR_AGENT',
  'BT_ERR_SERVER',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

export class BootTorrentError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'BootTorrentError';
  }
}

export function isBootTorrentError(err: unknown, code?: ErrorCode): err is BootTorrentError {
  return err instanceof BootTorrentError && (code === undefined || err.code === code);
}

/** Error raised when an AbortSignal fires; carries the signal's reason as cause. */
export function abortError(signal: AbortSignal): BootTorrentError {
  return new BootTorrentError('BT_ERR_ABORTED', 'operation aborted', { cause: signal.reason });
}

/** The message of a thrown value, whatever was thrown: for log fields. */
export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Typed errors a server component met, by code (for /metrics): each
 * component that refuses client input counts what it caught, where it
 * catches it, in one of these. A thrown value that is not ours is not
 * counted: it has no code, and its log line says what it was.
 */
export class ErrorCounts {
  readonly #counts = new Map<ErrorCode, number>();

  count(err: unknown): void {
    if (err instanceof BootTorrentError) this.#counts.set(err.code, (this.#counts.get(err.code) ?? 0) + 1);
  }

  get(code: ErrorCode): number {
    return this.#counts.get(code) ?? 0;
  }
}
