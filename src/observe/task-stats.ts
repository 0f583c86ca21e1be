import type { AttemptFailure } from '../wire/errors.ts'
import type { SeriesPoint } from '../wire/monitor.ts'
import type { ClientTaskView, TaskView } from '../wire/views.ts'

/** One attempt of a task, for a client's detail on the dashboard (GET /clients/{node_id}). */
export interface AttemptRecord {
  node_id: string
  /** The agent's HTTP status, when it answered (a 5xx is a failed attempt with a status). */
  status?: number
  /** How it failed, when it did; absent for an answer below 500. */
  kind?: AttemptFailure
  ms: number
}

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
  /** Every attempt, in order (single tasks; a broadcast's parts are not kept). */
  tries?: AttemptRecord[]
  /** A broadcast: how many of its `attempts` clients answered (the access log says so; node_id is null). */
  answered?: number
  /** The W3C trace it belongs to (src/observe/tracing/), when the caller sent one or tracing started one. */
  trace_id?: string
}

/** The feed's and /status's view: without the attempts, which only a client's detail shows, or the precise duration. */
export function taskView({ finishedAtMs, tries: _tries, durationMs: _durationMs, answered: _answered, trace_id: _traceId, ...record }: TaskRecord): TaskView {
  return { ...record, at: new Date(finishedAtMs).toISOString() }
}

/** Tasks kept per client for its detail, and how many clients' lists: bounded whatever the fleet or its churn. */
export const TASKS_PER_CLIENT = 20
export const CLIENTS_KEPT = 1000

/**
 * Each client's most recent tasks with every attempt, for GET /clients/{node_id}: a task that tried
 * three clients is in each one's list. The lists of the clients least recently tried are dropped
 * first once CLIENTS_KEPT have one (a Map keeps insertion order: a touched list is moved to the end).
 */
export class ClientTasks {
  private readonly lists = new Map<string, TaskRecord[]>()

  record(task: TaskRecord): void {
    if (!task.tries) return
    let previous: string | undefined
    for (const attempt of task.tries) {
      // A task retried on the same client (it was alone) is listed once.
      if (attempt.node_id === previous) continue
      previous = attempt.node_id
      const list = this.lists.get(attempt.node_id) ?? []
      if (list.at(-1) === task) continue
      this.lists.delete(attempt.node_id)
      list.push(task)
      if (list.length > TASKS_PER_CLIENT) list.shift()
      this.lists.set(attempt.node_id, list)
      if (this.lists.size > CLIENTS_KEPT) this.lists.delete(this.lists.keys().next().value!)
    }
  }

  /** The client's recent tasks, newest first, each with its attempts. */
  of(nodeId: string): ClientTaskView[] {
    const list = this.lists.get(nodeId) ?? []
    return list
      .slice()
      .reverse()
      .map((task) => ({ ...taskView(task), tries: task.tries ?? [] }))
  }

  get size(): number {
    return this.lists.size
  }
}

export interface SecondBucket {
  /** Unix time in whole seconds. */
  second: number
  tasks: number
  errors: number
  latencySumMs: number
}

const SECONDS_KEPT = 60
export const RECENT_KEPT = 50

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
