/**
 * Opening one outgoing peer connection: the TCP dial with its deadline and
 * the peer wire on top, shared by the torrent session (PeerPool) and the
 * magnet metadata fetch. Which address to dial, and when, is PeerDialer's.
 */
import { connect } from 'node:net';
import { errorText } from '../errors.js';
import { PeerConnection, type PeerConnectionOptions } from '../wire/connection.js';

/** Read buffer of each connection we open. */
const READ_BUFFER_BYTES = 128 * 1024;
/** A TCP connect that takes longer has failed. */
export const CONNECT_TIMEOUT_MS = 5000;

export interface DialHandlers {
  /** The TCP connection is up and the peer wire speaks on it (its handshake is under way). */
  connected(conn: PeerConnection): void;
  /** The connect failed or timed out, or the wire could not be set up (the socket is closed). */
  failed(err: Error): void;
}

export interface Dial {
  /** Gives up a dial still connecting (no handler is called). */
  cancel(): void;
}

/**
 * Dials ip:port and speaks the peer wire as the initiator. Reads land in
 * one buffer per connection, handed to the connection before the next
 * read (PeerConnection.feed): no garbage per read. Node starts reading
 * only after 'connect', when the connection exists.
 */
export function dialPeer(
  ip: string,
  port: number,
  wire: Omit<PeerConnectionOptions, 'initiator'>,
  handlers: DialHandlers,
  timeoutMs = CONNECT_TIMEOUT_MS,
): Dial {
  let conn: PeerConnection | undefined;
  let settled = false;
  const readBuf = Buffer.allocUnsafe(READ_BUFFER_BYTES);
  const socket = connect({
    host: ip,
    port,
    onread: {
      buffer: readBuf,
      callback: (n) => {
        conn?.feed(readBuf.subarray(0, n));
        return true;
      },
    },
  });
  socket.setNoDelay(true);
  const timer = setTimeout(() => socket.destroy(new Error('connect timeout')), timeoutMs);
  const failed = (err: Error) => {
    clearTimeout(timer);
    if (settled) return;
    settled = true;
    handlers.failed(err);
  };
  socket.once('error', failed);
  socket.once('connect', () => {
    clearTimeout(timer);
    socket.off('error', failed);
    if (settled) return;
    settled = true;
    try {
      conn = new PeerConnection(socket, { ...wire, initiator: true });
    } catch (err) {
      socket.destroy();
      handlers.failed(new Error(`cannot set up the peer connection: ${errorText(err)}`));
      return;
    }
    handlers.connected(conn);
  });
  return {
    cancel: () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
    },
  };
}
