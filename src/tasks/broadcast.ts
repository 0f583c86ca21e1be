import type { Client, Route } from '../fleet/registry.ts'
import type { TaskRecord } from '../observe/task-stats.ts'
import type { AttemptTrace, TaskTrace } from '../observe/tracing/tracer.ts'
import { type Answer, AttemptError, type FanOutSink } from '../transports/types.ts'
import { utf8OrBase64 } from '../wire/bytes.ts'
import { MAX_JSON_DEPTH, nestingDepth } from '../wire/json-text.ts'
import type { BroadcastResult } from '../wire/task.ts'
import { type Deadline, taskTimeout } from './deadlines.ts'
import type { DispatcherDeps } from './dispatcher.ts'

/** The same pieces the dispatcher runs on: one wiring serves both. */
export type BroadcasterDeps = DispatcherDeps

/**
 * One client's part of a broadcast; a JSON answer is kept as its own text (see broadcastJson), bytes
 * that are not UTF-8 as base64 (`"response": {"base64": "…"}`, as a stored task's view shows them).
 */
export type BroadcastPart = Omit<BroadcastResult, 'response'> & { response?: string; responseJson?: string; responseBase64?: string }

/** No client to broadcast to, or each client's part. */
export type BroadcastOutcome = { kind: 'no_client'; region: string } | { kind: 'delivered'; results: BroadcastPart[] }

/**
 * Sends one task to every eligible client at or under `region` (no fallback up the tree), each
 * protocol its best way (WebSocket: one publish on the region's topic), and waits for all answers or
 * task_timeout, whichever comes first. Nothing is retried: each client's own answer is the result.
 */
export class Broadcaster {
  constructor(private readonly deps: BroadcasterDeps) {}

  /**
   * `timeoutMs`: the task's own `timeout`, which may shorten task_timeout, never lengthen it. `trace`: the
   * caller's (src/observe/tracing/): every agent gets it, under one span for the whole send when it is recorded.
   */
  async broadcast(region: string, payloadJson: string, taskId: string, timeoutMs?: number, trace?: TaskTrace): Promise<BroadcastOutcome> {
    const { registry, clock, load } = this.deps
    const targets = registry.within(region)
    const run: BroadcastRun = { taskId, region, trace, startedMs: clock.now(), startedMonotonicMs: clock.monotonic() }
    if (targets.length === 0) {
      this.finish(run, 503, 'no_client', 0, 0)
      return { kind: 'no_client', region }
    }
    const deadline = this.deps.deadlines.start(taskTimeout(this.deps.settings().taskTimeoutMs, timeoutMs).timeoutMs)
    const hop = trace?.broadcast(targets.length)
    load.inFlight++
    try {
      let results: BroadcastPart[]
      let gathering: Gathering | undefined
      try {
        results = await new Promise<BroadcastPart[]>((resolve, reject) => {
          gathering = new Gathering(this.deps, region, targets, run.startedMonotonicMs, resolve, reject)
          this.send(gathering, taskId, payloadJson, deadline, hop)
        })
      } catch (error) {
        // Not a client's failure but a bug (the caller gets 500 internal): the broadcast still counts, as failed.
        try {
          hop?.end(500, 'internal')
          this.finish(run, 500, 'failed', targets.length, gathering?.answeredSoFar() ?? 0)
        } catch {
          // A second bug, in the record's consumers: the first is the one the caller and the log get.
        }
        throw error
      }
      let answered = 0
      for (const result of results) if (result.error === undefined) answered++
      hop?.end(answered ? 200 : 502, answered ? undefined : 'failed')
      this.finish(run, answered ? 200 : 502, answered ? 'ok' : 'failed', targets.length, answered)
      return { kind: 'delivered', results }
    } finally {
      this.deps.deadlines.end(deadline)
      load.inFlight--
    }
  }

  /** Each protocol's clients through its fan-out when it has one, else a send each; every answer goes to `gathering`. */
  private send(gathering: Gathering, taskId: string, payloadJson: string, deadline: Deadline, hop: AttemptTrace | undefined): void {
    const traceHeaders = hop?.headers
    const { targets, region } = gathering
    // Every target holds a slot from now until its part is in (the gathering releases it).
    for (const client of targets) this.deps.registry.acquire(client)
    const byRoute = new Map<Route, number[]>()
    for (let index = 0; index < targets.length; index++) {
      const route = targets[index]!.route
      const indices = byRoute.get(route)
      if (indices) indices.push(index)
      else byRoute.set(route, [index])
    }
    for (const [route, indices] of byRoute) {
      const transport = this.deps.transports[route]
      // An agent with slots is on no topic (a publish cannot skip a full one): it gets its part by a send of its own.
      const slotted = transport.fanOut ? indices.filter((index) => targets[index]!.maxInFlight !== undefined) : indices
      if (transport.fanOut) {
        const unslotted = slotted.length === 0 ? indices : indices.filter((index) => targets[index]!.maxInFlight === undefined)
        transport.fanOut(
          region,
          taskId,
          payloadJson,
          unslotted.map((index) => targets[index]!),
          deadline,
          gathering.sinkFor(unslotted),
          traceHeaders,
        )
      }
      for (const index of slotted) {
        transport.send(targets[index]!, taskId, payloadJson, deadline, true, traceHeaders).then(
          (answer) => gathering.answered(index, answer, false),
          (error: unknown) => gathering.failed(index, error),
        )
      }
    }
  }

  /** The broadcast's record, to its trace and to onFinished: `attempts` clients sent to, `answered` of them answering. */
  private finish(run: BroadcastRun, status: number, outcome: TaskRecord['outcome'], attempts: number, answered: number): void {
    const nowMs = this.deps.clock.now()
    const record: TaskRecord = {
      task_id: run.taskId,
      region: run.region,
      mode: 'broadcast',
      node_id: null,
      status,
      outcome,
      attempts,
      answered,
      latency_ms: nowMs - run.startedMs,
      durationMs: this.deps.clock.monotonic() - run.startedMonotonicMs,
      finishedAtMs: nowMs,
    }
    run.trace?.finished(record)
    this.deps.onFinished(record)
  }
}

/** One broadcast, for its record: what it was and when it began (wall clock and monotonic). */
interface BroadcastRun {
  taskId: string
  region: string
  trace: TaskTrace | undefined
  startedMs: number
  startedMonotonicMs: number
}

/**
 * The parts of one broadcast as they come in, each in its target's place, and the registry told of
 * each client's answer or failure: callbacks, not a promise and an async function per client.
 */
class Gathering {
  private readonly results: BroadcastPart[]
  private waiting: number
  private ended = false

  constructor(
    private readonly deps: BroadcasterDeps,
    readonly region: string,
    readonly targets: readonly Client[],
    private readonly startedMonotonicMs: number,
    private readonly resolve: (results: BroadcastPart[]) => void,
    private readonly reject: (error: unknown) => void,
  ) {
    this.results = new Array(targets.length)
    this.waiting = targets.length
  }

  /** How many clients have answered so far (a broadcast a bug ended still says how many had). */
  answeredSoFar(): number {
    let answered = 0
    for (const part of this.results) if (part !== undefined && part.error === undefined) answered++
    return answered
  }

  /** A fan-out's sink: its clients are `indices` of the targets, in order. */
  sinkFor(indices: readonly number[]): FanOutSink {
    return {
      answered: (at, answer, checkedJson) => this.answered(indices[at]!, answer, checkedJson),
      failed: (at, error) => this.failed(indices[at]!, error),
    }
  }

  answered(index: number, answer: Answer, checkedJson: boolean): void {
    const { registry, clock } = this.deps
    const client = this.targets[index]!
    // The pool of a broadcast is its region: a client fails it like any task drawn from there.
    if (answer.status >= 500) registry.recordFailure(client, clock.now(), this.region)
    else registry.recordSuccess(client, clock.monotonic() - this.startedMonotonicMs, clock.now())
    this.done(index, client, answeredPart(client, answer, checkedJson))
  }

  failed(index: number, error: unknown): void {
    const { registry, clock, load } = this.deps
    const client = this.targets[index]!
    if (!(error instanceof AttemptError)) {
      registry.release(client)
      this.end(() => this.reject(error))
      return
    }
    if (load.closing) {
      this.done(index, client, { node_id: client.nodeId, protocol: client.protocol, status: 503, error: 'the server shut down before the client answered' })
      return
    }
    if (error.countsAgainstClient) registry.recordFailure(client, clock.now(), this.region)
    this.done(index, client, {
      node_id: client.nodeId,
      protocol: client.protocol,
      status: error.kind === 'timeout' ? 504 : 502,
      kind: error.kind,
      error: error.message,
    })
  }

  private done(index: number, client: Client, part: BroadcastPart): void {
    this.deps.registry.release(client)
    this.results[index] = part
    if (--this.waiting === 0) this.end(() => this.resolve(this.results))
  }

  /** The first end wins: an unexpected error fails the broadcast at once, the parts still out only release their slots. */
  private end(how: () => void): void {
    if (this.ended) return
    this.ended = true
    how()
  }
}

/** A JSON answer stays its own text; anything else (or JSON too deep to pass on) is shown as a string. */
function answeredPart(client: Client, answer: Answer, checkedJson: boolean): BroadcastPart {
  const part: BroadcastPart = { node_id: client.nodeId, protocol: client.protocol, status: answer.status }
  // Bytes (an HTTP agent's answer that is not all ASCII): decoded exactly, or carried as base64 when they are no text.
  const text = typeof answer.body === 'string' ? answer.body : utf8OrBase64(answer.body)
  if (typeof text !== 'string') {
    part.responseBase64 = text.base64
    return part
  }
  if (!(answer.headers['content-type'] ?? '').includes('json')) part.response = text
  // Text read from a message that parsed, within the depth limit and trimmed, is all it needs to be.
  else if (checkedJson) part.responseJson = text
  else if (nestingDepth(text) > MAX_JSON_DEPTH) part.response = text
  else {
    try {
      JSON.parse(text)
      part.responseJson = text.trim()
    } catch {
      // The client said JSON but sent something else: show it as it came.
      part.response = text
    }
  }
  return part
}

/**
 * The reply to a broadcast, built as one string: each JSON answer spliced in as its own text rather
 * than parsed and serialized again, and no object copied or serialized per part. The members come
 * in the order JSON.stringify of the part would give them (node_id, protocol, status, then the
 * answer, or kind and error).
 */
export function broadcastJson(summary: { task_id: string; region: string; targets: number; answered: number }, results: readonly BroadcastPart[]): string {
  const items = new Array<string>(results.length)
  for (let index = 0; index < results.length; index++) {
    const part = results[index]!
    const head = `{"node_id":${JSON.stringify(part.node_id)},"protocol":"${part.protocol}","status":${part.status}`
    // The common part, an answer with a JSON body, is one template: each `+=` would be one more string.
    if (part.responseJson !== undefined) items[index] = `${head},"response":${part.responseJson}}`
    else if (part.response !== undefined) items[index] = `${head},"response":${JSON.stringify(part.response)}}`
    else if (part.responseBase64 !== undefined) items[index] = `${head},"response":{"base64":"${part.responseBase64}"}}`
    else
      items[index] =
        `${head}${part.kind === undefined ? '' : `,"kind":${JSON.stringify(part.kind)}`}${part.error === undefined ? '' : `,"error":${JSON.stringify(part.error)}`}}`
  }
  return `${JSON.stringify(summary).slice(0, -1)},"results":[${items.join(',')}]}`
}
