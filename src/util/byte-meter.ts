/**
 * What a listener sent, in bytes, by kind (issue #16 item 1: the server's
 * figures count every byte it sends, per stage).
 *
 * TCP: every byte written to every socket of the listener is counted from
 * `socket.bytesWritten` (headers, bodies, error answers Node writes on its
 * own), live sockets included, so a 22 MB download shows while it runs.
 * Each response is attributed to the kind its handler names; a socket's
 * responses go out one after the other, so the bytes written between one
 * response's start (or the previous one's end) and its close are its own.
 * What no handler named (a 400 Node wrote, a refused connection) is `other`.
 * Datagram senders add each payload they send with add().
 *
 * Bytes are payload bytes handed to the kernel: IP/TCP/UDP headers are not
 * in them, and a transfer cut short counts what was written before the cut.
 */
import type { ServerResponse } from 'node:http';
import type { Server, Socket } from 'node:net';

interface Pending<K extends string> {
  kind: K;
  res: ServerResponse;
}

interface SocketState<K extends string> {
  /** bytesWritten when the head of `queue` started counting. */
  mark: number;
  queue: Pending<K>[];
}

export type ByteTotals<K extends string> = Record<K | 'other' | 'total', number>;

export class ByteMeter<K extends string> {
  readonly #done = new Map<K | 'other', number>();

  /** `kinds`: every kind this meter names, so totals() has each (0 until counted). */
  constructor(private readonly kinds: readonly K[]) {}

  /** bytesWritten of closed sockets (all kinds together). */
  #closedTotal = 0;
  readonly #live = new Map<Socket, SocketState<K>>();

  /** Counts a datagram (or anything not on a watched socket) as `kind`. */
  add(kind: K | 'other', bytes: number): void {
    this.#done.set(kind, (this.#done.get(kind) ?? 0) + bytes);
    this.#closedTotal += bytes;
  }

  /** Counts every byte written to every connection of `server` from now on. */
  watch(server: Server): void {
    server.on('connection', (socket: Socket) => {
      const state: SocketState<K> = { mark: socket.bytesWritten, queue: [] };
      this.#live.set(socket, state);
      socket.once('close', () => {
        // Responses still queued end with their socket.
        while (state.queue.length) this.#settle(socket, state);
        this.#live.delete(socket);
        this.#closedTotal += socket.bytesWritten;
      });
    });
  }

  /** Attributes the bytes of `res` (a response on a watched server) to `kind`. */
  attribute(res: ServerResponse, kind: K): void {
    const socket = res.socket;
    const state = socket ? this.#live.get(socket) : undefined;
    if (!socket || !state) return;
    if (state.queue.some((p) => p.res === res)) return;
    if (state.queue.length === 0) state.mark = socket.bytesWritten;
    state.queue.push({ kind, res });
    res.once('close', () => {
      // Settle this response and any before it (they are done too).
      while (state.queue.some((p) => p.res === res)) this.#settle(socket, state);
    });
  }

  #settle(socket: Socket, state: SocketState<K>): void {
    const head = state.queue.shift();
    if (!head) return;
    const now = socket.bytesWritten;
    this.#done.set(head.kind, (this.#done.get(head.kind) ?? 0) + (now - state.mark));
    state.mark = now;
  }

  /** Bytes sent so far by kind; `other` is what no response named; `total` all of them. */
  totals(): ByteTotals<K> {
    const named = new Map<K, number>(this.kinds.map((k) => [k, 0]));
    for (const [k, v] of this.#done) if (k !== 'other') named.set(k, (named.get(k) ?? 0) + v);
    let total = this.#closedTotal;
    for (const [socket, state] of this.#live) {
      total += socket.bytesWritten;
      const head = state.queue[0];
      if (head) named.set(head.kind, (named.get(head.kind) ?? 0) + (socket.bytesWritten - state.mark));
    }
    let sum = 0;
    for (const v of named.values()) sum += v;
    return {
      ...(Object.fromEntries(named) as Record<K, number>),
      other: total - sum,
      total,
    };
  }
}
