/**
 * One HTTP request (GET unless told) on 127.0.0.1 with node:http, the path sent as given (fetch
 * would normalise ".."), answering the status, the headers both parsed and
 * as sent (rawHeaders keeps their spelling), and the whole body.
 */
import { request } from 'node:http';

export interface RawResponse {
  status: number;
  headers: Record<string, unknown>;
  rawHeaders: string[];
  body: Buffer;
}

export function rawGet(
  port: number,
  path: string,
  headers: Record<string, string> = {},
  method = 'GET',
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, headers, method }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode!,
          headers: res.headers,
          rawHeaders: res.rawHeaders,
          body: Buffer.concat(chunks),
        }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}
