/**
 * Kernel module selection for phase 1 (pure). The Debian kernel builds its
 * NIC and virtio drivers as modules, so the initramfs must carry the ones a
 * lab machine may need plus everything they depend on, in an order insmod
 * accepts (dependencies first). The dependency graph comes from depmod's
 * modules.dep: one line per module, `path: dep-path dep-path ...`.
 */

/**
 * Drivers for the wired NICs of desktops, lab machines and VMs, plus virtio;
 * names missing from a kernel are skipped. Together ~5 MB uncompressed.
 */
export const NIC_MODULES: readonly string[] = [
  // virtio_net needs the PCI transport, which is no dependency of it in modules.dep.
  'virtio_pci',
  'virtio_net',
  'e1000',
  'e1000e',
  'e100',
  'igb',
  'igc',
  'r8169',
  // r8169 binds its PHY through phylib; without the Realtek PHY driver many
  // chips fall back to the generic PHY and lose link modes (it is not in modules.dep).
  'realtek',
  'tg3',
  'bnx2',
  'alx',
  'atl1c',
  'atl1e',
  'sky2',
  'skge',
  'forcedeth',
  'vmxnet3',
  '8139too',
  '8139cp',
  'pcnet32',
  'ne2k_pci',
];

/** efivarfs: phase 1 reads which NIC the firmware booted from (boottorrent.mac=auto). */
export const EFI_MODULES: readonly string[] = ['efivarfs'];

/**
 * 10/25/40/100G server NICs, opt-in (`--server-nics`): together ~12 MB
 * uncompressed, ~3 MB in the compressed initramfs, for hardware that labs
 * seldom network-boot from.
 */
export const SERVER_NIC_MODULES: readonly string[] = [
  'ixgbe',
  'i40e',
  'ice',
  'bnxt_en',
  'bnx2x',
  'atlantic',
  'be2net',
  'mlx4_en',
  'mlx5_core',
  'qede',
];

/** Extra modules of the qemu flavor: hardware virtualisation, tap networking, a guest's screen and input. */
export const QEMU_MODULES: readonly string[] = [
  'kvm_intel',
  'kvm_amd',
  'tun',
  'bridge',
  // A framebuffer for a guest's screen where the firmware's (efifb, vesafb,
  // built in) is not there: QEMU's and virtual machines' display adapters.
  'bochs',
  'virtio_gpu',
  // Keyboard and mouse as evdev devices, which the viewer reads.
  'evdev',
  'psmouse',
];

/** modules.dep as a map from module path to its direct dependency paths. */
export type ModulesDep = ReadonlyMap<string, readonly string[]>;

export function parseModulesDep(text: string): ModulesDep {
  const map = new Map<string, string[]>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const path = line.slice(0, colon).trim();
    const deps = line
      .slice(colon + 1)
      .split(/\s+/)
      .filter((d) => d !== '');
    map.set(path, deps);
  }
  return map;
}

/**
 * The module name the kernel uses for a path: basename without `.ko` (and a
 * compression suffix), with '-' read as '_' as modprobe does.
 */
export function moduleName(path: string): string {
  const base = path.slice(path.lastIndexOf('/') + 1);
  return base.replace(/\.ko(\.(xz|zst|gz))?$/, '').replace(/-/g, '_');
}

export interface ModuleResolution {
  /** Module paths (relative to /lib/modules/<ver>/), every dependency before its users. */
  readonly paths: readonly string[];
  /** Requested names that this kernel does not have as a module. */
  readonly missing: readonly string[];
}

/** Resolves module names to paths plus their transitive dependencies, dependencies first. */
export function resolveModules(dep: ModulesDep, names: readonly string[]): ModuleResolution {
  const byName = new Map<string, string>();
  for (const path of dep.keys()) byName.set(moduleName(path), path);
  const out: string[] = [];
  const done = new Set<string>();
  const visiting = new Set<string>();
  const visit = (path: string): void => {
    if (done.has(path)) return;
    // depmod refuses cycles; a cycle in a hand-edited file must not recurse forever.
    if (visiting.has(path)) throw new Error(`modules.dep: dependency cycle through ${path}`);
    visiting.add(path);
    for (const d of dep.get(path) ?? []) visit(d);
    visiting.delete(path);
    done.add(path);
    out.push(path);
  };
  const missing: string[] = [];
  for (const name of names) {
    const path = byName.get(name.replace(/-/g, '_'));
    if (path === undefined) missing.push(name);
    else visit(path);
  }
  return { paths: out, missing };
}

/** A modules.dep holding only the chosen modules, so busybox modprobe works inside phase 1. */
export function trimModulesDep(dep: ModulesDep, paths: readonly string[]): string {
  return paths.map((p) => `${p}: ${(dep.get(p) ?? []).join(' ')}`.trimEnd() + '\n').join('');
}
