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

export class RetryBudget {
  private readonly pools = new Map<string, PoolCounts>()
  /** Retries refused by the budget, per pool (/metrics). */
  readonly refused = new Map<string, number>()

  constructor(private readonly settings: () => RetryBudgetSettings) {}

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
      this.refused.set(pool, (this.refused.get(pool) ?? 0) + 1)
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
    // that was an object and two map writes per task. Pools are the fleet's regions, so the map stays small.
  }
}
