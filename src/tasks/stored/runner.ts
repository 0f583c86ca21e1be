import type { Clock } from '../../clock.ts'
import { errorResponse, MoonlightError } from '../../errors.ts'
import type { Tracer } from '../../observe/tracing/tracer.ts'
import { FINAL_STATES, type TaskAttempt } from '../../wire/async-task.ts'
import type { FailedAttempt } from '../../wire/errors.ts'
import { TaskControl } from '../control.ts'
import type { Dispatcher } from '../dispatcher.ts'
import type { Outcome } from '../outcome.ts'
import { reachedNoClient } from '../outcome.ts'
import { type IdempotencyClaim, type NewTask, type StoredTask, StoreFullError, type TaskResult, type TaskStore } from './store.ts'

export interface StoredTasksSettings {
  /** Async tasks this instance runs at once. */
  concurrency: number
  /** A claimed task not acked within this long is taken over (cluster): the dispatch deadline plus tasks.claim_margin. */
  claimTimeoutMs: number
  resultTtlMs: number
  idempotencyTtlMs: number
}

/** News of stored tasks between the instances of a cluster (a no-op alone, where everything is local). */
export interface TaskNews {
  queued(): void
  finished(taskId: string): void
  cancel(taskId: string): void
}

export interface StoredTasksDeps {
  store: TaskStore
  dispatcher: Dispatcher
  clock: Clock
  settings: () => StoredTasksSettings
  instanceId: () => string
  news: TaskNews
  /** The caller's answer for an outcome, exactly as a sync task gets it (src/http/task-outcome.ts). */
  respond: (outcome: Outcome, taskId: string, disclosure: NewTask['disclosure']) => Response
  /** Tells a WebSocket agent of this instance that holds `taskId` that it was cancelled. */
  tellAgentCancelled: (taskId: string) => void
  log: (line: string) => void
  /** Logs a bug with its stack (the server's one place for them). */
  report: (error: unknown) => void
  /** Continues a stored task's trace when it runs (src/observe/tracing/). */
  tracer?: Tracer
}

/** A task to store: new, or (with an idempotency key) perhaps one stored before. */
export interface Submission {
  task: NewTask
  idempotency?: { key: string; bodyHash: string } | undefined
}

/** What a submission came to: a task stored now, or the one its idempotency key already names. */
export type Submitted = { task: StoredTask; replayed: false } | { task: StoredTask; replayed: true }

const POLL_EVERY_MS = 1000
/** Unfinished tasks are re-read at least this often while someone waits on them: a missed notice costs a second, not the wait. */
const RECHECK_EVERY_MS = 1000

/**
 * Stored tasks: async ones (run from the queue by `concurrency` workers) and tasks sent with an
 * Idempotency-Key (run in their request, but stored so that a retry gets the same answer). Every
 * transition goes through the store, which decides races (a cancel and a finish, two instances
 * claiming one task); this class runs tasks and wakes whoever waits on them.
 */
export class StoredTasks {
  /** Tasks running here: for cancelling them, and for writing them back into a store that lost them. */
  private readonly running = new Map<string, { task: StoredTask; control: TaskControl }>()
  private readonly waiters = new Map<string, Set<() => void>>()
  private workers = 0
  private pumping = false
  private stopped = false
  private cancelTimer: (() => void) | undefined

  constructor(private readonly deps: StoredTasksDeps) {}

  /** Starts the workers' poll: the queue is read on every notice, and at least once a second (takeovers included). */
  start(): void {
    this.cancelTimer ??= this.deps.clock.every(POLL_EVERY_MS, () => {
      void this.pump(true)
    })
    void this.pump(false)
  }

  /** No task is claimed from now on; those running here finish (the server's grace period waits for them). */
  stop(): void {
    this.stopped = true
    this.cancelTimer?.()
    for (const wake of [...this.waiters.values()].flatMap((set) => [...set])) wake()
  }

  /** Stores a task, or finds the one its idempotency key holds: 422 if that one came with another body. */
  async submit({ task, idempotency }: Submission): Promise<Submitted> {
    const { settings, store, clock } = this.deps
    const claim: IdempotencyClaim | undefined = idempotency
      ? { owner: task.owner, key: idempotency.key, bodyHash: idempotency.bodyHash, ttlMs: settings().idempotencyTtlMs }
      : undefined
    const stored: NewTask = idempotency ? { ...task, idempotency: { key: idempotency.key, body_hash: idempotency.bodyHash } } : task
    const added = await guard(() => store.add(stored, claim, clock.now()))
    if (!added.added) {
      if (!added.sameBody)
        throw new MoonlightError(422, 'idempotency_mismatch', 'this Idempotency-Key was used before with a different request body', {
          task_id: added.existing?.task_id,
        })
      if (added.existing) return { task: added.existing, replayed: true }
    }
    const fresh: StoredTask = { ...stored, state: 'queued', finished_at_ms: null }
    if (task.mode === 'async') {
      this.deps.news.queued()
      void this.pump(false)
    }
    return { task: fresh, replayed: false }
  }

  /**
   * Runs a sync task that was stored (it had an idempotency key) in its own request and stores how it
   * ended; the caller gets its answer even if storing it failed (a retry would then run it again).
   */
  async runHere(task: StoredTask, takeover = false): Promise<Response | undefined> {
    // Never a takeover of a run that is still this instance's, nor once the stop began (it wakes every
    // waiting replay early, while the first run still has its grace period to finish).
    if (takeover && (this.stopped || this.running.has(task.task_id))) return undefined
    // Not started: cancelled, taken over or finished meanwhile; the caller answers from the store.
    if (!(await guard(() => this.deps.store.start(task.task_id, this.deps.instanceId(), takeover)))) return undefined
    if (takeover) this.deps.log(`[mls] tasks: took over ${task.task_id} (its instance did not finish it in time)`)
    return this.execute(task, false, takeover && task.state === 'running')
  }

  async get(taskId: string): Promise<StoredTask | undefined> {
    return guard(() => this.deps.store.get(taskId, this.deps.clock.now()))
  }

  /** The task once it has ended, or as it is when `waitMs` has passed. */
  async wait(taskId: string, waitMs: number): Promise<StoredTask | undefined> {
    const { clock } = this.deps
    const untilMs = clock.monotonic() + waitMs
    for (;;) {
      const task = await this.get(taskId)
      const leftMs = untilMs - clock.monotonic()
      if (!task || FINAL_STATES.has(task.state) || leftMs <= 0 || this.stopped) return task
      await this.sleep(taskId, Math.min(leftMs, RECHECK_EVERY_MS))
    }
  }

  /** The tasks running here now, as they were when they started. */
  runningHere(): StoredTask[] {
    return [...this.running.values()].map(({ task }) => task)
  }

  /** Cancels a queued or running task; the task as it was before, or undefined if unknown. */
  async cancel(taskId: string): Promise<StoredTask | undefined> {
    const before = await guard(() => this.deps.store.cancel(taskId, this.deps.clock.now()))
    if (before && !FINAL_STATES.has(before.state)) {
      this.stopHere(taskId)
      this.deps.news.cancel(taskId)
      this.wake(taskId)
      this.deps.news.finished(taskId)
    }
    return before
  }

  /** A cancel heard from another instance: the task may be running here, or its agent held here. */
  onCancel(taskId: string): void {
    this.stopHere(taskId)
    this.wake(taskId)
  }

  /** Another instance finished a task: whoever waits on it here looks again. */
  onFinished(taskId: string): void {
    this.wake(taskId)
  }

  /** Claims queued tasks (and, with `takeovers`, orphaned ones) while there are free workers. */
  async pump(takeovers: boolean): Promise<void> {
    if (this.pumping || this.stopped) return
    this.pumping = true
    const { store, settings, instanceId } = this.deps
    try {
      const { concurrency, claimTimeoutMs } = settings()
      if (takeovers && this.workers < concurrency) {
        for (const taskId of await store.reclaim(instanceId(), claimTimeoutMs, concurrency - this.workers)) this.runQueued(taskId, true)
      }
      while (!this.stopped && this.workers < concurrency) {
        const claimed = await store.claim(instanceId(), concurrency - this.workers)
        if (claimed.length === 0) break
        for (const taskId of claimed) this.runQueued(taskId, false)
      }
    } catch (error) {
      // The store is away (Redis down): the queue is read again at the next poll.
      if (takeovers) this.deps.log(`[mls] tasks: cannot read the queue: ${(error as Error).message}`)
    } finally {
      this.pumping = false
    }
  }

  private runQueued(taskId: string, takeover: boolean): void {
    this.workers++
    void (async () => {
      const { store, clock } = this.deps
      try {
        const task = await store.get(taskId, clock.now())
        if (task && (await store.start(taskId, this.deps.instanceId(), takeover))) {
          if (takeover) this.deps.log(`[mls] tasks: took over ${taskId}, claimed by ${task.claimed_by ?? 'another instance'} and not finished in time`)
          await this.execute(task, true, takeover && task.state === 'running')
        }
        await store.ack(taskId)
      } catch (error) {
        // Left unacked: another instance (or this one, at the next poll) takes it over after the claim timeout.
        this.deps.log(`[mls] tasks: ${taskId} could not be run or recorded: ${(error as Error).message}`)
      } finally {
        this.workers--
        if (!this.stopped) void this.pump(false)
      }
    })()
  }

  /**
   * Dispatches a started task and stores how it ended (a result for a task cancelled meanwhile is
   * dropped by the store); returns the caller's answer. A store that fails throws when `strict` (the
   * queued task stays unacked, to be taken over), else is logged.
   */
  private async execute(task: StoredTask, strict: boolean, startedElsewhere: boolean): Promise<Response> {
    const { dispatcher, store, clock } = this.deps
    let outcome: Outcome | undefined
    let response: Response
    const control = new TaskControl()
    // The dispatcher ends it at once if its retry_on leaves out "lost" (it may have reached an agent already).
    control.startedElsewhere = startedElsewhere
    this.running.set(task.task_id, { task, control })
    try {
      outcome = await dispatcher.dispatch(task.region, task.payload, task.task_id, task.routing, control, this.deps.tracer?.resume(task.trace))
      response = this.deps.respond(outcome, task.task_id, task.disclosure)
    } catch (error) {
      // A bug (the dispatcher throws for nothing else): the task ends with the 500 a sync caller gets, stored
      // like any answer, so nobody waits on it for ever and its key replays that answer rather than running it again.
      response = errorResponse(error, this.deps.report)
    } finally {
      this.running.delete(task.task_id)
    }
    try {
      // A keyed task that reached no client did not run: its key is freed, so a retry runs it (a sync
      // one is forgotten altogether, its 503 is for this request only). It must not replay a 503 for a day.
      // A cancelled one keeps its key wherever the cancel found it: the key names that cancelled task.
      const cancelled = outcome?.kind === 'cancelled'
      const reachedNone = outcome !== undefined && reachedNoClient(outcome)
      if (task.idempotency && reachedNone && !cancelled) await store.release(task, task.mode === 'single')
      if (cancelled || (task.mode === 'single' && reachedNone)) return response
      const result = await resultOf(outcome, response.clone(), task.disclosure)
      if (await store.finish(task.task_id, result, clock.now())) {
        this.wake(task.task_id)
        this.deps.news.finished(task.task_id)
      }
    } catch (error) {
      if (strict) throw error
      this.deps.log(`[mls] tasks: the answer to ${task.task_id} could not be stored: ${(error as Error).message}`)
    }
    return response
  }

  private stopHere(taskId: string): void {
    // The agent first, while its attempt still waits: the cancel then cuts the attempt here.
    this.deps.tellAgentCancelled(taskId)
    this.running.get(taskId)?.control.cancel()
  }

  private sleep(taskId: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      let set = this.waiters.get(taskId)
      if (!set) {
        set = new Set()
        this.waiters.set(taskId, set)
      }
      const waiters = set
      const done = () => {
        cancelTimer()
        waiters.delete(done)
        if (waiters.size === 0 && this.waiters.get(taskId) === waiters) this.waiters.delete(taskId)
        resolve()
      }
      const cancelTimer = this.deps.clock.after(ms, done)
      waiters.add(done)
    })
  }

  private wake(taskId: string): void {
    const set = this.waiters.get(taskId)
    if (set) for (const done of [...set]) done()
  }
}

/** A store that cannot be reached is a 503 the caller can retry, never a 500 or a hang. */
async function guard<T>(operation: () => Promise<T>): Promise<T> {
  try {
    return await operation()
  } catch (error) {
    if (error instanceof MoonlightError) throw error
    if (error instanceof StoreFullError) throw new MoonlightError(503, 'too_many_tasks', error.message, {}, { 'retry-after': '1' })
    throw new MoonlightError(503, 'store_unavailable', `the task store cannot be reached: ${(error as Error).message}`, {}, { 'retry-after': '1' })
  }
}

/** How a task ended, as stored: the caller's answer (status, headers, body bytes) and who answered; no outcome: a bug ended it. */
async function resultOf(outcome: Outcome | undefined, response: Response, disclosure: NewTask['disclosure']): Promise<TaskResult> {
  const headers: Record<string, string> = {}
  response.headers.forEach((value, name) => {
    headers[name] = value
  })
  const body = Buffer.from(await response.arrayBuffer())
  if (outcome === undefined) return { state: 'failed', node_id: null, attempts: [], status: response.status, headers, body_b64: body.toString('base64') }
  const failed = outcome.kind === 'answered' ? [] : 'failedAttempts' in outcome ? outcome.failedAttempts : []
  const attempts: TaskAttempt[] = (outcome.kind === 'answered' ? outcome.failedAttempts : failed).map((attempt) => shownAttempt(attempt, disclosure))
  if (outcome.kind === 'answered') attempts.push({ node_id: outcome.client.nodeId, status: outcome.answer.status })
  return {
    state: outcome.kind === 'answered' ? 'done' : 'failed',
    node_id: outcome.kind === 'answered' ? outcome.client.nodeId : (attempts.at(-1)?.node_id ?? null),
    attempts,
    status: response.status,
    headers,
    body_b64: body.toString('base64'),
  }
}

function shownAttempt(attempt: FailedAttempt, disclosure: NewTask['disclosure']): TaskAttempt {
  return {
    node_id: attempt.node_id,
    kind: attempt.kind,
    ...(attempt.status === undefined ? {} : { status: attempt.status }),
    // Agents' addresses and error pages are for the monitor role, as in a sync task's 502.
    ...(disclosure === 'details' ? { reason: attempt.reason } : {}),
  }
}
