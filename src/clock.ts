/**
 * Time, injected: the registry, the dispatcher, deadlines and every periodic job read it from here,
 * so tests move it forward instead of waiting.
 */
export interface Clock {
  /** Wall time in ms since the epoch: what records, logs and the dashboard show. */
  now(): number
  /** Monotonic ms, for deadlines and latencies: a wall clock stepped by NTP must not move them. */
  monotonic(): number
  /** Runs `job` once after `ms`; the returned function cancels it. Never keeps the process alive by itself. */
  after(ms: number, job: () => void): () => void
  /** Runs `job` every `ms`; the returned function cancels it. Never keeps the process alive by itself. */
  every(ms: number, job: () => void): () => void
}

/** Past 2^31-1 ms setTimeout fires at once (and setInterval every millisecond); a longer wait is cut to this and simply waited again. */
export const MAX_TIMER_DELAY_MS = 2 ** 31 - 1

export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
  after(ms, job) {
    const timer = setTimeout(job, Math.min(MAX_TIMER_DELAY_MS, Math.max(0, ms)))
    // Tasks and sockets keep the server alive, not its timers: a stopped server must be free to exit.
    timer.unref()
    return () => clearTimeout(timer)
  },
  every(ms, job) {
    // As for setTimeout: a period past 2^31-1 ms (ws.heartbeat_interval of 25 days or more) would run every millisecond.
    const timer = setInterval(job, Math.min(MAX_TIMER_DELAY_MS, ms))
    timer.unref()
    return () => clearInterval(timer)
  },
}
