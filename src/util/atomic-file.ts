/** Files replaced whole: a reader sees the old content or the new, never half of it. */
import { rename, writeFile } from 'node:fs/promises';

/** Writes `data` under a temporary name beside `path` (`<path>.<pid>.tmp`), then renames it over `path`. */
export async function writeAtomic(path: string, data: string | Buffer, mode = 0o600): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, data, { mode });
  await rename(tmp, path);
}
