import type { StoredTrace } from '../../observe/tracing/trace-context.ts'
import { FINAL_STATES, type TaskAttempt, type TaskState } from '../../wire/async-task.ts'
import type { TaskRouting } from '../routing.ts'

/**
 * Where stored tasks live: async ones, and any task sent with an Idempotency-Key. Alone, in memory
 * (MemoryTaskStore, below); in a cluster, in Redis (src/cluster/redis-task-store.ts), so that any
 * instance answers for any task. Both keep the same rules: a task moves queued → running → done |
 * failed | cancelled, never back, and the first final state wins (a result arriving for a cancelled
 * task is dropped). Time comes in as arguments.
 */
export interface TaskStore {
  /**
   * Adds a task, and an async one to the queue, in one step: a task is never stored without being
   * queued. With `claim`, only if its idempotency key is free: otherwise nothing is added and the
   * task holding the key is returned (undefined if it is gone), with whether its body was the same.
   * Refuses with a StoreFullError when max_results are stored and none of them is finished.
   */
  add(task: NewTask, claim: IdempotencyClaim | undefined, nowMs: number): Promise<AddResult>
  get(taskId: string, nowMs: number): Promise<StoredTask | undefined>
  /** queued → running on `instance` (also running → running when `takeover`); false if the task is no longer waiting for it. */
  start(taskId: string, instance: string, takeover: boolean): Promise<boolean>
  /** queued | running → done | failed with its result; false if it had ended already (cancelled), and the result is dropped. */
  finish(taskId: string, result: TaskResult, nowMs: number): Promise<boolean>
  /** queued | running → cancelled. The task as it was before, or undefined if unknown. */
  cancel(taskId: string, nowMs: number): Promise<StoredTask | undefined>
  /**
   * Frees a task's idempotency key (if it still holds it) and, with `dropTask`, forgets the task: what
   * a keyed task that never reached a client gets, so that a retry with its key runs it after all.
   */
  release(task: StoredTask, dropTask: boolean): Promise<void>
  /** Up to `count` queued tasks for this instance to run, oldest first; each must later be `ack`ed. */
  claim(instance: string, count: number): Promise<string[]>
  /** Tasks claimed by an instance that has not acked them for `idleMs`: taken over by `instance`. */
  reclaim(instance: string, idleMs: number, count: number): Promise<string[]>
  /** The task claimed is over (finished, cancelled or gone): it leaves the queue for good. */
  ack(taskId: string): Promise<void>
  figures(nowMs: number): Promise<StoreFigures>
}

/** A task as first stored: what does not change after. */
export interface NewTask {
  task_id: string
  mode: 'async' | 'single'
  region: string
  /** The payload's own text, run as it came. */
  payload: string
  /** Its routing fields (key, node_id, fallback, retry, timeout), resolved when it was submitted. */
  routing?: TaskRouting | undefined
  /** Whose task it is: the SHA-256 of the submitting token ('' without one). Only its owner (or an admin) may read or cancel it. */
  owner: string
  /** How much of agents' failures the owner may see (src/http/task-outcome.ts). */
  disclosure: 'details' | 'generic'
  submitted_at_ms: number
  /** The task's idempotency key and the hash of its body, if it had one. */
  idempotency?: { key: string; body_hash: string } | undefined
  /** The W3C trace it belongs to (src/observe/tracing/), continued when it runs. */
  trace?: StoredTrace | undefined
}

/** How a task ended: the caller's answer exactly as a sync task would have had it, and who answered. */
export interface TaskResult {
  state: 'done' | 'failed'
  node_id: string | null
  attempts: TaskAttempt[]
  status: number
  headers: Record<string, string>
  /** The body, base64: bytes as they came, binary included. */
  body_b64: string
}

export interface StoredTask extends NewTask {
  state: TaskState
  /** The instance running it (in a cluster). */
  claimed_by?: string | undefined
  finished_at_ms: number | null
  result?: TaskResult | undefined
}

/** An idempotency key as it is held: per owner, with the hash of the body it came with. */
export interface IdempotencyClaim {
  owner: string
  key: string
  bodyHash: string
  ttlMs: number
}

export type AddResult = { added: true } | { added: false; existing: StoredTask | undefined; sameBody: boolean }

export interface StoreFigures {
  stored: number
  queued: number
  running: number
  /** Finished tasks dropped to stay within max_results (expired ones are not counted). */
  evicted: number
}

export interface StoreLimits {
  resultTtlMs: number
  maxResults: number
  /** Payloads and results held at most, in bytes as stored (a result's body in base64): the memory store's bound on its size, not only its count. */
  maxBytes: number
  idempotencyTtlMs: number
}

/** Refused: the store is full of unfinished tasks; the caller should come back later. */
export class StoreFullError extends Error {
  override name = 'StoreFullError'
}

/** How long a finished task is kept: an idempotent one as long as its key is honoured. */
export function keptForMs(task: NewTask, limits: StoreLimits): number {
  return task.idempotency ? Math.max(limits.idempotencyTtlMs, limits.resultTtlMs) : limits.resultTtlMs
}

interface Entry {
  task: StoredTask
  /** Infinity until finished: an accepted task is never dropped before it ran. */
  expiresAtMs: number
  /** What it holds, counted against tasks.max_bytes: its payload, and its result's body once finished. */
  bytes: number
}

/**
 * The store alone, in memory: bounded by max_results (the oldest finished task goes first), each
 * finished task kept for result_ttl (idempotency_ttl if it had a key). A restart loses it all: the
 * docs say so (docs/http-api.md). Single-threaded, so every operation is atomic by itself.
 */
export class MemoryTaskStore implements TaskStore {
  private readonly entries = new Map<string, Entry>()
  /** Finished tasks in the order they finished: the eviction order. */
  private readonly finished = new Set<string>()
  private readonly keys = new Map<string, { taskId: string; bodyHash: string; expiresAtMs: number }>()
  private readonly queue: string[] = []
  private evicted = 0
  private running = 0
  /** The bytes every entry holds together. */
  private bytes = 0

  constructor(private readonly limits: () => StoreLimits) {}

  async add(task: NewTask, claim: IdempotencyClaim | undefined, nowMs: number): Promise<AddResult> {
    // No sweep here: a sweep per submission made filling the store quadratic. Expired tasks go in the
    // periodic sweep, or lazily (get, the key check below, the eviction at the bound).
    if (claim) {
      const id = keyId(claim)
      const held = this.keys.get(id)
      if (held && held.expiresAtMs > nowMs) {
        const existing = this.entries.get(held.taskId)?.task
        if (existing) return { added: false, existing, sameBody: held.bodyHash === claim.bodyHash }
      }
    }
    const { maxResults, maxBytes } = this.limits()
    // In bytes, as the docs and Redis count them: a payload of non-ASCII text holds up to 3 bytes per character.
    const bytes = Buffer.byteLength(task.payload)
    // Room is made from finished tasks, oldest first; an unfinished one is never dropped.
    while (this.entries.size >= maxResults || this.bytes + bytes > maxBytes) {
      const oldest = this.finished.values().next()
      if (oldest.done) {
        throw new StoreFullError(
          this.entries.size >= maxResults
            ? `${maxResults} tasks are stored and none has finished (tasks.max_results)`
            : `the unfinished tasks hold ${this.bytes} bytes; this one's ${bytes} would pass tasks.max_bytes (${maxBytes})`,
        )
      }
      this.evict(oldest.value, nowMs)
    }
    this.entries.set(task.task_id, { task: { ...task, state: 'queued', finished_at_ms: null }, expiresAtMs: Number.POSITIVE_INFINITY, bytes })
    this.bytes += bytes
    if (claim) this.keys.set(keyId(claim), { taskId: task.task_id, bodyHash: claim.bodyHash, expiresAtMs: nowMs + claim.ttlMs })
    if (task.mode === 'async') this.queue.push(task.task_id)
    return { added: true }
  }

  async get(taskId: string, nowMs: number): Promise<StoredTask | undefined> {
    const entry = this.entries.get(taskId)
    if (!entry) return undefined
    if (entry.expiresAtMs <= nowMs) {
      this.drop(taskId)
      return undefined
    }
    return { ...entry.task }
  }

  async start(taskId: string, instance: string, takeover: boolean): Promise<boolean> {
    const entry = this.entries.get(taskId)
    if (!entry) return false
    const { state } = entry.task
    if (state !== 'queued' && !(takeover && state === 'running')) return false
    if (state === 'queued') this.running++
    entry.task.state = 'running'
    entry.task.claimed_by = instance
    return true
  }

  async finish(taskId: string, result: TaskResult, nowMs: number): Promise<boolean> {
    const entry = this.entries.get(taskId)
    if (!entry || FINAL_STATES.has(entry.task.state)) return false
    this.end(entry, nowMs)
    entry.task.state = result.state
    entry.task.result = result
    const resultBytes = result.body_b64.length
    entry.bytes += resultBytes
    this.bytes += resultBytes
    // A result past tasks.max_bytes makes room from the oldest finished tasks — never from this one,
    // whose caller is about to read it (max_answer_bytes bounds it).
    for (const oldest of this.finished) {
      if (this.bytes <= this.limits().maxBytes) break
      if (oldest !== taskId) this.evict(oldest, nowMs)
    }
    return true
  }

  async cancel(taskId: string, nowMs: number): Promise<StoredTask | undefined> {
    const entry = this.entries.get(taskId)
    if (!entry || entry.expiresAtMs <= nowMs) return undefined
    const before = { ...entry.task }
    if (FINAL_STATES.has(entry.task.state)) return before
    this.end(entry, nowMs)
    entry.task.state = 'cancelled'
    const index = this.queue.indexOf(taskId)
    if (index !== -1) this.queue.splice(index, 1)
    return before
  }

  async release(task: StoredTask, dropTask: boolean): Promise<void> {
    // Freed here even when the task is dropped (drop frees it too): a task no longer stored must still let its key go.
    this.freeKey(task)
    if (dropTask) this.drop(task.task_id)
  }

  async claim(_instance: string, count: number): Promise<string[]> {
    return this.queue.splice(0, count)
  }

  async reclaim(): Promise<string[]> {
    // One process: a claimed task is never orphaned while the store lives.
    return []
  }

  async ack(): Promise<void> {}

  async figures(_nowMs: number): Promise<StoreFigures> {
    return { stored: this.entries.size, queued: this.queue.length, running: this.running, evicted: this.evicted }
  }

  /** Idempotency keys held now. */
  get heldKeys(): number {
    return this.keys.size
  }

  /** Drops expired tasks and keys: expiry is per task (two TTLs), so every finished one is looked at. */
  sweep(nowMs: number): void {
    for (const taskId of this.finished) {
      const entry = this.entries.get(taskId)
      if (entry && entry.expiresAtMs <= nowMs) this.drop(taskId)
    }
    for (const [id, held] of this.keys) if (held.expiresAtMs <= nowMs || !this.entries.has(held.taskId)) this.keys.delete(id)
  }

  private end(entry: Entry, nowMs: number): void {
    if (entry.task.state === 'running') this.running--
    entry.task.finished_at_ms = nowMs
    entry.expiresAtMs = nowMs + keptForMs(entry.task, this.limits())
    this.finished.add(entry.task.task_id)
  }

  /** Drops a finished task for room; an expired one would have gone anyway: only a live result dropped counts as evicted. */
  private evict(taskId: string, nowMs: number): void {
    if ((this.entries.get(taskId)?.expiresAtMs ?? 0) > nowMs) this.evicted++
    this.drop(taskId)
  }

  private drop(taskId: string): void {
    const entry = this.entries.get(taskId)
    if (!entry) return
    if (entry.task.state === 'running') this.running--
    this.bytes -= entry.bytes
    this.entries.delete(taskId)
    this.finished.delete(taskId)
    // Its key goes with it, not at the next sweep: keyed tasks evicted by the thousand between sweeps would hold their keys past max_results.
    this.freeKey(entry.task)
  }

  /** Frees the idempotency key `task` holds; a key another task holds now is left alone. */
  private freeKey(task: NewTask): void {
    const { idempotency } = task
    if (idempotency === undefined) return
    const id = keyId({ owner: task.owner, key: idempotency.key })
    if (this.keys.get(id)?.taskId === task.task_id) this.keys.delete(id)
  }
}

/** An idempotency key is the owner's own: two tokens may use the same key for different tasks. */
function keyId(claim: { owner: string; key: string }): string {
  return `${claim.owner}\n${claim.key}`
}
