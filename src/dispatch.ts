import { type Deadline, DeadlineQueue } from './deadlines.ts'
import { MoonlightError } from './errors.ts'
import { MAX_JSON_DEPTH, nestingDepth } from './json-text.ts'
import type { Client, Protocol, Registry } from './registry.ts'
import type { TaskRecord } from './task-stats.ts'
import { type Answer, AttemptError, type Transport } from './transports/types.ts'
import type { WsTransport } from './transports/ws.ts'

export interface DispatchSettings {
  retryCount: number
  taskTimeoutMs: number
}

/** One attempt that did not produce the caller's answer. */
export interface FailedAttempt {
  node_id: string
  reason: string
  status?: number
  /** The start of a 5xx answer's body: usually the client's own account of what went wrong. */
  body?: string
}

const BODY_EXCERPT_CHARS = 1024
const MAX_TIMER_DELAY_MS = 2 ** 31 - 1

export interface Delivered {
  answer: Answer
  client: Client
  failedAttempts: FailedAttempt[]
}

export interface BroadcastResult {
  node_id: string
  protocol: Protocol
  status: number
  /** An answer that is not JSON, as text. */
  response?: string
  /** A JSON answer's own text, spliced into the reply as it came (see broadcastJson). */
  responseJson?: string
  error?: string
}

export interface DispatcherDeps {
  registry: Registry
  http: Transport
  ws: WsTransport
  settings: () => DispatchSettings
  /** Sends one message to every subscriber of a region topic (Bun's server.publish). */
  publish: (region: string, message: string) => void
  onFinished: (record: TaskRecord) => void
  now?: () => number
}

/**
 * Runs tasks: picks a client, sends, and on a retryable failure (unreachable, connection lost,
 * 5xx) tries a different client, up to retry_count more times, all within task_timeout.
 * A timeout is not retried: the client may still be running the task, and running it twice
 * is worse for most work than answering 504.
 */
export class Dispatcher {
  inFlight = 0
  private readonly deadlines = new DeadlineQueue()
  /** One timer for the earliest deadline, not one per task. Deadlines are on the monotonic clock: a wall clock stepped by NTP must not move them. */
  private timer: ReturnType<typeof setTimeout> | undefined
  private timerAtMs = Number.POSITIVE_INFINITY
  private closing = false
  private sequence = 0
  private readonly bootPrefix = Math.random().toString(36).slice(2, 8)
  private readonly now: () => number

  constructor(private readonly deps: DispatcherDeps) {
    this.now = deps.now ?? Date.now
  }

  newTaskId(): string {
    return `${this.bootPrefix}-${(++this.sequence).toString(36)}`
  }

  async dispatch(region: string, payloadJson: string, taskId: string): Promise<Delivered> {
    const { registry } = this.deps
    const { retryCount, taskTimeoutMs } = this.deps.settings()
    const started = this.now()
    const failedAttempts: FailedAttempt[] = []
    // Made on the first retry: most tasks never need it.
    let tried: Set<string> | undefined
    const deadline = this.startDeadline(taskTimeoutMs)
    let last: Client | undefined
    this.inFlight++
    try {
      for (let attempt = 0; attempt <= retryCount; attempt++) {
        if (this.closing) throw shuttingDown(region, failedAttempts)
        if (last !== undefined) (tried ??= new Set()).add(last.nodeId)
        const picked = this.pickAnother(region, tried, last)
        if (!picked) {
          if (attempt === 0) throw new MoonlightError(503, 'no_client', `no healthy client in region "${region}" or above it`, { region })
          break
        }
        const { client, pool } = picked
        last = client
        const attemptStarted = performance.now()
        // Every way an attempt ends gives a verdict on the client, or says there is none (which ends a trial).
        let judged = false
        client.inFlight++
        try {
          const answer = await this.transportFor(client).send(client, taskId, payloadJson, deadline)
          const latencyMs = performance.now() - attemptStarted
          judged = true
          if (answer.status >= 500) {
            registry.recordFailure(client, this.now(), pool)
            failedAttempts.push({ node_id: client.nodeId, reason: `answered ${answer.status}`, status: answer.status, body: bodyExcerpt(answer) })
            continue
          }
          // A 4xx is the client's honest answer to this payload, not a sign the client is unwell.
          registry.recordSuccess(client, latencyMs, this.now())
          this.finish(taskId, region, client.nodeId, answer.status, 'ok', failedAttempts.length + 1, started)
          return { answer, client, failedAttempts }
        } catch (error) {
          if (!(error instanceof AttemptError)) throw error
          if (this.closing) throw shuttingDown(region, failedAttempts)
          failedAttempts.push({ node_id: client.nodeId, reason: error.message })
          if (error.countsAgainstClient) {
            registry.recordFailure(client, this.now(), pool)
            judged = true
          }
          if (error.kind === 'too_large') {
            // Doing the work again elsewhere would not make the answer smaller.
            throw new MoonlightError(502, 'answer_too_large', 'the client\'s answer was too large', { region, attempts: failedAttempts })
          }
          if (error.kind === 'timeout') {
            throw new MoonlightError(504, 'timeout', `no answer within task_timeout (${taskTimeoutMs / 1000} s)`, {
              region,
              attempts: failedAttempts,
            })
          }
        } finally {
          client.inFlight--
          if (!judged) registry.recordNoVerdict(client)
        }
      }
      throw new MoonlightError(502, 'all_attempts_failed', `every attempt failed (${failedAttempts.length})`, {
        region,
        attempts: failedAttempts,
      })
    } catch (error) {
      if (error instanceof MoonlightError) {
        const outcome = error.code === 'no_client' ? 'no_client' : error.code === 'timeout' ? 'timeout' : 'failed'
        this.finish(taskId, region, last?.nodeId ?? null, error.status, outcome, failedAttempts.length, started)
      }
      throw error
    } finally {
      this.deadlines.remove(deadline)
      this.inFlight--
    }
  }

  /**
   * Ends every task still waiting: each answers 503 "shutting_down" at once instead of being cut off
   * with the connection. For a graceful stop whose grace period has run out.
   */
  abortAll(): void {
    this.closing = true
    this.deadlines.expireAll()
    clearTimeout(this.timer)
    this.timer = undefined
    this.timerAtMs = Number.POSITIVE_INFINITY
  }

  /**
   * Sends the task to every eligible client at or under `region` (no fallback up the tree):
   * WebSocket clients through one publish on the region's topic, HTTP clients in parallel.
   * Waits for all answers or task_timeout, whichever comes first.
   */
  async broadcast(region: string, payloadJson: string, taskId: string): Promise<BroadcastResult[]> {
    const { registry, ws } = this.deps
    const targets = registry.within(region)
    const started = this.now()
    if (targets.length === 0) {
      this.finish(taskId, region, null, 503, 'no_client', 0, started, 'broadcast')
      throw new MoonlightError(503, 'no_client', `no healthy client in region "${region}"`, { region })
    }
    const { taskTimeoutMs } = this.deps.settings()
    const deadline = this.startDeadline(taskTimeoutMs)
    this.inFlight++
    try {
      const wsTargets = targets.filter((client) => client.protocol === 'ws').map((client) => client.nodeId)
      const wsAnswers =
        wsTargets.length > 0
          ? ws.broadcast((message) => this.deps.publish(region, message), taskId, payloadJson, wsTargets, deadline)
          : new Map<string, Promise<Answer>>()
      const results = await Promise.all(
        targets.map(async (client): Promise<BroadcastResult> => {
          const attemptStarted = performance.now()
          client.inFlight++
          try {
            const answer = await (wsAnswers.get(client.nodeId) ?? this.deps.http.send(client, taskId, payloadJson, deadline))
            if (answer.status >= 500) registry.recordFailure(client, this.now(), region)
            else registry.recordSuccess(client, performance.now() - attemptStarted, this.now())
            return { node_id: client.nodeId, protocol: client.protocol, status: answer.status, ...decodeBody(answer) }
          } catch (error) {
            if (!(error instanceof AttemptError)) throw error
            if (this.closing) return { node_id: client.nodeId, protocol: client.protocol, status: 503, error: 'the server shut down before the client answered' }
            if (error.countsAgainstClient) registry.recordFailure(client, this.now(), region)
            return { node_id: client.nodeId, protocol: client.protocol, status: error.kind === 'timeout' ? 504 : 502, error: error.message }
          } finally {
            client.inFlight--
          }
        }),
      )
      const answered = results.filter((result) => result.error === undefined).length
      this.finish(taskId, region, null, answered ? 200 : 502, answered ? 'ok' : 'failed', targets.length, started, 'broadcast')
      return results
    } finally {
      this.deadlines.remove(deadline)
      this.inFlight--
    }
  }

  private startDeadline(timeoutMs: number): Deadline {
    const deadline = this.deadlines.add(timeoutMs, performance.now())
    if (deadline.atMs < this.timerAtMs) this.armTimer(deadline.atMs)
    return deadline
  }

  private armTimer(atMs: number): void {
    clearTimeout(this.timer)
    this.timerAtMs = atMs
    // Past 2^31-1 ms setTimeout fires at once; from the longest delay it allows, onTimer just waits again.
    this.timer = setTimeout(this.onTimer, Math.min(MAX_TIMER_DELAY_MS, Math.max(0, atMs - performance.now())))
    // Tasks keep the server alive, not their deadlines: a stopped server must be free to exit.
    this.timer.unref()
  }

  /**
   * Fires what is due and waits for the next deadline. Tasks that end early leave the timer armed
   * for a deadline no longer queued; it then finds nothing due, which is cheaper than re-arming per task.
   */
  private readonly onTimer = (): void => {
    this.timer = undefined
    this.timerAtMs = Number.POSITIVE_INFINITY
    this.deadlines.expireDue(performance.now())
    const next = this.deadlines.earliestMs
    if (next !== undefined) this.armTimer(next)
  }

  /** An untried client first; else one other than the last; the same client only if it is alone. */
  private pickAnother(region: string, tried: ReadonlySet<string> | undefined, last: Client | undefined) {
    const { registry } = this.deps
    if (!last || !tried) return registry.pickFrom(region)
    return registry.pickFrom(region, tried) ?? registry.pickFrom(region, new Set([last.nodeId])) ?? registry.pickFrom(region)
  }

  private transportFor(client: Client): Transport {
    return client.protocol === 'ws' ? this.deps.ws : this.deps.http
  }

  private finish(
    taskId: string,
    region: string,
    nodeId: string | null,
    status: number,
    outcome: TaskRecord['outcome'],
    attempts: number,
    startedMs: number,
    mode: TaskRecord['mode'] = 'single',
  ): void {
    const now = this.now()
    this.deps.onFinished({ task_id: taskId, region, mode, node_id: nodeId, status, outcome, attempts, latency_ms: now - startedMs, finishedAtMs: now })
  }
}

function shuttingDown(region: string, attempts: FailedAttempt[]): MoonlightError {
  return new MoonlightError(503, 'shutting_down', 'the server shut down before a client answered', { region, attempts })
}

function bodyText(answer: Answer): string {
  return typeof answer.body === 'string' ? answer.body : new TextDecoder().decode(answer.body)
}

function bodyExcerpt(answer: Answer): string {
  const text = bodyText(answer)
  return text.length > BODY_EXCERPT_CHARS ? `${text.slice(0, BODY_EXCERPT_CHARS)}…` : text
}

/** A JSON answer stays its own text; anything else (or JSON too deep to pass on) is shown as a string. */
function decodeBody(answer: Answer): Pick<BroadcastResult, 'response' | 'responseJson'> {
  const text = bodyText(answer)
  if (!(answer.headers['content-type'] ?? '').includes('json') || nestingDepth(text) > MAX_JSON_DEPTH) return { response: text }
  try {
    JSON.parse(text)
    return { responseJson: text.trim() }
  } catch {
    // The client said JSON but sent something else: show it as it came.
    return { response: text }
  }
}

/** The reply to a broadcast, with each JSON answer spliced in as its own text rather than parsed and serialized again. */
export function broadcastJson(summary: Record<string, unknown>, results: readonly BroadcastResult[]): string {
  const items = results.map(({ responseJson, ...rest }) => {
    const head = JSON.stringify(rest)
    return responseJson === undefined ? head : `${head.slice(0, -1)},"response":${responseJson}}`
  })
  return `${JSON.stringify(summary).slice(0, -1)},"results":[${items.join(',')}]}`
}
