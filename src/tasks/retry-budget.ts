import { RegionLabels } from '../observe/region-labels.ts'

/**
 * The retry budget (Envoy's `retry_budget`, Finagle's RetryBudget): in each region pool, tasks that
 * are retrying may be at most `percent` of the pool's tasks in flight, or `min`, whichever is more.
 * A region that fails every task would otherwise see each task up to retry_count + 1 times, a load
 * multiplied just when it can least take it; with the budget the extra load is bounded by `percent`.
 * The pool is where a task's first attempt found its client. Only retries after a 5xx answer ask the
 * budget (the dispatcher decides): a retry after an agent that never got the task, or was lost, is
 * failover, not more load on a failing region. Pure: counts only.
 */
export interface RetryBudgetSettings {
  percent: number
  min: number
}

interface PoolCounts {
  /** Tasks in flight whose first attempt was drawn from the pool. */
  active: number
  /** Of those, the ones retrying now. */
  retrying: number
}

/**
 * Pools tracked at once past which a pool that goes idle is forgotten. An idle pool's counts are
 * 0 and 0, so forgetting one loses nothing; keeping it saves its next task an object and two map
 * writes. Pools are wherever agents register, and an agent may move through region names without end.
 */
export const POOLS_KEPT_IDLE_WITHIN = 1000

export class RetryBudget {
  private readonly pools = new Map<string, PoolCounts>()
  /** Retries refused by the budget, per pool label (/metrics; src/observe/region-labels.ts bounds the labels). */
  readonly refused = new Map<string, number>()
  private readonly labels: RegionLabels

  constructor(
    private readonly settings: () => RetryBudgetSettings,
    /** Whether the hierarchy names `pool`; one it does not is where an agent is (a task found one there). */
    named: (pool: string) => boolean = () => true,
  ) {
    this.labels = new RegionLabels((pool) => (named(pool) ? 'named' : 'held'))
  }

  /** Pools whose counts are kept now: those with tasks in flight, and idle ones while fewer than POOLS_KEPT_IDLE_WITHIN are tracked. */
  get trackedPools(): number {
    return this.pools.size
  }

  /** A task's first attempt drew a client from `pool`. */
  started(pool: string): void {
    const counts = this.pools.get(pool)
    if (counts) counts.active++
    else this.pools.set(pool, { active: 1, retrying: 0 })
  }

  /** A task wants its first retry: true if the budget allows it (it counts as retrying until it ends). */
  mayRetry(pool: string): boolean {
    const counts = this.pools.get(pool)
    if (!counts) return true
    const { percent, min } = this.settings()
    if (counts.retrying >= Math.max(min, (counts.active * percent) / 100)) {
      const label = this.labels.label(pool)
      this.refused.set(label, (this.refused.get(label) ?? 0) + 1)
      return false
    }
    counts.retrying++
    return true
  }

  /** A task that `started` in `pool` ended; `retried`: `mayRetry` had allowed it a retry. */
  ended(pool: string, retried: boolean): void {
    const counts = this.pools.get(pool)
    if (!counts) return
    counts.active--
    if (retried) counts.retrying--
    // An idle pool's counts are kept, not deleted and made again by the next task: at one connection
    // that was an object and two map writes per task. Only with many pools tracked is an idle one forgotten.
    if (counts.active === 0 && this.pools.size > POOLS_KEPT_IDLE_WITHIN) this.pools.delete(pool)
  }
}
