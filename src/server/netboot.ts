/**
 * Phase 1 of a boot, served from one process: DHCP (full or proxy), TFTP
 * with the iPXE binaries, and HTTP with the per-MAC iPXE script and the
 * phase-1 kernel and initramfs. Everything binds first; the first listener
 * that fails closes the rest (STYLE.md lesson 4).
 */
import { access, readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import {
  GRUB_CONFIG_NAME,
  GRUB_NAME,
  MOK_MANAGER_NAME,
  SHIM_NAME,
  SIGNED_CHAIN_FILES,
  SIGNED_CHAIN_PACKAGES,
  grubConfig,
  peHasSignature,
  type UefiChain,
} from '../boot/grub.js';
import { UKI_NAME } from '../boot/uki.js';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { BootTorrentError } from '../errors.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { DhcpServer, type DhcpServerOptions } from '../dhcp/server.js';
import { TftpServer } from '../tftp/server.js';
import { FixedFileProvider } from '../tftp/files.js';
import { BootHttpServer, type BootHttpOptions, type BootHttpServices } from '../http/server.js';
import type { BootConfig } from '../boot-config.js';
import { ServerBootPolicy, type ServerBootPolicyServices } from './boot-policy.js';

export const DEBIAN_IPXE_DIR = '/usr/lib/ipxe';
/** The iPXE builds firmware may ask for; served by exact name only. */
export const IPXE_FILES = [
  'undionly.kpxe',
  'ipxe.efi',
  'snponly.efi',
  'ipxe.pxe',
  'undionly.kkpxe',
  'ipxe-arm64.efi',
] as const;

export interface PhaseOneFiles {
  /** Folder served at /phase1/. */
  dir: string;
  /** File names in `dir`. */
  kernel: string;
  initrds: readonly string[];
  cmdline: string;
  /** Phase 1 from peers (#16): the stage-0 file in `dir` and the SHA-256 of initrds[0], the payload. */
  stage0?: { file: string; payloadSha256: string; blocks: string; blocksSha256: string; hold?: string };
  /** URL path of the GRUB loader for UEFI clients, chained by boot.ipxe (src/server/phase1-loader.ts). */
  grubEfi?: string;
  /**
   * The cpio archive with this server's boot-config key (signing.ts), loaded
   * by every client after phase 1's initramfs; served at PHASE1_KEY_URL.
   */
  keyArchive?: string;
}

/** Where the key archive is served (its folder is mounted at /phase1-key/). */
export const PHASE1_KEY_URL = '/phase1-key/server-key.cpio';

export interface NetbootOptions {
  /** Interface to serve DHCP on, and its IPv4 address (what clients reach). */
  interface: string;
  serverIp: string;
  dhcp: Omit<DhcpServerOptions, 'interface' | 'serverIp'>;
  /** Folder with undionly.kpxe, ipxe.efi, snponly.efi (default Debian's /usr/lib/ipxe). */
  ipxeDir?: string;
  uefiLoader?: 'ipxe.efi' | 'snponly.efi';
  /** UEFI PXE firmware gets Debian's signed shim and GRUB instead of iPXE (src/boot/grub.ts), or uefiImage. */
  uefiChain?: UefiChain;
  /** With uefiChain uki: the lab-signed phase-1 image (src/boot/uki.ts), for UEFI PXE and HTTP Boot. */
  uefiImage?: string;
  httpPort?: number;
  /** Deadlines and connection caps of the HTTP server (default HTTP_LIMITS). */
  httpLimits?: BootHttpOptions['limits'];
  tftpPort?: number;
  /** Serve TFTP (default true). Off: UDP 69 stays closed; PXE firmware gets iPXE from another TFTP server. */
  tftp?: boolean;
  phase1: PhaseOneFiles;
  /** MACs allowed to boot (lower-case colon form); all when absent. */
  allowMacs?: readonly string[];
  /** The boot config of an allowed MAC as asked by `client` (the server builds it from environment and catalog). */
  bootConfig?: (mac: string, client: string) => BootConfig | Promise<BootConfig>;
  /** Where a stage 0 fetches the payload (with phase1.stage0). */
  payloadSource?: ServerBootPolicyServices['payloadSource'];
  /** Signs each boot config's body (signing.ts): the signature header's value. */
  signConfig?: (body: Buffer) => string;
}

export interface NetbootServices {
  logger?: Logger;
  /** Mounted on the HTTP server for /announce and /scrape. */
  tracker?: { handleHttp(req: IncomingMessage, res: ServerResponse): boolean };
  routes?: BootHttpServices['routes'];
  onBootStep?: BootHttpServices['onBootStep'];
  onListenerError?: BootHttpServices['onListenerError'];
}

export class NetbootServer {
  readonly dhcp: DhcpServer;
  /** Undefined when TFTP is off (NetbootOptions.tftp). */
  readonly tftp: TftpServer | undefined;
  readonly http: BootHttpServer;
  readonly policy: ServerBootPolicy;
  private readonly log: Logger;
  private readonly ipxeDir: string;

  constructor(
    private readonly options: NetbootOptions,
    services: NetbootServices = {},
  ) {
    this.log = services.logger ?? silentLogger;
    this.ipxeDir = options.ipxeDir ?? DEBIAN_IPXE_DIR;
    const httpPort = options.httpPort ?? 80;
    const publicUrl = `http://${options.serverIp}${httpPort === 80 ? '' : `:${httpPort}`}`;
    const policy = new ServerBootPolicy(
      {
        serverIp: options.serverIp,
        httpPort,
        uefiLoader: options.uefiLoader ?? 'ipxe.efi',
        ...(options.uefiChain === 'signed' ? { uefiPxeFile: SHIM_NAME } : {}),
        ...(options.uefiChain === 'uki' && options.uefiImage
          ? { uefiPxeFile: UKI_NAME, uefiHttpFile: UKI_NAME }
          : {}),
        // Offered to ARM64 UEFI only when the folder has a build for it (Debian's ipxe has none).
        ...(existsSync(join(this.ipxeDir, 'ipxe-arm64.efi')) ? { arm64File: 'ipxe-arm64.efi' } : {}),
        publicUrl,
        phase1: {
          ...options.phase1,
          ...(options.phase1.keyArchive ? { keyArchive: PHASE1_KEY_URL } : {}),
        },
        ...(options.allowMacs ? { allowMacs: options.allowMacs } : {}),
      },
      {
        ...(options.bootConfig ? { bootConfig: options.bootConfig } : {}),
        ...(options.payloadSource ? { payloadSource: options.payloadSource } : {}),
      },
    );
    this.policy = policy;
    this.dhcp = new DhcpServer(
      { ...options.dhcp, interface: options.interface, serverIp: options.serverIp },
      { logger: this.log.child('dhcp'), bootPolicy: policy },
    );
    // Debian's ipxe.efi is a symlink into /boot, which a folder served with
    // confinement would refuse: serve the iPXE builds by exact name instead.
    const ipxe: Record<string, string | Buffer> = Object.fromEntries(
      IPXE_FILES.map((f) => [f, join(this.ipxeDir, f)]),
    );
    if (options.uefiChain === 'signed') Object.assign(ipxe, this.signedChainFiles(policy));
    if (options.uefiChain === 'uki' && options.uefiImage) ipxe[UKI_NAME] = options.uefiImage;
    this.tftp =
      options.tftp === false
        ? undefined
        : new TftpServer(
            { host: '0.0.0.0', port: options.tftpPort ?? 69 },
            { logger: this.log.child('tftp'), files: new FixedFileProvider(ipxe) },
          );
    this.http = new BootHttpServer(
      {
        host: '0.0.0.0',
        port: httpPort,
        publicUrl,
        mounts: {
          '/phase1/': options.phase1.dir,
          ...(options.phase1.keyArchive ? { '/phase1-key/': dirname(options.phase1.keyArchive) } : {}),
        },
        // UEFI HTTP Boot gets http://server/<loader> from DHCP.
        files: {
          ...Object.fromEntries(IPXE_FILES.map((f) => [`/${f}`, join(this.ipxeDir, f)])),
          ...(options.uefiChain === 'uki' && options.uefiImage
            ? { [`/${UKI_NAME}`]: options.uefiImage }
            : {}),
        },
        ...(options.httpLimits ? { limits: options.httpLimits } : {}),
      },
      {
        policy,
        logger: this.log,
        ...(services.tracker ? { tracker: services.tracker } : {}),
        ...(services.routes ? { routes: services.routes } : {}),
        ...(services.onBootStep ? { onBootStep: services.onBootStep } : {}),
        ...(services.onListenerError ? { onListenerError: services.onListenerError } : {}),
        ...(options.signConfig ? { signConfig: options.signConfig } : {}),
      },
    );
  }

  /**
   * The signed chain over TFTP: shim, GRUB, GRUB's script (generated here)
   * and the phase-1 files it names, each by exact name.
   */
  private signedChainFiles(policy: ServerBootPolicy): Record<string, string | Buffer> {
    const p = this.options.phase1;
    const files: Record<string, string | Buffer> = {
      [SHIM_NAME]: SIGNED_CHAIN_FILES.shim,
      [GRUB_NAME]: SIGNED_CHAIN_FILES.grub,
      // MokManager: shim runs it from the same folder after `mokutil --import` (a lab key).
      [MOK_MANAGER_NAME]: SIGNED_CHAIN_FILES.mokManager,
      [GRUB_CONFIG_NAME]: Buffer.from(grubConfig(policy.grubPhaseOne())),
    };
    for (const f of [p.kernel, ...p.initrds, ...(p.stage0 ? [p.stage0.file] : [])])
      files[`phase1/${f}`] = join(p.dir, f);
    if (p.keyArchive) files[PHASE1_KEY_URL.slice(1)] = p.keyArchive;
    return files;
  }

  /** Checks the files every client will need, so a missing one fails at start, not at boot. */
  private async checkFiles(): Promise<void> {
    const need = [
      [this.ipxeDir, 'undionly.kpxe', 'apt-get install ipxe (or set the iPXE folder)'],
      [this.ipxeDir, this.options.uefiLoader ?? 'ipxe.efi', 'apt-get install ipxe (or set the iPXE folder)'],
      [this.options.phase1.dir, this.options.phase1.kernel, 'run `boottorrent build-phase1`'],
      ...(this.options.uefiChain === 'signed'
        ? [SIGNED_CHAIN_FILES.shim, SIGNED_CHAIN_FILES.grub].map(
            (f) => [dirname(f), basename(f), `apt-get install ${SIGNED_CHAIN_PACKAGES}`] as const,
          )
        : []),
      ...(this.options.phase1.stage0 ? [this.options.phase1.stage0.file] : []).map((f) => [
        this.options.phase1.dir,
        f,
        'run `boottorrent build-phase1`',
      ]),
      ...this.options.phase1.initrds.map((f) => [
        this.options.phase1.dir,
        f,
        'run `boottorrent build-phase1`',
      ]),
    ] as const;
    for (const [dir, file, fix] of need) {
      try {
        await access(join(dir, file));
      } catch {
        throw new BootTorrentError('BT_ERR_FILE', `${join(dir, file)} is missing: ${fix}`);
      }
    }
    // GRUB under Secure Boot loads only a signed kernel: an unsigned phase 1
    // would leave every Secure Boot client retrying with no word on the server.
    if (this.options.uefiChain === 'signed') {
      const kernel = join(this.options.phase1.dir, this.options.phase1.kernel);
      if (!peHasSignature(await readFile(kernel)))
        throw new BootTorrentError(
          'BT_ERR_FILE',
          `${kernel} is not a signed kernel, and server.uefi_chain is signed: GRUB would refuse it on every Secure Boot client; build phase 1 from Debian's signed kernel (apt-get install linux-image-amd64, then boottorrent build-phase1), or set server.uefi_chain: ipxe`,
        );
    }
  }

  /** Binds DHCP, TFTP and HTTP; if one fails, the others are closed and the error is thrown. */
  async listen(): Promise<void> {
    await this.checkFiles();
    try {
      await this.http.listen();
      await this.tftp?.listen();
      if (this.options.dhcp.mode !== 'off') await this.dhcp.listen();
    } catch (err) {
      await this.close();
      throw err;
    }
    this.log.info('netboot ready', {
      interface: this.options.interface,
      server: this.options.serverIp,
      dhcp: this.options.dhcp.mode,
      tftp: this.tftp ? 'on' : 'off',
    });
  }

  async close(): Promise<void> {
    await Promise.allSettled([this.dhcp.close(), this.tftp?.close(), this.http.close()]);
  }
}
