/**
 * The server's BootPolicy (src/boot/policy.ts, STYLE.md lesson 3): the one
 * place that decides what a machine boots. DHCP and HTTP only ask it; they
 * never look at architectures, MAC lists or the catalog themselves.
 * ServerBootPolicy composes the allow-list, the architecture chain below
 * (DefaultBootPolicy), the phase-1 image and the boot config.
 *
 * The boot chain DefaultBootPolicy implements:
 *   BIOS PXE ROM          -> TFTP undionly.kpxe   (iPXE using the ROM's UNDI driver)
 *   UEFI x64 PXE          -> TFTP ipxe.efi        (or snponly.efi: iPXE on the firmware's SNP driver;
 *                                                or shimx64.efi, Debian's signed chain: src/boot/grub.ts)
 *   UEFI arm64 PXE        -> TFTP ipxe-arm64.efi  (only when that file is in the iPXE folder)
 *   UEFI HTTP Boot        -> http://server/<loader> (DHCP echoes vendor class "HTTPClient")
 *   iPXE (any arch)       -> http://server/boot.ipxe?mac=${mac}
 * The last rule is what breaks the chainload loop: iPXE loaded over TFTP
 * asks DHCP again and must get a script, not itself.
 */

import type { BootConfig } from '../boot-config.js';
import type { GrubPhaseOne } from '../boot/grub.js';
import type {
  BootClient,
  BootDecision,
  BootPolicy,
  BootRefusal,
  PayloadFailure,
  PayloadProgress,
  PayloadSource,
  PhaseOneImage,
} from '../boot/policy.js';

export type { BootClient, BootDecision, BootPolicy } from '../boot/policy.js';

/** The architecture half of a policy: what DHCP offers, for every MAC alike. */
export type FirmwareChain = Pick<BootPolicy, 'bootFor'>;

export interface DefaultBootPolicyOptions {
  /** Address clients reach TFTP and HTTP on (the served interface's address). */
  serverIp: string;
  /** HTTP port of the boot server; 80 is left out of URLs. */
  httpPort?: number;
  /** UEFI x64 loader: ipxe.efi carries its own NIC drivers, snponly.efi uses the firmware's. */
  uefiLoader?: 'ipxe.efi' | 'snponly.efi';
  /** TFTP file for UEFI x64 PXE firmware when not uefiLoader: shimx64.efi for the signed chain (HTTP Boot keeps uefiLoader). */
  uefiPxeFile?: string;
  /** HTTP Boot file for UEFI x64 when not uefiLoader: the lab-signed phase-1 image. */
  uefiHttpFile?: string;
  /** TFTP file for BIOS PXE ROMs (default undionly.kpxe). */
  biosFile?: string;
  /** TFTP file for UEFI arm64; default none (Debian's ipxe package has no arm64 build: such clients get no boot offer). */
  arm64File?: string;
  /** TFTP file for 32-bit UEFI; default none (such clients get no boot offer). */
  ia32File?: string;
  /** Path of the iPXE script on the HTTP server (default /boot.ipxe). */
  scriptPath?: string;
}

/** The architecture rule alone (no allow-list): ServerBootPolicy asks it once a MAC may boot. */
export class DefaultBootPolicy implements FirmwareChain {
  readonly #o: Required<
    Omit<DefaultBootPolicyOptions, 'ia32File' | 'arm64File' | 'uefiPxeFile' | 'uefiHttpFile'>
  > & {
    ia32File?: string;
    arm64File?: string;
    uefiPxeFile?: string;
    uefiHttpFile?: string;
  };

  constructor(options: DefaultBootPolicyOptions) {
    this.#o = {
      httpPort: 80,
      uefiLoader: 'ipxe.efi',
      biosFile: 'undionly.kpxe',
      scriptPath: '/boot.ipxe',
      ...options,
    };
  }

  /** "http://10.0.0.1" or "http://10.0.0.1:8080" followed by `path`. */
  httpUrl(path: string): string {
    const port = this.#o.httpPort === 80 ? '' : `:${this.#o.httpPort}`;
    return `http://${this.#o.serverIp}${port}${path.startsWith('/') ? path : `/${path}`}`;
  }

  bootFor(client: BootClient): BootDecision | undefined {
    const o = this.#o;
    if (client.ipxe) return { kind: 'ipxe-script', url: this.httpUrl(`${o.scriptPath}?mac=\${mac}`) };
    const tftp = (file: string): BootDecision => ({ kind: 'tftp', nextServer: o.serverIp, file });
    switch (client.arch) {
      case 'bios':
        return tftp(o.biosFile);
      case 'uefi-x64':
        return tftp(o.uefiPxeFile ?? o.uefiLoader);
      case 'uefi-arm64':
        return o.arm64File ? tftp(o.arm64File) : undefined;
      case 'uefi-x64-http':
        return { kind: 'http', url: this.httpUrl(o.uefiHttpFile ?? o.uefiLoader) };
      case 'uefi-arm64-http':
        return o.arm64File ? { kind: 'http', url: this.httpUrl(o.arm64File) } : undefined;
      case 'uefi-ia32':
        return o.ia32File ? tftp(o.ia32File) : undefined;
      case 'unknown':
        return undefined;
    }
  }

  /**
   * Why a firmware client gets no boot offer, when the reason is its
   * architecture (undefined when bootFor offers it one). `codes` are its
   * DHCP option 93 values, named in the reason.
   */
  unservedArch(client: BootClient, codes: readonly number[] = []): string | undefined {
    if (this.bootFor(client)) return undefined;
    const code = codes.length > 0 ? ` (client architecture ${codes.join(',')})` : '';
    switch (client.arch) {
      case 'uefi-arm64':
      case 'uefi-arm64-http':
        return `architecture not served: ARM64 UEFI${code}; the iPXE folder has no ARM64 build (ipxe-arm64.efi)`;
      case 'uefi-ia32':
        return `architecture not served: 32-bit UEFI${code}; the iPXE folder has no 32-bit UEFI build`;
      default:
        return `architecture not served: unknown firmware${code}; BootTorrent serves BIOS and x64 UEFI (PXE and HTTP Boot)`;
    }
  }
}

/** The phase-1 files, as served at `<publicUrl>/phase1/`. */
export interface PhaseOneFileNames {
  readonly kernel: string;
  readonly initrds: readonly string[];
  readonly cmdline: string;
  /**
   * Phase 1 served by peers (#16): iPXE loads the kernel and this small
   * stage 0 from the server; stage 0 fetches the payload (initrds[0], the
   * full initramfs) from where payloadSourceFor says and checks its SHA-256.
   */
  readonly stage0?: {
    readonly file: string;
    readonly payloadSha256: string;
    /** The payload's block list (phase1-blocks.ts) and its SHA-256, which rides on the command line. */
    readonly blocks: string;
    readonly blocksSha256: string;
    /** `boottorrent.hold=...`: the agent may fetch and serve the kernel and stage 0 (phase1-loader.ts). */
    readonly hold?: string;
  };
  /** URL path (below publicUrl) of the GRUB loader iPXE chains on UEFI (phase1-loader.ts). */
  readonly grubEfi?: string;
  /** URL path (below publicUrl) of the server-key archive, loaded after the initramfs (signing.ts). */
  readonly keyArchive?: string;
}

export interface ServerBootPolicyOptions extends DefaultBootPolicyOptions {
  /** URL clients reach the boot HTTP server at, e.g. http://10.0.0.1 (no trailing slash). */
  publicUrl: string;
  phase1: PhaseOneFileNames;
  /** MACs allowed to boot (lower-case colon form); all when absent. */
  allowMacs?: readonly string[];
}

export interface ServerBootPolicyServices {
  /**
   * The boot config of an allowed MAC as asked by `client` (its IP); the
   * server builds it from the environment and the OS catalog. Without it,
   * every boot config is refused.
   */
  bootConfig?: (mac: string, client: string) => BootConfig | Promise<BootConfig>;
  /** Where a stage 0 fetches the payload (src/server/phase1-sources.ts); required with phase1.stage0. */
  payloadSource?: (
    mac: string,
    client: string,
    failed?: PayloadFailure,
    progress?: PayloadProgress,
  ) => PayloadSource;
}

const NOT_ALLOWED = 'this MAC is not in the list of machines allowed to boot here';

/** Every answer about one MAC, refused alike for a MAC outside the allow-list. */
export class ServerBootPolicy implements BootPolicy {
  readonly #o: ServerBootPolicyOptions;
  readonly #chain: DefaultBootPolicy;
  readonly #bootConfig: ServerBootPolicyServices['bootConfig'];
  readonly #payloadSource: ServerBootPolicyServices['payloadSource'];

  constructor(options: ServerBootPolicyOptions, services: ServerBootPolicyServices = {}) {
    this.#o = options;
    this.#chain = new DefaultBootPolicy(options);
    this.#bootConfig = services.bootConfig;
    this.#payloadSource = services.payloadSource;
  }

  /** The URL of a phase-1 file on this server, with ?mac= so the server can tell who fetches it. */
  phaseOneFileUrl(name: string, mac: string): string {
    return `${this.#o.publicUrl}/phase1/${encodeURIComponent(name)}?mac=${mac}`;
  }

  #allowed(mac: string): boolean {
    return !this.#o.allowMacs || this.#o.allowMacs.includes(mac);
  }

  bootFor(client: BootClient): BootDecision | undefined {
    return this.#allowed(client.mac) ? this.#chain.bootFor(client) : undefined;
  }

  /** Why an allowed firmware client gets no boot offer (DefaultBootPolicy.unservedArch); undefined for a MAC not allowed. */
  unservedArch(client: BootClient, codes: readonly number[] = []): string | undefined {
    return this.#allowed(client.mac) ? this.#chain.unservedArch(client, codes) : undefined;
  }

  /**
   * Which phase-1 files a client loads, in order, and the command line:
   * the kernel, then the initramfs (or stage 0 with its payload's hashes
   * when peers serve phase 1), then the server's key, which must come last
   * (the kernel unpacks every archive in turn into one root). `file` names a
   * file of the phase-1 folder as the loader fetches it.
   */
  #layout(file: (name: string) => string, key: readonly string[]) {
    const p = this.#o.phase1;
    if (p.stage0 && this.#payloadSource)
      return {
        kernel: file(p.kernel),
        initrds: [file(p.stage0.file), ...key],
        cmdline:
          `${p.cmdline} boottorrent.payload=${p.stage0.payloadSha256} boottorrent.blocks=${p.stage0.blocksSha256}${p.stage0.hold ? ` ${p.stage0.hold}` : ''}`.trim(),
      };
    return { kernel: file(p.kernel), initrds: [...p.initrds.map(file), ...key], cmdline: p.cmdline };
  }

  phaseOneFor(mac: string): PhaseOneImage | BootRefusal {
    if (!this.#allowed(mac)) return { refused: NOT_ALLOWED };
    const keyPath = this.#o.phase1.keyArchive;
    // ?mac= lets the server tell which client fetches phase 1 (file serving ignores it).
    const l = this.#layout(
      (name) => this.phaseOneFileUrl(name, mac),
      keyPath ? [`${this.#o.publicUrl}${keyPath}?mac=${mac}`] : [],
    );
    const grub = this.#o.phase1.grubEfi;
    return {
      kernelUrl: l.kernel,
      initrdUrls: l.initrds,
      cmdline: l.cmdline,
      ...(grub && this.#payloadSource ? { grubEfiUrl: `${this.#o.publicUrl}${grub}` } : {}),
    };
  }

  /**
   * Phase 1 as the signed chain's GRUB loads it (src/boot/grub.ts): TFTP
   * paths of the same files phaseOneFor names, for every allowed machine.
   */
  grubPhaseOne(): GrubPhaseOne {
    const keyPath = this.#o.phase1.keyArchive;
    return {
      ...this.#layout((name) => `/phase1/${name}`, keyPath ? [keyPath] : []),
      serverUrl: this.#o.publicUrl,
    };
  }

  payloadSourceFor(
    mac: string,
    client: string,
    failed?: PayloadFailure,
    progress?: PayloadProgress,
  ): PayloadSource | BootRefusal {
    if (!this.#allowed(mac)) return { refused: NOT_ALLOWED };
    if (!this.#o.phase1.stage0 || !this.#payloadSource)
      return { refused: 'phase 1 is not served by peers on this server' };
    return this.#payloadSource(mac, client, failed, progress);
  }

  payloadBlocks(): string | undefined {
    return this.#payloadSource ? this.#o.phase1.stage0?.blocks : undefined;
  }

  bootConfigFor(mac: string, client: string): BootConfig | undefined | Promise<BootConfig | undefined> {
    if (!this.#allowed(mac)) return undefined;
    return this.#bootConfig?.(mac, client);
  }
}
