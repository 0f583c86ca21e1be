import type { Clock } from '../clock.ts'
import { type Client, type Registry, unavailableReason } from '../fleet/registry.ts'
import { hasSlot } from '../fleet/slots.ts'
import { Histogram } from '../observe/histogram.ts'
import type { TaskControl } from './control.ts'
import { type Deadline, DeadlineTimer, type Expirable } from './deadlines.ts'
import type { Outcome } from './outcome.ts'
import { type QueuePlace, TaskQueue, type Waiting } from './priority-queue.ts'
import { DEFAULT_ROUTING, type Queueing, type TaskRouting } from './routing.ts'

/** The config's `queue` section, in ms. */
export interface QueueSettings {
  /** How long a task may wait for a slot (a task's own `queue_timeout` may say otherwise, never past its deadline). */
  timeoutMs: number
  /** How many tasks may wait in one pool's queue. */
  max: number
  /** Waiting this much longer counts as one priority class up (src/tasks/priority-queue.ts). */
  promoteAfterMs: number
}

/** A slot found for a waiting task: the registry has counted it already. */
export interface SlotGranted {
  client: Client
  pool: string
  acquired: true
}

export type QueueRefusal = Extract<Outcome, { kind: 'queue_timeout' | 'queue_full' | 'cancelled' | 'shutting_down' | 'unknown_node' | 'node_unavailable' }>
type QueueResult = SlotGranted | QueueRefusal

/** Queue waits, in seconds: from a slot that frees at once to the longest sensible queue.timeout. */
const WAIT_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

/** Why tasks were turned away from the queue, as /metrics counts them. */
export type ShedReason = 'queue_timeout' | 'queue_full' | 'shutting_down'

/**
 * Tasks that wait for an agent's slot: a pick that finds every candidate of its pool full (and only
 * then) asks here, and the registry hands each freed slot to the best waiting task before anything
 * new can take it (src/tasks/priority-queue.ts has the order). A wait ends with a slot, or with `queue_timeout`
 * (queue.timeout, or the task's deadline: time queued counts against it), `queue_full`, a cancel or
 * the stop.
 */
export class SlotQueue {
  private readonly queue = new TaskQueue<Waiter>()
  /** The queue waits' own timers: one list, as every wait is mostly queue.timeout long (src/tasks/deadlines.ts). */
  private readonly timers: DeadlineTimer
  private closed = false
  /** How long tasks waited, whether they got a slot or not. */
  readonly waits = new Histogram(WAIT_BUCKETS)
  readonly shed: Record<ShedReason, number> = { queue_timeout: 0, queue_full: 0, shutting_down: 0 }

  constructor(
    private readonly registry: Registry,
    private readonly clock: Clock,
    private readonly settings: () => QueueSettings,
  ) {
    this.timers = new DeadlineTimer(clock)
    registry.offerSlot = (client) => this.offer(client)
  }

  /** Tasks waiting now. */
  get depth(): number {
    return this.queue.size
  }

  /**
   * After a pick found no client: waits for a slot if the reason was full agents (`no_client` in a
   * pool with a full one, or a named agent that is full); otherwise gives `failed` back as it is.
   */
  async waitAfter(
    failed: Outcome,
    region: string,
    routing: TaskRouting,
    fromPool: string | undefined,
    deadline: Deadline,
    control?: TaskControl,
  ): Promise<QueueResult | Outcome> {
    const place = this.placeFor(failed, region, routing, fromPool)
    if (place === undefined) return failed
    return this.wait(place, region, routing, deadline, control)
  }

  /**
   * A task another instance relayed to `client`, held here, while it is full: it waits for that agent's
   * next slot (src/cluster/relay.ts), in the class and within the queue_timeout the task came with.
   */
  waitForAgent(client: Client, deadline: Deadline, queueing: Queueing = DEFAULT_ROUTING): Promise<QueueResult> {
    return this.wait({ pool: client.region, nodeId: client.nodeId }, client.region, queueing, deadline)
  }

  private placeFor(failed: Outcome, region: string, routing: TaskRouting, fromPool: string | undefined): QueuePlace | undefined {
    const { registry } = this
    if (failed.kind === 'no_client') {
      const pool = registry.fullPoolFor(fromPool ?? region, routing.fallback !== 'none', routing.boundary)
      return pool === undefined ? undefined : { pool }
    }
    if (failed.kind === 'node_unavailable') {
      const client = registry.get(failed.nodeId)
      if (client && registry.canTakeTasks(client) && !hasSlot(client)) return { pool: client.region, nodeId: client.nodeId }
    }
    return undefined
  }

  private wait(place: QueuePlace, region: string, routing: Queueing, deadline: Deadline, control?: TaskControl): Promise<QueueResult> {
    const settings = this.settings()
    if (this.closed) return Promise.resolve(this.refuse({ kind: 'shutting_down', region, failedAttempts: [] }))
    // A pool's queue and an agent's own (tasks naming it) are each bounded by queue.max.
    if (place.nodeId === undefined ? this.queue.depthOf(place.pool) >= settings.max : this.queue.depthOfNode(place.nodeId) >= settings.max) {
      return Promise.resolve(this.refuse({ kind: 'queue_full', region, pool: place.pool, max: settings.max, nodeId: place.nodeId }))
    }
    const timeoutMs = routing.queueTimeoutMs ?? settings.timeoutMs
    // The deadline may have passed on the way here: nothing would ever tell the waiter.
    if (deadline.expired) {
      if (control?.cancelled) return Promise.resolve({ kind: 'cancelled', region, failedAttempts: [] })
      return Promise.resolve(this.refuse({ kind: 'queue_timeout', region, waitedMs: 0, timeoutMs }))
    }
    return new Promise<QueueResult>((resolve) => {
      const waiter = new Waiter(resolve, deadline, control, region, timeoutMs)
      waiter.waiting = this.queue.add(waiter, place, routing.priority ?? 'normal', this.clock.monotonic(), settings.promoteAfterMs)
      waiter.queueDeadline = this.timers.start(timeoutMs)
      waiter.queueDeadline.watch(waiter)
      deadline.watch(waiter)
      waiter.onExpire = () => this.expire(waiter)
    })
  }

  /** The registry's offer: `client` has a free slot; true if a waiting task took it. */
  private offer(client: Client): boolean {
    const waiting = this.queue.next(client.nodeId, this.registry.poolsOf(client))
    if (!waiting) return false
    this.settle(waiting.value, { client, pool: waiting.queue, acquired: true })
    return true
  }

  /** The task's deadline, its queue wait or its cancel: it leaves the queue without a slot. */
  private expire(waiter: Waiter): void {
    if (waiter.waiting) this.queue.remove(waiter.waiting)
    if (waiter.control?.cancelled) {
      this.settle(waiter, { kind: 'cancelled', region: waiter.region, failedAttempts: [] })
      return
    }
    this.shed.queue_timeout++
    const waitedMs = this.clock.monotonic() - waiter.waiting!.enqueuedMs
    this.settle(waiter, {
      kind: 'queue_timeout',
      region: waiter.region,
      waitedMs,
      // Cut short by the task's own deadline: the bound in force was the time it had left, not the longer queue wait.
      timeoutMs: waiter.queueDeadline?.expired === true ? waiter.timeoutMs : Math.min(waiter.timeoutMs, Math.round(waitedMs)),
    })
  }

  /**
   * The agent `nodeId` changed: if it may no longer take tasks (drained, ejected, gone), the tasks
   * waiting for it by name are answered now as a task naming it would be (`node_unavailable`, or
   * `unknown_node`), rather than waiting out their queue_timeout for a slot it will not give them.
   * Tasks waiting in a pool stay: another agent of the pool may yet serve them.
   */
  refuseNamed(nodeId: string): void {
    const client = this.registry.get(nodeId)
    if (client !== undefined && this.registry.canTakeTasks(client)) return
    for (const waiter of this.queue.takeNode(nodeId)) {
      const { region } = waiter
      this.settle(
        waiter,
        client === undefined ? { kind: 'unknown_node', region, nodeId } : { kind: 'node_unavailable', region, nodeId, why: unavailableReason(client) },
      )
    }
  }

  /** The stop: every waiting task is answered `shutting_down`, and no new one waits. */
  close(): void {
    this.closed = true
    for (const waiter of this.queue.drain()) this.settle(waiter, this.refuse({ kind: 'shutting_down', region: waiter.region, failedAttempts: [] }))
  }

  private refuse(refusal: Extract<QueueRefusal, { kind: ShedReason | 'cancelled' }>): QueueRefusal {
    if (refusal.kind !== 'cancelled') this.shed[refusal.kind]++
    return refusal
  }

  private settle(waiter: Waiter, result: QueueResult): void {
    if (waiter.settled) return
    waiter.settled = true
    waiter.deadline.unwatch(waiter)
    if (waiter.queueDeadline) {
      waiter.queueDeadline.unwatch(waiter)
      this.timers.end(waiter.queueDeadline)
    }
    if (waiter.waiting) this.waits.observe('', (this.clock.monotonic() - waiter.waiting.enqueuedMs) / 1000)
    waiter.resolve(result)
  }
}

/** One task waiting: told when its deadline or queue wait passes (Expirable), or given a slot. */
class Waiter implements Expirable {
  waiting: Waiting<Waiter> | undefined = undefined
  queueDeadline: Deadline | undefined = undefined
  settled = false
  onExpire: () => void = () => {}

  constructor(
    readonly resolve: (result: QueueResult) => void,
    readonly deadline: Deadline,
    readonly control: TaskControl | undefined,
    readonly region: string,
    readonly timeoutMs: number,
  ) {}

  expire(): void {
    this.onExpire()
  }
}
