import type { Client } from '../fleet/registry.ts'
import type { TaskRecord } from '../observe/task-stats.ts'
import { type Answer, AttemptError } from '../transports/types.ts'
import { MAX_JSON_DEPTH, nestingDepth } from '../wire/json-text.ts'
import type { BroadcastResult } from '../wire/task.ts'
import { type Deadline, taskTimeout } from './deadlines.ts'
import { bodyText, type DispatcherDeps } from './dispatcher.ts'

/** The same pieces the dispatcher runs on: one wiring serves both. */
export type BroadcasterDeps = DispatcherDeps

/** One client's part of a broadcast; a JSON answer is kept as its own text (see broadcastJson). */
export type BroadcastPart = Omit<BroadcastResult, 'response'> & { response?: string; responseJson?: string }

/** No client to broadcast to, or each client's part. */
export type BroadcastOutcome = { kind: 'no_client'; region: string } | { kind: 'delivered'; results: BroadcastPart[] }

/**
 * Sends one task to every eligible client at or under `region` (no fallback up the tree), each
 * protocol its best way (WebSocket: one publish on the region's topic), and waits for all answers or
 * task_timeout, whichever comes first. Nothing is retried: each client's own answer is the result.
 */
export class Broadcaster {
  constructor(private readonly deps: BroadcasterDeps) {}

  /** `timeoutMs`: the task's own `timeout`, which may shorten task_timeout, never lengthen it. */
  async broadcast(region: string, payloadJson: string, taskId: string, timeoutMs?: number): Promise<BroadcastOutcome> {
    const { registry, clock, load } = this.deps
    const targets = registry.within(region)
    const startedMs = clock.now()
    const startedMonotonicMs = clock.monotonic()
    if (targets.length === 0) {
      this.finish(taskId, region, 503, 'no_client', 0, 0, startedMs, startedMonotonicMs)
      return { kind: 'no_client', region }
    }
    const deadline = this.deps.deadlines.start(taskTimeout(this.deps.settings().taskTimeoutMs, timeoutMs).timeoutMs)
    load.inFlight++
    try {
      const answers = this.send(region, taskId, payloadJson, targets, deadline)
      const results = await Promise.all(targets.map((client) => this.settle(client, answers.get(client.nodeId)!, region)))
      const answered = results.filter((result) => result.error === undefined).length
      this.finish(taskId, region, answered ? 200 : 502, answered ? 'ok' : 'failed', targets.length, answered, startedMs, startedMonotonicMs)
      return { kind: 'delivered', results }
    } finally {
      this.deps.deadlines.end(deadline)
      load.inFlight--
    }
  }

  /** Each protocol's clients through its fan-out when it has one, else a send each. */
  private send(region: string, taskId: string, payloadJson: string, targets: Client[], deadline: Deadline) {
    const answers = new Map<string, Promise<Answer>>()
    const byRoute = Map.groupBy(targets, (client) => client.route)
    for (const [route, clients] of byRoute) {
      const transport = this.deps.transports[route]
      // An agent with slots is on no topic (a publish cannot skip a full one): it gets its part by a send of its own.
      const slotted = transport.fanOut ? clients.filter((client) => client.maxInFlight !== undefined) : clients
      if (transport.fanOut) {
        const unslotted = slotted.length === 0 ? clients : clients.filter((client) => client.maxInFlight === undefined)
        for (const [nodeId, answer] of transport.fanOut(region, taskId, payloadJson, unslotted, deadline)) answers.set(nodeId, answer)
      }
      for (const client of slotted) answers.set(client.nodeId, transport.send(client, taskId, payloadJson, deadline))
    }
    return answers
  }

  private async settle(client: Client, pending: Promise<Answer>, region: string): Promise<BroadcastPart> {
    const { registry, clock, load } = this.deps
    const startedMs = clock.monotonic()
    const base = { node_id: client.nodeId, protocol: client.protocol }
    registry.acquire(client)
    try {
      const answer = await pending
      // The pool of a broadcast is its region: a client fails it like any task drawn from there.
      if (answer.status >= 500) registry.recordFailure(client, clock.now(), region)
      else registry.recordSuccess(client, clock.monotonic() - startedMs, clock.now())
      return { ...base, status: answer.status, ...decodeBody(answer) }
    } catch (error) {
      if (!(error instanceof AttemptError)) throw error
      if (load.closing) return { ...base, status: 503, error: 'the server shut down before the client answered' }
      if (error.countsAgainstClient) registry.recordFailure(client, clock.now(), region)
      return { ...base, status: error.kind === 'timeout' ? 504 : 502, kind: error.kind, error: error.message }
    } finally {
      registry.release(client)
    }
  }

  private finish(
    taskId: string,
    region: string,
    status: number,
    outcome: TaskRecord['outcome'],
    attempts: number,
    answered: number,
    startedMs: number,
    startedMonotonicMs: number,
  ): void {
    const nowMs = this.deps.clock.now()
    this.deps.onFinished({
      task_id: taskId,
      region,
      mode: 'broadcast',
      node_id: null,
      status,
      outcome,
      attempts,
      answered,
      latency_ms: nowMs - startedMs,
      durationMs: this.deps.clock.monotonic() - startedMonotonicMs,
      finishedAtMs: nowMs,
    })
  }
}

/** A JSON answer stays its own text; anything else (or JSON too deep to pass on) is shown as a string. */
function decodeBody(answer: Answer): Pick<BroadcastPart, 'response' | 'responseJson'> {
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
export function broadcastJson(summary: { task_id: string; region: string; targets: number; answered: number }, results: readonly BroadcastPart[]): string {
  const items = results.map(({ responseJson, ...rest }) => {
    const head = JSON.stringify(rest)
    return responseJson === undefined ? head : `${head.slice(0, -1)},"response":${responseJson}}`
  })
  return `${JSON.stringify(summary).slice(0, -1)},"results":[${items.join(',')}]}`
}
