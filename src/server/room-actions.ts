/**
 * The dashboard's room actions (issue #17 items 2, 3, 5), behind its
 * Bearer token (src/dashboard/dashboard.ts): `next-boot` sets or clears
 * what machines or groups boot next; `wake` sends Wake-on-LAN from the
 * served interface, optionally setting the next boot first. The CLI's
 * `next-boot` and `wake --next-boot` use the same actions, so the running
 * server is the one place that decides.
 *
 * Bodies (JSON):
 *   next-boot  {"targets": ["pc-07" | "room-b" | "52:54:..."], "os": "exam" | null, "once": true}
 *   wake       {"targets": [...], "spread": 10, "broadcasts": ["10.1.2.255"], "nextBoot": {"os": "exam", "once": true}}
 * A mistake in a body (an unknown name, an OS not served) is a 400 with a
 * message that names it.
 */
import { isIP } from 'node:net';
import { BootTorrentError } from '../errors.js';
import { resolveTarget, targetNames, type Target } from '../env/room.js';
import type { Environment } from '../env/types.js';
import { silentLogger, type Logger } from '../util/logger.js';
import { wake, type WakeTarget } from '../wol/wake.js';
import type { NextBootStore } from './next-boot.js';

export interface RoomActionServices {
  readonly environment: () => Environment;
  readonly nextBoot: NextBootStore;
  /** OS ids the server serves now. */
  readonly osIds: () => readonly string[];
  /** MACs the server has seen (a group's pattern matches them too). */
  readonly knownMacs: () => Iterable<string>;
  readonly logger?: Logger;
  /** Called after a next boot was set or cleared (the dashboard's stream sends a new snapshot). */
  readonly onChange?: () => void;
  /** Aborts wake-ups still spreading out when the server stops. */
  readonly signal?: AbortSignal;
}

/** Most broadcast addresses one wake may add (a relayed subnet each). */
export const MAX_BROADCASTS = 16;

/** Most machines one action may name. */
export const MAX_ACTION_TARGETS = 4096;

const usage = (message: string) => new BootTorrentError('BT_ERR_USAGE', message);

function bodyObject(body: unknown): Record<string, unknown> {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw usage('send a JSON object');
  return body as Record<string, unknown>;
}

function stringList(o: Record<string, unknown>, key: string): string[] {
  const v = o[key];
  if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'string' && x.length <= 64))
    throw usage(`${key}: expected a list of names or MACs`);
  if (v.length > MAX_ACTION_TARGETS) throw usage(`${key}: at most ${MAX_ACTION_TARGETS}`);
  return v as string[];
}

export function roomActions(s: RoomActionServices): Record<string, (body: unknown) => Promise<unknown>> {
  const log = (s.logger ?? silentLogger).child('room');
  /** One wake spreads out at a time (each sends three packets per machine and broadcast address). */
  let waking = false;

  const resolve = (names: readonly string[], clearing = false): Target[] => {
    const env = s.environment();
    return names.map((n) => {
      const t = resolveTarget(env, n, s.knownMacs());
      // A group removed from the environment keeps its entry until it is cleared.
      if (!t && clearing && s.nextBoot.hasGroup(n)) return { kind: 'group', label: n, macs: [] };
      if (!t) {
        const known = targetNames(env);
        throw usage(
          `${n}: not a MAC address, nor the name of a host or group in the environment` +
            (known.length
              ? ` (names: ${known.slice(0, 20).join(', ')}${known.length > 20 ? ', ...' : ''})`
              : ''),
        );
      }
      return t;
    });
  };

  const setNext = async (targets: readonly Target[], os: string | null, once: boolean) => {
    if (os !== null && !s.osIds().includes(os))
      throw usage(`os: '${os}' is not served here (served: ${s.osIds().join(', ') || 'none'})`);
    await s.nextBoot.set(
      targets.map((t) =>
        t.kind === 'group' ? { kind: 'group', key: t.label } : { kind: 'mac', key: t.macs[0]! },
      ),
      os,
      once,
    );
    s.onChange?.();
    log.info(os === null ? 'next boot cleared' : `next boot set${once ? ' (once)' : ''}`, {
      targets: targets.map((t) => t.label).join(','),
      ...(os !== null ? { os } : {}),
    });
    return targets.map((t) => ({ target: t.label, kind: t.kind, os, once }));
  };

  const nextBootOf = (o: Record<string, unknown>, field: string) => {
    if (o.os !== null && typeof o.os !== 'string')
      throw usage(`${field}os: expected an OS id, or null to clear`);
    if (o.once !== undefined && typeof o.once !== 'boolean')
      throw usage(`${field}once: expected true or false`);
    return { os: o.os, once: o.once === true };
  };

  return {
    'next-boot': async (body) => {
      const o = bodyObject(body);
      const n = nextBootOf(o, '');
      const targets = resolve(stringList(o, 'targets'), n.os === null);
      return { set: await setNext(targets, n.os, n.once) };
    },

    wake: async (body) => {
      const o = bodyObject(body);
      const targets = resolve(stringList(o, 'targets'));
      let spreadMs: number | undefined;
      if (o.spread !== undefined) {
        if (typeof o.spread !== 'number' || !(o.spread >= 0 && o.spread <= 3600))
          throw usage('spread: expected seconds, 0 to 3600');
        spreadMs = Math.round(o.spread * 1000);
      }
      const broadcasts = ['255.255.255.255'];
      if (o.broadcasts !== undefined) {
        const asked = stringList(o, 'broadcasts');
        if (asked.length > MAX_BROADCASTS) throw usage(`broadcasts: at most ${MAX_BROADCASTS}`);
        for (const b of asked) {
          if (isIP(b) !== 4) throw usage(`broadcasts: ${b} is not an IPv4 address`);
          broadcasts.push(b);
        }
      }
      for (const t of targets)
        for (const b of t.broadcasts ?? []) if (!broadcasts.includes(b)) broadcasts.push(b);
      const next = o.nextBoot !== undefined ? nextBootOf(bodyObject(o.nextBoot), 'nextBoot.') : undefined;
      if (waking) throw usage('a wake is still spreading out: wait until it is done');
      const env = s.environment();
      const machines = new Map<string, WakeTarget>();
      for (const t of targets)
        for (const mac of t.macs) {
          const name = env.hosts.get(mac)?.name;
          machines.set(mac, name ? { mac, name } : { mac });
        }
      const list = [...machines.values()];
      if (list.length === 0)
        throw usage(
          `${targets.map((t) => t.label).join(', ')}: no machine to wake (${targets.find((t) => t.unlisted)?.unlisted ?? 'the group lists none'}: list MACs under macs: or hosts:)`,
        );
      if (next) await setNext(targets, next.os, next.once);
      const ms = spreadMs ?? 500 * (list.length - 1);
      log.info('waking machines', { count: list.length, spreadSeconds: ms / 1000 });
      // Spread out in the background, one wake at a time: the answer says what will be woken.
      waking = true;
      void wake(list, {
        source: env.server.address,
        broadcasts,
        spreadMs: ms,
        ...(s.signal ? { signal: s.signal } : {}),
      })
        .catch((err: unknown) => log.warn('wake failed', { error: (err as Error).message }))
        .finally(() => (waking = false));
      return {
        waking: list.map((m) => ({ mac: m.mac, name: m.name ?? null })),
        spreadSeconds: ms / 1000,
        unlisted: targets.flatMap((t) => (t.unlisted ? [`${t.label}: ${t.unlisted}`] : [])),
        ...(next ? { nextBoot: next } : {}),
      };
    },
  };
}
