/**
 * The request target of an HTTP request as a URL. `new URL()` throws on
 * targets such as `//` or `/\`, which any client on the LAN can send; every
 * listener parses through here and answers 400 instead.
 */
import type { ServerResponse } from 'node:http';

/** The request target as a URL (against a dummy origin), or undefined if it does not parse. */
export function requestUrl(target: string | undefined): URL | undefined {
  try {
    return new URL(target ?? '/', 'http://x');
  } catch {
    return undefined;
  }
}

/** The plain-text 400 for a target requestUrl() could not parse. */
export function refuseBadTarget(res: ServerResponse): void {
  res.writeHead(400, { 'content-type': 'text/plain' }).end('bad request target\n');
}
