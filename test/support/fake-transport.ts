/**
 * Fake transports for unit tests of the task core, and the core itself (a real Registry, Regions,
 * Dispatcher, Broadcaster and DeadlineTimer) on a FakeClock. A fake transport answers, fails with an
 * AttemptError of any kind, or hangs until the task's deadline fires, as a test tells it to.
 */

import { SEED_HIERARCHY } from '../../src/config/config.ts'
import { Regions } from '../../src/fleet/regions.ts'
import { type Client, type ClientAnnouncement, type HealthPolicy, Registry, type RegistryEvent } from '../../src/fleet/registry.ts'
import { outcomeResponse } from '../../src/http/task-outcome.ts'
import type { TaskRecord } from '../../src/observe/task-stats.ts'
import { Broadcaster } from '../../src/tasks/broadcast.ts'
import type { Deadline } from '../../src/tasks/deadlines.ts'
import { DeadlineTimer } from '../../src/tasks/deadlines.ts'
import { Dispatcher, type DispatchSettings, TaskLoad } from '../../src/tasks/dispatcher.ts'
import { StoredTasks } from '../../src/tasks/stored/runner.ts'
import { MemoryTaskStore } from '../../src/tasks/stored/store.ts'
import { type Answer, AttemptError, type FailureKind, type FanOutSink, type Transport, timedOut } from '../../src/transports/types.ts'
import { FakeClock } from './fake-clock.ts'

/** One task as a fake transport received it. */
export interface SentTask {
  nodeId: string
  taskId: string
  payloadJson: string
  deadline: Deadline
}

/** How a fake client answers one task. */
export type Reply = (task: SentTask) => Promise<Answer>

/** Answers `status` with `body` (JSON by default). */
export function answers(status: number, body: string, headers: Record<string, string> = { 'content-type': 'application/json' }): Reply {
  return () => Promise.resolve({ status, headers, body })
}

/** Fails the attempt the way a real transport does: with an AttemptError of `kind`. */
export function failsWith(kind: FailureKind, message = `fake ${kind}`): Reply {
  return () => Promise.reject(new AttemptError(kind, message))
}

/** Never answers: fails with the transport's timeout once the task's deadline fires, as the real transports do. */
export function hangs(): Reply {
  return ({ deadline }) =>
    new Promise<Answer>((_, reject) => {
      if (deadline.expired) reject(timedOut())
      else deadline.watch({ expire: () => reject(timedOut()) })
    })
}

/** Each task gets the next reply; the last one repeats. */
export function inTurn(...replies: Reply[]): Reply {
  let next = 0
  return (task) => replies[Math.min(next++, replies.length - 1)]!(task)
}

/** A Transport that records every task and answers each client by its node id (or all alike). */
export class FakeTransport implements Transport {
  readonly sent: SentTask[] = []

  constructor(private readonly replies: Reply | Record<string, Reply> = answers(200, '{"ok":true}')) {}

  send(client: Client, taskId: string, payloadJson: string, deadline: Deadline): Promise<Answer> {
    const task = { nodeId: client.nodeId, taskId, payloadJson, deadline }
    this.sent.push(task)
    return this.replyFor(client.nodeId)(task)
  }

  /** The node ids sent to, in order. */
  get sentTo(): string[] {
    return this.sent.map((task) => task.nodeId)
  }

  protected replyFor(nodeId: string): Reply {
    const reply = typeof this.replies === 'function' ? this.replies : this.replies[nodeId]
    if (!reply) throw new Error(`the fake transport has no reply for ${nodeId}`)
    return reply
  }
}

/** A FakeTransport that can also fan out, as the WebSocket transport does with one publish. */
export class FakeFanOutTransport extends FakeTransport {
  readonly fanOuts: Array<{ region: string; taskId: string; payloadJson: string; nodeIds: string[] }> = []

  /** Each client's reply, as a send would give it, handed to the sink when it settles (never JSON it checked itself). */
  fanOut(region: string, taskId: string, payloadJson: string, clients: readonly Client[], deadline: Deadline, sink: FanOutSink): void {
    this.fanOuts.push({ region, taskId, payloadJson, nodeIds: clients.map((client) => client.nodeId) })
    clients.forEach((client, index) => {
      this.replyFor(client.nodeId)({ nodeId: client.nodeId, taskId, payloadJson, deadline }).then(
        (answer) => sink.answered(index, answer, false),
        (error: AttemptError) => sink.failed(index, error),
      )
    })
  }
}

export const TEST_POLICY: HealthPolicy = { failuresToEject: 3, ejectionMs: 1000, maxEjectionMs: 8000, maxEjectedPercent: 50 }

export interface TaskCoreOptions {
  http?: FakeTransport
  ws?: FakeTransport
  relay?: FakeTransport
  policy?: HealthPolicy
  settings?: Partial<DispatchSettings>
}

/** The dispatcher and broadcaster with everything real but the transports and the clock. */
export function taskCore(options: TaskCoreOptions = {}) {
  const clock = new FakeClock()
  const events: RegistryEvent[] = []
  const registry = new Registry(new Regions(SEED_HIERARCHY), options.policy ?? TEST_POLICY, (event) => events.push(event))
  const transports = { http: options.http ?? new FakeTransport(), ws: options.ws ?? new FakeTransport(), relay: options.relay ?? new FakeTransport() }
  const settings: DispatchSettings = { retryCount: 3, taskTimeoutMs: 30_000, ...options.settings }
  const deadlines = new DeadlineTimer(clock)
  const load = new TaskLoad()
  const finished: TaskRecord[] = []
  const deps = { registry, transports, settings: () => settings, deadlines, load, clock, onFinished: (record: TaskRecord) => void finished.push(record) }
  return {
    clock,
    registry,
    events,
    transports,
    settings,
    deadlines,
    load,
    finished,
    dispatcher: new Dispatcher(deps),
    /** Stored tasks over an in-memory store, on this core's dispatcher and clock. */
    storedTasks: (store?: MemoryTaskStore, report?: (error: unknown) => void) => storedTasksOver(new Dispatcher(deps), clock, store, report),
    broadcaster: new Broadcaster(deps),
    /** Registers a client (HTTP unless said otherwise) at the clock's time. */
    join: (nodeId: string, region: string, extra: Partial<ClientAnnouncement> = {}): Client =>
      registry.announce({ holder: 'token-1', nodeId, region, protocol: 'http', ip: '127.0.0.1', port: 4000, weight: 1, ...extra }, clock.now()).client,
  }
}

/** Lets every promise callback that is ready run: what a pending dispatch does next happens before this resolves. */
export function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve))
}

/** StoredTasks as a lone server wires it, over a MemoryTaskStore with the config's default limits. */
export const STORE_LIMITS = { resultTtlMs: 600_000, maxResults: 100_000, maxBytes: 1024 ** 3, idempotencyTtlMs: 86_400_000 }

/** StoredTasks as a lone server wires it, over a MemoryTaskStore (`store`, for a test that acts as another instance) with the config's default limits. */
export function storedTasksOver(
  dispatcher: Dispatcher,
  clock: FakeClock,
  store = new MemoryTaskStore(() => STORE_LIMITS),
  report: (error: unknown) => void = (error) => {
    throw new Error(`a bug was reported: ${error}`)
  },
): StoredTasks {
  const limits = STORE_LIMITS
  return new StoredTasks({
    store,
    dispatcher,
    clock,
    settings: () => ({ concurrency: 100, claimTimeoutMs: 35_000, resultTtlMs: limits.resultTtlMs, idempotencyTtlMs: limits.idempotencyTtlMs }),
    instanceId: () => 'test-instance',
    news: { queued: () => undefined, finished: () => undefined, cancel: () => undefined },
    respond: (outcome, taskId, disclosure) => outcomeResponse(outcome, taskId, disclosure),
    tellAgentCancelled: () => undefined,
    log: () => undefined,
    report,
  })
}
