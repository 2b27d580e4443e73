/**
 * Scoped loggers (STYLE.md lesson 9): every component gets a child logger
 * named after it, so one line says who spoke. Components log through this
 * interface only; the CLI decides where lines go and how verbose they are.
 */
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

function formatFields(fields: LogFields | undefined): string {
  if (!fields) return '';
  const parts = Object.entries(fields)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${typeof v === 'string' && !/\s/.test(v) ? v : JSON.stringify(v)}`);
  return parts.length > 0 ? ` ${parts.join(' ')}` : '';
}

export interface StreamLoggerOptions {
  level?: LogLevel;
  scope?: string;
  /** Prefix each line with an ISO timestamp (default true). */
  timestamps?: boolean;
}

/** A logger writing one readable line per event to a stream (stderr by default). */
export function streamLogger(
  out: { write(s: string): unknown } = process.stderr,
  options: StreamLoggerOptions = {},
): Logger {
  const min = ORDER[options.level ?? 'info'];
  const scope = options.scope;
  const stamp = options.timestamps ?? true;
  const line = (level: LogLevel, msg: string, fields?: LogFields) => {
    if (ORDER[level] < min) return;
    const head = `${stamp ? `${new Date().toISOString()} ` : ''}${level === 'info' ? '' : `${level}: `}`;
    out.write(`${head}${scope ? `[${scope}] ` : ''}${msg}${formatFields(fields)}\n`);
  };
  return {
    debug: (m, f) => line('debug', m, f),
    info: (m, f) => line('info', m, f),
    warn: (m, f) => line('warn', m, f),
    error: (m, f) => line('error', m, f),
    child: (s) => streamLogger(out, { ...options, scope: scope ? `${scope}.${s}` : s }),
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
