/**
 * One QEMU client of the virtual lab: PXE boot from a tap device (SeaBIOS
 * and the NIC's iPXE ROM, or OVMF), TCG (nested KVM hangs on the machines
 * this was built on), serial console to a log file and, for tests that type
 * into the menu, a Unix socket.
 */
import { connect, type Socket } from 'node:net';
import { readFileSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { join } from 'node:path';
import type { LabProcess, NetLab } from './lab.js';

export interface VmOptions {
  readonly name: string;
  readonly mac: string;
  /** Folder for the serial log and socket. */
  readonly dir: string;
  readonly memoryMb?: number;
  readonly firmware?: 'bios' | 'uefi';
  /** Path of qemu-system-x86_64. */
  readonly qemu: string;
  /** Open a socket so tests can type on the serial console. */
  readonly interactive?: boolean;
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
      '-no-reboot',
      '-boot',
      'n',
      ...(options.firmware === 'uefi' ? ['-bios', '/usr/share/ovmf/OVMF.fd'] : []),
      '-netdev',
      `tap,id=n0,ifname=${tap},script=no,downscript=no`,
      '-device',
      `virtio-net-pci,netdev=n0,mac=${options.mac}`,
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

  close(): void {
    this.sock?.destroy();
    this.sock = undefined;
    if (!this.exited) this.process.child.kill('SIGKILL');
  }
}
