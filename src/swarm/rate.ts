/**
 * A transfer rate over the last few seconds: bytes land in one-second
 * buckets of a small ring, and the rate is their sum over the window.
 * The clock is injectable for tests.
 */
export class RateMeter {
  private readonly buckets: Float64Array;
  private lastSecond: number;
  total = 0;

  constructor(
    private readonly windowSeconds = 5,
    private readonly now: () => number = Date.now,
  ) {
    this.buckets = new Float64Array(windowSeconds);
    this.lastSecond = Math.floor(now() / 1000);
  }

  private advance(): number {
    const sec = Math.floor(this.now() / 1000);
    const gap = Math.min(sec - this.lastSecond, this.windowSeconds);
    for (let i = 1; i <= gap; i++) this.buckets[(this.lastSecond + i) % this.windowSeconds] = 0;
    if (sec > this.lastSecond) this.lastSecond = sec;
    return sec;
  }

  add(bytes: number): void {
    const sec = this.advance();
    this.buckets[sec % this.windowSeconds]! += bytes;
    this.total += bytes;
  }

  /** Bytes per second over the window. */
  rate(): number {
    this.advance();
    let sum = 0;
    for (const b of this.buckets) sum += b;
    return sum / this.windowSeconds;
  }
}
