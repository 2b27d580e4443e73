/**
 * Tracker load: N simulated clients, each with its own UDP socket (BEP 15
 * connection ids are bound to the client's address and port), loop
 * connect + announce against our TrackerServer on loopback for a fixed
 * time. Reports announces per second, announce latency (p50/p99, from the
 * announce's send to its reply; the connect before it is not counted) and
 * the tracker's resident memory. The tracker runs in a child process so its
 * RSS is its own and the clients do not share its event loop.
 *
 *   npm run build && node dist/bench/load-tracker.js [--clients 200] [--seconds 10] [--swarms 10]
 */
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import type { Socket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { TrackerServer } from '../src/tracker/server.js';
import { decodeUdpResponse, encodeUdpRequest } from '../src/tracker/udp-codec.js';
import type { UdpResponse } from '../src/tracker/udp-codec.js';

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '200' },
    seconds: { type: 'string', default: '10' },
    swarms: { type: 'string', default: '10' },
    role: { type: 'string' },
  },
});

/** Child: the tracker, reporting its port and then its RSS twice a second. */
async function serve(): Promise<void> {
  // Every simulated client comes from 127.0.0.1: lift the per-address caps, which would refuse them.
  const tracker = new TrackerServer({
    host: '127.0.0.1',
    port: 0,
    open: true,
    intervalSeconds: 1800,
    peersPerIp: Infinity,
    peersPerIpAllSwarms: Infinity,
  });
  const { port } = await tracker.listen();
  console.log(`PORT ${port}`);
  const timer = setInterval(() => console.log(`RSS ${process.memoryUsage().rss}`), 500);
  process.once('SIGTERM', () => {
    clearInterval(timer);
    void tracker.close();
  });
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function main(): Promise<void> {
  const n = Number(values.clients);
  const seconds = Number(values.seconds);
  const swarms = Array.from({ length: Number(values.swarms) }, () => randomBytes(20));
  const child = spawn(process.execPath, [new URL(import.meta.url).pathname, '--role', 'server'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let maxRss = 0;
  let rssAtStart = 0;
  const port = await new Promise<number>((resolve, reject) => {
    child.once('exit', () => reject(new Error('tracker exited')));
    createInterface({ input: child.stdout }).on('line', (line) => {
      const m = /^(PORT|RSS) (\d+)$/.exec(line);
      if (m?.[1] === 'PORT') resolve(Number(m[2]));
      if (m?.[1] === 'RSS') {
        rssAtStart ||= Number(m[2]);
        maxRss = Math.max(maxRss, Number(m[2]));
      }
    });
  });
  try {
    const latencies: number[] = [];
    let announces = 0;
    let timeouts = 0;
    let errors = 0;
    const end = performance.now() + seconds * 1000;

    const client = async (i: number): Promise<void> => {
      const sock: Socket = createSocket('udp4');
      await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve));
      const pending = new Map<number, (r: UdpResponse) => void>();
      sock.on('message', (msg) => {
        try {
          const r = decodeUdpResponse(msg);
          pending.get(r.transactionId)?.(r);
        } catch {
          errors++;
        }
      });
      const ask = (req: Buffer, tid: number): Promise<UdpResponse | null> =>
        new Promise((resolve) => {
          const timer = setTimeout(() => {
            pending.delete(tid);
            timeouts++;
            resolve(null);
          }, 2000);
          pending.set(tid, (r) => {
            clearTimeout(timer);
            pending.delete(tid);
            resolve(r);
          });
          sock.send(req, port, '127.0.0.1');
        });
      const peerId = Buffer.concat([Buffer.from('-BL0001-'), randomBytes(12)]);
      const infoHash = swarms[i % swarms.length]!;
      let tid = i * 1_000_000;
      let first = true;
      while (performance.now() < end) {
        const c = await ask(encodeUdpRequest({ action: 'connect', transactionId: ++tid }), tid);
        if (!c || c.action !== 'connect') {
          if (c) errors++;
          continue;
        }
        const t0 = performance.now();
        const a = await ask(
          encodeUdpRequest({
            action: 'announce',
            connectionId: c.connectionId,
            transactionId: ++tid,
            request: {
              infoHash,
              peerId,
              port: 6881 + (i % 1000),
              uploaded: 0,
              downloaded: 0,
              left: 1000,
              event: first ? 'started' : 'none',
              numWant: 50,
            },
          }),
          tid,
        );
        if (!a || a.action !== 'announce') {
          if (a) errors++;
          continue;
        }
        first = false;
        latencies.push(performance.now() - t0);
        announces++;
      }
      sock.close();
    };

    const t0 = performance.now();
    await Promise.all(Array.from({ length: n }, (_, i) => client(i)));
    const elapsed = (performance.now() - t0) / 1000;
    await new Promise((r) => setTimeout(r, 600)); // one more RSS line
    latencies.sort((a, b) => a - b);
    console.log(
      `${n} clients, ${swarms.length} swarms, ${seconds} s: ${announces} announces, ${Math.round(announces / elapsed)} announces/s, ` +
        `latency p50 ${percentile(latencies, 50).toFixed(2)} ms p99 ${percentile(latencies, 99).toFixed(2)} ms, ` +
        `${timeouts} timeouts, ${errors} errors, tracker RSS ${(rssAtStart / 1048576).toFixed(0)} MiB at start, ${(maxRss / 1048576).toFixed(0)} MiB max`,
    );
  } finally {
    child.kill('SIGTERM');
  }
}

if (values.role === 'server') await serve();
else await main();
