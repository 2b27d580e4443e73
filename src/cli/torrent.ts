/** `boottorrent torrent create|info`: make and inspect .torrent files. */
import { readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { createTorrent } from '../torrent/create.js';
import { parseTorrent, type Metainfo } from '../torrent/metainfo.js';
import { toMagnet } from '../torrent/magnet.js';
import { BootTorrentError } from '../errors.js';
import { EXIT_OK, Progress, UsageError, formatBytes, parse, parseSize, type Io } from './common.js';

const HELP = `Usage: boottorrent torrent <create|info> ...

  boottorrent torrent create <path> [options]
    -o, --output FILE         where to write the torrent (default: <name>.torrent here)
    --piece-length BYTES      piece size, a power of two from 16K to 64M (default: automatic,
                              about 2048 pieces)
    --announce URL            tracker URL; repeat for backup trackers (one tier each)
    --web-seed URL            HTTP web seed (BEP 19); repeatable
    --private                 set the private flag (no DHT, PEX or LSD)
    --name NAME               torrent name (default: the file or folder name)
    --comment TEXT            free-text comment
    --no-date                 leave out the creation date (reproducible output)
    -f, --force               overwrite an existing output file

  boottorrent torrent info <file.torrent> [--json]
    --json                    print {infoHash, name, pieceLength, length, files}`;

export async function run(argv: string[], io: Io): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === 'create') return create(rest, io);
  if (sub === 'info') return info(rest, io);
  if (sub === '--help' || sub === '-h') {
    io.stdout.write(`${HELP}\n`);
    return EXIT_OK;
  }
  throw new UsageError(sub === undefined ? 'missing subcommand' : `unknown subcommand '${sub}'`, HELP);
}

async function create(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(
    argv,
    {
      output: { type: 'string', short: 'o' },
      'piece-length': { type: 'string' },
      announce: { type: 'string', multiple: true },
      'web-seed': { type: 'string', multiple: true },
      private: { type: 'boolean' },
      name: { type: 'string' },
      comment: { type: 'string' },
      'no-date': { type: 'boolean' },
      force: { type: 'boolean', short: 'f' },
    },
    HELP,
  );
  if (values.help) {
    io.stdout.write(`${HELP}\n`);
    return EXIT_OK;
  }
  if (positionals.length !== 1) throw new UsageError('torrent create takes exactly one <path>', HELP);
  const input = positionals[0]!;
  for (const url of [...(values.announce ?? []), ...(values['web-seed'] ?? [])]) {
    if (!/^(https?|udp):\/\/[^/\s]+/i.test(url)) {
      throw new UsageError(`${JSON.stringify(url)} is not an http://, https:// or udp:// URL`, HELP);
    }
  }
  const pieceLength =
    values['piece-length'] === undefined
      ? undefined
      : parseSize(values['piece-length'], '--piece-length', HELP);
  const progress = new Progress(io.stderr);
  const started = process.hrtime.bigint();
  const result = await createTorrent(
    input,
    {
      ...(pieceLength !== undefined ? { pieceLength } : {}),
      announce: (values.announce ?? []).map((u) => [u]),
      urlList: values['web-seed'] ?? [],
      private: values.private ?? false,
      ...(values.name !== undefined ? { name: values.name } : {}),
      ...(values.comment !== undefined ? { comment: values.comment } : {}),
      ...(values['no-date'] ? { creationDate: null } : {}),
    },
    {
      signal: io.signal,
      onProgress: ({ hashedBytes, totalBytes }) => {
        if (hashedBytes === 0) {
          io.stderr.write(`hashing ${formatBytes(totalBytes)} of ${input}\n`);
          return;
        }
        const pct = ((100 * hashedBytes) / totalBytes).toFixed(0);
        progress.update(`hashing ${pct}%  ${formatBytes(hashedBytes)} of ${formatBytes(totalBytes)}`);
      },
    },
  );
  progress.done();
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const output = values.output ?? `${result.meta.name}.torrent`;
  await writeAtomically(output, result.torrent, values.force ?? false);
  const { meta } = result;
  io.stdout.write(
    `wrote ${output}\n` +
      `  name       ${meta.name}\n` +
      `  infohash   ${meta.infoHashHex}\n` +
      `  size       ${formatBytes(meta.length)} in ${meta.files.length} file(s)\n` +
      `  pieces     ${meta.pieceCount} x ${formatBytes(meta.pieceLength)}\n` +
      `  hashed in  ${seconds.toFixed(2)} s (${(meta.length / 1e6 / seconds).toFixed(0)} MB/s)\n` +
      `  magnet     ${toMagnet(meta)}\n`,
  );
  return EXIT_OK;
}

/**
 * Writes beside the target and renames, so an interrupted run never leaves
 * a truncated .torrent behind.
 */
async function writeAtomically(path: string, data: Buffer, force: boolean): Promise<void> {
  if (!force) {
    const exists = await stat(path).then(
      () => true,
      () => false,
    );
    if (exists) {
      throw new BootTorrentError(
        'BT_ERR_FILE',
        `${path} already exists: pass --force to overwrite it, or -o another file`,
      );
    }
  }
  const tmp = `${path}.${process.pid}.tmp`;
  try {
    await writeFile(tmp, data);
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw new BootTorrentError('BT_ERR_FILE', `cannot write ${path}: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

async function info(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(argv, { json: { type: 'boolean' } }, HELP);
  if (values.help) {
    io.stdout.write(`${HELP}\n`);
    return EXIT_OK;
  }
  if (positionals.length !== 1) throw new UsageError('torrent info takes exactly one <file.torrent>', HELP);
  const file = positionals[0]!;
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (err) {
    throw new BootTorrentError(
      'BT_ERR_FILE',
      `cannot read ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`,
      { cause: err },
    );
  }
  const meta = parseTorrent(bytes, file);
  if (values.json) {
    io.stdout.write(`${JSON.stringify(infoJson(meta), null, 2)}\n`);
  } else {
    io.stdout.write(describe(meta));
  }
  return EXIT_OK;
}

/** The `--json` shape of the command-line contract, plus a few extras. */
export function infoJson(meta: Metainfo) {
  return {
    infoHash: meta.infoHashHex,
    name: meta.name,
    pieceLength: meta.pieceLength,
    length: meta.length,
    files: meta.files.map((f) => ({ path: f.path.join('/'), length: f.length })),
    pieces: meta.pieceCount,
    private: meta.private,
    announce: meta.announce,
    urlList: meta.urlList,
    magnet: toMagnet(meta),
  };
}

function describe(meta: Metainfo): string {
  const lines = [
    `name        ${meta.name}`,
    `infohash    ${meta.infoHashHex}`,
    `size        ${formatBytes(meta.length)} (${meta.length} bytes)`,
    `pieces      ${meta.pieceCount} x ${formatBytes(meta.pieceLength)}`,
    `private     ${meta.private ? 'yes' : 'no'}`,
  ];
  if (meta.createdBy) lines.push(`created by  ${meta.createdBy}`);
  if (meta.creationDate) lines.push(`created     ${new Date(meta.creationDate * 1000).toISOString()}`);
  if (meta.comment) lines.push(`comment     ${meta.comment}`);
  meta.announce.forEach((tier, i) => lines.push(`tracker ${i + 1}   ${tier.join(', ')}`));
  for (const ws of meta.urlList) lines.push(`web seed    ${ws}`);
  lines.push(`magnet      ${toMagnet(meta)}`);
  lines.push(`files       ${meta.files.length}`);
  const shown = meta.files.slice(0, 100);
  for (const f of shown) lines.push(`  ${formatBytes(f.length).padStart(10)}  ${f.path.join('/')}`);
  if (meta.files.length > shown.length) lines.push(`  ... and ${meta.files.length - shown.length} more`);
  return `${lines.join('\n')}\n`;
}
