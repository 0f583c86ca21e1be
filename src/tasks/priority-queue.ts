import type { Priority } from '../wire/names.ts'

/**
 * Tasks waiting for an agent's slot (HAProxy's server and backend queues): one queue per region pool,
 * and one per agent for tasks that name it. Each queue keeps a FIFO list per priority class; the next
 * task is the one with the smallest rank, `enqueued + class × promoteAfterMs` (HAProxy's
 * `set-priority-class` with a time offset): higher classes first, FIFO within a class, and a task
 * that has waited `promoteAfterMs` longer than a newcomer one class above it goes first, so a low task
 * is never starved for longer than two `promoteAfterMs` by a stream of high ones. Finding the next
 * task looks at three list heads per queue; enqueueing and leaving (timeout, cancel) are O(1).
 * Pure: time comes in as numbers.
 */
export class TaskQueue<Value> {
  private readonly pools = new Map<string, ClassLists<Value>>()
  private readonly nodes = new Map<string, ClassLists<Value>>()
  /** Tasks waiting now, in every queue. */
  size = 0

  /** How many tasks wait in `pool`'s queue (`queue.max` bounds it). */
  depthOf(pool: string): number {
    return this.pools.get(pool)?.size ?? 0
  }

  /** How many tasks wait in the queue of the agent `nodeId`, for it alone (`queue.max` bounds it too). */
  depthOfNode(nodeId: string): number {
    return this.nodes.get(nodeId)?.size ?? 0
  }

  /** Queues `value` for a slot in `pool`, or, with `nodeId`, on that one agent. */
  add(value: Value, where: QueuePlace, priority: Priority, nowMs: number, promoteAfterMs: number): Waiting<Value> {
    const table = where.nodeId === undefined ? this.pools : this.nodes
    const name = where.nodeId ?? where.pool
    let lists = table.get(name)
    if (!lists) {
      lists = new ClassLists()
      table.set(name, lists)
    }
    const rank = nowMs + CLASS_INDEX[priority] * promoteAfterMs
    const waiting = new Waiting(value, name, table === this.nodes, rank, nowMs)
    lists.push(CLASS_INDEX[priority], waiting)
    this.size++
    return waiting
  }

  /** Takes a task out that no longer waits (timed out, cancelled); one already taken is left alone. */
  remove(waiting: Waiting<Value>): void {
    if (waiting.list === undefined) return
    const table = waiting.onNode ? this.nodes : this.pools
    const lists = table.get(waiting.queue)!
    lists.unlink(waiting)
    this.size--
    // Callers may name regions by the thousand: an empty queue is forgotten.
    if (lists.size === 0) table.delete(waiting.queue)
  }

  /**
   * The next task for an agent with a free slot: the best-ranked among the tasks naming it and the
   * queues of the pools it serves (`pools`: its region and every ancestor). Taken out of its queue.
   */
  next(nodeId: string, pools: readonly string[]): Waiting<Value> | undefined {
    if (this.size === 0) return undefined
    let best = this.nodes.get(nodeId)?.best()
    for (const pool of pools) {
      const candidate = this.pools.get(pool)?.best()
      if (candidate && (!best || candidate.rank < best.rank)) best = candidate
    }
    if (best) this.remove(best)
    return best
  }

  /** Every task waiting for the agent `nodeId` by name, taking them out of its queue. */
  takeNode(nodeId: string): Value[] {
    const lists = this.nodes.get(nodeId)
    if (!lists) return []
    const taken = [...lists.all()]
    // Out of the queue: a later remove() of one of them is a no-op, not an unlink from another list.
    for (const waiting of taken) waiting.list = undefined
    this.nodes.delete(nodeId)
    this.size -= taken.length
    return taken.map((waiting) => waiting.value)
  }

  /** Every waiting task, emptying the queues: for a stop. */
  drain(): Value[] {
    const values: Value[] = []
    for (const table of [this.pools, this.nodes]) {
      for (const lists of table.values()) for (const waiting of lists.all()) values.push(waiting.value)
      table.clear()
    }
    this.size = 0
    return values
  }
}

/** Where a task waits: a pool's queue, or the queue of the one agent it names. */
export interface QueuePlace {
  pool: string
  nodeId?: string | undefined
}

const CLASS_INDEX: Record<Priority, number> = { high: 0, normal: 1, low: 2 }

/** One waiting task, linked into its class's list. */
export class Waiting<Value> {
  prev: Waiting<Value> | undefined = undefined
  next: Waiting<Value> | undefined = undefined
  /** The list that holds it; undefined once it left the queue. */
  list: WaitList<Value> | undefined = undefined

  constructor(
    readonly value: Value,
    readonly queue: string,
    readonly onNode: boolean,
    readonly rank: number,
    readonly enqueuedMs: number,
  ) {}
}

class WaitList<Value> {
  head: Waiting<Value> | undefined = undefined
  tail: Waiting<Value> | undefined = undefined
}

/** A queue's three FIFO lists, one per class. */
class ClassLists<Value> {
  private readonly lists = [new WaitList<Value>(), new WaitList<Value>(), new WaitList<Value>()]
  size = 0

  push(classIndex: number, waiting: Waiting<Value>): void {
    const list = this.lists[classIndex]!
    waiting.list = list
    waiting.prev = list.tail
    if (list.tail) list.tail.next = waiting
    else list.head = waiting
    list.tail = waiting
    this.size++
  }

  unlink(waiting: Waiting<Value>): void {
    const list = waiting.list!
    if (waiting.prev) waiting.prev.next = waiting.next
    else list.head = waiting.next
    if (waiting.next) waiting.next.prev = waiting.prev
    else list.tail = waiting.prev
    waiting.prev = waiting.next = waiting.list = undefined
    this.size--
  }

  /** The head with the smallest rank: within a class the head is the oldest, so the best of the class. */
  best(): Waiting<Value> | undefined {
    let best: Waiting<Value> | undefined
    for (const list of this.lists) if (list.head && (!best || list.head.rank < best.rank)) best = list.head
    return best
  }

  *all(): Generator<Waiting<Value>> {
    for (const list of this.lists) for (let at = list.head; at; at = at.next) yield at
  }
}
