import type { Clock } from '../clock.ts'

/** What waits on a task and must end when its deadline passes: an attempt's waiter, an HTTP request. */
export interface Expirable {
  expire(): void
}

/**
 * One task's deadline. Whatever waits on the task watches it and is told once, if the deadline
 * passes before the task ends. A single task has one watcher at a time (its current attempt), so
 * that one is kept in a field; only a broadcast needs the set.
 */
export class Deadline {
  expired = false
  /** Links in the DeadlineQueue that holds it; `queued` is false once it ended or fired. */
  prev: Deadline | undefined = undefined
  next: Deadline | undefined = undefined
  queued = true
  private watcher: Expirable | undefined = undefined
  private others: Set<Expirable> | undefined = undefined

  constructor(readonly atMs: number) {}

  watch(watcher: Expirable): void {
    if (this.watcher === undefined) this.watcher = watcher
    else {
      this.others ??= new Set()
      this.others.add(watcher)
    }
  }

  unwatch(watcher: Expirable): void {
    if (this.watcher === watcher) this.watcher = undefined
    else this.others?.delete(watcher)
  }

  /** Marks it expired and tells every watcher; a second call does nothing. */
  fire(): void {
    if (this.expired) return
    this.expired = true
    const { watcher, others } = this
    this.watcher = undefined
    this.others = undefined
    watcher?.expire()
    if (others) for (const other of others) other.expire()
  }
}

/**
 * Every task's deadline in one list ordered by time, instead of a timer, an AbortController and an
 * abort listener per task: together they were the largest JavaScript cost of a task on a busy
 * server. A new deadline is nearly always the latest (one task_timeout for every task), so adding
 * walks back from the tail in O(1); ending one unlinks it in O(1). Pure: the caller passes the time
 * and keeps one timer for `earliestMs`.
 */
export class DeadlineQueue {
  size = 0
  private head: Deadline | undefined = undefined
  private tail: Deadline | undefined = undefined

  add(timeoutMs: number, nowMs: number): Deadline {
    const deadline = new Deadline(nowMs + timeoutMs)
    // Only a reload that shortens task_timeout makes a new deadline earlier than the tail.
    let before = this.tail
    while (before !== undefined && before.atMs > deadline.atMs) before = before.prev
    deadline.prev = before
    deadline.next = before === undefined ? this.head : before.next
    if (deadline.next === undefined) this.tail = deadline
    else deadline.next.prev = deadline
    if (before === undefined) this.head = deadline
    else before.next = deadline
    this.size++
    return deadline
  }

  /** Takes out a deadline whose task ended; one already fired or removed is left alone. */
  remove(deadline: Deadline): void {
    if (!deadline.queued) return
    deadline.queued = false
    const { prev, next } = deadline
    if (prev === undefined) this.head = next
    else prev.next = next
    if (next === undefined) this.tail = prev
    else next.prev = prev
    deadline.prev = deadline.next = undefined
    this.size--
  }

  /** Fires every deadline at or before `nowMs`, earliest first. */
  expireDue(nowMs: number): void {
    while (this.head !== undefined && this.head.atMs <= nowMs) {
      const due = this.head
      // Out of the queue before its watchers run: they end their tasks, which remove it again.
      this.remove(due)
      due.fire()
    }
  }

  /** Fires every deadline now, whatever its time: for a shutdown that cannot wait any longer. */
  expireAll(): void {
    this.expireDue(Number.POSITIVE_INFINITY)
  }

  /** When the next deadline falls, or undefined if none is waiting. */
  get earliestMs(): number | undefined {
    return this.head?.atMs
  }
}

/**
 * The queue with its one timer, armed for the earliest deadline. Tasks that end early leave the timer
 * armed for a deadline no longer queued; it then finds nothing due, which is cheaper than re-arming per task.
 */
export class DeadlineTimer {
  private readonly queue = new DeadlineQueue()
  private cancelTimer: (() => void) | undefined
  private timerAtMs = Number.POSITIVE_INFINITY

  constructor(private readonly clock: Clock) {}

  get size(): number {
    return this.queue.size
  }

  /** A deadline `timeoutMs` from now, on the monotonic clock. */
  start(timeoutMs: number): Deadline {
    const deadline = this.queue.add(timeoutMs, this.clock.monotonic())
    if (deadline.atMs < this.timerAtMs) this.arm(deadline.atMs)
    return deadline
  }

  /** The task ended: its deadline will not fire. */
  end(deadline: Deadline): void {
    this.queue.remove(deadline)
  }

  /** Fires every deadline now and disarms the timer: for a stop whose grace period is over. */
  expireAll(): void {
    this.queue.expireAll()
    this.disarm()
  }

  private arm(atMs: number): void {
    this.cancelTimer?.()
    this.timerAtMs = atMs
    this.cancelTimer = this.clock.after(atMs - this.clock.monotonic(), this.onTimer)
  }

  private disarm(): void {
    this.cancelTimer?.()
    this.cancelTimer = undefined
    this.timerAtMs = Number.POSITIVE_INFINITY
  }

  private readonly onTimer = (): void => {
    this.cancelTimer = undefined
    this.timerAtMs = Number.POSITIVE_INFINITY
    this.queue.expireDue(this.clock.monotonic())
    const next = this.queue.earliestMs
    if (next !== undefined) this.arm(next)
  }
}

/** A task's own `timeout` shortens task_timeout, never lengthens it; `ownTimeout` says the task's own one applies. */
export function taskTimeout(taskTimeoutMs: number, ownMs: number | undefined): { timeoutMs: number; ownTimeout: boolean } {
  const ownTimeout = ownMs !== undefined && ownMs < taskTimeoutMs
  return { timeoutMs: ownTimeout ? ownMs : taskTimeoutMs, ownTimeout }
}
