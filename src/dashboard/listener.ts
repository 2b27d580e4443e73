/**
 * The dashboard port: its own HTTP listener (deadlines and connection caps
 * from util/http-guard), the request listener that puts the dashboard's
 * URLs first and a bare /api/v1/status and /metrics behind them, and the
 * watch that turns the listener's end after start-up into one `onFailure`
 * call.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { BootTorrentError } from '../errors.js';
import { refuseBadTarget, requestUrl } from '../http/target.js';
import type { ServerSnapshot } from '../http/snapshot.js';
import { METRICS_CONTENT_TYPE } from '../util/prometheus.js';
import { createBoundedServer, httpLimits, type HttpListenerLimits } from '../util/http-guard.js';
import { DropLog } from '../util/drop-log.js';
import { watchListener } from '../util/listener-error.js';
import { silentLogger, type Logger } from '../util/logger.js';

/** What the dashboard port mounts: the page, SSE and actions (src/dashboard/dashboard.ts is one). */
export interface DashboardHandler {
  handle(req: IncomingMessage, res: ServerResponse): boolean;
  close(): void;
}

/**
 * The dashboard port's request listener: the dashboard's own URLs, else a
 * bare status JSON and Prometheus metrics (when there is no dashboard),
 * else 404. Answers every request, also one whose target does not parse
 * as a URL (`GET //`).
 */
export function dashboardListener(
  dashboard: DashboardHandler | undefined,
  snapshot: () => ServerSnapshot,
  log: Logger = silentLogger,
  metrics?: () => string,
): (req: IncomingMessage, res: ServerResponse) => void {
  const answer = (req: IncomingMessage, res: ServerResponse): void => {
    if (dashboard?.handle(req, res)) return;
    const path = requestUrl(req.url)?.pathname;
    if (path === undefined) return refuseBadTarget(res);
    if (path === '/api/v1/status' && (req.method === 'GET' || req.method === 'HEAD')) {
      res
        .writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' })
        .end(`${JSON.stringify(snapshot())}\n`);
      return;
    }
    if (metrics && path === '/metrics' && (req.method === 'GET' || req.method === 'HEAD')) {
      const body = Buffer.from(metrics(), 'utf8');
      res
        .writeHead(200, {
          'content-type': METRICS_CONTENT_TYPE,
          'content-length': body.length,
          'cache-control': 'no-store',
        })
        .end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
  };
  // A throw in a request listener is an uncaught exception, which ends the
  // process: one request's fault is caught here and ends that request only.
  return (req, res) => {
    try {
      answer(req, res);
    } catch (err) {
      log.error('dashboard request failed', { url: req.url, error: (err as Error).message });
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' }).end('internal error\n');
      else res.destroy();
    }
  };
}

export interface DashboardPortOptions {
  /** Default 127.0.0.1. */
  readonly host?: string;
  /** Default 8480; 0 picks a free port. */
  readonly port?: number;
  /** Deadlines and connection caps (default HTTP_LIMITS). */
  readonly httpLimits?: Partial<HttpListenerLimits>;
}

export interface DashboardPortServices {
  readonly snapshot: () => ServerSnapshot;
  /** GET /metrics's body (Prometheus text format); without it, /metrics is not served. */
  readonly metrics?: () => string;
  /** The dashboard itself; without one the port serves only /api/v1/status and /metrics. */
  readonly handler?: DashboardHandler;
  /** The server's logger; the port logs as its 'dashboard' child. */
  readonly logger?: Logger;
  /** The listener ended after start-up (not one failed accept): the server stops. */
  readonly onFailure: (err: Error) => void;
}

/** The bound dashboard port. `listen` throws BT_ERR_LISTEN (and closes the handler) if it cannot bind. */
export class DashboardPort {
  private constructor(
    private readonly server: Server,
    private readonly handler: DashboardHandler | undefined,
    /** `http://host:port/`, with the bound port. */
    readonly url: string,
  ) {}

  static async listen(
    options: DashboardPortOptions,
    services: DashboardPortServices,
  ): Promise<DashboardPort> {
    const log = (services.logger ?? silentLogger).child('dashboard');
    const server = createBoundedServer(
      dashboardListener(services.handler, services.snapshot, log, services.metrics),
      httpLimits(options.httpLimits),
      log,
    );
    const host = options.host ?? '127.0.0.1';
    const port = options.port ?? 8480;
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', (err: NodeJS.ErrnoException) =>
          reject(
            new BootTorrentError(
              'BT_ERR_LISTEN',
              `dashboard cannot listen on ${host}:${port}: ${err.code}; fix: stop what uses it or pass --dashboard HOST:PORT`,
              { cause: err },
            ),
          ),
        );
        server.listen(port, host, () => resolve());
      });
    } catch (err) {
      services.handler?.close();
      throw err;
    }
    // Failed accepts on the port (a connection flood): one line a minute, counted.
    watchListener(
      server,
      { drops: new DropLog(log), packet: 'dashboard connection not accepted' },
      services.onFailure,
    );
    const addr = server.address();
    const bound = typeof addr === 'object' && addr ? addr.port : port;
    return new DashboardPort(
      server,
      services.handler,
      `http://${host.includes(':') ? `[${host}]` : host}:${bound}/`,
    );
  }

  /** Closes the dashboard's streams, then the listener and its open connections. */
  close(): Promise<void> {
    this.handler?.close();
    return new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}
