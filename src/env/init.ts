/**
 * `boottorrent init`: a new environment that validates as written. It boots
 * one real OS (`oss/hello`, a shell script run by the `bin` method) so that
 * `start` has something to serve; the kexec and qemu examples live in
 * `oss-examples/` because their files (a kernel, an ISO) cannot be shipped,
 * and an OS folder naming missing files would not validate.
 */
import { chmodSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { networkInterfaces as osInterfaces, type NetworkInterfaceInfo } from 'node:os';
import { join } from 'node:path';
import { BootTorrentError } from '../errors.js';

export interface InitOptions {
  /** Lab interface; default: the first non-loopback interface with an IPv4 address. */
  readonly interface?: string;
  readonly networkInterfaces?: () => NodeJS.Dict<NetworkInterfaceInfo[]>;
}

export interface InitResult {
  readonly files: readonly string[];
  readonly interface: string;
  readonly address: string;
  /** False when no interface was found and placeholders were written. */
  readonly detected: boolean;
}

export function initEnvironment(dir: string, opts: InitOptions = {}): InitResult {
  if (existsSync(dir) && readdirSync(dir).length > 0)
    throw new BootTorrentError(
      'BT_ERR_FILE',
      `${dir} exists and is not empty; init never overwrites (choose a new folder or empty this one)`,
    );
  const ifaces = (opts.networkInterfaces ?? osInterfaces)();
  let iface = opts.interface;
  let address: string | undefined;
  if (iface !== undefined) {
    if (!ifaces[iface])
      throw new BootTorrentError(
        'BT_ERR_CONFIG_FIELD',
        `--interface: there is no interface '${iface}' (this machine has ${Object.keys(ifaces).join(', ')})`,
      );
    address = ifaces[iface]?.find((a) => a.family === 'IPv4')?.address;
  } else {
    for (const [name, list] of Object.entries(ifaces)) {
      const a = list?.find((x) => x.family === 'IPv4' && !x.internal);
      if (a) {
        iface = name;
        address = a.address;
        break;
      }
    }
  }
  const detected = iface !== undefined && address !== undefined;
  iface ??= 'eth0';
  address ??= '192.168.1.1';

  const files: Record<string, string> = {
    'Boottorrent.yaml': envTemplate(iface, address, detected),
    'oss/README.md': OSS_README,
    'oss/hello/config.yaml': HELLO_CONFIG,
    'oss/hello/hello.sh': HELLO_SH,
    'oss-examples/README.md': EXAMPLES_README,
    'oss-examples/debian-kexec/config.yaml': KEXEC_EXAMPLE,
    'oss-examples/freedos-qemu/config.yaml': QEMU_EXAMPLE,
    'oss-examples/tool-bin/config.yaml': BIN_EXAMPLE,
  };
  for (const [rel, text] of Object.entries(files)) {
    const full = join(dir, rel);
    mkdirSync(join(full, '..'), { recursive: true });
    writeFileSync(full, text, { flag: 'wx' });
  }
  chmodSync(join(dir, 'oss/hello/hello.sh'), 0o755);
  return { files: Object.keys(files), interface: iface, address, detected };
}

function envTemplate(iface: string, address: string, detected: boolean): string {
  const todo = detected ? '' : '   # TODO: no network interface found; set yours';
  return `# BootTorrent environment. Reference: docs/environment.md in the BootTorrent
# repository; an editor with a YAML language server can check this file
# against schema/boottorrent.v1.schema.json.
# Check it with: boottorrent validate --env <this folder>
version: 1

server:
  interface: ${iface}${todo}   # the network interface facing the lab
  address: ${address}${todo}   # its IPv4 address, as the clients see it
  http_port: 80              # boot scripts, phase 1 and the client API
  tftp: true                 # BIOS/UEFI PXE firmware fetch iPXE over TFTP (port 69)
  # ipxe_dir: /usr/lib/ipxe  # undionly.kpxe and ipxe.efi (Debian package ipxe)

dhcp:
  # proxy: the safe default. The lab's existing DHCP server keeps handing out
  # addresses; we only add the PXE boot options (proxyDHCP, ports 67 and 4011),
  # so a LAN that already has DHCP never sees two servers fighting over leases.
  # full: we hand out addresses from 'range' (an isolated lab network only).
  # off: your own DHCP server sends the boot instructions; the rules for dnsmasq,
  # ISC dhcpd and Kea are in docs/deployment.md, section "dhcp.mode: off". One rule is essential:
  # iPXE (user class "iPXE") gets http://${address}/boot.ipxe?mac=\${mac}, or iPXE loads itself forever.
  mode: proxy
  # range: 10.0.0.100-10.0.0.199   # needed by mode full
  # lease_time: 12h
  # router: 10.0.0.1
  # dns: [10.0.0.1]

tracker:
  enabled: true              # clients find each other through it
  port: 6969                 # TCP (HTTP) and UDP

peers:
  lsd: false                 # Local Service Discovery (multicast); a second way to find peers
  pex: true                  # peer exchange between clients
  phase1: false              # clients serve phase 1 to later clients (checked by SHA-256 before it runs)
  phase1_loader: ipxe        # grub: UEFI clients take the kernel from peers too, each file's signature checked

boot:
  default_os: hello          # a folder of oss/
  timeout: 30                # seconds the menu waits; 0 boots at once; negative waits forever
  seed_time: 30              # seconds a client keeps seeding before it loads the OS

# Machines by MAC address: a name (for status, wake, next-boot) and settings
# that win over their groups':
# hosts:
#   "52:54:00:12:34:56": { name: pc-07, default_os: hello, timeout: 5 }

# Groups of machines (by macs, range or pattern) with shared settings: oss,
# default_os, timeout, seed_time, cmdline, overlay (docs/environment.md, "Rooms"):
# groups:
#   room-b:
#     range: "52:54:00:00:01:00-52:54:00:00:01:ff"
#     default_os: hello
#     overlay: overlays/room-b   # e.g. etc/hostname containing {{name}}

# Only these machines boot (all do when absent):
# allow_macs: ["52:54:00:12:34:56"]

log_level: info              # debug | info | warn | error
`;
}

const OSS_README = `# oss/: the operating systems this lab can boot

Each folder here is one operating system and is shared as one torrent: the
clients download the whole folder, so keep only what it needs in it. Its
\`config.yaml\` says how to boot it; the folder name is what \`default_os\`
and \`hosts\` refer to. Folders starting with a dot are ignored.

\`\`\`yaml
name: Debian 12            # shown in the menu; unique across oss/
method: kexec              # kexec | qemu | bin
\`\`\`

- **kexec**: the client loads a Linux kernel and jumps into it.
  \`kernel: vmlinuz\`, \`initrd: initrd.img\` (or a list, concatenated in
  order), \`cmdline: "quiet"\`.
- **qemu**: the client runs \`qemu-system-x86_64\` inside this folder (with KVM
  when it has it) and keeps seeding while the guest runs.
  \`args: "-m 512 -cdrom alpine.iso"\` (a string split like a shell would, or a
  list). Files after \`-cdrom\`, \`-fda\`, \`-hda\`, ... must be in this folder.
- **bin**: the client runs a program of this folder and keeps seeding.
  \`bin: hello.sh\`, \`binargs: "--flag value"\`.

File names are relative to the folder and may not leave it. \`hello/\` is a
working example; \`../oss-examples/\` holds one commented example per method:
copy one here, add its files, then run \`boottorrent validate\`.

The older BootTorrent's \`config.yaml\` (\`dispname\`, \`method: bin-qemu-x86_64\`)
is read unchanged.
`;

const HELLO_CONFIG = `# A working example: the bin method runs hello.sh on the client.
name: Hello (test the boot chain)
method: bin
bin: hello.sh
binargs: "from BootTorrent"
`;

const HELLO_SH = `#!/bin/sh
# Runs on the client after the download: proof that the chain works.
echo "hello $*"
`;

const EXAMPLES_README = `# Examples, not booted

These folders are outside \`oss/\`, so they are not served. To use one, copy
it into \`oss/\`, add the files its \`config.yaml\` names, and run
\`boottorrent validate\`.
`;

const KEXEC_EXAMPLE = `# kexec a Linux kernel. Put these files next to this config.yaml:
#   cp /boot/vmlinuz-$(uname -r) vmlinuz
#   cp /boot/initrd.img-$(uname -r) initrd.img
name: Debian (kexec)
method: kexec
kernel: vmlinuz              # TODO: add this file
initrd: initrd.img           # TODO: add this file (or a list: [initrd.img, extra.cpio])
cmdline: "quiet"             # the kernel command line (e.g. root=..., or "break" for a shell)
`;

const QEMU_EXAMPLE = `# Run a guest in QEMU on the client. Put odin1440.img (a FreeDOS floppy) here.
name: FreeDOS (QEMU)
method: qemu
args: "-m 64 -fda odin1440.img"   # TODO: add odin1440.img; or "-m 512 -cdrom alpine.iso"
`;

const BIN_EXAMPLE = `# Run a program of this folder on the client (a static binary or a script).
name: My tool
method: bin
bin: tool                    # TODO: add this file
binargs: "--verbose"         # or a list: ["--verbose", "--out", "/tmp/x"]
`;
