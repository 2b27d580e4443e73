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
