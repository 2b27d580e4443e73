/**
 * The agent's console: keys in (raw mode only on a TTY; tests drive the
 * agent through a pipe), text out. The one owner of stdin, so it can let go
 * of it while a shell or an OS program has the console.
 */
import type { Readable, Writable } from 'node:stream';
import { KeyDecoder, type Key } from './menu.js';

interface TtyIn extends Readable {
  isTTY?: boolean;
  setRawMode?(mode: boolean): unknown;
}

export class AgentConsole {
  private readonly decoder = new KeyDecoder();
  private readonly queue: Key[] = [];
  private waiter: (() => void) | undefined;
  private attached = false;
  /**
   * Input closed (host mode: a pipe or /dev/null): nobody can answer, so a
   * wait with no timeout ends in 'q' instead of hanging; a wait with one
   * (countdown, automatic retry) still runs its course.
   */
  private ended = false;
  private waiterHasTimeout = false;
  private readonly onEnd = () => {
    this.ended = true;
    if (this.waiterHasTimeout) return;
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  };
  private readonly onData = (chunk: Buffer | string) => {
    this.queue.push(...this.decoder.push(chunk));
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  };

  constructor(
    private readonly input: TtyIn,
    readonly out: Writable & { isTTY?: boolean },
  ) {}

  /** True when the output is a terminal (a progress line can be redrawn in place). */
  get isTTY(): boolean {
    return this.out.isTTY === true;
  }

  write(text: string): void {
    this.out.write(text);
  }

  /** Starts reading keys. */
  attach(): void {
    if (this.attached) return;
    this.attached = true;
    if (this.input.isTTY && this.input.setRawMode) this.input.setRawMode(true);
    this.input.on('data', this.onData);
    this.input.on('end', this.onEnd);
    this.input.resume();
  }

  /** Stops reading keys and gives the terminal back (before a shell or a program takes the console). */
  detach(): void {
    if (!this.attached) return;
    this.attached = false;
    this.input.off('data', this.onData);
    this.input.off('end', this.onEnd);
    this.input.pause();
    if (this.input.isTTY && this.input.setRawMode) this.input.setRawMode(false);
  }

  /** Drops keys typed before now (e.g. while a download ran). */
  flush(): void {
    this.queue.length = 0;
  }

  /** The next key, or undefined after `timeoutMs` (never, if omitted) or on abort. */
  async nextKey(timeoutMs?: number, signal?: AbortSignal): Promise<Key | undefined> {
    this.attach();
    if (this.queue.length > 0) return this.queue.shift();
    if (this.ended && timeoutMs === undefined) return { kind: 'char', ch: 'q' };
    if (signal?.aborted) return undefined;
    await new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = () => {
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        if (this.waiter === done) this.waiter = undefined;
        resolve();
      };
      this.waiter = done;
      this.waiterHasTimeout = timeoutMs !== undefined;
      if (timeoutMs !== undefined) timer = setTimeout(done, timeoutMs);
      signal?.addEventListener('abort', done, { once: true });
    });
    return (
      this.queue.shift() ?? (this.ended && timeoutMs === undefined ? { kind: 'char', ch: 'q' } : undefined)
    );
  }
}
