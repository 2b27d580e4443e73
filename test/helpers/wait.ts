import type { ChildProcess } from 'node:child_process';
/**
 * Polls `check` until it returns something other than undefined or false;
 * rejects with `what` (and `detail()`, if given) after `ms`. For states a
 * test can only observe from outside, such as processes appearing in /proc,
 * or a session's state after messages it reads on the next turns (a short
 * `pollMs` there). Deadlines are generous: these wait, never measure speed.
 */
export async function waitUntil<T>(
  check: () => T | undefined | false,
  ms: number,
  what: string,
  detail?: () => string,
  pollMs = 250,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline)
      throw new Error(`no ${what} within ${ms / 1000} s${detail ? `: ${detail()}` : ''}`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/**
 * A child's end, once its output is in: 'exit' can come before the last of
 * stdout is read, and a test that then checks the output sees it cut short
 * (a CI flake). Waits for 'close' (every pipe drained), or 2 s after 'exit'
 * when a grandchild still holds a pipe open.
 */
export function childEnded(
  child: ChildProcess,
): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    const done = (code: number | null, signal: NodeJS.Signals | null) => {
      if (timer) clearTimeout(timer);
      resolve({ code, signal });
    };
    child.once('close', done);
    child.once('exit', (code, signal) => {
      timer = setTimeout(() => done(code, signal), 2000);
      timer.unref();
    });
  });
}
