/**
 * One place that bounds what a client can hold on an HTTP listener (issue
 * #14 item 8): deadlines for a request's headers and body that a trickle
 * cannot extend, an idle keep-alive limit, and connection caps per source
 * IP and in total. Both the boot HTTP server and the dashboard port are
 * created here, so they cannot drift apart.
 */
import { createServer, type RequestListener, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { HTTP_LIMITS } from '../limits.js';
import { DropLog } from '../util/drop-log.js';
import type { Logger } from '../util/logger.js';

/** The HTTP_LIMITS a listener enforces; tests pass small values. */
export interface HttpListenerLimits {
  readonly requestTimeoutMs: number;
  readonly headersTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
  readonly connectionsPerIp: number;
  readonly maxConnections: number;
  readonly stalledConnectionMs: number;
}

/** HTTP_LIMITS with `overrides` on top. */
export function httpLimits(overrides: Partial<HttpListenerLimits> = {}): HttpListenerLimits {
  return { ...HTTP_LIMITS, ...overrides };
}

/** The client's IPv4 address without the IPv4-mapped prefix a dual-stack socket adds. */
export function sourceIp(socket: Socket): string {
  return (socket.remoteAddress ?? '').replace(/^::ffff:/, '');
}

/**
 * An http.Server with `limits` applied. A source over its connection cap has
 * its new socket destroyed at once (the client sees a reset; the ones it has
 * open keep working) and is logged once per minute through a DropLog.
 */
export function createBoundedServer(
  listener: RequestListener,
  limits: HttpListenerLimits,
  log: Logger,
): Server {
  // Node checks the two deadlines on a timer, every 30 s by default, which
  // would let a trickle live up to 30 s past its deadline; check often
  // enough that the deadline is what a client sees.
  const check = Math.max(20, Math.min(1000, Math.floor(limits.requestTimeoutMs / 4)));
  const server = createServer({ connectionsCheckingInterval: check }, listener);
  // Node refuses headersTimeout > requestTimeout when both are set.
  server.requestTimeout = limits.requestTimeoutMs;
  server.headersTimeout = Math.min(limits.headersTimeoutMs, limits.requestTimeoutMs);
  server.keepAliveTimeout = limits.keepAliveTimeoutMs;
  server.maxConnections = limits.maxConnections;
  // Socket inactivity: with no 'timeout' listener Node destroys the socket.
  server.timeout = limits.stalledConnectionMs;
  const drops = new DropLog(log);
  const open = new Map<string, number>();
  server.on('connection', (socket: Socket) => {
    const ip = sourceIp(socket);
    const n = open.get(ip) ?? 0;
    if (n >= limits.connectionsPerIp) {
      drops.drop(ip, 'connection refused: too many open from this address', {
        limit: limits.connectionsPerIp,
      });
      socket.destroy();
      return;
    }
    open.set(ip, n + 1);
    socket.once('close', () => {
      const left = (open.get(ip) ?? 1) - 1;
      if (left > 0) open.set(ip, left);
      else open.delete(ip);
    });
  });
  return server;
}
