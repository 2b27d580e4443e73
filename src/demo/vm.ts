/**
 * One QEMU client of the virtual lab: PXE boot from a tap device (SeaBIOS
 * and the NIC's iPXE ROM, or OVMF), TCG (nested KVM hangs on the machines
 * this was built on), serial console to a log file and, for tests that type
 * into the menu, a Unix socket.
 */
import { connect, type Socket } from 'node:net';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import type { LabProcess, NetLab } from './lab.js';

export type VmFirmware = 'bios' | 'uefi' | 'uefi-secureboot' | 'uefi-secureboot-lab';

export interface VmOptions {
  readonly name: string;
  readonly mac: string;
  /** Folder for the serial log and socket. */
  readonly dir: string;
  readonly memoryMb?: number;
  /**
   * uefi-secureboot: OVMF's Secure Boot build with Microsoft's keys enrolled,
   * as shop PCs ship; uefi-secureboot-lab: the same with Debian's snakeoil
   * key as the only db key, standing in for a lab's own key.
   */
  readonly firmware?: VmFirmware;
  /** Path of qemu-system-x86_64. */
  readonly qemu: string;
  /** Open a socket so tests can type on the serial console. */
  readonly interactive?: boolean;
  /** Open a QMP socket (screendump, send-key), for tests that look at the screen. */
  readonly qmp?: boolean;
}

export class LabVm {
  readonly serialLog: string;
  readonly socketPath: string;
  readonly process: LabProcess;
  private sock: Socket | undefined;

  constructor(
    lab: NetLab,
    readonly options: VmOptions,
  ) {
    const tap = `tap-${options.name}`.slice(0, 15);
    lab.tap(tap);
    this.serialLog = join(options.dir, `${options.name}.serial`);
    this.socketPath = join(options.dir, `${options.name}.sock`);
    writeFileSync(this.serialLog, '');
    const serial = options.interactive
      ? [
          '-chardev',
          `socket,id=s0,path=${this.socketPath},server=on,wait=off,logfile=${this.serialLog}`,
          '-serial',
          'chardev:s0',
        ]
      : ['-serial', `file:${this.serialLog}`];
    this.process = lab.spawn(options.qemu, [
      '-accel',
      'tcg',
      '-m',
      String(options.memoryMb ?? 768),
      '-display',
      'none',
      '-monitor',
      'none',
      ...serial,
      ...(options.qmp ? ['-qmp', `unix:${join(options.dir, `${options.name}.qmp`)},server=on,wait=off`] : []),
      '-no-reboot',
      '-boot',
      'n',
      ...(options.firmware === 'uefi' ? ['-bios', '/usr/share/ovmf/OVMF.fd'] : []),
      ...(options.firmware === 'uefi-secureboot' || options.firmware === 'uefi-secureboot-lab'
        ? secureBootFirmware(
            options.dir,
            options.name,
            options.firmware === 'uefi-secureboot-lab' ? 'lab' : 'ms',
          )
        : []),
      '-netdev',
      `tap,id=n0,ifname=${tap},script=no,downscript=no`,
      '-device',
      // Under Secure Boot the NIC's iPXE option ROM (unsigned) would be refused: OVMF's own driver.
      `virtio-net-pci,netdev=n0,mac=${options.mac}${options.firmware?.startsWith('uefi-secureboot') ? ',romfile=' : ''}`,
    ]);
  }

  serial(): string {
    try {
      return readFileSync(this.serialLog, 'latin1');
    } catch {
      return '';
    }
  }

  get exited(): boolean {
    return this.process.child.exitCode !== null || this.process.child.signalCode !== null;
  }

  /** Types on the serial console (interactive VMs only). */
  async type(text: string): Promise<void> {
    if (!this.sock) {
      const s = connect(this.socketPath);
      await once(s, 'connect');
      s.on('data', () => undefined); // output is in the log file
      s.on('error', () => undefined);
      this.sock = s;
    }
    this.sock.write(text);
  }

  /** Waits until the serial console matches `re`; rejects if QEMU exits first or on timeout. */
  async waitFor(re: RegExp, ms: number, signal?: AbortSignal): Promise<RegExpMatchArray> {
    const deadline = Date.now() + ms;
    for (;;) {
      const m = re.exec(this.serial());
      if (m) return m;
      if (signal?.aborted) throw new Error(`${this.options.name}: interrupted`);
      if (this.exited)
        throw new Error(`${this.options.name} exited before ${re}; serial:\n${this.serial().slice(-3000)}`);
      if (Date.now() > deadline)
        throw new Error(
          `${this.options.name}: no ${re} within ${ms / 1000} s; serial:\n${this.serial().slice(-3000)}`,
        );
      await new Promise((r) => setTimeout(r, 300));
    }
  }

  /**
   * Runs one QMP command (the VM must have been made with `qmp`) and
   * resolves with its `return`; rejects with QMP's error or after `ms`.
   */
  async qmp(command: string, args?: Record<string, unknown>, ms = 30_000): Promise<unknown> {
    const sock = connect(join(this.options.dir, `${this.options.name}.qmp`));
    try {
      let buf = '';
      const replies: Record<string, unknown>[] = [];
      let wake: (() => void) | undefined;
      sock.on('data', (d: Buffer) => {
        buf += d.toString('utf8');
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (line) replies.push(JSON.parse(line) as Record<string, unknown>);
          wake?.();
        }
      });
      sock.on('error', () => wake?.());
      const deadline = Date.now() + ms;
      const next = async (): Promise<Record<string, unknown>> => {
        for (;;) {
          const i = replies.findIndex((r) => 'QMP' in r || 'return' in r || 'error' in r);
          if (i >= 0) return replies.splice(i, 1)[0]!;
          if (Date.now() > deadline || sock.destroyed)
            throw new Error(`${this.options.name}: QMP ${command}: no answer`);
          await new Promise<void>((r) => {
            wake = r;
            setTimeout(r, 200);
          });
        }
      };
      await once(sock, 'connect');
      await next(); // the greeting
      sock.write(`${JSON.stringify({ execute: 'qmp_capabilities' })}\n`);
      await next();
      sock.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}) })}\n`);
      const reply = await next();
      if ('error' in reply)
        throw new Error(`${this.options.name}: QMP ${command}: ${JSON.stringify(reply.error)}`);
      return reply.return;
    } finally {
      sock.destroy();
    }
  }

  close(): void {
    this.sock?.destroy();
    this.sock = undefined;
    if (!this.exited) this.process.child.kill('SIGKILL');
  }
}

/** Debian's test key in OVMF_VARS_4M.snakeoil.fd (PK, KEK and db), and its certificate; the key's passphrase is 'snakeoil'. */
export const SNAKEOIL = {
  key: '/usr/share/ovmf/PkKek-1-snakeoil.key',
  cert: '/usr/share/ovmf/PkKek-1-snakeoil.pem',
  passphrase: 'snakeoil',
} as const;

/**
 * OVMF with Secure Boot enforced: the SMM build (q35, SMM on, flash writes
 * only from SMM) and a private copy of the variable store with Microsoft's
 * keys enrolled (Debian's OVMF_VARS_4M.ms.fd), or with the snakeoil key as
 * a lab's (OVMF_VARS_4M.snakeoil.fd).
 */
export function secureBootFirmware(dir: string, name: string, keys: 'ms' | 'lab' = 'ms'): string[] {
  const vars = join(dir, `${name}.vars.fd`);
  copyFileSync(`/usr/share/OVMF/OVMF_VARS_4M.${keys === 'ms' ? 'ms' : 'snakeoil'}.fd`, vars);
  return [
    '-machine',
    'q35,smm=on',
    '-global',
    'driver=cfi.pflash01,property=secure,value=on',
    '-drive',
    'if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd',
    '-drive',
    `if=pflash,format=raw,unit=1,file=${vars}`,
  ];
}
