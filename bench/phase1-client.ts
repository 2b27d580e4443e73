/**
 * One emulated client of the end-to-end benchmark (`bench:swarm --phase1`,
 * bench/phase1-boot.ts), run in its own network namespace. It does what a
 * PXE client does, over the same HTTP requests:
 *
 *   1. iPXE: GET /boot.ipxe?mac=<its MAC>, then every `kernel` and `initrd`
 *      URL the script names (redirects followed, as iPXE does); or, when
 *      the script chains GRUB on UEFI (peers.phase1_loader: grub), what that
 *      GRUB does: the program, its per-MAC config (again while it says
 *      wait), then each file and its .sig from the first source that has
 *      it (the SHA-256 checked here; GRUB checks the signature);
 *   2. if the script's command line carries `boottorrent.payload=` and
 *      `boottorrent.blocks=` (phase 1 served by peers), stage 0's own fetch
 *      (stage0FetchScript in src/phase1/stage0.ts) run by busybox sh with
 *      busybox's applets, as in stage 0: the block list, then the payload
 *      from where the server says, each block checked and relayed to later
 *      clients (busybox httpd) while it fetches;
 *   3. the agent stage: the real agent (host mode, dry run) asks for its
 *      boot config, downloads the OS from the swarm, verifies it and, with
 *      peers, serves its phase-1 payload to later clients while it runs;
 *      or, with `--image-url` (central HTTP of everything), a plain GET of
 *      the OS image checked against `--image-sha`.
 *
 * What an emulated client skips: the firmware, the kernel's own boot and
 * unpacking the initramfs. Lines on stdout: `BENCH kernel <host:port>` (where
 * the kernel came from), `BENCH phase1 <s> <bytes>` when phase 1 is in,
 * `BENCH verified <s>` when the OS is, `BENCH failed <why>`.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream, mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { parseArgs } from 'node:util';
import { stage0FetchScript } from '../src/phase1/stage0.js';

const { values } = parseArgs({
  options: {
    server: { type: 'string' },
    dir: { type: 'string' },
    iface: { type: 'string', default: 'eth0' },
    agent: { type: 'string' },
    'share-port': { type: 'string', default: '8470' },
    'image-url': { type: 'string' },
    'image-sha': { type: 'string' },
    busybox: { type: 'string' },
  },
});
const server = values.server!;
const dir = values.dir!;
mkdirSync(dir, { recursive: true });
const mac = readFileSync(`/sys/class/net/${values.iface}/address`, 'utf8').trim();
const t0 = Date.now();
const secs = () => ((Date.now() - t0) / 1000).toFixed(2);
const say = (s: string) => process.stdout.write(`${s}\n`);

/** GETs `url` into `file` (redirects followed); its SHA-256 and size. Throws on an HTTP error or timeout. */
async function download(
  url: string,
  file: string,
  timeoutMs: number,
): Promise<{ sha: string; bytes: number }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok || !res.body) throw new Error(`${url}: HTTP ${res.status}`);
  const h = createHash('sha256');
  let bytes = 0;
  const body = Readable.fromWeb(res.body as WebReadableStream<Uint8Array>);
  body.on('data', (d: Buffer) => {
    h.update(d);
    bytes += d.length;
  });
  await pipeline(body, createWriteStream(file));
  return { sha: h.digest('hex'), bytes };
}

async function text(url: string): Promise<string> {
  const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  return (await res.text()).trim();
}

/** The first attempt of `if <command> (http,SRC)PATH ...; then` lines whose every file (and its .sig) comes in. */
async function grubAttempts(
  cfg: string,
  command: 'linux' | 'initrd',
  holds: Map<string, string>,
): Promise<{ bytes: number; args: string }> {
  const lines = [...cfg.matchAll(new RegExp(`^\\s*if ${command} (.*); then$`, 'gm'))].map((m) => m[1]!);
  for (const line of lines) {
    const files = [...line.matchAll(/\(http,([^)]+)\)(\/\S+)/g)].map((m) => ({ src: m[1]!, path: m[2]! }));
    const args = line.replace(/\(http,[^)]+\)\/\S+\s*/g, '').trim();
    let bytes = 0;
    try {
      for (const f of files) {
        const name = f.path.split('/').pop()!;
        const out = join(dir, name);
        const got = await download(`http://${f.src}${f.path}`, out, 300_000);
        // GRUB checks the signature; this client checks the SHA-256 the signed config names.
        const want = holds.get(name);
        if (want && got.sha !== want) throw new Error(`${f.src}${f.path}: wrong SHA-256`);
        bytes += got.bytes + (await download(`http://${f.src}${f.path}.sig`, `${out}.sig`, 10_000)).bytes;
      }
      if (command === 'linux') say(`BENCH kernel ${files[0]!.src}`);
      return { bytes, args };
    } catch (err) {
      say(`grub: ${command} from ${files[0]?.src}: ${(err as Error).message}; next source`);
    }
  }
  throw new Error(`no source had a good ${command}`);
}

/**
 * What the verifying GRUB does (src/server/phase1-loader.ts): the program
 * from the server, then its signed per-MAC config (waiting while it says
 * so), then the kernel and initrds from the first source that has them.
 */
async function grubPhaseOne(grubUrl: string): Promise<{ bytes: number; cmdline?: string }> {
  let bytes = (await download(grubUrl, join(dir, 'grub.efi'), 60_000)).bytes;
  const cfgUrl = `${new URL(grubUrl).origin}/boottorrent/grub/${mac}.cfg`;
  for (;;) {
    const res = await fetch(cfgUrl, { signal: AbortSignal.timeout(10_000) });
    const cfg = Buffer.from(await res.arrayBuffer());
    bytes += cfg.length;
    // No config (busy, refused): GRUB exits, and iPXE's script goes on to load phase 1 itself.
    if (!res.ok) {
      say(`grub: ${cfgUrl}: HTTP ${res.status}; back to iPXE`);
      return { bytes };
    }
    bytes += (await download(`${cfgUrl}.sig`, join(dir, 'cfg.sig'), 10_000)).bytes;
    const text = cfg.toString();
    const wait = /^sleep (\d+)$/m.exec(text);
    if (wait && /^configfile /m.test(text)) {
      await new Promise((r) => setTimeout(r, Number(wait[1]) * 1000));
      continue;
    }
    const holdWord = /boottorrent\.hold=(\S+)/.exec(text)?.[1] ?? '';
    const holds = new Map(holdWord.split(',').map((w) => w.split(':') as [string, string]));
    const linux = await grubAttempts(text, 'linux', holds);
    const initrd = await grubAttempts(text, 'initrd', holds);
    return { bytes: bytes + linux.bytes + initrd.bytes, cmdline: linux.args };
  }
}

async function phaseOne(): Promise<{ payload?: string; bytes: number; hold?: string }> {
  const script = await text(`${server}/boot.ipxe?mac=${mac}`);
  let bytes = 0;
  let cmdline: string;
  // A UEFI client: iPXE chains GRUB when the script says so.
  const grub = /^iseq \$\{platform\} efi && chain (?:--autofree )?(\S+) \|\|$/m.exec(script);
  const g = grub ? await grubPhaseOne(grub[1]!) : undefined;
  if (g) bytes += g.bytes;
  if (g?.cmdline !== undefined) {
    cmdline = g.cmdline;
  } else {
    const kernel = /^kernel (\S+)(.*)$/m.exec(script);
    if (!kernel) throw new Error(`no kernel line in the boot script:\n${script}`);
    const initrds = [...script.matchAll(/^initrd (?:--name \S+ )?(\S+)/gm)].map((m) => m[1]!);
    bytes += (await download(kernel[1]!, join(dir, 'vmlinuz'), 300_000)).bytes;
    say(`BENCH kernel ${new URL(kernel[1]!).host}`);
    for (const [i, u] of initrds.entries())
      bytes += (await download(u, join(dir, `initrd${i}`), 300_000)).bytes;
    cmdline = kernel[2]!;
  }
  const hold = /boottorrent\.hold=(\S+)/.exec(cmdline)?.[1];
  const want = /boottorrent\.payload=([0-9a-f]{64})/.exec(cmdline)?.[1];
  const blocks = /boottorrent\.blocks=([0-9a-f]{64})/.exec(cmdline)?.[1];
  if (want === undefined || blocks === undefined) return { bytes };
  // Stage 0's own fetch (src/phase1/stage0.ts), run by busybox as in stage 0.
  const run = join(dir, 'run');
  mkdirSync(run, { recursive: true });
  const prelude = [
    'say() { echo "BootTorrent phase 1: $*"; }',
    'stop() { say "$*"; exit 1; }',
    `SERVER='${server}' MAC='${mac}' WANT='${want}' BLOCKS='${blocks}' RUN='${run}'`,
    ...(process.env.BT_TRACE ? ['BT_TRACE=1'] : []),
    '',
  ].join('\n');
  const sh = spawn(
    join(values.busybox!, 'sh'),
    ['-c', prelude + stage0FetchScript(Number(values['share-port']))],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: values.busybox!, HOME: run },
    },
  );
  sh.stdout.on('data', (d: Buffer) => process.stdout.write(d));
  sh.stderr.on('data', (d: Buffer) => process.stderr.write(d));
  const code = await new Promise<number | null>((r) => sh.on('exit', r));
  if (code !== 0) throw new Error(`stage 0 exited ${code}`);
  const payload = join(run, 'boottorrent', 'phase1.img');
  return { payload, bytes: bytes + statSync(payload).size, ...(hold ? { hold } : {}) };
}

async function main(): Promise<void> {
  const p1 = await phaseOne();
  say(`BENCH phase1 ${secs()} ${p1.bytes}`);
  if (values['image-url']) {
    const got = await download(values['image-url'], join(dir, 'image.bin'), 600_000);
    if (got.sha !== values['image-sha'])
      throw new Error(`image SHA-256 ${got.sha}, want ${values['image-sha']}`);
    say(`BENCH verified ${secs()} ${got.bytes}`);
    return;
  }
  const args = [
    values.agent!,
    '--server',
    server,
    '--mac',
    mac,
    '--dir',
    join(dir, 'agent'),
    '--no-network',
    '--dry-run',
    '--port',
    '6881',
  ];
  if (p1.payload) args.push('--share-phase1', p1.payload, '--share-port', values['share-port']);
  // A holder when the server asks: fetches the kernel and stage 0 and serves them to later GRUBs.
  if (p1.payload && p1.hold) args.push('--hold', p1.hold);
  const agent = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  // The bench stops this process with SIGTERM: the agent goes with it, and
  // this process waits until it has gone (the agent takes up to 5 s to leave
  // the swarm tidily), so the next method's agent in this namespace finds
  // its port free. SIGKILL after 4 s: the bench's own grace is 5 s.
  for (const sig of ['SIGTERM', 'SIGINT'] as const)
    process.on(sig, () => {
      if (agent.exitCode !== null || agent.signalCode !== null) process.exit(143);
      agent.once('exit', () => process.exit(143));
      agent.kill('SIGTERM');
      setTimeout(() => agent.kill('SIGKILL'), 4000).unref();
    });
  let buf = '';
  let said = false;
  agent.stdout.on('data', (d: Buffer) => {
    process.stdout.write(d);
    buf = (buf + d.toString()).slice(-4096);
    if (!said && /boottorrent-agent: verified \d+ files/.test(buf)) {
      said = true;
      say(`BENCH verified ${secs()}`);
    }
  });
  agent.stderr.on('data', (d: Buffer) => process.stderr.write(d));
  const code = await new Promise<number | null>((r) => agent.on('exit', r));
  if (!said) say(`BENCH failed agent exited ${code} before its OS was verified`);
}

main().catch((err: unknown) => {
  say(`BENCH failed ${(err as Error).message.split('\n')[0]}`);
  process.exitCode = 1;
});
