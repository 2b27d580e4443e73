import type { TestContext } from 'node:test';
import { NetnsLab, waitForOutput, type LabProcess } from '../../src/util/netns.js';
import { onProcessEnd } from './reaper.js';

export { waitForOutput };

/**
 * Removes `lab` when the test ends, pass or fail, and when the runner kills
 * the test file (its per-file timeout: no `t.after` runs then, see
 * reaper.ts). Returns the lab.
 */
export function removedWithTest<L extends { destroy(): void }>(t: TestContext, lab: L): L {
  const forget = onProcessEnd(() => lab.destroy());
  t.after(() => {
    lab.destroy();
    forget();
  });
  return lab;
}

/**
 * A throwaway LAN in network namespaces for a test: the one namespace lab
 * (src/util/netns.ts), removed with the test (removedWithTest).
 */
export class Lab {
  private readonly lab = new NetnsLab();

  constructor(t: TestContext) {
    removedWithTest(t, this.lab);
  }

  get id(): string {
    return this.lab.id;
  }

  /** A new namespace with loopback up; returns its name. */
  ns(role: string): string {
    return this.lab.ns(role);
  }

  ip(ns: string, ...args: string[]): string {
    return this.lab.ip(ns, ...args);
  }

  /** A bridge in `ns` holding `address` (CIDR). */
  bridge(ns: string, name: string, address: string): void {
    this.lab.bridge(ns, name, address);
  }

  /** A tap device on `bridge` for a VM. */
  tap(ns: string, name: string, bridge: string): void {
    this.lab.tap(ns, name, bridge);
  }

  /** A veth from `bridge` in `ns` to `otherNs`, where its end gets `address` (CIDR). */
  link(ns: string, bridge: string, otherNs: string, ifname: string, address: string): void {
    this.lab.veth(ns, bridge, otherNs, ifname, address);
  }

  /** Starts a process inside `ns`; it is killed (by PID) when the test ends. */
  spawn(ns: string, cmd: string, args: string[]): LabProcess {
    return this.lab.spawn(ns, cmd, args);
  }

  destroy(): void {
    this.lab.destroy();
  }
}
