/**
 * Shared plumbing of the subcommands: how they report usage errors, format
 * sizes and rates, and turn Ctrl-C into an AbortSignal. The CLI is the only
 * layer that prints to the terminal or decides an exit code.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';

/** Exit codes of the command-line contract. */
export const EXIT_OK = 0;
export const EXIT_USER = 1;
export const EXIT_USAGE = 2;

/** Thrown for a wrong command line; main prints it with the help text, exit 2. */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly help: string,
    /** One line is enough (an unknown option): the usage is not printed after it. */
    readonly brief = false,
  ) {
    super(message);
    this.name = 'UsageError';
  }
}

/** Edit distance counting a swap of two neighbours as one edit, for "did you mean": small strings only. */
function distance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) =>
    Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)),
  );
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++) {
      const same = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + same);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1])
        v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  return d[a.length]![b.length]!;
}

/** The option of `names` closest to `given` (at most a third of its letters off), if any. */
export function closestOption(given: string, names: readonly string[]): string | undefined {
  const bare = given.replace(/^-+/, '').split('=')[0]!;
  let best: string | undefined;
  let bestD = Math.max(1, Math.floor(bare.length / 3)) + 1;
  for (const n of names) {
    const d = n.startsWith(bare) && bare.length >= 2 ? 0 : distance(bare, n);
    if (d < bestD) [best, bestD] = [n, d];
  }
  return best;
}

export interface Io {
  readonly stdout: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  readonly stderr: NodeJS.WritableStream & { isTTY?: boolean };
  /** Fires on the first SIGINT/SIGTERM. */
  readonly signal: AbortSignal;
}

export type Command = (argv: string[], io: Io) => Promise<number>;

/** node:util parseArgs with errors turned into UsageError carrying `help`. */
export function parse<T extends ParseArgsConfig['options']>(argv: string[], options: T, help: string) {
  try {
    return parseArgs({
      args: argv,
      options: { ...options, help: { type: 'boolean', short: 'h' } },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const command =
      /^Usage: (boottorrent [\w-]+(?: create| info)?)/.exec(help)?.[1] ?? 'boottorrent <command>';
    if (e.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
      // Node's message ("Unknown option '--x'. To specify a positional argument ...") names a fix nobody wants.
      const given = /'([^']+)'/.exec(e.message)?.[1] ?? '?';
      const near = given.startsWith('--')
        ? closestOption(given, [...Object.keys(options ?? {}), 'help'])
        : undefined;
      throw new UsageError(
        `unknown option ${given}${near ? `; did you mean --${near}?` : ''} (\`${command} --help\` lists the options)`,
        help,
        true,
      );
    }
    if (e.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      const name = /--([\w-]+)/.exec(e.message)?.[1];
      const takes = name && options?.[name]?.type === 'string';
      throw new UsageError(
        name
          ? takes
            ? `option --${name} needs a value (\`${command} --help\` says which)`
            : `option --${name} takes no value`
          : e.message,
        help,
        true,
      );
    }
    throw new UsageError(e.message, help);
  }
}

const UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 };

/** Parses "524288", "512K", "512KiB", "1M" into bytes. */
export function parseSize(s: string, what: string, help: string): number {
  const m = /^(\d+)\s*([KMG]?)(?:i?B)?$/i.exec(s.trim());
  if (!m)
    throw new UsageError(`${what}: ${JSON.stringify(s)} is not a size (examples: 262144, 256K, 1M)`, help);
  return Number(m[1]) * UNITS[m[2]!.toUpperCase()]!;
}

export function parsePort(s: string, what: string, help: string): number {
  const n = Number(s);
  if (!/^\d+$/.test(s) || n > 65535)
    throw new UsageError(`${what}: ${JSON.stringify(s)} is not a port (0-65535)`, help);
  return n;
}

/**
 * A progress display: one rewritten line on a terminal, a plain line every
 * few seconds otherwise (logs and CI stay readable).
 */
export class Progress {
  private lastPlain = Date.now();
  private shown = false;

  constructor(
    private readonly out: Io['stderr'],
    private readonly plainEveryMs = 5000,
  ) {}

  update(line: string, force = false): void {
    if (this.out.isTTY) {
      this.out.write(`\r\x1b[2K${line}`);
      this.shown = true;
      return;
    }
    const now = Date.now();
    if (force || now - this.lastPlain >= this.plainEveryMs) {
      this.lastPlain = now;
      this.out.write(`${line}\n`);
    }
  }

  /** Ends the progress line so later output starts on a fresh line. */
  done(): void {
    if (this.shown) this.out.write('\n');
    this.shown = false;
  }
}

export { formatBytes } from '../util/format.js';
