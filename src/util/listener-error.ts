/**
 * Which errors on a bound listener end it (STYLE.md lesson 4: a listener
 * failure is fatal) and which concern one packet. Node reports a failed
 * UDP send with no callback (host unreachable, a firewall's EPERM) as an
 * 'error' event on the socket, with syscall 'send': that is one reply
 * lost, and a client that makes our replies fail must not stop the server.
 * Anything else on a bound socket or server (a failed receive or accept)
 * means it no longer serves.
 */
export function isPacketError(err: Error): boolean {
  return (err as NodeJS.ErrnoException).syscall === 'send';
}
