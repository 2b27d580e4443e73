/**
 * The typed, frozen model of an environment (version 1). Version 0 files are
 * mapped onto it by the loader, so nothing past `src/env/` knows v0 exists.
 */
import type { UefiChain } from '../boot/grub.js';

/** One thing wrong with an environment, written for the person who fixes it. */
export interface Problem {
  /** The file at fault (joined onto the environment folder as given). */
  readonly file: string;
  /** 1-based position of the offending node; absent for a file-level problem (missing file). */
  readonly line?: number;
  readonly column?: number;
  /** Dotted path of the field as written in that file (`dhcp.range`, `boottorrent.default_os`). */
  readonly field: string;
  readonly message: string;
  readonly fix: string;
}

export type DhcpMode = 'full' | 'proxy' | 'off';
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type BootMethod = 'kexec' | 'qemu' | 'bin';

interface OsBase {
  /** Folder name under oss/: the id used by default_os, hosts and the torrent name. */
  readonly id: string;
  /** Absolute path of the OS folder (the folder is one torrent). */
  readonly dir: string;
  /** Display name in the menu (v0 `dispname`). */
  readonly name: string;
  /** The config file it came from, and the format it was written in. */
  readonly configFile: string;
  readonly sourceVersion: 0 | 1;
  /** BEP 19 web seeds: folder URLs holding `<id>/<files>` (v1 `web_seeds`), put in the torrent's url-list. */
  readonly webSeeds: readonly string[];
  /**
   * v1 `torrent`: the .torrent (absolute path) describing this OS's files,
   * which are not in the folder: start fetches them from its web seeds and
   * peers (src/server/fetched-os.ts). Absent: the folder holds the files.
   */
  readonly torrent?: string;
}

export interface KexecOs extends OsBase {
  readonly method: 'kexec';
  /** Paths relative to the OS folder. */
  readonly kernel: string;
  readonly initrd: readonly string[];
  readonly cmdline: string;
}

export interface QemuOs extends OsBase {
  readonly method: 'qemu';
  /** Arguments of qemu-system-x86_64, run inside the OS folder. */
  readonly args: readonly string[];
}

export interface BinOs extends OsBase {
  readonly method: 'bin';
  /** Program path relative to the OS folder, and its arguments. */
  readonly bin: string;
  readonly args: readonly string[];
}

export type OsEntry = KexecOs | QemuOs | BinOs;

/** What a group or a host may set for its machines (each field absent: inherited). */
export interface MachineSettings {
  /** OS ids the menu offers, in this order. */
  readonly oss?: readonly string[];
  readonly defaultOs?: string;
  readonly timeout?: number;
  readonly seedTime?: number;
  /** Added to each kexec OS's kernel command line. */
  readonly cmdline?: string;
  /** Absolute path of an overlay folder (src/server/overlay.ts). */
  readonly overlay?: string;
}

export interface HostOverride extends MachineSettings {
  readonly name?: string;
}

/** A MAC pattern as 12 hex digits, each fixed (0-15) or any (-1). */
export type MacPattern = readonly number[];

/** Machines that share settings (a room, a rack): matched by MAC list, range or pattern. */
export interface Group extends MachineSettings {
  readonly name: string;
  /** Lower-case colon MACs. */
  readonly macs: readonly string[];
  /** Inclusive ranges of 48-bit MAC values. */
  readonly ranges: readonly { readonly first: number; readonly last: number }[];
  readonly patterns: readonly MacPattern[];
  /** Directed broadcasts `wake` also sends this group's packets to (a relayed subnet). */
  readonly broadcasts: readonly string[];
}

export interface Environment {
  /** Absolute path of the environment folder. */
  readonly dir: string;
  /** Format of Boottorrent.yaml as written (0 = the older Python tool's). */
  readonly sourceVersion: 0 | 1;
  /** Settings accepted but ignored or changed (version 0: unknown fields, quoted numbers); shown by validate and start. */
  readonly warnings: readonly Problem[];
  readonly server: {
    /** Lab-facing interface; null means "the one that holds `address`". */
    readonly interface: string | null;
    readonly address: string;
    readonly httpPort: number;
    readonly tftp: boolean;
    readonly ipxeDir: string;
    /** What UEFI PXE firmware is given: iPXE, Debian's signed shim and GRUB, or the lab-signed phase 1 (Secure Boot). */
    readonly uefiChain: UefiChain;
    /** The iPXE build UEFI firmware gets (v1 `uefi_loader`): its own drivers, or the firmware's (smaller). */
    readonly uefiLoader: 'ipxe.efi' | 'snponly.efi';
    /** With uefiChain uki: the lab's key and certificate (absolute paths). */
    readonly uki: { readonly key: string; readonly cert: string } | null;
    /**
     * A satellite's upstream (#21 item 2): the other server's boot URL (no
     * trailing slash) and the public key that must sign its catalog
     * (absolute path; null: the first key seen is kept). Null: not a satellite.
     */
    readonly upstream: { readonly url: string; readonly key: string | null } | null;
  };
  readonly dhcp: {
    readonly mode: DhcpMode;
    /** Full mode only: first and last address handed out. */
    readonly range: { readonly first: string; readonly last: string } | null;
    readonly leaseSeconds: number;
    readonly router: string | null;
    readonly dns: readonly string[];
    /** Relayed subnets (#21), each with its pool in full mode; empty in mode off. */
    readonly subnets: readonly {
      /** "10.1.0.0/24". */
      readonly subnet: string;
      /** Full mode: first and last address handed out there. */
      readonly range: { readonly first: string; readonly last: string } | null;
      readonly router: string | null;
      /** Null: the server's dns. */
      readonly dns: readonly string[] | null;
    }[];
  };
  readonly tracker: { readonly enabled: boolean; readonly port: number };
  /** lsd, pex: ways clients find each other; phase1: clients serve phase 1 to later clients (#16). */
  readonly peers: {
    readonly lsd: boolean;
    readonly pex: boolean;
    readonly phase1: boolean;
    /** With phase1: grub: UEFI clients load the kernel and stage 0 through a GRUB that checks signatures (src/server/phase1-loader.ts). */
    readonly phase1Loader: 'ipxe' | 'grub';
  };
  readonly boot: {
    /** Null only when timeout is negative (the menu waits for a choice). */
    readonly defaultOs: string | null;
    readonly timeout: number;
    readonly seedTime: number;
  };
  /** Keyed by lower-case colon MAC (52:54:00:12:34:56). */
  readonly hosts: ReadonlyMap<string, HostOverride>;
  /** In file order (the first that matches wins where validate let two agree). */
  readonly groups: readonly Group[];
  /** Lower-case colon MACs; null means every machine may boot. */
  readonly allowMacs: readonly string[] | null;
  readonly logLevel: LogLevel;
  /** Sorted by folder name. */
  readonly oss: readonly OsEntry[];
}
