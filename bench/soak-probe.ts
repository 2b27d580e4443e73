/**
 * Loaded into `boottorrent start` by the hostile soak (`node --import
 * <this> bin/boottorrent.js start ...`): measures the server's own event
 * loop from inside, without changing the server. Every second it appends
 * one JSON line to $BT_SOAK_PROBE with that second's event-loop delay
 * (perf_hooks.monitorEventLoopDelay: how late a 10 ms timer ran, p50/p99/max
 * in ms) and the process's RSS and heap. A server that crashes stops writing:
 * the last line tells when.
 */
import { appendFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';

const file = process.env.BT_SOAK_PROBE;
if (file) {
  // 10 ms resolution: finer costs the loop it measures; a stall that
  // matters to a client (a DHCP or TFTP retransmission) is 100s of ms.
  const RESOLUTION_MS = 10;
  const h = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  // The histogram holds the time between two ticks of its 10 ms timer, so
  // an idle loop reads 10 ms: how late the tick came is that less 10.
  const late = (ns: number) => Math.max(0, ns / 1e6 - RESOLUTION_MS);
  h.enable();
  const timer = setInterval(() => {
    const m = process.memoryUsage();
    appendFileSync(
      file,
      `${JSON.stringify({
        t: Date.now(),
        p50: late(h.percentile(50)),
        p99: late(h.percentile(99)),
        max: late(h.max),
        rss: m.rss,
        heap: m.heapUsed,
      })}\n`,
    );
    h.reset();
  }, 1000);
  timer.unref();
}
