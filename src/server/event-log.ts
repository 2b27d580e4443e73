/**
 * `start`'s log of clients: one readable line per stage a client reaches,
 * and its download at 25, 50 and 75 %. Text a client reported (its OS id,
 * its error) goes in fields, never into the message (issue #14 item 7).
 */
import { LineBudget } from '../util/drop-log.js';
import type { Logger } from '../util/logger.js';
import type { ClientStore } from './state.js';

/** Logs the store's client events on `log` from now on. */
export function logClientEvents(
  store: ClientStore,
  log: Logger,
  nameOf: (mac: string) => string | null = () => null,
): void {
  // 'asked DHCP' lines: anyone can send DISCOVERs from made-up MACs by the thousand.
  const dhcpLines = new LineBudget(log);
  // Progress quarter last logged per client, so the log says 25/50/75 % once each.
  const loggedQuarter = new Map<string, number>();
  store.on('stage', (c, previous) => {
    // A name comes from the environment (validated: letters, digits, '-', '_', '.'), never from a client.
    const name = nameOf(c.mac);
    const who = `client ${name ? `${name} (${c.mac}${c.ip ? `, ${c.ip}` : ''})` : `${c.mac}${c.ip ? ` (${c.ip})` : ''}`}`;
    switch (c.stage) {
      case 'dhcp':
        if (previous === null || c.ip)
          dhcpLines.info(`${who} asked DHCP${c.firmware ? ` (${c.firmware})` : ''}`);
        break;
      case 'ipxe':
        log.info(`${who} runs iPXE: sending phase 1`);
        break;
      case 'phase1':
        log.info(`${who} loads phase 1`);
        break;
      case 'menu':
        log.info(`${who} shows the menu`);
        break;
      case 'downloading':
        loggedQuarter.set(c.mac, 0);
        log.info(`${who} chose an OS: downloading`, { os: c.os ?? '?' });
        break;
      case 'seeding':
        log.info(`${who} verified its OS; seeding before it boots`, { os: c.os ?? '?' });
        break;
      case 'booting':
        log.info(`${who} boots after ${c.bootSeconds?.toFixed(1) ?? '?'} s`, { os: c.os ?? '?' });
        break;
      case 'running':
        log.info(`${who} runs its OS`, { os: c.os ?? '?' });
        break;
      case 'failed':
        // Straight after DHCP it is the firmware's (an architecture not
        // served): anyone can send those by the thousand, so budgeted.
        if (previous === 'dhcp') dhcpLines.warn(`${who} failed`, { error: c.error ?? 'no reason given' });
        else log.warn(`${who} failed`, { error: c.error ?? 'no reason given' });
        break;
      default:
        log.debug(`${who} ${c.stage}`);
    }
  });
  store.on('change', (c) => {
    if (c.stage !== 'downloading') return;
    const q = Math.floor(c.progress * 4);
    if (q > (loggedQuarter.get(c.mac) ?? 0) && q < 4) {
      loggedQuarter.set(c.mac, q);
      log.info(`client ${nameOf(c.mac) ?? c.mac} ${q * 25} % (${c.peers} peers)`, { os: c.os ?? '?' });
    }
  });
}
