/**
 * A fixed BootPolicy for unit tests of the servers that ask one (HTTP, DHCP):
 * MACs in `refuse` get no boot, every other MAC the same fixed answers. It
 * passes the same interface-compliance table as the server's own policy
 * (test/unit/boot-policy-compliance.test.ts), so tests that use it see a
 * policy that behaves like the real one.
 */
import { BOOT_CONFIG_VERSION, type BootConfig } from '../../src/boot-config.js';
import type {
  BootClient,
  BootDecision,
  BootPolicy,
  BootRefusal,
  PhaseOneImage,
} from '../../src/boot/policy.js';

/** The smallest valid boot config for `mac` (no OS, boot menu waits 5 s). */
export function fixedBootConfig(mac: string, server = 'http://127.0.0.1'): BootConfig {
  return {
    version: BOOT_CONFIG_VERSION,
    mac,
    server,
    menu: { timeout: 5, default: null },
    seedTime: 0,
    peers: { trackers: [], seeds: [], lsd: false, pex: false },
    reportUrl: `${server}/api/v1/report/${mac}`,
    reportToken: '',
    oss: [],
  };
}

export interface FixedBootPolicyOptions {
  /** MACs refused everything. */
  refuse?: readonly string[];
  /** What refused MACs are told (default "not in the allow-list"). */
  reason?: string;
  /** The phase-1 image of allowed MACs. */
  phaseOne?: PhaseOneImage;
  /** The DHCP offer of allowed MACs (default TFTP ipxe.efi from 127.0.0.1; iPXE gets the script URL). */
  firmware?: (client: BootClient) => BootDecision | undefined;
  /** The boot config of allowed MACs (default fixedBootConfig). */
  bootConfig?: (mac: string) => BootConfig;
}

export class FixedBootPolicy implements BootPolicy {
  constructor(private readonly o: FixedBootPolicyOptions = {}) {}

  #refused(mac: string): boolean {
    return this.o.refuse?.includes(mac) ?? false;
  }

  bootFor(client: BootClient): BootDecision | undefined {
    if (this.#refused(client.mac)) return undefined;
    if (this.o.firmware) return this.o.firmware(client);
    if (client.ipxe) return { kind: 'ipxe-script', url: 'http://127.0.0.1/boot.ipxe?mac=${mac}' };
    // Like the real chain: firmware of an architecture we have no loader for gets no offer.
    if (client.arch === 'unknown') return undefined;
    return { kind: 'tftp', nextServer: '127.0.0.1', file: 'ipxe.efi' };
  }

  phaseOneFor(mac: string): PhaseOneImage | BootRefusal {
    if (this.#refused(mac)) return { refused: this.o.reason ?? 'not in the allow-list' };
    return (
      this.o.phaseOne ?? {
        kernelUrl: 'http://127.0.0.1/phase1/vmlinuz',
        initrdUrls: ['http://127.0.0.1/phase1/initrd.img'],
        cmdline: 'quiet',
      }
    );
  }

  bootConfigFor(mac: string): BootConfig | undefined {
    if (this.#refused(mac)) return undefined;
    return this.o.bootConfig ? this.o.bootConfig(mac) : fixedBootConfig(mac);
  }
}
