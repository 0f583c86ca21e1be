import type { Clock } from '../clock.ts'

/**
 * How late the event loop runs timers: a timer every `periodMs`, and how much later than asked it
 * fires. A busy loop (a slow handler, a GC pause) shows here before it shows as latency. The worst
 * delay of the last window and a running mean, for /metrics.
 */
export class EventLoopDelay {
  private expectedMs = 0
  private worstMs = 0
  private windowWorstMs = 0
  private windowStartedMs = 0
  private totalMs = 0
  private samples = 0
  private cancel: (() => void) | undefined

  constructor(
    private readonly clock: Clock,
    private readonly periodMs = 100,
    private readonly windowMs = 10_000,
  ) {}

  start(): void {
    this.expectedMs = this.clock.monotonic() + this.periodMs
    this.windowStartedMs = this.clock.monotonic()
    this.cancel = this.clock.every(this.periodMs, () => this.tick())
  }

  stop(): void {
    this.cancel?.()
  }

  /** One timer fired: its lateness is a sample. */
  tick(): void {
    const nowMs = this.clock.monotonic()
    const lateMs = Math.max(0, nowMs - this.expectedMs)
    this.expectedMs = nowMs + this.periodMs
    this.totalMs += lateMs
    this.samples++
    this.windowWorstMs = Math.max(this.windowWorstMs, lateMs)
    if (nowMs - this.windowStartedMs >= this.windowMs) {
      this.worstMs = this.windowWorstMs
      this.windowWorstMs = 0
      this.windowStartedMs = nowMs
    }
  }

  /** The worst delay of the last full window (or of this one, before the first ends), in seconds. */
  get worstS(): number {
    return Math.max(this.worstMs, this.windowWorstMs) / 1000
  }

  get meanS(): number {
    return this.samples === 0 ? 0 : this.totalMs / this.samples / 1000
  }
}
