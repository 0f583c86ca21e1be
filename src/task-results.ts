/**
 * Where finished (and pending) tasks are kept for callers that come back for them: the seam async
 * tasks stand on. In memory alone; in a cluster an implementation on the shared store keeps them
 * where any instance can answer. Pure: time comes in as `nowMs`.
 */
export interface TaskResultStore<Result> {
  put(taskId: string, result: Result, nowMs: number): void
  /** The result, or undefined if unknown or expired. */
  get(taskId: string, nowMs: number): Result | undefined
  delete(taskId: string): void
  readonly size: number
  /** Results evicted to stay within the bound (not expired ones), for /metrics. */
  readonly evicted: number
}

/** A bounded map: each result lives `ttlMs`; past `maxResults` the oldest goes first. */
export class MemoryTaskResults<Result> implements TaskResultStore<Result> {
  /** Insertion order is age order (a put of a known id moves it to the end), so the oldest is first. */
  private readonly entries = new Map<string, { result: Result; expiresAtMs: number }>()
  evicted = 0

  constructor(
    private readonly ttlMs: number,
    private readonly maxResults: number,
  ) {}

  get size(): number {
    return this.entries.size
  }

  put(taskId: string, result: Result, nowMs: number): void {
    this.entries.delete(taskId)
    this.entries.set(taskId, { result, expiresAtMs: nowMs + this.ttlMs })
    this.dropExpired(nowMs)
    for (const oldest of this.entries.keys()) {
      if (this.entries.size <= this.maxResults) break
      this.entries.delete(oldest)
      this.evicted++
    }
  }

  get(taskId: string, nowMs: number): Result | undefined {
    const entry = this.entries.get(taskId)
    if (!entry) return undefined
    if (entry.expiresAtMs <= nowMs) {
      this.entries.delete(taskId)
      return undefined
    }
    return entry.result
  }

  delete(taskId: string): void {
    this.entries.delete(taskId)
  }

  /** Expired entries are the oldest ones (one TTL for all), so the sweep stops at the first live one. */
  private dropExpired(nowMs: number): void {
    for (const [taskId, entry] of this.entries) {
      if (entry.expiresAtMs > nowMs) break
      this.entries.delete(taskId)
    }
  }
}
