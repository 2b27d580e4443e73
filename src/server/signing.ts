/**
 * The server's boot-config signing key (#22 item 3). Ed25519, created on the
 * first start in the state folder (`<env>/.boottorrent/signing-key.pem`,
 * mode 0600), its public half beside it (`signing-key.pub.pem`) and in a
 * small cpio archive (`/etc/boottorrent/server-key.pem`) that every client's
 * iPXE script loads after phase 1's initramfs, so the agent in phase 1 holds
 * this server's key. The agent refuses a boot config whose signature does not
 * verify with it: a rogue HTTP server on the lab network (or one that answers
 * DHCP and points the agent elsewhere) cannot choose what a genuine phase 1
 * downloads and runs.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { link, mkdir, open, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PHASE1_SERVER_KEY_PATH as PHASE1_KEY_PATH } from '../boot-config.js';
import { BootTorrentError } from '../errors.js';
import { encodeCpio } from '../phase1/cpio.js';
import type { Logger } from '../util/logger.js';

export const SIGNING_KEY_FILE = 'signing-key.pem';
export const PUBLIC_KEY_FILE = 'signing-key.pub.pem';

export interface SigningKey {
  /** The signature header's value for `body`, the exact bytes sent. */
  readonly sign: (body: Buffer) => string;
  readonly publicPem: string;
  /** A newc cpio archive holding PHASE1_KEY_PATH, appended to phase 1's initramfs. */
  readonly keyCpio: Buffer;
}

/** Signs with `key` (Ed25519): the header value for `body`. */
export function signatureFor(key: KeyObject, body: Buffer): string {
  return `ed25519=${sign(null, body, key).toString('base64')}`;
}

/** The cpio archive that puts `publicPem` at PHASE1_KEY_PATH. */
export function keyArchive(publicPem: string): Buffer {
  return encodeCpio([
    { type: 'dir', path: 'etc', mode: 0o755 },
    { type: 'dir', path: 'etc/boottorrent', mode: 0o755 },
    { type: 'file', path: PHASE1_KEY_PATH.slice(1), mode: 0o644, data: Buffer.from(publicPem) },
  ]);
}

/**
 * Reads the key file without following a link (a link planted in the state
 * folder must not make the server sign with, or chmod, another file), and
 * makes it 0600 if it was not.
 */
async function readKeyFile(file: string, log?: Logger): Promise<string> {
  const fh = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw Object.assign(new Error('not a regular file'), { code: 'EINVAL' });
    const mode = st.mode & 0o777;
    if (mode & 0o077) {
      await fh.chmod(0o600);
      log?.warn('the boot-config signing key was readable by others; made it 0600', {
        file,
        mode: mode.toString(8),
      });
    }
    return await fh.readFile('utf8');
  } finally {
    await fh.close();
  }
}

/** Writes `data` to a new temporary file beside `file` (never through a link); returns its path. */
async function writeTemp(file: string, data: string, mode: number): Promise<string> {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(tmp, data, { mode, flag: 'wx' });
  return tmp;
}

/** Loads the key from `stateDir`, creating it (mode 0600) on the first start. */
export async function loadSigningKey(stateDir: string, log?: Logger): Promise<SigningKey> {
  const file = join(stateDir, SIGNING_KEY_FILE);
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  let pem: string;
  try {
    pem = await readKeyFile(file, log);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new BootTorrentError(
        'BT_ERR_SERVER',
        `cannot read the boot-config signing key ${file}: ${(err as Error).message}; it must be a file (not a link) the server can read: fix it, or delete it to make a new one (clients must then load phase 1 again)`,
        { cause: err },
      );
    }
    const { privateKey } = generateKeyPairSync('ed25519');
    pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    // Written whole under a temporary name, then linked to its name: link(2)
    // fails if the name exists, so two servers starting at once agree on one
    // key, and neither can read the other's half-written file.
    const tmp = await writeTemp(file, pem, 0o600);
    try {
      await link(tmp, file);
      log?.info('created the boot-config signing key', { file });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      pem = await readKeyFile(file, log); // another start made it first: use that one
    } finally {
      await unlink(tmp).catch(() => undefined);
    }
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
    if (key.asymmetricKeyType !== 'ed25519') throw new Error(`a ${key.asymmetricKeyType} key, not Ed25519`);
  } catch (err) {
    throw new BootTorrentError(
      'BT_ERR_SERVER',
      `${file} is not an Ed25519 private key (${(err as Error).message}); delete it and start again to make a new one`,
      { cause: err },
    );
  }
  const publicPem = createPublicKey(key).export({ type: 'spki', format: 'pem' }).toString();
  // rename(2) replaces a link at that name rather than writing through it.
  const pub = join(stateDir, PUBLIC_KEY_FILE);
  const tmp = await writeTemp(pub, publicPem, 0o644);
  await rename(tmp, pub).catch(async (e: unknown) => {
    await unlink(tmp).catch(() => undefined);
    throw e;
  });
  return { sign: (body) => signatureFor(key, body), publicPem, keyCpio: keyArchive(publicPem) };
}
