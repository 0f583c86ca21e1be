import type { Clock } from '../clock.ts'
import { type Client, type Registry, unavailableReason } from '../fleet/registry.ts'
import { hasSlot } from '../fleet/slots.ts'
import type { AttemptRecord, TaskRecord } from '../observe/task-stats.ts'
import type { TaskTrace } from '../observe/tracing/tracer.ts'
import { type Answer, AttemptError, RETRY_CLASS, type Transports } from '../transports/types.ts'
import type { FailedAttempt, RetryOn } from '../wire/errors.ts'
import type { TaskControl } from './control.ts'
import { type Deadline, type DeadlineTimer, taskTimeout } from './deadlines.ts'
import { NOBODY_TO_ASK, OUTCOME_STATUS, type Outcome } from './outcome.ts'
import type { RetryBudget } from './retry-budget.ts'
import { DEFAULT_ROUTING, type TaskRouting } from './routing.ts'
import type { SlotQueue } from './slot-waiting.ts'

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
  /** Each attempt's duration, by the client's protocol (the attempt histogram of /metrics). */
  onAttempt?: (client: Client, ms: number) => void
  /** Where a task waits when every agent of its pool is full (src/tasks/slot-waiting.ts); none: it fails as no_client. */
  slots?: SlotQueue
  /** routing.retry_budget: retries per pool bounded by its tasks in flight (src/tasks/retry-budget.ts); none, no bound. */
  retryBudget?: RetryBudget
}

const BODY_EXCERPT_CHARS = 1024

/**
 * Runs single tasks: picks a client, sends, and on a retryable failure (unreachable, connection
 * lost, 5xx — as far as the task's retry_on allows) tries a different client, up to retry_count
 * more times, all within task_timeout; the task's routing (src/tasks/routing.ts) may name the
 * client, key it, keep it in its region or its token's boundary, forbid retries or shorten the
 * timeout. A timeout is not retried: the client may still be running the task, and running it twice is worse
 * for most work than answering 504. Returns how the task ended; it never throws for a task's fate.
 */
export class Dispatcher {
  constructor(private readonly deps: DispatcherDeps) {}

  /** `control`, when given, can cancel the task while it runs (a stored task's DELETE); `trace`, the caller's trace (src/observe/tracing/). */
  async dispatch(
    region: string,
    payloadJson: string,
    taskId: string,
    routing: TaskRouting = DEFAULT_ROUTING,
    control?: TaskControl,
    trace?: TaskTrace,
  ): Promise<Outcome> {
    const { clock, load } = this.deps
    const settings = this.deps.settings()
    const preferLocal = settings.preferLocal ?? false
    const retryCount = routing.retry ? settings.retryCount : 0
    // A task may ask to give up sooner, never later: task_timeout is the operator's bound on every wait.
    const { timeoutMs, ownTimeout } = taskTimeout(settings.taskTimeoutMs, routing.timeoutMs)
    const deadline = this.deps.deadlines.start(timeoutMs)
    if (control) control.deadline = deadline
    const task: TaskRun = {
      region,
      payloadJson,
      taskId,
      routing,
      control,
      deadline,
      timeoutMs,
      ownTimeout,
      // With no retry, or none after a lost attempt, a task goes out once: not even the HTTP pool's resend
      // on a fresh connection after a pooled one closed as the task was written (the agent may have read it).
      mayResend: routing.retry && (routing.retryOn === undefined || routing.retryOn.includes('lost')),
      failedAttempts: [],
      tries: [],
      trace,
      startedMs: clock.now(),
      startedMonotonicMs: clock.monotonic(),
    }
    const { failedAttempts } = task
    // Taken over from an instance that had started it (a stored task): an agent may have it, so running it
    // again is a retry after a lost attempt, which a retry_on without "lost" forbids. It ends here, recorded.
    let outcome: Outcome | undefined =
      control?.startedElsewhere && routing.retryOn !== undefined && !routing.retryOn.includes('lost') ? notRetried(region, failedAttempts, 'lost') : undefined
    // Made on the first retry: most tasks never need it.
    let tried: Set<string> | undefined
    let last: Client | undefined
    // Where the first attempt found candidates: retries look there first (see pickAnother).
    let firstPool: string | undefined
    // Whether the retry budget let this task retry (it then counts as retrying until it ends).
    let retrying = false
    load.inFlight++
    try {
      try {
        for (let attempt = 0; attempt <= retryCount && outcome === undefined; attempt++) {
          if (load.closing) {
            outcome = { kind: 'shutting_down', region, failedAttempts }
            break
          }
          if (control?.cancelled) {
            outcome = { kind: 'cancelled', region, failedAttempts }
            break
          }
          // The budget bounds retries after an agent answered with a failure (5xx): that is the work a
          // failing region would otherwise get again and again. A retry after the agent never got the
          // task, or was lost with its connection or its instance, is failover: it redoes no work that
          // was done, and an instance's death fails many tasks at once that must all find another agent.
          if (attempt > 0 && !retrying && firstPool !== undefined && this.deps.retryBudget && failedAttempts.at(-1)?.kind === 'status') {
            if (!this.deps.retryBudget.mayRetry(firstPool)) {
              outcome = { kind: 'all_failed', region, failedAttempts, reason: 'retry_budget_exhausted' }
              break
            }
            retrying = true
          }
          if (last !== undefined) {
            tried ??= new Set()
            tried.add(last.nodeId)
          }
          let picked: Picked | Outcome =
            routing.nodeId === undefined
              ? this.pickAnother(region, routing, tried, last, firstPool, preferLocal)
              : this.pickNamed(region, routing.nodeId, routing.boundary)
          // Only a pick that found nobody looks at the queue: the hot path never touches it.
          if ('kind' in picked && this.deps.slots) {
            const dequeued = trace?.queued()
            try {
              picked = await this.deps.slots.waitAfter(picked, region, routing, firstPool, deadline, control)
            } finally {
              dequeued?.()
            }
          }
          if ('kind' in picked) {
            if (attempt === 0) outcome = picked
            break
          }
          if (firstPool === undefined) {
            firstPool = picked.pool
            this.deps.retryBudget?.started(picked.pool)
          }
          last = picked.client
          outcome = await this.attempt(task, picked)
        }
      } catch (error) {
        // Not a task's fate but a bug (the caller gets 500 internal): the task still counts, as failed.
        try {
          this.finish(task, last, 500, 'failed', task.tries.length)
        } catch {
          // A second bug, in the record's consumers: the first is the one the caller and the log get.
        }
        throw error
      }
      outcome ??= { kind: 'all_failed', region, failedAttempts }
      if (outcome.kind === 'answered') this.finish(task, last, outcome.answer.status, 'ok', failedAttempts.length + 1)
      else this.finish(task, last, OUTCOME_STATUS[outcome.kind], recordedOutcome(outcome.kind), failedAttempts.length)
      return outcome
    } finally {
      if (firstPool !== undefined) this.deps.retryBudget?.ended(firstPool, retrying)
      this.deps.deadlines.end(deadline)
      load.inFlight--
    }
  }

  /**
   * One attempt on the picked client: how the task ended, or undefined when it may be retried. Every
   * way an attempt ends gives a verdict on the client, or says there is none (which ends a trial).
   */
  private async attempt(task: TaskRun, picked: Picked): Promise<Outcome | undefined> {
    const { registry, clock, load } = this.deps
    const { client, pool } = picked
    const { region, failedAttempts, control, routing } = task
    const { retryOn } = routing
    if (control) control.client = client
    registry.beginAttempt(client)
    // A slot handed over from the queue is counted already.
    if (picked.acquired !== true) registry.acquire(client)
    const attemptStartedMs = clock.monotonic()
    let judged = false
    let attemptStatus: number | undefined
    let attemptKind: AttemptRecord['kind']
    const hop = task.trace?.attempt(client.nodeId, client.route)
    try {
      const answer = await this.deps.transports[client.route].send(client, task.taskId, task.payloadJson, task.deadline, task.mayResend, hop?.headers, routing)
      judged = true
      attemptStatus = answer.status
      if (answer.status < 500) {
        // A 4xx is the client's honest answer to this payload, not a sign the client is unwell.
        registry.recordSuccess(client, clock.monotonic() - attemptStartedMs, clock.now())
        return { kind: 'answered', answer, client, failedAttempts }
      }
      attemptKind = 'status'
      registry.recordFailure(client, clock.now(), pool)
      failedAttempts.push({
        node_id: client.nodeId,
        kind: 'status',
        reason: answer.retry === false ? `answered ${answer.status}, not to be retried` : `answered ${answer.status}`,
        status: answer.status,
        body: bodyExcerpt(answer),
      })
      // The client knows whether its failure may be repeated elsewhere (the work may be half done).
      if (answer.retry === false) return { kind: 'all_failed', region, failedAttempts }
      if (retryOn !== undefined && !retryOn.includes('status')) return notRetried(region, failedAttempts, 'status')
      return undefined
    } catch (error) {
      if (!(error instanceof AttemptError)) {
        // A bug, not the client's failure: its record and span say so.
        attemptKind = 'internal'
        throw error
      }
      attemptKind = error.kind
      // Cut off by the stop or by a cancel, not failed: the attempt is not the client's to answer for.
      // The client had the task all the same, so it is marked as reached (see reachedNoClient).
      if (load.closing) return { kind: 'shutting_down', region, failedAttempts, midAttempt: true }
      if (control?.cancelled) return { kind: 'cancelled', region, failedAttempts, midAttempt: true }
      failedAttempts.push({ node_id: client.nodeId, kind: error.kind, reason: error.message })
      if (error.countsAgainstClient) {
        registry.recordFailure(client, clock.now(), pool)
        judged = true
      }
      if (error.kind === 'too_large') return { kind: 'too_large', region, failedAttempts }
      if (error.kind === 'timeout')
        return { kind: 'timed_out', region, failedAttempts, timeoutMs: task.timeoutMs, ...(task.ownTimeout ? { ownTimeout: true } : {}) }
      const failureClass = RETRY_CLASS[error.kind]
      if (retryOn !== undefined && failureClass !== undefined && !retryOn.includes(failureClass)) return notRetried(region, failedAttempts, failureClass)
      return undefined
    } finally {
      registry.release(client)
      if (!judged) registry.recordNoVerdict(client)
      const attemptMs = clock.monotonic() - attemptStartedMs
      // Built without spreads: this runs on every attempt of every task.
      const tryRecord: AttemptRecord = { node_id: client.nodeId, ms: Math.round(attemptMs * 10) / 10 }
      if (attemptStatus !== undefined) tryRecord.status = attemptStatus
      if (attemptKind !== undefined) tryRecord.kind = attemptKind
      task.tries.push(tryRecord)
      hop?.end(attemptStatus, attemptKind)
      this.deps.onAttempt?.(client, attemptMs)
    }
  }

  /** The task's record, to its trace and to onFinished. `last`: the client that answered, or the last one tried. */
  private finish(task: TaskRun, last: Client | undefined, status: number, outcome: TaskRecord['outcome'], attempts: number): void {
    const { clock } = this.deps
    const nowMs = clock.now()
    const record: TaskRecord = {
      task_id: task.taskId,
      region: task.region,
      mode: 'single',
      node_id: last?.nodeId ?? null,
      status,
      outcome,
      attempts,
      latency_ms: nowMs - task.startedMs,
      durationMs: clock.monotonic() - task.startedMonotonicMs,
      finishedAtMs: nowMs,
      tries: task.tries,
    }
    task.trace?.finished(record)
    this.deps.onFinished(record)
  }

  /**
   * An untried client first; else one other than the last; the same client only if it is alone.
   * Retries look from the pool where the first attempt found candidates, so a task that found
   * clients in its own region stays there while any untried one is left, and climbs only when none
   * is and its fallback allows it. A keyed task takes the next client in its key's order.
   */
  private pickAnother(
    region: string,
    routing: TaskRouting,
    tried: ReadonlySet<string> | undefined,
    last: Client | undefined,
    firstPool: string | undefined,
    preferLocal: boolean,
  ): Picked | Extract<Outcome, { kind: 'no_client' }> {
    const { registry } = this.deps
    const climb = routing.fallback !== 'none'
    const { key, boundary } = routing
    // One options object on a first attempt (every task's): the fallbacks below are built only for a retry.
    const picked =
      !last || !tried
        ? registry.pick(region, { key, climb, fromPool: firstPool, preferLocal, boundary })
        : (registry.pick(region, { key, climb, fromPool: firstPool, exclude: tried, preferLocal, boundary }) ??
          registry.pick(region, { key, climb, fromPool: firstPool, exclude: new Set([last.nodeId]), boundary }) ??
          registry.pick(region, { key, climb, fromPool: firstPool, boundary }))
    if (picked) return picked
    return { kind: 'no_client', region, ...(climb ? {} : { fallback: 'none' as const }), ...(boundary === undefined ? {} : { boundary }) }
  }

  /** The one client a task names, if it can take the task now; a retry of such a task goes to it again. */
  private pickNamed(region: string, nodeId: string, boundary: string | undefined): Picked | Extract<Outcome, { kind: 'unknown_node' | 'node_unavailable' }> {
    const { registry } = this.deps
    const client = registry.get(nodeId)
    // A region given with the node is a constraint, not a hint: the node must be at or under it, and
    // within the token's boundary (a stored task runs later, when the node may have come back elsewhere).
    if (!client || !registry.isIn(client, region) || (boundary !== undefined && !registry.isIn(client, boundary)))
      return { kind: 'unknown_node', region, nodeId }
    if (!registry.canTakeTasks(client) || !hasSlot(client)) return { kind: 'node_unavailable', region, nodeId, why: unavailableReason(client) }
    return { client, pool: client.region }
  }
}

/** A task that failed in a class its retry_on leaves out: it ends here, retries left or not. */
function notRetried(region: string, failedAttempts: FailedAttempt[], failureClass: RetryOn): Outcome {
  return { kind: 'all_failed', region, failedAttempts, notRetried: failureClass }
}

/** One task across its attempts: what each attempt needs and adds to. */
interface TaskRun {
  region: string
  payloadJson: string
  taskId: string
  routing: TaskRouting
  control: TaskControl | undefined
  deadline: Deadline
  timeoutMs: number
  /** The task's own timeout, shorter than task_timeout, is the one in force. */
  ownTimeout: boolean
  /** Whether the HTTP pool may resend on a fresh connection (see dispatch). */
  mayResend: boolean
  failedAttempts: FailedAttempt[]
  /** Every attempt with its time, for the clients' detail (src/observe/task-stats.ts ClientTasks): bounded by retry_count. */
  tries: AttemptRecord[]
  trace: TaskTrace | undefined
  /** When it began, on the wall clock (the record's latency) and the monotonic one (its duration). */
  startedMs: number
  startedMonotonicMs: number
}

interface Picked {
  client: Client
  pool: string
  /** Handed over by the slot queue, which counted the slot already. */
  acquired?: true
}

/** How a task that got no answer shows in its record. */
function recordedOutcome(kind: Exclude<Outcome, { kind: 'answered' }>['kind']): TaskRecord['outcome'] {
  return NOBODY_TO_ASK.has(kind) ? 'no_client' : kind === 'timed_out' ? 'timeout' : 'failed'
}

/** An answer's body as text, for excerpts. */
function bodyText(answer: Answer): string {
  return typeof answer.body === 'string' ? answer.body : new TextDecoder().decode(answer.body)
}

function bodyExcerpt(answer: Answer): string {
  const text = bodyText(answer)
  return text.length > BODY_EXCERPT_CHARS ? `${text.slice(0, BODY_EXCERPT_CHARS)}…` : text
}
