// The reloader on its own (src/server/reloader.ts): against a real
// environment folder, with a recording stand-in for the OS library, so the
// test sees exactly what a reload asks the library and what it keeps.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { inspectEnvironment } from '../../src/env/load.js';
import type { Environment, OsEntry } from '../../src/env/types.js';
import type { CatalogEntry } from '../../src/server/catalog.js';
import { Reloader, type ReloadTarget } from '../../src/server/reloader.js';
import type { LogFields, Logger } from '../../src/util/logger.js';
import { BASE_V1, v1Env } from '../helpers/env.js';

/** Keeps the OS ids it was given, like the catalog; offering an id in `failing` throws. */
class RecordingLibrary implements ReloadTarget {
  ids = new Set<string>();
  updates = 0;
  offered: string[] = [];
  failing = new Set<string>();
  update(oss: readonly OsEntry[]): Promise<{ added: CatalogEntry[]; removed: CatalogEntry[] }> {
    this.updates++;
    const next = new Set(oss.map((o) => o.id));
    const entry = (id: string) => ({ os: { id } }) as unknown as CatalogEntry;
    const added = [...next].filter((id) => !this.ids.has(id)).map(entry);
    const removed = [...this.ids].filter((id) => !next.has(id)).map(entry);
    this.ids = next;
    return Promise.resolve({ added, removed });
  }
  offer(e: CatalogEntry): Promise<void> {
    if (this.failing.has(e.os.id)) return Promise.reject(new Error('seeder gone'));
    this.offered.push(e.os.id);
    return Promise.resolve();
  }
}

function recorder(): { logger: Logger; lines: { level: string; msg: string; fields: LogFields }[] } {
  const lines: { level: string; msg: string; fields: LogFields }[] = [];
  const logger: Logger = {
    debug: (msg, fields = {}) => lines.push({ level: 'debug', msg, fields }),
    info: (msg, fields = {}) => lines.push({ level: 'info', msg, fields }),
    warn: (msg, fields = {}) => lines.push({ level: 'warn', msg, fields }),
    error: (msg, fields = {}) => lines.push({ level: 'error', msg, fields }),
    child: () => logger,
  };
  return { logger, lines };
}

async function loaded(dir: string): Promise<Environment> {
  const { env, problems } = await inspectEnvironment(dir, { machineChecks: false });
  assert.ok(env, JSON.stringify(problems));
  return env;
}

const BETA = 'name: Beta\nmethod: bin\nbin: run.sh\n';

test('reloader: an OS folder added and one removed reach the library; boot settings change, addresses do not', async (t) => {
  const dir = v1Env(t, BASE_V1);
  const env = await loaded(dir);
  const library = new RecordingLibrary();
  await library.update(env.oss);
  const { logger, lines } = recorder();
  const reloader = new Reloader({ environment: env }, { library, logger });
  await reloader.mark();

  await reloader.check();
  assert.equal(library.updates, 1, 'nothing changed: the environment is not read again');

  mkdirSync(join(dir, 'oss', 'beta'));
  writeFileSync(join(dir, 'oss', 'beta', 'config.yaml'), BETA);
  writeFileSync(join(dir, 'oss', 'beta', 'run.sh'), '#!/bin/sh\n', { mode: 0o755 });
  rmSync(join(dir, 'oss', 'linux'), { recursive: true });
  writeFileSync(join(dir, 'Boottorrent.yaml'), BASE_V1.replace('default_os: linux', 'default_os: beta'));
  await reloader.check();

  assert.deepEqual(library.offered, ['beta'], 'the added OS is offered (tracked and seeded)');
  assert.deepEqual([...library.ids], ['beta']);
  const now = reloader.environment;
  assert.deepEqual(
    now.oss.map((o) => o.id),
    ['beta'],
  );
  assert.equal(now.boot.defaultOs, 'beta', 'boot settings follow the file');
  assert.equal(now.server, env.server, 'server settings need a restart');
  assert.equal(now.dhcp, env.dhcp);
  assert.ok(Object.isFrozen(now), 'the environment served stays frozen');
  assert.deepEqual(
    lines.filter((l) => l.msg === 'environment reloaded').map((l) => l.fields),
    [{ added: 'beta', removed: 'linux' }],
  );

  await reloader.check();
  assert.equal(library.updates, 2, 'applied once: the new fingerprint is kept');
  await reloader.close();
});

test('reloader: an environment with problems is not applied; the previous one keeps serving', async (t) => {
  const dir = v1Env(t, BASE_V1);
  const env = await loaded(dir);
  const library = new RecordingLibrary();
  await library.update(env.oss);
  const { logger, lines } = recorder();
  const reloader = new Reloader({ environment: env }, { library, logger });
  await reloader.mark();

  writeFileSync(join(dir, 'Boottorrent.yaml'), BASE_V1.replace('default_os: linux', 'default_os: nosuch'));
  await reloader.check();
  assert.equal(library.updates, 1, 'the library is not touched');
  assert.equal(reloader.environment, env);
  assert.ok(
    lines.some((l) => l.level === 'warn' && /has problems; still serving the previous one/.test(l.msg)),
  );
  assert.ok(
    lines.some((l) => l.level === 'warn' && /Boottorrent\.yaml:\d+: boot\.default_os: /.test(l.msg)),
    lines.map((l) => l.msg).join('\n'),
  );
});

test('reloader: an added OS that cannot be seeded is logged; the others are still offered', async (t) => {
  const dir = v1Env(t, BASE_V1);
  const env = await loaded(dir);
  const library = new RecordingLibrary();
  await library.update(env.oss);
  library.failing.add('alpha');
  const { logger, lines } = recorder();
  const reloader = new Reloader({ environment: env }, { library, logger });
  await reloader.mark();
  for (const id of ['alpha', 'beta']) {
    mkdirSync(join(dir, 'oss', id));
    writeFileSync(join(dir, 'oss', id, 'config.yaml'), BETA.replace('Beta', id));
    writeFileSync(join(dir, 'oss', id, 'run.sh'), '#!/bin/sh\n', { mode: 0o755 });
  }
  await reloader.check();
  assert.deepEqual(library.offered, ['beta'], lines.map((l) => l.msg).join('\n'));
  assert.ok(lines.some((l) => l.level === 'warn' && l.msg === 'cannot seed alpha; will try again'));
  const reads = library.updates;
  await reloader.check();
  assert.equal(library.updates, reads + 1, 'the next look reads the environment again');
});
