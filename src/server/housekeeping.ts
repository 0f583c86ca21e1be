import type { Clock } from '../clock.ts'
import type { Config } from '../config/config.ts'
import type { Registry } from '../fleet/registry.ts'

/** One periodic job: what it does with the time it is given, and how often. */
export interface Job {
  name: string
  everyMs: number
  run: (nowMs: number) => void
}

export interface HousekeepingDeps {
  config: () => Config
  registry: Registry
  /** The WebSocket gateway's sweeps, when WebSocket is on. */
  sockets?: { pingAll(): void; closeSilent(nowMs: number): void; closeUnregistered(nowMs: number): void }
  /** The dashboards' feed: a batch every flush. */
  flushFeed: () => void
  /** Anything else to look at once a second. */
  everySecond?: (nowMs: number) => void
  /** The in-memory task store's expiry sweep (a Redis store expires its own keys). */
  sweepStore?: (nowMs: number) => void
}

const MONITOR_FLUSH_MS = 500
const SECOND_MS = 1000
const STORE_SWEEP_MS = 5000

/**
 * The server's periodic jobs over the fleet, the sockets, the feed and the task store, from the config
 * in force: one list, so each has one home. Timers that belong to one object's own life stay with it
 * (each on the injected Clock): a task's deadline (tasks/deadlines.ts), a queued task's wait
 * (tasks/slot-waiting.ts), the stored tasks' long polls and claims (tasks/stored/runner.ts), the
 * cluster's presence and reconnects (cluster/), the event-loop probe (observe/event-loop-delay.ts).
 * The agent connection pool's idle sweep, a WebSocket send's write timeout (transports/) and the
 * bound on discarding an oversized body (http/oversized-body.ts) run on Bun's own timers: they
 * measure real socket time, never a test's fake clock.
 */
export function housekeepingJobs(deps: HousekeepingDeps): Job[] {
  const { ws, client_ttl } = deps.config()
  const { registry, sockets } = deps
  const jobs: Job[] = [
    {
      name: 'health and membership',
      everyMs: SECOND_MS,
      run: (nowMs) => {
        registry.endBackoffs(nowMs)
        for (const client of registry.silent('http', client_ttl * 1000, nowMs)) registry.remove(client.nodeId, `no heartbeat for ${client_ttl} s`)
        sockets?.closeUnregistered(nowMs)
        deps.everySecond?.(nowMs)
      },
    },
    { name: 'monitor feed', everyMs: MONITOR_FLUSH_MS, run: () => deps.flushFeed() },
  ]
  const { sweepStore } = deps
  if (sweepStore) jobs.push({ name: 'task store expiry', everyMs: STORE_SWEEP_MS, run: (nowMs) => sweepStore(nowMs) })
  const slowStartMs = deps.config().health.slow_start * 1000
  // Twenty steps per ramp (src/fleet/slow-start.ts), looked at about twice per step; a second at most, so a long ramp still shows its progress.
  if (slowStartMs > 0) jobs.push({ name: 'slow start', everyMs: clamp(slowStartMs / 40, 50, SECOND_MS), run: (nowMs) => registry.advanceRamps(nowMs) })
  if (sockets && ws.enabled) {
    jobs.push({ name: 'pings', everyMs: ws.heartbeat_interval * 1000, run: () => sockets.pingAll() })
    jobs.push({ name: 'silent sockets', everyMs: ws.connection_check_interval * 1000, run: (nowMs) => sockets.closeSilent(nowMs) })
  }
  return jobs
}

function clamp(value: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, value))
}

/**
 * Runs the jobs on the injected clock. On reload (start again) a job whose period is unchanged keeps
 * its timer and only takes the new config's work: restarting every timer would put each job's next
 * run a whole period away, so reloads more often than a job's period (a config-sync loop) would stop
 * it for good — no client_ttl expiry, no pings, no dashboard updates.
 */
export class Housekeeping {
  private readonly timers = new Map<string, { job: Job; cancel: () => void }>()

  constructor(
    private readonly clock: Clock,
    private readonly jobs: () => Job[],
    private readonly log: (line: string) => void,
  ) {}

  start(): void {
    const jobs = this.jobs()
    for (const [name, timer] of this.timers) {
      if (jobs.some((job) => job.name === name && job.everyMs === timer.job.everyMs)) continue
      timer.cancel()
      this.timers.delete(name)
    }
    for (const job of jobs) {
      const timer = this.timers.get(job.name)
      if (timer) {
        timer.job = job
        continue
      }
      const entry = { job, cancel: () => {} }
      entry.cancel = this.clock.every(job.everyMs, () => this.run(entry.job))
      this.timers.set(job.name, entry)
    }
  }

  /** A job that throws is logged and runs again next time: an exception in a timer would end the process. */
  private run(job: Job): void {
    try {
      job.run(this.clock.now())
    } catch (error) {
      this.log(`[mls] housekeeping job "${job.name}" failed: ${(error as Error)?.stack ?? error}`)
    }
  }

  stop(): void {
    for (const timer of this.timers.values()) timer.cancel()
    this.timers.clear()
  }
}
