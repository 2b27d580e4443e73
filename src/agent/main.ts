/**
 * The BootTorrent agent's entry point (bundled by esbuild into phase 1 as
 * /opt/boottorrent/agent.mjs, run by /init on the console). With no flags it
 * reads boottorrent.server= and boottorrent.mac= from /proc/cmdline; with
 * flags it runs on a normal host (tests, bench). Exit status 0 tells /init to
 * power off; anything else leaves a shell on the console.
 */
import { readFileSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { streamLogger, silentLogger } from '../util/logger.js';
import { isBootTorrentError } from '../errors.js';
import { Agent } from './agent.js';
import { argsFromFlags, argsFromKernelCmdline, AUTO_MAC, HOST_USAGE, type AgentArgs } from './cmdline.js';
import { resolveAutoMac } from './efi-boot-nic.js';

function readArgs(argv: readonly string[]): AgentArgs {
  if (argv.length > 0) return argsFromFlags(argv);
  return argsFromKernelCmdline(readFileSync('/proc/cmdline', 'utf8'));
}

async function main(argv: readonly string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(`${HOST_USAGE}\n`);
    return 0;
  }
  let args: AgentArgs;
  try {
    args = readArgs(argv);
    if (args.mac === AUTO_MAC) {
      args = { ...args, mac: await resolveAutoMac() };
      process.stdout.write(`boottorrent-agent: booted from the NIC ${args.mac} (as the firmware says)\n`);
    }
  } catch (err) {
    process.stderr.write(`boottorrent-agent: ${(err as Error).message}\n`);
    return 2;
  }
  const logger = args.verbose ? streamLogger(process.stderr, { level: 'debug' }) : silentLogger;
  const agent = new Agent(args, { stdin: process.stdin, stdout: process.stdout, logger });
  // Nothing may end the agent silently: an error nobody awaited is shown and
  // the step in progress goes to the failure screen.
  process.on('unhandledRejection', (err) => agent.unexpected(err));
  process.on('uncaughtException', (err) => agent.unexpected(err));
  // A signal ends the agent tidily (its programs too, not left running),
  // with 128 + the signal's number; a second one ends it at once.
  for (const sig of ['SIGTERM', 'SIGHUP', 'SIGINT'] as const)
    process.on(sig, () => {
      const code = 128 + (osConstants.signals[sig] ?? 0);
      if (agent.isStopping) process.exit(code);
      void agent.shutdown(sig).then((ending) => {
        if (ending) process.exit(code);
      });
    });
  try {
    return await agent.run();
  } catch (err) {
    const what = isBootTorrentError(err)
      ? `${err.code}: ${err.message}`
      : ((err as Error)?.stack ?? String(err));
    process.stdout.write(`boottorrent-agent: fatal: ${what}\n`);
    return 1;
  }
}

// The agent's waits carry unreferenced deadlines (a fetch's AbortSignal.timeout,
// the reporter's timer). If a wait's own handle is not referenced either (a
// fetch queued in undici's pool, a socket between requests), Node's loop
// empties and the process exits 0 in the middle of a step: /init reads 0 as
// "power off", and a machine went dark silently (seen in CI: an agent ended
// after "stage=config"). This handle keeps the loop alive until main ends,
// so every deadline fires.
const alive = setInterval(() => undefined, 60_000);
main(process.argv.slice(2))
  .finally(() => clearInterval(alive))
  .then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stdout.write(`boottorrent-agent: fatal: ${String(err)}\n`);
      process.exitCode = 1;
    },
  );
