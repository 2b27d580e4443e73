/** `boottorrent build-phase1`: the phase-1 kernel and initramfs, cached by input hash. */
import {
  buildPhase1,
  defaultCacheDir,
  type Phase1Compression,
  type Phase1Flavor,
  type Phase1Icu,
  type Phase1NodeSource,
} from '../phase1/build.js';
import { PINNED_NODE } from '../phase1/runtime.js';
import { EXIT_OK, UsageError, formatBytes, parse, type Io } from './common.js';

const HELP = `Usage: boottorrent build-phase1 [options]

Builds the phase-1 Linux that clients load over the network: the Debian
kernel as shipped (vmlinuz) and one compressed initramfs (initrd.img) with
busybox, kexec, the NIC drivers, a Node runtime and the agent, plus
manifest.json (inputs, hashes, sizes). Unchanged inputs reuse the last build.

  --flavor base|qemu        qemu adds qemu-system-x86_64, its libraries and firmware (default base)
  --out DIR                 output folder (default ./phase1)
  --node registry|host      registry: Node ${PINNED_NODE.version} from the npm registry, checksum pinned;
                            host: the Node running this command (default registry)
  --compress xz|zstd|gzip   initramfs compression (default xz, the smallest)
  --cache DIR               downloads and stripped binaries (default ${defaultCacheDir()})
  --kernel VERSION          use /boot/vmlinuz-VERSION (default the newest with modules)
  --icu en|full             en: keep only root + English of Node's ICU data (saves ~7 MB);
                            full: every locale and charset converter (default en)
  --server-nics             add the 10G+ server NIC drivers (ixgbe, i40e, ice, bnxt_en, mlx5, ...)
  --no-strip                keep Node's symbols`;

function oneOf<T extends string>(
  value: string | undefined,
  allowed: readonly T[],
  flag: string,
  fallback: T,
): T {
  if (value === undefined) return fallback;
  if ((allowed as readonly string[]).includes(value)) return value as T;
  throw new UsageError(`${flag} ${value}: expected one of ${allowed.join(', ')}`, HELP);
}

export async function run(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parse(
    argv,
    {
      flavor: { type: 'string' },
      out: { type: 'string' },
      node: { type: 'string' },
      compress: { type: 'string' },
      cache: { type: 'string' },
      kernel: { type: 'string' },
      icu: { type: 'string' },
      'server-nics': { type: 'boolean' },
      'no-strip': { type: 'boolean' },
    },
    HELP,
  );
  if (values.help) {
    io.stdout.write(`${HELP}\n`);
    return EXIT_OK;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${positionals[0]}'`, HELP);
  const flavor = oneOf<Phase1Flavor>(values.flavor, ['base', 'qemu'], '--flavor', 'base');
  const node = oneOf<Phase1NodeSource>(values.node, ['registry', 'host'], '--node', 'registry');
  const compression = oneOf<Phase1Compression>(values.compress, ['xz', 'zstd', 'gzip'], '--compress', 'xz');
  const icu = oneOf<Phase1Icu>(values.icu, ['en', 'full'], '--icu', 'en');

  const result = await buildPhase1(
    {
      outDir: values.out ?? 'phase1',
      flavor,
      node,
      compression,
      strip: !values['no-strip'],
      icu,
      serverNics: values['server-nics'] === true,
      ...(values.cache !== undefined ? { cacheDir: values.cache } : {}),
      ...(values.kernel !== undefined ? { kernelVersion: values.kernel } : {}),
    },
    { signal: io.signal, onProgress: (p) => io.stderr.write(`${p.message}\n`) },
  );
  const m = result.manifest;
  const s = m.sizes;
  const row = (name: string, bytes: number, note = '') =>
    io.stdout.write(`  ${name.padEnd(20)} ${formatBytes(bytes).padStart(10)}${note ? `  ${note}` : ''}\n`);
  io.stdout.write(
    `${result.reused ? 'Reused' : 'Built'} phase 1 (${m.flavor}, ${m.compression}, kernel ${m.kernelVersion}, Node ${m.node.version} ${m.node.source}) in ${result.outDir}\n`,
  );
  row('kernel (vmlinuz)', s.kernel);
  row('modules', s.parts.modules, `${m.modules.loaded.length} modules`);
  row('busybox', s.parts.busybox);
  row('kexec', s.parts.kexec);
  row('shared libraries', s.parts.libs);
  row(
    'node',
    s.parts.node,
    [m.node.stripped ? 'stripped' : 'not stripped', m.node.icu.trimmed ? 'ICU root + en' : 'full ICU'].join(
      ', ',
    ),
  );
  row('agent', s.parts.agent);
  if (m.flavor === 'qemu') row('qemu', s.parts.qemu, 'binary, libraries, firmware');
  row('initramfs (cpio)', s.cpio);
  row('initrd.img', s.initrd, `${m.compression}, as served`);
  io.stdout.write(`  input hash ${m.inputHash}\n`);
  return EXIT_OK;
}
