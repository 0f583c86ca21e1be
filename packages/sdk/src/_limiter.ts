/**
 * Runs at most `max` jobs at once; the rest wait in arrival order. An agent holds every job it
 * accepted (running or waiting) until it finishes, which is what a graceful stop waits for.
 */
export class Limiter {
  private running = 0
  private readonly waiting: Array<() => void> = []
  private idleWaiters: Array<() => void> = []

  constructor(readonly max: number) {}

  /** Jobs accepted and not yet finished. */
  get held(): number {
    return this.running + this.waiting.length
  }

  async run<T>(job: () => Promise<T>): Promise<T> {
    if (this.running < this.max) this.running++
    // A finishing job hands its slot straight to the next waiter, so a newcomer cannot overtake.
    else await new Promise<void>((resolve) => this.waiting.push(resolve))
    try {
      return await job()
    } finally {
      const next = this.waiting.shift()
      if (next) next()
      else if (--this.running === 0) this.notifyIdle()
    }
  }

  /** Resolves once nothing is held. */
  idle(): Promise<void> {
    if (this.held === 0) return Promise.resolve()
    return new Promise((resolve) => this.idleWaiters.push(resolve))
  }

  private notifyIdle(): void {
    const waiters = this.idleWaiters
    this.idleWaiters = []
    for (const resolve of waiters) resolve()
  }
}
