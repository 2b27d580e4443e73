import { Duplex } from 'node:stream';

/**
 * One end of an in-memory byte pipe with real backpressure: a write completes
 * only when the other end's reader has room. Ending or destroying one end
 * ends the other's readable side, as a TCP FIN would.
 */
export class PipeEnd extends Duplex {
  peer!: PipeEnd;
  private waiting: (() => void) | null = null;

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.peer.destroyed) return cb();
    if (this.peer.push(chunk)) cb();
    else this.peer.waiting = cb;
  }

  override _read(): void {
    const cb = this.waiting;
    this.waiting = null;
    cb?.();
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.peer.push(null);
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.peer.destroyed && !this.peer.readableEnded) this.peer.push(null);
    cb(err);
  }
}

/** Two connected in-memory ends, like a TCP socket pair. */
export function duplexPair(highWaterMark = 64 * 1024): [PipeEnd, PipeEnd] {
  const a = new PipeEnd({ highWaterMark });
  const b = new PipeEnd({ highWaterMark });
  a.peer = b;
  b.peer = a;
  return [a, b];
}
