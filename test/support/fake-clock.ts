/** A Clock for unit tests: time moves only when the test says so, and every timer runs at its exact due time. */
import type { Clock } from '../../src/clock.ts'

interface FakeTimer {
  /** Monotonic ms at which it runs next. */
  atMs: number
  /** Set for `every`: the period it runs again after. */
  everyMs?: number
  job: () => void
  /** Order of scheduling, so timers due at the same time run first-come, first-served. */
  sequence: number
}

export interface FakeClockStart {
  /** Wall time at the start, ms since the epoch. */
  nowMs?: number
  /** Monotonic time at the start; not 0, so code that treats 0 as "unset" is caught. */
  monotonicMs?: number
}

/** 2026-01-01T00:00:00.000Z. */
export const FAKE_EPOCH_MS = Date.UTC(2026, 0, 1)

export class FakeClock implements Clock {
  private wallMs: number
  private monotonicMs: number
  private readonly timers = new Set<FakeTimer>()
  private sequence = 0

  constructor(start: FakeClockStart = {}) {
    this.wallMs = start.nowMs ?? FAKE_EPOCH_MS
    this.monotonicMs = start.monotonicMs ?? 1000
  }

  now(): number {
    return this.wallMs
  }

  monotonic(): number {
    return this.monotonicMs
  }

  after(ms: number, job: () => void): () => void {
    return this.schedule({ atMs: this.monotonicMs + Math.max(0, ms), job, sequence: this.sequence++ })
  }

  every(ms: number, job: () => void): () => void {
    // A period of 0 would make advance() loop for ever.
    if (!(ms > 0)) throw new Error(`FakeClock.every needs a positive period, got ${ms}`)
    return this.schedule({ atMs: this.monotonicMs + ms, everyMs: ms, job, sequence: this.sequence++ })
  }

  /** Timers waiting to run (an `every` counts once). */
  get pending(): number {
    return this.timers.size
  }

  /**
   * Moves both clocks forward by `ms`, running each timer due by then in time order, with the
   * clocks set to its due time while it runs. Timers scheduled by a job run too if they fall due
   * within the advance.
   */
  advance(ms: number): void {
    if (ms < 0) throw new Error(`FakeClock cannot go back (${ms} ms)`)
    const untilMs = this.monotonicMs + ms
    for (let timer = this.nextDue(untilMs); timer !== undefined; timer = this.nextDue(untilMs)) {
      this.moveTo(timer.atMs)
      if (timer.everyMs === undefined) this.timers.delete(timer)
      else {
        timer.atMs += timer.everyMs
        timer.sequence = this.sequence++
      }
      timer.job()
    }
    this.moveTo(untilMs)
  }

  private schedule(timer: FakeTimer): () => void {
    this.timers.add(timer)
    return () => void this.timers.delete(timer)
  }

  private nextDue(untilMs: number): FakeTimer | undefined {
    let next: FakeTimer | undefined
    for (const timer of this.timers) {
      if (timer.atMs > untilMs) continue
      if (next === undefined || timer.atMs < next.atMs || (timer.atMs === next.atMs && timer.sequence < next.sequence)) next = timer
    }
    return next
  }

  private moveTo(monotonicMs: number): void {
    this.wallMs += monotonicMs - this.monotonicMs
    this.monotonicMs = monotonicMs
  }
}
