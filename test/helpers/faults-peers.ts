/**
 * Peers for the fault tests, built on our own wire codec and connection
 * (src/wire): a silent watcher that learns which pieces each client holds
 * from its bitfield and HAVE messages (BEP 3), and a liar that serves wrong
 * bytes for some pieces. Plus child-process plumbing shared by the tests.
 */
import { childEnded } from './wait.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { Bitfield } from '../../src/wire/bitfield.js';
import { PeerConnection } from '../../src/wire/connection.js';
import { encodeMessage } from '../../src/wire/codec.js';

/** A TCP port free right now on `host` (bound, then released). */
export async function freeTcpPort(host: string): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, host, () => r()));
  const addr = srv.address();
  await new Promise<void>((r) => srv.close(() => r()));
  return typeof addr === 'object' && addr ? addr.port : 0;
}

/**
 * Connects to each `host:port` as a peer that has nothing and wants
 * nothing, so it never takes upload from anyone; the clients tell it every
 * piece they verify. Reconnects while a client is not yet listening.
 */
export class PieceWatcher {
  private readonly conns = new Map<string, PeerConnection>();
  private readonly sockets = new Set<Socket>();
  private closed = false;
  /** Called after every bitfield or HAVE any watched client sends. */
  onChange: () => void = () => undefined;
  private readonly peerId = Buffer.concat([Buffer.from('-FW0001-'), randomBytes(12)]);

  constructor(
    private readonly infoHash: Buffer,
    readonly pieceCount: number,
  ) {}

  watch(host: string, port: number): void {
    if (this.closed) return;
    const key = `${host}:${port}`;
    const socket = connect(port, host);
    this.sockets.add(socket);
    const conn = new PeerConnection(socket, {
      peerId: this.peerId,
      initiator: true,
      infoHash: this.infoHash,
      pieceCount: this.pieceCount,
    });
    conn.on('error', () => undefined);
    for (const ev of ['have', 'bitfield', 'have-all'] as const) conn.on(ev, () => this.onChange());
    conn.on('handshake', () => {
      this.conns.set(key, conn);
      // BEP 6: with the Fast extension one of bitfield/have-all/have-none must come first.
      if (conn.fast) conn.haveNone();
    });
    conn.on('close', () => {
      this.sockets.delete(socket);
      if (this.conns.get(key) === conn) this.conns.delete(key);
      if (!this.closed) setTimeout(() => this.watch(host, port), 300).unref();
    });
  }

  /** Pieces `host:port` holds as far as we know (undefined while not connected). */
  pieces(key: string): Bitfield | undefined {
    return this.conns.get(key)?.remoteBitfield ?? undefined;
  }

  /** How many pieces at least one watched client holds. */
  unionCount(): number {
    let n = 0;
    for (let i = 0; i < this.pieceCount; i++) {
      for (const c of this.conns.values()) {
        if (c.remoteBitfield?.get(i)) {
          n++;
          break;
        }
      }
    }
    return n;
  }

  close(): void {
    this.closed = true;
    for (const c of this.conns.values()) c.destroy();
    for (const s of this.sockets) s.destroy();
  }
}

/** A child process whose output the test reads; killed (by PID) at the end. */
export interface Proc {
  child: ChildProcess;
  output(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts `cmd args` and registers its SIGKILL (by PID) with `after`. */
export function startProc(after: (fn: () => unknown) => void, cmd: string, args: readonly string[]): Proc {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (d: Buffer) => {
    out += d.toString();
    if (out.length > 2_000_000) out = out.slice(-1_000_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  child.on('error', (err) => (out += `\n[spawn failed: ${err.message}]\n`));
  const exited = childEnded(child);
  after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return { child, output: () => out, exited };
}

/** Polls `cond` every 200 ms; throws `what()` after `ms`. */
export async function until(cond: () => boolean, ms: number, what: () => string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Closes a net server, resolving when it has. */
export function closeServer(srv: Server): Promise<void> {
  return new Promise((r) => srv.close(() => r()));
}

/**
 * A peer that claims every piece and answers every request at once, but
 * with wrong bytes (one byte flipped per block) in the pieces `corrupt`
 * picks: what a client with a damaged disk, or a hostile one, would do.
 * It dials `host:port` until the victim asks it for data, and never again
 * after that connection closes (a ban closes it).
 */
export class LyingPeer {
  corruptBlocks = 0;
  honestBlocks = 0;
  /** The victim closed the connection (a ban does). */
  closedByRemote = false;
  handshakes = 0;
  private socket: Socket | undefined;
  private stopped = false;
  private dials = 0;
  private readonly peerId = Buffer.concat([Buffer.from('-FL0001-'), randomBytes(12)]);

  constructor(
    private readonly meta: { infoHash: Buffer; pieceCount: number; pieceLength: number },
    /** The torrent's content, all files concatenated in torrent order. */
    private readonly data: Buffer,
    private readonly corrupt: (piece: number) => boolean,
  ) {}

  attack(host: string, port: number): void {
    if (this.stopped) return;
    const socket = connect(port, host);
    this.socket = socket;
    const conn = new PeerConnection(socket, {
      peerId: this.peerId,
      initiator: true,
      infoHash: this.meta.infoHash,
      pieceCount: this.meta.pieceCount,
    });
    conn.on('error', () => undefined);
    conn.on('handshake', () => {
      this.handshakes++;
      if (conn.fast) conn.haveAll();
      else {
        const all = Buffer.alloc(Math.ceil(this.meta.pieceCount / 8), 0xff);
        const spare = all.length * 8 - this.meta.pieceCount;
        all[all.length - 1] = (0xff << spare) & 0xff;
        socket.write(encodeMessage({ type: 'bitfield', bits: all }));
      }
    });
    conn.on('interested', () => conn.unchoke());
    conn.on('request', ({ index, begin, length }) => {
      const at = index * this.meta.pieceLength + begin;
      const block = Buffer.from(this.data.subarray(at, at + length));
      if (this.corrupt(index)) {
        block[0] = block[0]! ^ 0xff;
        this.corruptBlocks++;
      } else this.honestBlocks++;
      conn.piece(index, begin, block);
    });
    conn.on('close', () => {
      if (this.corruptBlocks + this.honestBlocks > 0) {
        this.closedByRemote = !this.stopped;
        return;
      }
      // Not listening yet, or the torrent not ready to take peers (it may
      // drop a connection it accepted): dial again, as a real client would.
      if (!this.stopped && ++this.dials < 150) setTimeout(() => this.attack(host, port), 200).unref();
    });
  }

  close(): void {
    this.stopped = true;
    this.socket?.destroy();
  }
}
