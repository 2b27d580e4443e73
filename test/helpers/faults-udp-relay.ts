/**
 * A lossy UDP relay for TFTP on loopback: it sits between a real client and
 * our TFTP server and deterministically drops every `dropEvery`-th packet
 * in each direction (counted separately, retransmissions included). A
 * packet identical to one already dropped always gets through: with a
 * fixed period alone, an RFC 7440 window of exactly that many blocks would
 * lose the same block on every retransmission, forever (seen with atftp
 * and windowsize 8 on the last, 7-block window), which models no real
 * network.
 *
 * TFTP (RFC 1350 §4) has each side pick a new transfer identifier (port):
 * the server answers a request from a fresh port. So the relay keeps one
 * pair of sockets per client TID: `front` talks to the client (and, like a
 * server, answers from a port other than the one the request went to),
 * `back` talks to the server, first to its listening port and then to the
 * transfer port learned from the server's first reply.
 */
import { createSocket, type Socket } from 'node:dgram';

export interface RelayCounters {
  toServer: number;
  toClient: number;
  droppedToServer: number;
  droppedToClient: number;
}

export interface LossyRelay {
  /** Port the client sends its request to. */
  port: number;
  counters: RelayCounters;
  close(): Promise<void>;
}

interface Flow {
  front: Socket;
  back: Socket;
  serverTid: number | undefined;
}

function bind(s: Socket, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    s.once('error', reject);
    s.bind(0, host, () => {
      s.off('error', reject);
      resolve();
    });
  });
}

export async function startLossyRelay(opts: {
  host: string;
  serverPort: number;
  dropEvery: number;
}): Promise<LossyRelay> {
  const { host, serverPort, dropEvery } = opts;
  const counters: RelayCounters = { toServer: 0, toClient: 0, droppedToServer: 0, droppedToClient: 0 };
  const flows = new Map<string, Flow>();
  const sockets: Socket[] = [];
  const dropped = new Set<string>();
  const drop = (msg: Buffer, count: number): boolean => {
    if (count % dropEvery !== 0) return false;
    const key = msg.toString('base64');
    if (dropped.has(key)) return false;
    dropped.add(key);
    return true;
  };
  const dropToServer = (msg: Buffer): boolean => {
    if (!drop(msg, ++counters.toServer)) return false;
    counters.droppedToServer++;
    return true;
  };
  const dropToClient = (msg: Buffer): boolean => {
    if (!drop(msg, ++counters.toClient)) return false;
    counters.droppedToClient++;
    return true;
  };

  const flowFor = async (clientPort: number): Promise<Flow> => {
    const key = String(clientPort);
    const known = flows.get(key);
    if (known) return known;
    const front = createSocket('udp4');
    const back = createSocket('udp4');
    sockets.push(front, back);
    const flow: Flow = { front, back, serverTid: undefined };
    flows.set(key, flow);
    await bind(front, host);
    await bind(back, host);
    // Later packets from the client come to the front socket (the TID it learned).
    front.on('message', (msg, rinfo) => {
      if (rinfo.port !== clientPort || dropToServer(msg)) return;
      back.send(msg, flow.serverTid ?? serverPort, host);
    });
    back.on('message', (msg, rinfo) => {
      // The server's first reply names its transfer port; anything else is not this transfer.
      flow.serverTid ??= rinfo.port;
      if (rinfo.port !== flow.serverTid || dropToClient(msg)) return;
      front.send(msg, clientPort, host);
    });
    return flow;
  };

  const listener = createSocket('udp4');
  sockets.push(listener);
  await bind(listener, host);
  listener.on('message', (msg, rinfo) => {
    // A request (or a retransmitted request) to the well-known port.
    void flowFor(rinfo.port).then((flow) => {
      if (dropToServer(msg)) return;
      flow.back.send(msg, serverPort, host);
    });
  });
  return {
    port: listener.address().port,
    counters,
    close: async () => {
      await Promise.all(sockets.map((s) => new Promise<void>((r) => s.close(() => r()))));
    },
  };
}
