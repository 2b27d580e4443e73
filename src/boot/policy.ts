/**
 * BootPolicy (STYLE.md lesson 3): the one interface that answers every
 * question about a client, by MAC: which firmware file DHCP offers, which
 * phase-1 image /boot.ipxe loads, which boot config /api/v1/boot/<mac>
 * returns, or why the machine is refused. DHCP and HTTP import only this
 * module (it sits below dhcp/ and http/ and imports neither); the
 * implementation that knows the environment and the OS catalog lives in
 * src/server/boot-policy.ts and is handed to them.
 */
import type { BootConfig } from '../boot-config.js';

/** The architectures a BootPolicy distinguishes (from DHCP option 93 and 60; src/dhcp/codec.ts archFromCode). */
export type BootArch =
  'bios' | 'uefi-x64' | 'uefi-x64-http' | 'uefi-arm64' | 'uefi-arm64-http' | 'uefi-ia32' | 'unknown';

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

/** The phase-1 image an iPXE script loads (src/http/ipxe.ts writes the script). */
export interface PhaseOneImage {
  /** Absolute URL of the kernel. */
  readonly kernelUrl: string;
  /** Absolute URLs of the initramfs parts, loaded in order. */
  readonly initrdUrls: readonly string[];
  /** Kernel command line (without the boottorrent.* parameters, which are added). */
  readonly cmdline: string;
  /**
   * A GRUB that UEFI clients chain first (src/server/phase1-loader.ts): it
   * loads phase 1 checking signatures, or returns to iPXE, which then
   * loads the files above.
   */
  readonly grubEfiUrl?: string;
}

/**
 * Where stage 0 fetches the phase-1 payload (#16): a URL (another client's
 * agent, or the server), or "ask again in `seconds`".
 */
export type PayloadSource =
  { readonly kind: 'get'; readonly url: string } | { readonly kind: 'wait'; readonly seconds: number };

/**
 * What a stage 0 says of its own fetch: it serves the blocks it has checked
 * (`have`) on `port`; `heartbeat`: it only says so, it needs no source now.
 */
export interface PayloadProgress {
  readonly port?: number;
  readonly have: number;
  readonly heartbeat: boolean;
}

/** What stage 0 says about the source it tried last: it did not answer, or sent a wrong payload. */
export interface PayloadFailure {
  readonly url: string;
  /** gone: no answer; bad: a block or payload that is not the server's; slow: it answers but had nothing new for a while. */
  readonly why: 'gone' | 'bad' | 'slow';
}

/**
 * The source a client says it tried last, from `failed=` and `why=` of its
 * question (stage 0's, or a holder agent's); undefined when absent or not
 * of that form.
 */
export function payloadFailure(params: URLSearchParams): PayloadFailure | undefined {
  const url = params.get('failed');
  const why = params.get('why');
  return url && url.length <= 512 && (why === 'gone' || why === 'bad' || why === 'slow')
    ? { url, why }
    : undefined;
}

/** Why a MAC may not boot here; shown on the client's screen by the refusal script. */
export interface BootRefusal {
  readonly refused: string;
}

/** Every decision about one client. Each answer depends on the MAC alone (plus what the question carries). */
export interface BootPolicy {
  /** The DHCP boot offer for this client, or undefined: "offer no boot to this MAC". */
  bootFor(client: BootClient): BootDecision | undefined;
  /** Phase 1 for this MAC, or why it may not boot. */
  phaseOneFor(mac: string): PhaseOneImage | BootRefusal;
  /**
   * The agent's boot configuration, or undefined if refused; `client` is the
   * requester's IP, which decides whether the config carries the MAC's
   * report token.
   */
  bootConfigFor(mac: string, client: string): BootConfig | undefined | Promise<BootConfig | undefined>;
  /**
   * Where this MAC's stage 0, asking from `client`, fetches the phase-1
   * payload now. Only when phase 1 is served by peers; absent otherwise.
   */
  payloadSourceFor?(
    mac: string,
    client: string,
    failed?: PayloadFailure,
    progress?: PayloadProgress,
  ): PayloadSource | BootRefusal;
  /** The payload's block list (one SHA-256 per block) that stage 0 checks relayed blocks against. */
  payloadBlocks?(): string | undefined;
}
