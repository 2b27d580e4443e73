/**
 * BootPolicy (STYLE.md lesson 3): the one place that decides what a machine
 * boots. DHCP (and later TFTP, HTTP and the client API) only ask it; they
 * never look at architectures or MAC lists themselves.
 *
 * The boot chain DefaultBootPolicy implements:
 *   BIOS PXE ROM          -> TFTP undionly.kpxe   (iPXE using the ROM's UNDI driver)
 *   UEFI x64 PXE          -> TFTP ipxe.efi        (or snponly.efi: iPXE on the firmware's SNP driver)
 *   UEFI arm64 PXE        -> TFTP ipxe-arm64.efi  (configurable)
 *   UEFI HTTP Boot        -> http://server/<loader> (DHCP echoes vendor class "HTTPClient")
 *   iPXE (any arch)       -> http://server/boot.ipxe?mac=${mac}
 * The last rule is what breaks the chainload loop: iPXE loaded over TFTP
 * asks DHCP again and must get a script, not itself.
 */

import type { BootArch } from '../dhcp/codec.js';

/** What DHCP knows about a client when it asks the policy. */
export interface BootClient {
  /** Lower-case "aa:bb:cc:dd:ee:ff". */
  mac: string;
  arch: BootArch;
  /** The request came from iPXE (user class "iPXE" or option 175). */
  ipxe: boolean;
  vendorClass?: string;
  userClass?: readonly string[];
}

/**
 * What DHCP sends. `tftp`: boot file over TFTP from `nextServer` (siaddr).
 * `http`: a URL for UEFI HTTP Boot firmware. `ipxe-script`: a URL iPXE
 * fetches itself (iPXE expands `${...}` settings in it).
 */
export type BootDecision =
  | { kind: 'tftp'; nextServer: string; file: string }
  | { kind: 'http'; url: string }
  | { kind: 'ipxe-script'; url: string };

export interface BootPolicy {
  /** The boot offer for this client, or undefined: "offer no boot to this MAC". */
  bootFor(client: BootClient): BootDecision | undefined;
}

export interface DefaultBootPolicyOptions {
  /** Address clients reach TFTP and HTTP on (the served interface's address). */
  serverIp: string;
  /** HTTP port of the boot server; 80 is left out of URLs. */
  httpPort?: number;
  /** UEFI x64 loader: ipxe.efi carries its own NIC drivers, snponly.efi uses the firmware's. */
  uefiLoader?: 'ipxe.efi' | 'snponly.efi';
  /** TFTP file for BIOS PXE ROMs (default undionly.kpxe). */
  biosFile?: string;
  /** TFTP file for UEFI arm64 (default ipxe-arm64.efi). */
  arm64File?: string;
  /** TFTP file for 32-bit UEFI; default none (such clients get no boot offer). */
  ia32File?: string;
  /** Path of the iPXE script on the HTTP server (default /boot.ipxe). */
  scriptPath?: string;
}

export class DefaultBootPolicy implements BootPolicy {
  readonly #o: Required<Omit<DefaultBootPolicyOptions, 'ia32File'>> & { ia32File?: string };

  constructor(options: DefaultBootPolicyOptions) {
    this.#o = {
      httpPort: 80,
      uefiLoader: 'ipxe.efi',
      biosFile: 'undionly.kpxe',
      arm64File: 'ipxe-arm64.efi',
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
        return tftp(o.uefiLoader);
      case 'uefi-arm64':
        return tftp(o.arm64File);
      case 'uefi-x64-http':
        return { kind: 'http', url: this.httpUrl(o.uefiLoader) };
      case 'uefi-arm64-http':
        return { kind: 'http', url: this.httpUrl(o.arm64File) };
      case 'uefi-ia32':
        return o.ia32File ? tftp(o.ia32File) : undefined;
      case 'unknown':
        return undefined;
    }
  }
}
