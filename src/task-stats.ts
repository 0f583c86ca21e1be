import type { SeriesPoint } from './wire/monitor.ts'
import type { TaskView } from './wire/views.ts'

/** What the dashboard and /status show of one finished task. */
export interface TaskRecord {
  task_id: string
  region: string
  mode: 'single' | 'broadcast'
  /** The node that answered, or the last one tried. */
  node_id: string | null
  /** The HTTP status the caller got. */
  status: number
  outcome: 'ok' | 'failed' | 'timeout' | 'no_client'
  attempts: number
  latency_ms: number
  /** The same on the monotonic clock, to the fraction of a ms: what the duration histograms observe (a fast task is 0 in whole wall ms). */
  durationMs?: number
  /** When it finished (ms since the epoch); formatted only when shown, as a date string per task was a measurable cost. */
  finishedAtMs: number
}

export function taskView({ finishedAtMs, durationMs: _durationMs, ...record }: TaskRecord): TaskView {
  return { ...record, at: new Date(finishedAtMs).toISOString() }
}

export interface SecondBucket {
  /** Unix time in whole seconds. */
  second: number
  tasks: number
  errors: number
  latencySumMs: number
}

const SECONDS_KEPT = 60
const RECENT_KEPT = 50

/**
 * Running totals, a per-second series for the last minute and the most recent tasks, in fixed-size
 * rings so a busy server allocates nothing per task here beyond the record itself. Pure: takes `now`.
 */
export class TaskStats {
  total = 0
  failed = 0
  /** Finished tasks per outcome, for /metrics. */
  readonly byOutcome: Record<TaskRecord['outcome'], number> = { ok: 0, failed: 0, timeout: 0, no_client: 0 }
  private readonly seconds: SecondBucket[] = Array.from({ length: SECONDS_KEPT }, () => ({ second: 0, tasks: 0, errors: 0, latencySumMs: 0 }))
  private readonly recentRing: TaskRecord[] = []
  private recentNext = 0

  record(task: TaskRecord, nowMs: number): void {
    this.total++
    this.byOutcome[task.outcome]++
    const error = task.outcome !== 'ok'
    if (error) this.failed++
    const second = Math.floor(nowMs / 1000)
    const bucket = this.seconds[second % SECONDS_KEPT]!
    if (bucket.second !== second) {
      bucket.second = second
      bucket.tasks = bucket.errors = bucket.latencySumMs = 0
    }
    bucket.tasks++
    if (error) bucket.errors++
    bucket.latencySumMs += task.latency_ms
    this.recentRing[this.recentNext] = task
    this.recentNext = (this.recentNext + 1) % RECENT_KEPT
  }

  /** The last `count` whole seconds before `nowMs`, oldest first, with zeros where nothing ran. */
  series(nowMs: number, count = SECONDS_KEPT - 1): SeriesPoint[] {
    const current = Math.floor(nowMs / 1000)
    const points = []
    for (let second = current - count; second < current; second++) {
      const bucket = this.seconds[second % SECONDS_KEPT]!
      const tasks = bucket.second === second ? bucket.tasks : 0
      points.push({
        second,
        tasks,
        errors: bucket.second === second ? bucket.errors : 0,
        avg_latency_ms: tasks ? Math.round((bucket.latencySumMs / tasks) * 10) / 10 : 0,
      })
    }
    return points
  }

  /** The most recent tasks, newest first. */
  recent(): TaskView[] {
    const ordered = [...this.recentRing.slice(this.recentNext), ...this.recentRing.slice(0, this.recentNext)]
    return ordered.reverse().map(taskView)
  }
}
