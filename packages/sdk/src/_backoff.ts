/**
 * Reconnect delays: doubling from `firstMs` up to `maxMs`, with jitter so a fleet that lost the
 * same server does not reconnect in lockstep. Pure: randomness is passed in.
 */
export class Backoff {
  private attempt = 0

  constructor(
    private readonly firstMs = 250,
    private readonly maxMs = 30_000,
    private readonly random: () => number = Math.random,
  ) {}

  /** The delay before the next attempt; each call doubles the base. Jitter takes off up to a quarter. */
  next(): number {
    const baseMs = Math.min(this.maxMs, this.firstMs * 2 ** this.attempt)
    this.attempt++
    return Math.round(baseMs * (1 - 0.25 * this.random()))
  }

  /** A connection that worked starts the sequence again. */
  reset(): void {
    this.attempt = 0
  }
}

/** A sleep that `wake()` cuts short, so a stop does not wait out a reconnect delay. */
export class Pause {
  private wakeUp: (() => void) | undefined

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms)
      this.wakeUp = () => {
        clearTimeout(timer)
        resolve()
      }
    })
  }

  wake(): void {
    this.wakeUp?.()
    this.wakeUp = undefined
  }
}
