import type { DropLog } from './drop-log.js';
import type { Logger } from './logger.js';

/**
 * Which errors on a bound listener end it (STYLE.md lesson 4: a listener
 * failure is fatal) and which concern one packet. Node reports a failed
 * UDP send with no callback (host unreachable, a firewall's EPERM) as an
 * 'error' event on the socket, with syscall 'send': that is one reply
 * lost, and a client that makes our replies fail must not stop the server.
 * Anything else on a bound socket or server (a failed receive or accept)
 * means it no longer serves, except a failed accept for lack of file
 * descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) or an aborted
 * connection: libuv closes that one connection and the listener goes on, and
 * a flood of connections must not be a way to stop the server.
 */
export function isPacketError(err: Error): boolean {
  const e = err as NodeJS.ErrnoException;
  if (e.syscall === 'send') return true;
  return (
    e.syscall === 'accept' && ['EMFILE', 'ENFILE', 'ENOBUFS', 'ENOMEM', 'ECONNABORTED'].includes(e.code ?? '')
  );
}

/**
 * Watches a bound listener's 'error' events: a failed send or accept
 * (isPacketError) is counted through `drops`, one line a minute, since a
 * flood must not choose how much we log; anything else ends the listener:
 * logged as `failed` (when given) and handed to `onFail`.
 */
export function watchListener(
  target: { on(event: 'error', listener: (err: Error) => void): unknown },
  how: { drops: DropLog; packet: string; log?: Logger; failed?: string },
  onFail: (err: Error) => void,
): void {
  target.on('error', (err) => {
    if (isPacketError(err)) return how.drops.drop('listener', how.packet, { error: err.message });
    if (how.failed) how.log?.error(how.failed, { error: err.message });
    onFail(err);
  });
}
