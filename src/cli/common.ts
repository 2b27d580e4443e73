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
  ) {
    super(message);
    this.name = 'UsageError';
  }
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
    throw new UsageError((err as Error).message, help);
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
