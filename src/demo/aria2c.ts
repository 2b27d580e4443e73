/**
 * aria2c as a BitTorrent peer that only talks to the peers we hand it: no
 * DHT, no LSD, no PEX, no config file, no encryption, so its one source of
 * peers is the tracker in the torrent (ours). Shared by the demo, the
 * benchmarks and the interop tests, which all run it on loopback.
 */
export function aria2cSwarmArgs(opts: {
  /** Download folder (for a seed: the folder that holds the data). */
  dir: string;
  listenPort: number;
  /** aria2c exits when this process does (a safety net for Ctrl-C). */
  stopWithPid?: number;
  logLevel?: 'debug' | 'info' | 'notice' | 'warn' | 'error';
}): string[] {
  return [
    '--no-conf',
    `--dir=${opts.dir}`,
    '--enable-dht=false',
    '--enable-dht6=false',
    '--bt-enable-lpd=false',
    '--enable-peer-exchange=false',
    '--seed-ratio=0.0',
    '--file-allocation=none',
    '--summary-interval=0',
    `--console-log-level=${opts.logLevel ?? 'warn'}`,
    '--bt-tracker-interval=2',
    '--bt-require-crypto=false',
    '--bt-min-crypto-level=plain',
    `--listen-port=${opts.listenPort}`,
    ...(opts.stopWithPid !== undefined ? [`--stop-with-process=${opts.stopWithPid}`] : []),
  ];
}
