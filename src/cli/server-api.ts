/**
 * How CLI commands reach the server running an environment: server.json in
 * its state folder (written by `start`, mode 0600) names the dashboard's
 * URL and the action token.
 */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { BootTorrentError } from '../errors.js';
import { SERVER_INFO, STATE_DIR, type ServerInfoFile } from '../server/app.js';

export async function readServerInfo(
  envDirGiven: string,
): Promise<{ info: ServerInfoFile; envDir: string; file: string }> {
  const envDir = resolve(envDirGiven);
  const file = join(envDir, STATE_DIR, SERVER_INFO);
  try {
    return { info: JSON.parse(await readFile(file, 'utf8')) as ServerInfoFile, envDir, file };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EACCES')
      throw new BootTorrentError(
        'BT_ERR_SERVER',
        `cannot read ${file} (permission denied): run this as root, or as the user that runs the server`,
      );
    throw new BootTorrentError(
      'BT_ERR_SERVER',
      `no server is running for ${envDir} (${file} is missing); start one with \`boottorrent start --env ${envDir}\``,
    );
  }
}

/** POSTs a dashboard action with the token; its JSON answer, or an error with the server's words. */
export async function serverAction(envDirGiven: string, name: string, body: unknown): Promise<unknown> {
  const { info, envDir, file } = await readServerInfo(envDirGiven);
  let res: Response;
  try {
    res = await fetch(new URL(`api/v1/actions/${name}`, info.dashboardUrl), {
      method: 'POST',
      headers: { authorization: `Bearer ${info.token}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
  } catch (err) {
    throw new BootTorrentError(
      'BT_ERR_SERVER',
      `the server for ${envDir} (pid ${info.pid}, ${info.dashboardUrl}) does not answer: ${(err as Error).message}; ` +
        `if it was killed, remove ${file} and start it again`,
    );
  }
  const answer = (await res.json().catch(() => ({}))) as { error?: string };
  if (!res.ok)
    throw new BootTorrentError(
      res.status === 400 ? 'BT_ERR_USAGE' : 'BT_ERR_SERVER',
      `the server refused ${name}: ${answer.error ?? `HTTP ${res.status}`}`,
    );
  return answer;
}
