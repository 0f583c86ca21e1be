import type { Clock } from './clock.ts'
import type { DeadlineTimer } from './deadlines.ts'
import type { Outcome } from './outcome.ts'
import type { Client, Registry } from './registry.ts'
import type { TaskControl } from './task-control.ts'
import type { TaskRecord } from './task-stats.ts'
import { type Answer, AttemptError, type Transports } from './transports/types.ts'
import type { FailedAttempt } from './wire/errors.ts'

export interface DispatchSettings {
  retryCount: number
  taskTimeoutMs: number
  /** cluster.prefer_local: this instance's own clients before others'. */
  preferLocal?: boolean
}

/** Tasks under way, single and broadcast alike, and whether the server is stopping: shared by the dispatcher and the broadcaster. */
export class TaskLoad {
  inFlight = 0
  closing = false
}

export interface DispatcherDeps {
  registry: Registry
  transports: Transports
  settings: () => DispatchSettings
  deadlines: DeadlineTimer
  load: TaskLoad
  clock: Clock
  onFinished: (record: TaskRecord) => void
}

const BODY_EXCERPT_CHARS = 1024

/**
 * Runs single tasks: picks a client, sends, and on a retryable failure (unreachable, connection
 * lost, 5xx) tries a different client, up to retry_count more times, all within task_timeout. A
 * timeout is not retried: the client may still be running the task, and running it twice is worse
 * for most work than answering 504. Returns how the task ended; it never throws for a task's fate.
 */
export class Dispatcher {
  constructor(private readonly deps: DispatcherDeps) {}

  /** `control`, when given, can cancel the task while it runs (a stored task's DELETE). */
  async dispatch(region: string, payloadJson: string, taskId: string, control?: TaskControl): Promise<Outcome> {
    const { registry, clock, load } = this.deps
    const { retryCount, taskTimeoutMs, preferLocal = false } = this.deps.settings()
    const startedMs = clock.now()
    const failedAttempts: FailedAttempt[] = []
    // Made on the first retry: most tasks never need it.
    let tried: Set<string> | undefined
    let last: Client | undefined
    const deadline = this.deps.deadlines.start(taskTimeoutMs)
    if (control) control.deadline = deadline
    load.inFlight++
    let outcome: Outcome = { kind: 'all_failed', region, failedAttempts }
    try {
      for (let attempt = 0; attempt <= retryCount; attempt++) {
        if (load.closing) {
          outcome = { kind: 'shutting_down', region, failedAttempts }
          break
        }
        if (control?.cancelled) {
          outcome = { kind: 'cancelled', region, failedAttempts }
          break
        }
        if (last !== undefined) {
          tried ??= new Set()
          tried.add(last.nodeId)
        }
        const picked = this.pickAnother(region, tried, last, preferLocal)
        if (!picked) {
          if (attempt === 0) outcome = { kind: 'no_client', region }
          break
        }
        const { client, pool } = picked
        last = client
        if (control) control.client = client
        registry.beginAttempt(client)
        const attemptStartedMs = clock.monotonic()
        // Every way an attempt ends gives a verdict on the client, or says there is none (which ends a trial).
        let judged = false
        client.inFlight++
        try {
          const answer = await this.deps.transports[client.route].send(client, taskId, payloadJson, deadline)
          judged = true
          if (answer.status >= 500) {
            registry.recordFailure(client, clock.now(), pool)
            failedAttempts.push({
              node_id: client.nodeId,
              kind: 'status',
              reason: `answered ${answer.status}`,
              status: answer.status,
              body: bodyExcerpt(answer),
            })
            continue
          }
          // A 4xx is the client's honest answer to this payload, not a sign the client is unwell.
          registry.recordSuccess(client, clock.monotonic() - attemptStartedMs, clock.now())
          outcome = { kind: 'answered', answer, client, failedAttempts }
          break
        } catch (error) {
          if (!(error instanceof AttemptError)) throw error
          // Cut off by the stop or by a cancel, not failed: the attempt is not the client's to answer for.
          if (load.closing) {
            outcome = { kind: 'shutting_down', region, failedAttempts }
            break
          }
          if (control?.cancelled) {
            outcome = { kind: 'cancelled', region, failedAttempts }
            break
          }
          failedAttempts.push({ node_id: client.nodeId, kind: error.kind, reason: error.message })
          if (error.countsAgainstClient) {
            registry.recordFailure(client, clock.now(), pool)
            judged = true
          }
          if (error.kind === 'too_large') {
            outcome = { kind: 'too_large', region, failedAttempts }
            break
          }
          if (error.kind === 'timeout') {
            outcome = { kind: 'timed_out', region, failedAttempts, timeoutMs: taskTimeoutMs }
            break
          }
        } finally {
          client.inFlight--
          if (!judged) registry.recordNoVerdict(client)
        }
      }
      this.deps.onFinished(taskRecord(taskId, region, outcome, last, failedAttempts.length, startedMs, clock.now()))
      return outcome
    } finally {
      this.deps.deadlines.end(deadline)
      load.inFlight--
    }
  }

  /** An untried client first; else one other than the last; the same client only if it is alone. */
  private pickAnother(region: string, tried: ReadonlySet<string> | undefined, last: Client | undefined, preferLocal: boolean) {
    const { registry } = this.deps
    if (!last || !tried) return registry.pickFrom(region, undefined, preferLocal)
    return registry.pickFrom(region, tried, preferLocal) ?? registry.pickFrom(region, new Set([last.nodeId])) ?? registry.pickFrom(region)
  }
}

/** The HTTP status a caller gets for each way a task ends (the record the dashboard and /metrics count). */
export const OUTCOME_STATUS = { no_client: 503, all_failed: 502, too_large: 502, timed_out: 504, shutting_down: 503, cancelled: 409 } as const

function taskRecord(
  taskId: string,
  region: string,
  outcome: Outcome,
  last: Client | undefined,
  failedCount: number,
  startedMs: number,
  nowMs: number,
): TaskRecord {
  const answered = outcome.kind === 'answered'
  return {
    task_id: taskId,
    region,
    mode: 'single',
    node_id: last?.nodeId ?? null,
    status: answered ? outcome.answer.status : OUTCOME_STATUS[outcome.kind],
    outcome: answered ? 'ok' : outcome.kind === 'no_client' ? 'no_client' : outcome.kind === 'timed_out' ? 'timeout' : 'failed',
    attempts: answered ? failedCount + 1 : failedCount,
    latency_ms: nowMs - startedMs,
    finishedAtMs: nowMs,
  }
}

/** An answer's body as text, for excerpts and broadcasts. */
export function bodyText(answer: Answer): string {
  return typeof answer.body === 'string' ? answer.body : new TextDecoder().decode(answer.body)
}

function bodyExcerpt(answer: Answer): string {
  const text = bodyText(answer)
  return text.length > BODY_EXCERPT_CHARS ? `${text.slice(0, BODY_EXCERPT_CHARS)}…` : text
}
