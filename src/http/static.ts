/**
 * Serves files from a folder over HTTP with Range support, confined to that
 * folder: the URL path is percent-decoded once, then refused if any segment
 * is "..", contains a NUL or a backslash, or if the real path (after
 * symlinks) leaves the root. Used for iPXE binaries, the phase-1 kernel and
 * initramfs, and OS files (web seeds).
 */
import { createReadStream } from 'node:fs';
import { realpath, stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join, relative, isAbsolute, sep } from 'node:path';
import { parseRange } from './range.js';

/** Resolves a URL path below `root`, or undefined when it would leave it. */
export async function resolveBelow(root: string, urlPath: string): Promise<string | undefined> {
  let decoded: string;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return undefined;
  }
  const segments = decoded.split('/').filter((s) => s !== '' && s !== '.');
  if (segments.some((s) => s === '..' || s.includes('\0') || s.includes('\\'))) return undefined;
  let realRoot: string;
  let real: string;
  try {
    realRoot = await realpath(root);
    real = await realpath(join(realRoot, ...segments));
  } catch {
    return undefined;
  }
  const rel = relative(realRoot, real);
  if (rel === '' || (!rel.startsWith(`..${sep}`) && rel !== '..' && !isAbsolute(rel))) return real;
  return undefined;
}

export interface ServeResult {
  status: number;
  bytes: number;
}

/**
 * Answers GET/HEAD for `urlPath` under `root`. Returns the status sent, or
 * undefined when there is no such file (the caller sends its own 404).
 */
export async function serveFile(
  req: IncomingMessage,
  res: ServerResponse,
  root: string,
  urlPath: string,
): Promise<ServeResult | undefined> {
  const file = await resolveBelow(root, urlPath);
  if (!file) return undefined;
  return sendFile(req, res, file);
}

/**
 * Answers GET/HEAD with one file the caller chose (no path from the URL is
 * involved). Undefined when it is not a regular file.
 */
export async function sendFile(
  req: IncomingMessage,
  res: ServerResponse,
  file: string,
): Promise<ServeResult | undefined> {
  const st = await stat(file).catch(() => undefined);
  if (!st?.isFile()) return undefined;
  const size = st.size;
  const range = parseRange(req.headers.range, size);
  const headers: Record<string, string | number> = {
    'accept-ranges': 'bytes',
    'content-type': 'application/octet-stream',
    'last-modified': st.mtime.toUTCString(),
  };
  if (range.kind === 'unsatisfiable') {
    res.writeHead(416, { ...headers, 'content-range': `bytes */${size}` }).end();
    return { status: 416, bytes: 0 };
  }
  const [start, end, status] = range.kind === 'partial' ? [range.start, range.end, 206] : [0, size - 1, 200];
  const length = size === 0 ? 0 : end - start + 1;
  if (status === 206) headers['content-range'] = `bytes ${start}-${end}/${size}`;
  // Spelt so: GRUB's http module (src/boot/grub-verify.ts) reads no other case.
  headers['Content-Length'] = length;
  res.writeHead(status, headers);
  if (req.method === 'HEAD' || length === 0) {
    res.end();
    return { status, bytes: 0 };
  }
  await new Promise<void>((resolve) => {
    const stream = createReadStream(file, { start, end, highWaterMark: 256 * 1024 });
    stream.on('error', () => {
      res.destroy();
      resolve();
    });
    res.on('close', () => {
      stream.destroy();
      resolve();
    });
    stream.pipe(res);
  });
  return { status, bytes: length };
}
