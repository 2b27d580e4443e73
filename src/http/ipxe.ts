/**
 * iPXE boot scripts (pure). The script loads the phase-1 kernel and
 * initramfs over HTTP and passes the server's URL and the client's MAC on
 * the kernel command line, so the agent knows where to ask for its menu.
 * A failed download shows a message and retries, rather than dropping the
 * machine to the firmware's "no bootable device".
 */
import { BootTorrentError } from '../errors.js';
import type { PhaseOneImage } from '../boot/policy.js';

export type { PhaseOneImage };

/**
 * iPXE reads a script line by line and expands ${...} everywhere, with no
 * escape: a value that holds a newline or "${" would change the script.
 */
function inert(s: string, what: string): string {
  if (/[\r\n]/.test(s))
    throw new BootTorrentError('BT_ERR_CONFIG_FIELD', `${what} must be one line: ${JSON.stringify(s)}`);
  if (s.includes('${')) {
    throw new BootTorrentError(
      'BT_ERR_CONFIG_FIELD',
      `${what} must not contain "\${" (iPXE would expand it): ${JSON.stringify(s)}`,
    );
  }
  return s;
}

export interface ScriptInput {
  readonly mac: string;
  readonly image: PhaseOneImage;
  /** Base URL of our server, e.g. http://10.0.0.1:8080 (passed to the agent). */
  readonly serverUrl: string;
  /** URL of this script, fetched again to retry after a failure. */
  readonly scriptUrl: string;
}

export function phaseOneScript(input: ScriptInput): string {
  const { image } = input;
  const names = image.initrdUrls.map((_, i) => `initrd${i}`);
  const args = [
    ...names.map((n) => `initrd=${n}`),
    image.cmdline,
    `boottorrent.server=${input.serverUrl}`,
    `boottorrent.mac=${input.mac}`,
  ]
    .filter((a) => a !== '')
    .map((a) => inert(a, 'kernel command line'))
    .join(' ');
  return [
    '#!ipxe',
    // UEFI: GRUB checks each file's signature, so it may load phase 1 from
    // peers; when it returns (no good config), iPXE goes on as before.
    ...(image.grubEfiUrl
      ? [`iseq \${platform} efi && chain --autofree ${inert(image.grubEfiUrl, 'GRUB URL')} ||`]
      : []),
    `echo BootTorrent: loading phase 1 for ${input.mac}`,
    `kernel ${inert(image.kernelUrl, 'kernel URL')} ${args} || goto failed`,
    ...image.initrdUrls.map((u, i) => `initrd --name ${names[i]} ${inert(u, 'initrd URL')} || goto failed`),
    'boot || goto failed',
    ':failed',
    'echo BootTorrent: could not load phase 1 from the server; retrying in 10 seconds',
    'sleep 10',
    `chain --replace ${inert(input.scriptUrl, 'script URL')}`,
    '',
  ].join('\n');
}

/** A script that explains why this machine gets nothing, then exits to the firmware. */
export function refusalScript(mac: string, reason: string): string {
  return [
    '#!ipxe',
    `echo BootTorrent: ${inert(mac, 'mac')}: ${inert(reason, 'reason')}`,
    'sleep 30',
    'exit 1',
    '',
  ].join('\n');
}
