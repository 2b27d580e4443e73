/**
 * Scoped loggers (STYLE.md lesson 9): every component gets a child logger
 * named after it, so one line says who spoke. Components log through this
 * interface only; the CLI decides where lines go and how verbose they are.
 */
import { fstatSync } from 'node:fs';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger whose lines carry `scope` after this one's. */
  child(scope: string): Logger;
}

const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** Discards everything; the default where no logger is injected. */
export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child: () => silentLogger,
};

// C0 and C1 controls, DEL, and the Unicode line/paragraph separators and
// bidirectional overrides: anything that could end a line, move the cursor
// or reorder what a terminal shows.
// eslint-disable-next-line no-control-regex
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
/** The same set without the global flag: `test` on a /g regexp keeps state between calls. */
const HAS_UNSAFE = new RegExp(UNSAFE.source);

/**
 * Text from the network (file names, report bodies, user agents) reaches log
 * lines; escaped here so it can neither forge a line nor send escape
 * sequences to the sysadmin's terminal (issue #14 item 7).
 */
export function escapeLogText(s: string): string {
  return s.replace(UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function formatValue(v: unknown): string {
  if (typeof v === 'string') {
    // Plain words stay bare; anything with spaces, quotes or controls is quoted,
    // and JSON.stringify leaves U+2028/2029 and the bidi marks as they are.
    return /^[^\s"=]+$/.test(v) && !HAS_UNSAFE.test(v) ? v : escapeLogText(JSON.stringify(v));
  }
  let out: string;
  try {
    out = JSON.stringify(v) ?? String(v);
  } catch {
    out = String(v);
  }
  return escapeLogText(out);
}

function formatFields(fields: LogFields | undefined): string {
  if (!fields) return '';
  const parts = Object.entries(fields)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${escapeLogText(k)}=${formatValue(v)}`);
  return parts.length > 0 ? ` ${parts.join(' ')}` : '';
}

export interface StreamLoggerOptions {
  level?: LogLevel;
  scope?: string;
  /** Prefix each line with an ISO timestamp (default: true, except under systemd's journal: see underJournal). */
  timestamps?: boolean;
  /** `text` (default): one readable line; `json`: one JSON object per line with the same fields. */
  format?: 'text' | 'json';
}

/**
 * True when stderr goes to systemd's journal, which stamps every line
 * itself: systemd sets JOURNAL_STREAM to the device and inode of the
 * stream it connected (systemd.exec(5)), so a match means this stream.
 */
export function underJournal(env: NodeJS.ProcessEnv = process.env, fd = 2): boolean {
  const m = /^(\d+):(\d+)$/.exec(env.JOURNAL_STREAM ?? '');
  if (!m) return false;
  try {
    const st = fstatSync(fd);
    return String(st.dev) === m[1] && String(st.ino) === m[2];
  } catch {
    return false;
  }
}

/** One log event as a JSON line: time (when stamped), level, scope, msg, then the fields under `fields`. */
function jsonLine(
  time: string | undefined,
  level: LogLevel,
  scope: string | undefined,
  msg: string,
  fields: LogFields | undefined,
): string {
  const f: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields ?? {})) {
    if (v === undefined) continue;
    try {
      JSON.stringify(v);
      f[k] = v;
    } catch {
      // A value JSON cannot hold (a BigInt, a cycle): its text.
      f[k] = typeof v === 'bigint' ? v.toString() : Object.prototype.toString.call(v);
    }
  }
  const text = JSON.stringify({
    ...(time ? { time } : {}),
    level,
    ...(scope ? { scope } : {}),
    msg,
    ...(Object.keys(f).length > 0 ? { fields: f } : {}),
  });
  // JSON escapes the C0 controls; U+2028/2029 and the bidi marks it leaves
  // raw (they can only be inside strings, where \uXXXX means the same).
  return escapeLogText(text);
}

/** A logger writing one readable line per event to a stream (stderr by default). */
export function streamLogger(
  out: { write(s: string): unknown } = process.stderr,
  options: StreamLoggerOptions = {},
): Logger {
  const min = ORDER[options.level ?? 'info'];
  const scope = options.scope;
  const stamp = options.timestamps ?? !underJournal();
  const json = options.format === 'json';
  const line = (level: LogLevel, msg: string, fields?: LogFields) => {
    if (ORDER[level] < min) return;
    if (json) {
      out.write(`${jsonLine(stamp ? new Date().toISOString() : undefined, level, scope, msg, fields)}\n`);
      return;
    }
    const head = `${stamp ? `${new Date().toISOString()} ` : ''}${level === 'info' ? '' : `${level}: `}`;
    out.write(
      `${head}${scope ? `[${escapeLogText(scope)}] ` : ''}${escapeLogText(msg)}${formatFields(fields)}\n`,
    );
  };
  return {
    debug: (m, f) => line('debug', m, f),
    info: (m, f) => line('info', m, f),
    warn: (m, f) => line('warn', m, f),
    error: (m, f) => line('error', m, f),
    child: (s) => streamLogger(out, { ...options, timestamps: stamp, scope: scope ? `${scope}.${s}` : s }),
  };
}

/** Records lines in memory; for tests that assert a packet was logged and dropped. */
export function memoryLogger(): Logger & {
  lines: { level: LogLevel; scope: string; msg: string; fields?: LogFields }[];
} {
  const lines: { level: LogLevel; scope: string; msg: string; fields?: LogFields }[] = [];
  const make = (scope: string): Logger => ({
    debug: (msg, fields) => lines.push({ level: 'debug', scope, msg, ...(fields ? { fields } : {}) }),
    info: (msg, fields) => lines.push({ level: 'info', scope, msg, ...(fields ? { fields } : {}) }),
    warn: (msg, fields) => lines.push({ level: 'warn', scope, msg, ...(fields ? { fields } : {}) }),
    error: (msg, fields) => lines.push({ level: 'error', scope, msg, ...(fields ? { fields } : {}) }),
    child: (s) => make(scope ? `${scope}.${s}` : s),
  });
  return Object.assign(make(''), { lines });
}
