/**
 * TFTP load: C concurrent transfers of one file (default 100 x 1 MiB) from
 * our TftpServer on loopback, as a lab's PXE ROMs would fetch iPXE all at
 * once (but larger). Each transfer is a minimal RFC 1350 client with
 * blksize (RFC 2348, default 1432 like iPXE) and no window, checks the
 * SHA-256 of what it got, and retransmits its last ACK after a 1 s silence.
 * The server runs in a child process so the clients do not share its event
 * loop. Reports total time, aggregate throughput, retransmissions, failures.
 *
 *   npm run build && node dist/bench/load-tftp.js [--transfers 100] [--size 1M] [--blksize 1432]
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { TftpServer } from '../src/tftp/server.js';
import { decode, encode } from '../src/tftp/codec.js';

const { values } = parseArgs({
  options: {
    transfers: { type: 'string', default: '100' },
    size: { type: 'string', default: '1M' },
    blksize: { type: 'string', default: '1432' },
    role: { type: 'string' },
    root: { type: 'string' },
  },
});

async function serve(): Promise<void> {
  // maxTransfers above the load: a refusal would measure the cap, not the server.
  const server = new TftpServer({ host: '127.0.0.1', port: 0, root: values.root!, maxTransfers: 1024 });
  const { port } = await server.listen();
  console.log(`PORT ${port}`);
  process.once('SIGTERM', () => void server.close());
}

interface Outcome {
  ok: boolean;
  bytes: number;
  retransmits: number;
  error?: string;
}

function fetchOnce(port: number, name: string, blksize: number, sha: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const sock = createSocket('udp4');
    const hash = createHash('sha256');
    let bytes = 0;
    let expected = 1;
    let size = 512;
    let tid: number | undefined;
    let last = encode({
      type: 'RRQ',
      filename: name,
      mode: 'octet',
      options: new Map([['blksize', String(blksize)]]),
    });
    let retransmits = 0;
    let silent = 0;
    let timer: NodeJS.Timeout | undefined;
    const finish = (o: Omit<Outcome, 'retransmits'>): void => {
      clearTimeout(timer);
      sock.close();
      resolve({ ...o, retransmits });
    };
    const arm = (): void => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        if (++silent > 5) return finish({ ok: false, bytes, error: `timeout at block ${expected}` });
        retransmits++;
        sock.send(last, tid ?? port, '127.0.0.1');
        arm();
      }, 1000);
    };
    sock.on('message', (msg, rinfo) => {
      tid ??= rinfo.port;
      if (rinfo.port !== tid) return;
      let p;
      try {
        p = decode(msg);
      } catch (err) {
        return finish({ ok: false, bytes, error: (err as Error).message });
      }
      silent = 0;
      if (p.type === 'OACK') {
        size = Number(p.options.get('blksize') ?? 512);
        last = encode({ type: 'ACK', block: 0 });
      } else if (p.type === 'DATA') {
        if (p.block === (expected & 0xffff)) {
          hash.update(p.data);
          bytes += p.data.length;
          expected++;
          last = encode({ type: 'ACK', block: p.block });
          if (p.data.length < size) {
            sock.send(last, tid, '127.0.0.1');
            const ok = hash.digest('hex') === sha;
            return finish({ ok, bytes, ...(ok ? {} : { error: 'checksum mismatch' }) });
          }
        }
      } else if (p.type === 'ERROR') {
        return finish({ ok: false, bytes, error: `ERROR ${p.code} ${p.message}` });
      } else return;
      sock.send(last, tid, '127.0.0.1');
      arm();
    });
    sock.bind(0, '127.0.0.1', () => {
      sock.send(last, port, '127.0.0.1');
      arm();
    });
  });
}

async function main(): Promise<void> {
  const units: Record<string, number> = { K: 1024, M: 1024 ** 2, G: 1024 ** 3 };
  const s = values.size;
  const size = Number(/^\d+/.exec(s)?.[0] ?? NaN) * (units[s.at(-1)!.toUpperCase()] ?? 1);
  const transfers = Number(values.transfers);
  const blksize = Number(values.blksize);
  const dir = mkdtempSync(join(tmpdir(), 'bt-load-tftp-'));
  const data = randomBytes(size);
  writeFileSync(join(dir, 'payload.bin'), data);
  const sha = createHash('sha256').update(data).digest('hex');
  const child = spawn(
    process.execPath,
    [new URL(import.meta.url).pathname, '--role', 'server', '--root', dir],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  try {
    const port = await new Promise<number>((resolve, reject) => {
      child.once('exit', () => reject(new Error('server exited')));
      createInterface({ input: child.stdout }).on('line', (l) => {
        const m = /^PORT (\d+)$/.exec(l);
        if (m) resolve(Number(m[1]));
      });
    });
    const t0 = performance.now();
    const outcomes = await Promise.all(
      Array.from({ length: transfers }, () => fetchOnce(port, 'payload.bin', blksize, sha)),
    );
    const secs = (performance.now() - t0) / 1000;
    const ok = outcomes.filter((o) => o.ok);
    const bytes = ok.reduce((a, o) => a + o.bytes, 0);
    const errors = [...new Set(outcomes.filter((o) => !o.ok).map((o) => o.error))];
    console.log(
      `${transfers} concurrent transfers of ${s} (blksize ${blksize}): ${secs.toFixed(2)} s, ` +
        `${(bytes / 1048576 / secs).toFixed(1)} MiB/s aggregate, ${ok.length} ok, ${transfers - ok.length} failed, ` +
        `${outcomes.reduce((a, o) => a + o.retransmits, 0)} client retransmissions${errors.length ? `; errors: ${errors.join('; ')}` : ''}`,
    );
  } finally {
    child.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  }
}

if (values.role === 'server') await serve();
else await main();
